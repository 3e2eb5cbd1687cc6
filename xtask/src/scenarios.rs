//! `cargo xtask scenarios`: the scenario data (API groups, Vault setup,
//! Kubernetes overlays) and the e2e assertion groups that exercise it.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

pub fn print() -> Result<()> {
    let root = rig::base::paths::workspace_root();
    let relative = |p: &Path| p.strip_prefix(&root).unwrap_or(p).display().to_string();

    let groups = rig::contract::scenario::load_default_apis()?;
    println!("API groups (scenarios/apis/):");
    for group in &groups {
        println!(
            "  {:<22} route {:<18} {}",
            group.group_id,
            group.route_prefix,
            relative(&group.file)
        );
    }

    let ids: Vec<String> = groups.iter().map(|g| g.group_id.clone()).collect();
    let setup = rig::vault::setup::load_default(&ids)?;
    println!("\nVault setup ({}):", relative(&setup.file));
    println!("  kv-v2 mount   {}", setup.kv_mount);
    println!("  keygate role  {}", setup.keygate_role);
    let policies: Vec<&str> = setup.policies.iter().map(|p| p.name.as_str()).collect();
    println!("  policies      {}", policies.join(", "));
    for role in &setup.roles {
        println!(
            "  role {:<20} policies {}",
            role.name,
            role.policies.join(", ")
        );
    }

    let k8s = rig::base::paths::scenarios_dir().join("k8s");
    let mut overlays: Vec<String> = std::fs::read_dir(&k8s)
        .with_context(|| format!("reading {}", k8s.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("kustomization.yaml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "base")
        .collect();
    overlays.sort();
    println!("\nKubernetes overlays (scenarios/k8s/, over base/):");
    for overlay in overlays {
        println!("  {overlay}");
    }

    println!("\nAssertion groups (tests/, run by `cargo xtask e2e`):");
    for group in assertion_groups(&root.join("tests"))? {
        println!(
            "  {:<12} {:>2} test fns  {}",
            group.name, group.cases, group.summary
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default, rename = "test")]
    tests: Vec<TestTarget>,
}

#[derive(Deserialize)]
struct TestTarget {
    name: String,
    path: String,
}

pub(crate) struct AssertionGroup {
    pub(crate) name: String,
    /// Test functions run by default (an rstest function may be several cases).
    cases: usize,
    /// The first line of the file's `//!` doc comment.
    summary: String,
}

/// One group per `[[test]]` target of the e2e crate: the target, its file
/// and the group its cases are recorded under share one name.
pub(crate) fn assertion_groups(tests_dir: &Path) -> Result<Vec<AssertionGroup>> {
    let manifest_path = tests_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest: Manifest = toml::from_str(&text)
        .with_context(|| format!("{} is not a Cargo manifest", manifest_path.display()))?;
    let mut groups = Vec::new();
    for target in manifest.tests {
        let file = tests_dir.join(&target.path);
        let source = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let lines: Vec<&str> = source.lines().map(str::trim).collect();
        // Cases that run by default; `#[ignore]`d ones are the harness's own checks.
        let cases = lines
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                (**l == "#[test]" || l.starts_with("#[tokio::test"))
                    && !lines
                        .get(i + 1)
                        .is_some_and(|next| next.starts_with("#[ignore"))
            })
            .count();
        let summary = lines
            .iter()
            .find_map(|l| l.strip_prefix("//!"))
            .map(|l| l.trim().to_owned())
            .unwrap_or_default();
        groups.push(AssertionGroup {
            name: target.name,
            cases,
            summary,
        });
    }
    Ok(groups)
}
