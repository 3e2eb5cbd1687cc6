//! Builds through cargo's JSON messages: the artifacts a run needs (the
//! keygate binary, the e2e test executables) and what cargo had to compile
//! to make them.
//!
//! Every build a run makes shares one feature set with the xtask build
//! that started it (`crates/workspace-hack`, see docs/tools.md), so a
//! dependency compiled again here means the feature sets drifted apart:
//! the count is printed, so the drift shows in the first run after it.
//! "Again" is judged by what cargo had compiled before this build: a
//! package version with no unit in `deps/` yet (on a cold machine, what
//! only the e2e tests use) is compiled for the first time, not again. By
//! name and version: the e2e tests' pem 3 (jsonwebtoken's) is not drift
//! from xtask's pem 4 (kube's).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rig::say;

/// One `compiler-artifact` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Artifact {
    /// The package's name (`package_id`'s `#name@version` part, or the
    /// target's crate name when the id has none).
    pub(crate) package: String,
    /// The package's version, where the id names it.
    pub(crate) version: Option<String>,
    /// The target's name (`keygate`, `api_keys`, ...).
    pub(crate) target: String,
    /// Built as a test harness (`cargo test`'s profile).
    pub(crate) test: bool,
    /// The executable, for bins and tests.
    pub(crate) executable: Option<PathBuf>,
    /// Every file the target produced (a cdylib's `.so` is only here).
    pub(crate) filenames: Vec<PathBuf>,
    /// Up to date before this build (nothing compiled for it).
    pub(crate) fresh: bool,
    /// A workspace member (`path+file://` package id), not a dependency.
    pub(crate) local: bool,
}

/// What one cargo invocation built.
#[derive(Debug, Default)]
pub(crate) struct Built {
    pub(crate) artifacts: Vec<Artifact>,
}

impl Built {
    /// Dependencies this build compiled that had been compiled before,
    /// by `known` (the `<name>-<version>` of every registry package with a
    /// unit in `deps/` before this build): the feature-set drift.
    pub(crate) fn compiled_again<'a>(&'a self, known: &BTreeSet<String>) -> Vec<&'a str> {
        let mut names: Vec<&str> = self
            .artifacts
            .iter()
            .filter(|a| !a.fresh && !a.local)
            .filter(|a| {
                a.version
                    .as_ref()
                    .is_some_and(|v| known.contains(&format!("{}-{v}", a.package)))
            })
            .map(|a| a.package.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Dependencies (not workspace members) this build compiled.
    pub(crate) fn compiled_dependencies(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .artifacts
            .iter()
            .filter(|a| !a.fresh && !a.local)
            .map(|a| a.package.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Every artifact this build compiled (members and dependencies).
    pub(crate) fn compiled(&self) -> usize {
        self.artifacts.iter().filter(|a| !a.fresh).count()
    }

    /// The shared library of `package`'s cdylib target `target`
    /// (`lib<target>.so`).
    pub(crate) fn cdylib(&self, package: &str, target: &str) -> Option<PathBuf> {
        let file = format!("lib{target}.so");
        self.artifacts
            .iter()
            .filter(|a| a.package == package && a.target == target && !a.test)
            .flat_map(|a| &a.filenames)
            .find(|f| f.file_name().is_some_and(|n| n == file.as_str()))
            .cloned()
    }

    /// The executable of `package`'s bin target `target`.
    pub(crate) fn bin(&self, package: &str, target: &str) -> Option<PathBuf> {
        self.artifacts
            .iter()
            .find(|a| a.package == package && a.target == target && !a.test)
            .and_then(|a| a.executable.clone())
    }
}

/// Runs cargo (`args` without `--message-format`) in the workspace root,
/// its diagnostics and progress on stderr as usual, and reads the
/// artifacts from its JSON messages. Says what it builds, then how long it
/// took and what it compiled.
pub(crate) fn cargo_build(args: &[&str], what: &str) -> Result<Built> {
    say!("{what}: cargo {}", args.join(" "));
    let profile_dir = if args.contains(&"--release") {
        "release"
    } else {
        "debug"
    };
    let known = compiled_before(
        &rig::base::paths::target_dir()
            .join(profile_dir)
            .join("deps"),
    );
    let started = Instant::now();
    let mut command = crate::runner::cargo();
    crate::runner::plain_output_unless_interactive(&mut command);
    let output = command
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(rig::base::paths::workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo for {what}"))?;
    if !output.status.success() {
        bail!("{what} failed: see cargo's output above");
    }
    let built = parse_messages(&String::from_utf8_lossy(&output.stdout))?;
    let deps = built.compiled_again(&known);
    let first_time = built.compiled_dependencies().len() - deps.len();
    let mut drift = if first_time == 0 {
        String::new()
    } else {
        format!(" ({first_time} dependencies for the first time)")
    };
    if !deps.is_empty() {
        // Not an error: the build is right, only slower than it should be.
        drift += &format!(
            "; {} dependencies compiled again with other features than xtask's build ({}): regenerate crates/workspace-hack (docs/tools.md)",
            deps.len(),
            deps.join(", ")
        );
    }
    say!(
        "{what}: done in {}, {} crates compiled{drift}",
        rig::base::progress::secs(started.elapsed()),
        built.compiled()
    );
    Ok(built)
}

/// The registry packages cargo has compiled units of in `deps` (its
/// `<target>/<profile>/deps/`), as `<name>-<version>`: the directory each
/// unit's dep-info file (`<crate>-<hash>.d`) names its first source under
/// (`.../registry/src/<index>/pem-4.0.0/src/lib.rs`). Empty when there is
/// no such directory yet (a cold build).
fn compiled_before(deps: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(deps) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "d" {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            registry_package(text.lines().next()?).map(str::to_owned)
        })
        .collect()
}

/// `<out>.d: /h/.cargo/registry/src/index.crates.io-x/pem-4.0.0/src/lib.rs ...`
/// -> `pem-4.0.0`; `None` for a workspace or git source.
fn registry_package(dep_info_line: &str) -> Option<&str> {
    let (_, sources) = dep_info_line.split_once(": ")?;
    let first = sources.split(' ').next()?;
    let (_, below) = first.split_once("/registry/src/")?;
    let mut parts = below.split('/');
    let _index = parts.next()?;
    parts.next()
}

/// The `compiler-artifact` messages of cargo's JSON output.
pub(crate) fn parse_messages(messages: &str) -> Result<Built> {
    let mut built = Built::default();
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).context("reading cargo's JSON messages")?;
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let id = message["package_id"].as_str().unwrap_or_default();
        let target = message["target"]["name"].as_str().unwrap_or_default();
        built.artifacts.push(Artifact {
            package: package_name(id).unwrap_or(target).to_owned(),
            version: id
                .rsplit_once('#')
                .and_then(|(_, fragment)| fragment.split_once('@'))
                .map(|(_, version)| version.to_owned()),
            target: target.to_owned(),
            test: message["profile"]["test"] == true,
            executable: message["executable"].as_str().map(PathBuf::from),
            filenames: message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect(),
            fresh: message["fresh"] == true,
            local: id.starts_with("path+"),
        });
    }
    Ok(built)
}

/// `registry+https://...#serde@1.0.1` -> `serde`;
/// `path+file:///w/crates/keygate#0.1.0` -> `keygate` (the last path
/// segment when the fragment holds only the version).
fn package_name(id: &str) -> Option<&str> {
    let (url, fragment) = id.rsplit_once('#')?;
    match fragment.split_once('@') {
        Some((name, _)) => Some(name),
        None => url.rsplit('/').next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#serde@1.0.229","target":{"name":"serde","kind":["lib"]},"profile":{"test":false},"executable":null,"fresh":true}
{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#hyper@1.8.0","target":{"name":"hyper","kind":["lib"]},"profile":{"test":false},"executable":null,"fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/keygate#0.1.0","target":{"name":"keygate","kind":["bin"]},"profile":{"test":false},"executable":"/w/target/debug/keygate","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/tests#keyrig-e2e@0.1.0","target":{"name":"api_keys","kind":["test"]},"profile":{"test":true},"executable":"/w/target/debug/deps/api_keys-1","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/keygate-envoy#0.1.0","target":{"name":"keygate_envoy","kind":["cdylib"]},"profile":{"test":false},"filenames":["/w/target/debug/libkeygate_envoy.so"],"executable":null,"fresh":true}
{"reason":"build-finished","success":true}"#;

    #[test]
    fn artifacts_and_what_was_compiled_are_read_from_cargos_messages() {
        let built = parse_messages(MESSAGES).unwrap();
        assert_eq!(built.artifacts.len(), 5);
        assert_eq!(built.compiled(), 2);
        assert_eq!(built.compiled_dependencies(), vec!["hyper"]);
        let before: BTreeSet<String> = ["hyper-1.8.0".to_owned()].into();
        assert_eq!(built.compiled_again(&before), vec!["hyper"]);
        assert!(
            built.compiled_again(&BTreeSet::new()).is_empty(),
            "a dependency never compiled before is not drift"
        );
        assert_eq!(
            built.bin("keygate", "keygate"),
            Some(PathBuf::from("/w/target/debug/keygate"))
        );
        assert_eq!(
            built.bin("keyrig-e2e", "api_keys"),
            None,
            "a test is not a bin"
        );
        assert_eq!(
            built.cdylib("keygate-envoy", "keygate_envoy"),
            Some(PathBuf::from("/w/target/debug/libkeygate_envoy.so"))
        );
        assert_eq!(built.cdylib("keygate", "keygate"), None);
        let test = &built.artifacts[3];
        assert_eq!(
            (test.package.as_str(), test.test, test.local),
            ("keyrig-e2e", true, true)
        );
    }

    #[test]
    fn package_names_come_from_either_id_form() {
        assert_eq!(
            package_name("registry+https://x#serde_json@1.0.1"),
            Some("serde_json")
        );
        assert_eq!(
            package_name("path+file:///w/crates/keygate#0.1.0"),
            Some("keygate")
        );
        assert_eq!(package_name("no fragment"), None);
    }

    #[test]
    fn compiled_packages_are_named_with_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let unit = |file: &str, source: &str| {
            std::fs::write(
                dir.path().join(file),
                format!("{}/{file}: {source} /x/other.rs\n\n", dir.path().display()),
            )
            .unwrap();
        };
        unit(
            "pem-01.d",
            "/h/.cargo/registry/src/index.crates.io-1949/pem-4.0.0/src/lib.rs",
        );
        unit(
            "tokio_macros-02.d",
            "/h/.cargo/registry/src/index.crates.io-1949/tokio-macros-2.6.0/src/lib.rs",
        );
        unit("keygate-03.d", "/w/crates/keygate/src/lib.rs");
        std::fs::write(dir.path().join("libpem-01.rlib"), "").unwrap();
        assert_eq!(
            compiled_before(dir.path()),
            ["pem-4.0.0".to_owned(), "tokio-macros-2.6.0".to_owned()].into()
        );
        assert!(compiled_before(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn another_version_of_a_compiled_package_is_not_drift() {
        let messages = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#pem@3.0.6","target":{"name":"pem","kind":["lib"]},"profile":{"test":false},"executable":null,"fresh":false}"#;
        let built = parse_messages(messages).unwrap();
        assert!(
            built
                .compiled_again(&["pem-4.0.0".to_owned()].into())
                .is_empty()
        );
        assert_eq!(
            built.compiled_again(&["pem-3.0.6".to_owned()].into()),
            vec!["pem"]
        );
    }
}
