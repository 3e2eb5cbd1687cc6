//! keygate's OpenAPI document loading (`Routes::load`, what keygate runs at
//! config load) on one or two arbitrary documents, then resolution of
//! request paths against the routes loaded.
//!
//! Input: a flags byte, then NUL-separated parts: the first document, the
//! second (empty: only one document), then request paths. Flag bit 0 makes
//! the first document `first.json` (else `first.yaml`), bit 1 the second;
//! keygate picks JSON or YAML by the extension.
//!
//! Invariants:
//!
//! 1. Loading never panics, and an error names the document at fault:
//!    it is reported as `<document path>: ...`; when the first document
//!    fails alone it is the one named with two, and when it loads alone
//!    and the pair fails, the second is named.
//! 2. Resolving never panics; a group it names is one the documents
//!    declared, and a resolved path has no `.`, `..` or empty segment.
//! 3. Each declared template, written out with `x` for every parameter
//!    under its document's base path, resolves to its document's group
//!    (only templates and bases of plain characters are written out, as
//!    others need encoding to become request paths). Routes of two groups
//!    that could match one path are refused at load, so no other group can
//!    win.
#![no_main]
use std::path::{Path, PathBuf};

use keygate_config::config::ApiFile;
use keygate_config::routes::Routes;
use libfuzzer_sys::fuzz_target;

struct Document<'a> {
    path: PathBuf,
    text: &'a str,
}

impl Document<'_> {
    fn is_json(&self) -> bool {
        self.path.extension().is_some_and(|e| e == "json")
    }

    fn api_file(&self, index: usize) -> ApiFile {
        ApiFile {
            field: format!("apis[{index}]"),
            path: self.path.clone(),
        }
    }
}

fn load(docs: &[&Document]) -> Result<Routes, keygate_config::config::ConfigError> {
    let apis: Vec<ApiFile> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| d.api_file(i))
        .collect();
    Routes::load(Path::new("keygate.yaml"), &apis)
}

fn assert_names(err: &keygate_config::config::ConfigError, doc: &Document) {
    let name = doc.path.display().to_string();
    assert_eq!(err.file, name, "{err}");
    assert!(err.to_string().starts_with(&format!("{name}: ")), "{err}");
}

/// Characters a template or base may have for invariant 3: ones that mean
/// the same in a request path, unencoded.
fn plain(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/'))
}

/// `(group, request paths)` for a document's plain templates, read
/// independently of keygate (with serde_json/serde_yaml values).
fn declared(doc: &Document) -> Option<(String, Vec<String>)> {
    let value: serde_json::Value = if doc.is_json() {
        serde_json::from_str(doc.text).ok()?
    } else {
        serde_yaml::from_str(doc.text).ok()?
    };
    let group = value.get("groupId")?.as_str()?.to_owned();
    let base = match value.get("servers").and_then(|s| s.get(0)) {
        None => String::new(),
        Some(server) => match server.get("url") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(url) => {
                let url = url.as_str()?;
                if !(url.is_empty() || url.starts_with('/') && plain(url)) {
                    return None;
                }
                url.trim_end_matches('/').to_owned()
            }
        },
    };
    let mut paths = Vec::new();
    for template in value.get("paths")?.as_object()?.keys() {
        // `{name}` -> `x`; braces are balanced, or the load failed.
        let mut path = String::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            path.push_str(&rest[..open]);
            path.push('x');
            rest = &rest[open + rest[open..].find('}')? + 1..];
        }
        path.push_str(rest);
        if !plain(&path) {
            continue;
        }
        let full = format!("{base}{path}");
        let full = full.trim_end_matches('/');
        paths.push(if full.is_empty() {
            "/".into()
        } else {
            full.into()
        });
    }
    Some((group, paths))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = text.split('\0');
    let first_text = parts.next().unwrap_or_default();
    let second_text = parts.next().unwrap_or_default();
    let requests: Vec<&str> = parts.take(8).collect();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let document = |stem: &str, json: bool, text| {
        let path = dir
            .path()
            .join(format!("{stem}.{}", if json { "json" } else { "yaml" }));
        std::fs::write(&path, text).expect("writing a document");
        Document { path, text }
    };
    let first = document("first", flags & 1 == 1, first_text);
    let second = document("second", flags & 2 == 2, second_text);
    let docs: Vec<&Document> = if second_text.is_empty() {
        vec![&first]
    } else {
        vec![&first, &second]
    };

    // 1: errors name the document at fault.
    let routes = match load(&docs) {
        Ok(routes) => routes,
        Err(err) => {
            match docs.as_slice() {
                [only] => assert_names(&err, only),
                [first, second] => match load(&[*first]) {
                    Err(alone) => {
                        assert_names(&err, first);
                        assert_eq!(err, alone);
                    }
                    Ok(_) => assert_names(&err, second),
                },
                _ => unreachable!(),
            }
            return;
        }
    };
    assert!(!routes.is_empty() && !routes.groups().is_empty());

    // 2: resolution of the paths given.
    for request in &requests {
        if let Ok(group) = routes.resolve(request) {
            assert!(
                routes.groups().iter().any(|g| g == group),
                "{request:?} -> {group}"
            );
            let segments =
                keygate_config::request_path::segments(request).expect("a resolved path segments");
            assert!(
                segments
                    .iter()
                    .all(|s| !s.is_empty() && s != "." && s != ".."),
                "{request:?}: {segments:?}"
            );
        }
    }

    // 3: every plain declared path resolves to its own document's group.
    for doc in &docs {
        let Some((group, paths)) = declared(doc) else {
            continue;
        };
        for path in paths {
            assert_eq!(
                routes.resolve(&path),
                Ok(group.as_str()),
                "{} declares {path:?}",
                doc.path.display()
            );
        }
    }
});
