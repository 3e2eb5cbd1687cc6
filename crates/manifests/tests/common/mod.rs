//! Shared by the integration tests: where things are, and the pinned kubectl.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// A pinned tool of env/tools.toml, resolved the way the harness resolves
/// it (env override, PATH at the pinned version, the per-user cache).
/// Missing is a failure, not a skip: a check that silently does not run
/// proves nothing.
pub fn tool(name: &str) -> PathBuf {
    rig::process::tools::pinned_for_tests(name)
}

/// The pinned kubectl, which renders the overlays.
pub fn kubectl() -> PathBuf {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL.get_or_init(|| tool("kubectl")).clone()
}

/// `kubectl kustomize scenarios/k8s/<mode>`, once per mode per test binary.
pub fn render(mode: &str) -> &'static [Value] {
    static RENDERED: OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, &'static [Value]>>,
    > = OnceLock::new();
    let cache = RENDERED.get_or_init(Default::default);
    if let Some(objects) = cache.lock().unwrap().get(mode) {
        return objects;
    }
    let dir = root().join("scenarios/k8s").join(mode);
    let objects = manifests::render_overlay(&kubectl(), &dir).unwrap_or_else(|err| panic!("{err}"));
    let objects: &'static [Value] = Vec::leak(objects);
    cache.lock().unwrap().insert(mode.to_owned(), objects);
    objects
}

/// Every container (init containers too) of every pod template.
pub fn containers(objects: &[Value]) -> Vec<(&Value, &Value)> {
    let mut found = Vec::new();
    for object in objects {
        let Some(spec) = object.pointer("/spec/template/spec") else {
            continue;
        };
        for list in ["initContainers", "containers"] {
            for container in spec
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                found.push((object, container));
            }
        }
    }
    found
}

pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}
