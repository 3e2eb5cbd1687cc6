//! The workspace's layering, as ARCHITECTURE.md states it, checked:
//!
//! - crates: keygate and apikey never depend on the harness (rig, rig-k8s,
//!   rig-bench); keygate-config (its config and routes, no server stack)
//!   depends on neither keygate nor the harness; keygate-envoy (the Envoy
//!   module) depends on neither keygate nor the harness; log-throttle on no
//!   workspace crate; rig never depends on rig-k8s or rig-bench; rig keeps the
//!   workspace's `rust-version` (only rig-k8s and the e2e tests pay for
//!   kube's);
//! - files: no file imports a file that imports it back, directly or around
//!   a loop, in any crate of the workspace;
//! - rig's folders: `base` < `contract` < `vault` < `process` < `local`; a
//!   file imports only its own folder and the folders before it.
//!
//! "Imports" is what the source names: `crate::a::b` and `super::x` paths
//! (in `use` or inline), and a parent's `child::x`. A source scan rather
//! than the compiler's view, because rustc has no notion of file layering;
//! comments and string literals are left out so prose cannot add an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A crate's modules (by path, `""` for the root) and which module each
/// file names.
struct ModuleGraph {
    edges: BTreeMap<String, BTreeSet<String>>,
}

/// `a/b.rs` -> `a::b`, `a/mod.rs` -> `a`, `lib.rs`/`main.rs` -> `""`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and string literals (close enough for
/// import paths: a `"` inside a char literal is the only miss, and a
/// miss can only hide an edge inside the same literal).
fn code_only(text: &str) -> String {
    let strings = Regex::new(r##"r#*"(?s:.*?)"#*|"(?:[^"\\]|\\.)*""##).unwrap();
    let comments = Regex::new(r"(?m)//.*$").unwrap();
    let chars = Regex::new(r"'(?:[^'\\]|\\.)'").unwrap();
    let text = comments.replace_all(text, "");
    let text = strings.replace_all(&text, "\"\"");
    chars.replace_all(&text, "' '").into_owned()
}

/// The byte ranges of the inline modules (`mod name { .. }`) of a file's
/// code, nested ones included.
fn inline_modules(code: &str) -> Vec<std::ops::Range<usize>> {
    let open = Regex::new(r"\bmod\s+\w+\s*\{").unwrap();
    open.find_iter(code)
        .map(|m| {
            let mut depth = 0usize;
            let mut end = code.len();
            for (i, c) in code[m.end() - 1..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = m.end() - 1 + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            m.start()..end
        })
        .collect()
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map(|(p, _)| p.to_owned())
        .unwrap_or_default()
}

fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}::{rest}"),
    }
}

impl ModuleGraph {
    fn of_crate(src: &Path) -> Self {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let modules: BTreeMap<String, String> = files
            .iter()
            .map(|f| {
                (
                    module_of(src, f),
                    code_only(&std::fs::read_to_string(f).unwrap()),
                )
            })
            .collect();
        let known: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
        // The longest module that prefixes `path` (`a::b::Item` -> `a::b`).
        let resolve = |path: &str| -> String {
            let parts: Vec<&str> = path.split("::").collect();
            (0..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|m| known.contains(m.as_str()))
                .unwrap_or_default()
        };
        let crate_path = Regex::new(r"\bcrate((?:::\w+)+)").unwrap();
        let crate_group = Regex::new(r"\bcrate::((?:\w+::)*)\{([^}]*)\}").unwrap();
        let super_path = Regex::new(r"\b((?:super::)+)(\w+|\{[^}]*\}|\*)").unwrap();
        let child_decl = Regex::new(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;").unwrap();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, code) in &modules {
            let mut add = |target: String| {
                // A module naming its own items is no import.
                if &target != module {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            };
            for m in crate_path.captures_iter(code) {
                add(resolve(m[1].trim_start_matches("::")));
            }
            for m in crate_group.captures_iter(code) {
                let prefix = m[1].trim_end_matches("::");
                for item in m[2].split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let item = item.split_whitespace().next().unwrap_or(item);
                    add(resolve(&join(prefix, item)));
                }
            }
            let inline = inline_modules(code);
            for m in super_path.captures_iter(code) {
                let depth = m[1].matches("super").count();
                // Inside an inline module (`mod tests { .. }`), the first
                // `super`s climb back to the file itself.
                let nesting = inline
                    .iter()
                    .filter(|r| r.contains(&m.get(0).unwrap().start()))
                    .count();
                if depth <= nesting {
                    continue;
                }
                let mut base = module.clone();
                for _ in 0..depth - nesting {
                    base = parent(&base);
                }
                let what = m[2].trim_matches(|c| c == '{' || c == '}');
                if what == "*" {
                    add(base);
                    continue;
                }
                for item in what.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    add(resolve(&join(&base, item.split("::").next().unwrap())));
                }
            }
            for decl in child_decl.captures_iter(code) {
                let child = join(module, &decl[1]);
                let uses =
                    Regex::new(&format!(r"(?:^|[^\w:]){}::\w", regex::escape(&decl[1]))).unwrap();
                if uses.is_match(code) && known.contains(child.as_str()) {
                    edges.entry(module.clone()).or_default().insert(child);
                }
            }
        }
        Self { edges }
    }

    /// Strongly connected components with more than one module: each is a
    /// set of files that import each other around a loop.
    fn cycles(&self) -> Vec<Vec<String>> {
        struct Tarjan<'a> {
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            found: Vec<Vec<String>>,
        }
        impl<'a> Tarjan<'a> {
            fn visit(&mut self, v: &'a str) {
                let n = self.index.len();
                self.index.insert(v, n);
                self.low.insert(v, n);
                self.stack.push(v);
                self.on_stack.insert(v);
                for w in self.graph.get(v).into_iter().flatten() {
                    let w = w.as_str();
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let low = self.low[v].min(self.low[w]);
                        self.low.insert(v, low);
                    } else if self.on_stack.contains(w) {
                        let low = self.low[v].min(self.index[w]);
                        self.low.insert(v, low);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        self.on_stack.remove(w);
                        component.push(w.to_owned());
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.found.push(component);
                    }
                }
            }
        }
        let mut t = Tarjan {
            graph: &self.edges,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        for v in self.edges.keys() {
            if !t.index.contains_key(v.as_str()) {
                t.visit(v);
            }
        }
        t.found
    }
}

/// Every crate's sources. `tests` is the e2e crate: its library (lib.rs,
/// shared/) and its test targets (each file a crate root of its own, with
/// its folder's modules, as faults.rs and faults/), scanned as one tree:
/// a test target importing `crate::x` names its own module, as here.
const CRATES: [&str; 15] = [
    "crates/apikey/src",
    "crates/scenario/src",
    "tests",
    "crates/log-throttle/src",
    "crates/keygate/src",
    "crates/keygate-config/src",
    "crates/keygate-envoy/src",
    "crates/manifests/src",
    "crates/rig/src",
    "crates/rig-k8s/src",
    "crates/rig-bench/src",
    "crates/bench-peer/src",
    "crates/bench-module/src",
    "xtask/src",
    "fuzz/fuzz_targets",
];

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let mut loops = Vec::new();
    for dir in CRATES {
        let src = workspace_root().join(dir);
        if !src.is_dir() {
            continue;
        }
        for cycle in ModuleGraph::of_crate(&src).cycles() {
            loops.push(format!("{dir}: {}", cycle.join(" <-> ")));
        }
    }
    assert!(
        loops.is_empty(),
        "files that import each other around a loop (move what both need into a module that imports neither):\n{}",
        loops.join("\n")
    );
}

/// rig's folders, lowest first.
const RIG_ORDER: [&str; 5] = ["base", "contract", "vault", "process", "local"];

/// The imports of `graph` that go from a folder of [`RIG_ORDER`] to a later one.
fn imports_up_the_folders(graph: &ModuleGraph) -> Vec<String> {
    let rank = |module: &str| {
        RIG_ORDER
            .iter()
            .position(|f| module.split("::").next() == Some(f))
    };
    let mut wrong = Vec::new();
    for (from, targets) in &graph.edges {
        let Some(from_rank) = rank(from) else {
            continue;
        };
        for to in targets {
            match rank(to) {
                Some(to_rank) if to_rank > from_rank => wrong.push(format!("{from} -> {to}")),
                // The crate root only declares the folders (and `say!`).
                None if to.is_empty() => {}
                _ => {}
            }
        }
    }
    wrong
}

#[test]
fn rig_folders_import_only_the_folders_before_them() {
    let graph = ModuleGraph::of_crate(&workspace_root().join("crates/rig/src"));
    // Not blind: rig's upper folders do import its lower ones.
    assert!(
        graph
            .edges
            .iter()
            .any(|(from, to)| from.starts_with("local::")
                && to.iter().any(|t| t.starts_with("base"))),
        "the scan found no import from rig's local folder into base: the scanner is broken"
    );
    let wrong = imports_up_the_folders(&graph);
    assert!(
        wrong.is_empty(),
        "rig's layers are {RIG_ORDER:?}, each importing only those before it; these imports go the other way:\n{}",
        wrong.join("\n")
    );
}

/// A crate of these files (path, source) in a temporary directory, scanned.
fn graph_of(files: &[(&str, &str)]) -> ModuleGraph {
    let dir = tempfile::tempdir().unwrap();
    for (path, source) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    ModuleGraph::of_crate(dir.path())
}

/// The positive control of the two checks above: the scanner sees each kind
/// of import it claims to (a `crate::` path, a `crate::{..}` group, `super::`
/// from a file and from an inline module), ignores the same paths in
/// comments and strings, and the checks flag a loop and an upward import.
/// Without it, a regex that matched nothing would pass both.
#[test]
fn the_scanner_finds_loops_and_upward_imports_and_ignores_prose() {
    let graph = graph_of(&[
        ("lib.rs", "mod a; mod b; mod c; mod d;"),
        ("a.rs", "use crate::b::Thing;"),
        ("b.rs", "use crate::{c::X, d};\nfn f() { super::a::g(); }"),
        (
            "c.rs",
            "// use crate::a::Y;\nconst S: &str = \"crate::a::Y super::a\";",
        ),
        ("d.rs", "mod tests {\n    use super::super::a::Z;\n}"),
    ]);
    let edges = |m: &str| -> Vec<&str> {
        graph
            .edges
            .get(m)
            .map(|t| t.iter().map(String::as_str).collect())
            .unwrap_or_default()
    };
    assert_eq!(edges("a"), ["b"]);
    assert_eq!(edges("b"), ["a", "c", "d"]);
    assert_eq!(edges("c"), Vec::<&str>::new(), "prose added an edge");
    assert_eq!(edges("d"), ["a"]);
    assert_eq!(graph.cycles(), [["a", "b", "d"]]);

    let rig_like = graph_of(&[
        ("lib.rs", "pub mod base; pub mod local;"),
        ("base/mod.rs", "pub mod x;"),
        ("base/x.rs", "use crate::local::y::Z;"),
        ("local/mod.rs", "pub mod y;"),
        ("local/y.rs", "use crate::base::x::W;"),
    ]);
    assert_eq!(imports_up_the_folders(&rig_like), ["base::x -> local::y"]);
}

/// The workspace's packages as `cargo metadata` reports them.
fn packages() -> Vec<Value> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"].as_array().unwrap().clone()
}

fn dependencies_of<'a>(packages: &'a [Value], name: &str) -> Vec<(&'a str, &'a str)> {
    let package = packages
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name} in the workspace"));
    package["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["kind"].as_str().unwrap_or("normal"),
            )
        })
        .collect()
}

#[test]
fn crates_depend_only_downwards() {
    let packages = packages();
    let harness = ["rig", "rig-k8s", "rig-bench"];
    // The Envoy module runs inside Envoy: the key scheme, nothing of
    // keygate's service (its runtime, its Vault client) and no harness.
    let module = ["keygate", "rig", "rig-k8s", "rig-bench"];
    let workspace_crates = [
        "workspace-hack",
        "apikey",
        "keygate",
        "keygate-config",
        "keygate-envoy",
        "keyrig-scenario",
        "log-throttle",
        "manifests",
        "rig",
        "rig-k8s",
        "rig-bench",
    ];
    // Not blind: the metadata names keygate's own dependency on apikey.
    assert!(
        dependencies_of(&packages, "keygate")
            .iter()
            .any(|(d, _)| *d == "apikey"),
        "cargo metadata lists no apikey under keygate: the check reads the wrong field"
    );
    let mut wrong = Vec::new();
    for (name, forbidden) in [
        ("apikey", &harness[..]),
        ("keygate", &harness[..]),
        // Below keygate: what the fuzz targets build.
        ("keygate-config", &module[..]),
        ("keygate-envoy", &module[..]),
        // Under keygate and the module, std only: no workspace crate.
        ("log-throttle", &workspace_crates[..]),
        ("rig", &harness[1..]),
        // The bench's load generator and upstream, built optimized beside
        // the keygate it measures: no workspace crate at all.
        ("keyrig-bench-peer", &workspace_crates[..]),
        // The floor under keygate's module: nothing of keygate's in it.
        ("keyrig-bench-module", &workspace_crates[..]),
    ] {
        for (dependency, kind) in dependencies_of(&packages, name) {
            if !forbidden.contains(&dependency) {
                continue;
            }
            wrong.push(format!("{name} depends on {dependency} ({kind})"));
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies that point up the layers:\n{}",
        wrong.join("\n")
    );
}

/// ARCHITECTURE.md: only xtask and the e2e crate depend on workspace-hack,
/// so building keygate (or apikey, rig) alone compiles none of the union of
/// features it pins (no Kubernetes client).
#[test]
fn only_xtask_and_the_e2e_crate_depend_on_the_workspace_hack() {
    let packages = packages();
    let mut dependents: Vec<&str> = packages
        .iter()
        .filter(|p| {
            p["dependencies"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["name"] == "workspace-hack"))
        })
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    dependents.sort();
    assert_eq!(dependents, ["keyrig-e2e", "xtask"]);
}

#[test]
fn rig_keeps_the_workspace_rust_version() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap())
            .unwrap();
    let workspace = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    let packages = packages();
    let rig = packages.iter().find(|p| p["name"] == "rig").unwrap();
    assert_eq!(
        rig["rust_version"].as_str(),
        Some(workspace),
        "rig raises the workspace's rust-version: what needs the newer Rust belongs in rig-k8s"
    );
}
