//! Bad scenario input: each broken copy of `scenarios/` must make
//! `rig::local::up` fail with the file, the field and the fix, before
//! anything starts (or, for a policy only Vault can judge, at apply time),
//! and leave no process of that run behind.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use rig::local::LocalOptions;

/// A broken scenario: what to change, and what the error must say.
struct Broken {
    name: &'static str,
    file: &'static str,
    edit: fn(&str) -> String,
    /// Phrases the error must contain (file, field, fix).
    expect: &'static [&'static str],
    /// Whether Vault is started before the error (the policy case).
    starts_vault: bool,
}

fn cases() -> Vec<Broken> {
    vec![
        Broken {
            name: "malformed values file",
            file: "vault/setup.yaml",
            edit: |text| text.replacen("token_ttl: 1h", "token_ttl: soon", 1),
            expect: &[
                "setup.yaml",
                "token_ttl",
                "\"soon\" is not a duration like 1h",
            ],
            starts_vault: false,
        },
        Broken {
            name: "policy Vault rejects",
            file: "vault/policies/api-portal-policy.hcl",
            edit: |_| "path \"{{ mount }}/data/*\" { capabilities = [\"read\" }\n".into(),
            expect: &["api-portal-policy.hcl", "policies[].file", "fix the HCL"],
            starts_vault: true,
        },
        Broken {
            name: "OpenAPI document without groupId",
            file: "apis/billing-api.yaml",
            edit: |text| {
                text.lines()
                    .filter(|l| !l.starts_with("groupId:"))
                    .collect::<Vec<_>>()
                    .join("\n")
            },
            expect: &["billing-api.yaml has no groupId", "add `groupId: <name>`"],
            starts_vault: false,
        },
        Broken {
            // Went into Vault API paths (`sys/mounts/../sys`) unchecked.
            name: "KV mount outside its path",
            file: "vault/setup.yaml",
            edit: |text| text.replacen("kv_mount: api-portal-keys", "kv_mount: ../sys", 1),
            expect: &[
                "setup.yaml",
                "kv_mount: \"../sys\"",
                "segments of letters, digits",
            ],
            starts_vault: false,
        },
        Broken {
            name: "OpenAPI document without paths",
            file: "apis/billing-api.yaml",
            edit: |text| text.split("\npaths:").next().unwrap_or(text).to_owned() + "\n",
            expect: &["billing-api.yaml", "paths is empty or missing"],
            starts_vault: false,
        },
        Broken {
            name: "duplicate route prefix",
            file: "apis/billing-api.yaml",
            edit: |text| {
                let mut out = String::new();
                let mut in_servers = false;
                for line in text.lines() {
                    in_servers =
                        line.starts_with("servers:") || (in_servers && line.starts_with(' '));
                    if in_servers && line.trim_start().starts_with("- url:") {
                        out.push_str("  - url: /animal-rescue\n");
                    } else {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                out
            },
            expect: &["both serve /animal-rescue/", "servers[0].url"],
            starts_vault: false,
        },
    ]
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Processes whose working directory is under `dir` (every component runs
/// in its run directory), as `pid (name)`.
fn processes_under(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Zombies are gone in all but name.
            let state = stat.rsplit(')').next()?.split_whitespace().next()?;
            (cwd.starts_with(dir) && state != "Z").then(|| {
                let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                format!("{pid} ({})", name.trim())
            })
        })
        .collect()
}

/// pids listed in any `pids.json` under `runs` that still run.
fn recorded_pids_alive(runs: &Path) -> Vec<String> {
    let mut alive = Vec::new();
    for run in std::fs::read_dir(runs).into_iter().flatten().flatten() {
        let file = run.path().join("pids.json");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for c in doc["components"].as_array().into_iter().flatten() {
            if let Some(pid) = c["pid"].as_i64() {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit(')')
                    .next()
                    .and_then(|s| s.split_whitespace().next())
                    == Some("Z");
                if !stat.is_empty() && !zombie {
                    alive.push(format!("{pid} ({})", c["name"]));
                }
            }
        }
    }
    alive
}

pub async fn run(base: &LocalOptions) -> Result<String> {
    let mut summary = Vec::new();
    for broken in cases() {
        let dir = tempfile::tempdir()?;
        let scenarios = dir.path().join("scenarios");
        let runs: PathBuf = dir.path().join("runs");
        copy_dir(&base.scenarios_dir.join("apis"), &scenarios.join("apis"))?;
        copy_dir(&base.scenarios_dir.join("vault"), &scenarios.join("vault"))?;
        copy_dir(&base.scenarios_dir.join("modes"), &scenarios.join("modes"))?;
        let target = scenarios.join(broken.file);
        let text = std::fs::read_to_string(&target)
            .with_context(|| format!("reading {}", target.display()))?;
        let edited = (broken.edit)(&text);
        ensure!(
            edited != text,
            "{}: the edit changed nothing in {}",
            broken.name,
            broken.file
        );
        std::fs::write(&target, edited)?;

        let mut opts = base.clone();
        opts.scenarios_dir = scenarios;
        opts.runs_dir = runs.clone();
        let err = match rig::local::up(&opts).await {
            Ok(_) => anyhow::bail!("{}: the environment came up from broken input", broken.name),
            Err(err) => format!("{err:#}"),
        };
        for phrase in broken.expect {
            ensure!(
                err.contains(phrase),
                "{}: the error does not say {phrase:?}: {err}",
                broken.name
            );
        }
        // Run directories, not the `latest` symlink beside them.
        let run_dirs = std::fs::read_dir(&runs)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .count()
            })
            .unwrap_or(0);
        if broken.starts_vault {
            ensure!(
                run_dirs == 1,
                "{}: expected one run directory, found {run_dirs}",
                broken.name
            );
        } else {
            ensure!(
                run_dirs == 0,
                "{}: a run directory was created, so something started before the input was checked",
                broken.name
            );
        }
        let left = processes_under(&runs);
        ensure!(
            left.is_empty(),
            "{}: still running after the failure: {left:?}",
            broken.name
        );
        let recorded = recorded_pids_alive(&runs);
        ensure!(
            recorded.is_empty(),
            "{}: pids.json lists live processes: {recorded:?}",
            broken.name
        );
        summary.push(format!(
            "{}: {}",
            broken.name,
            if broken.starts_vault {
                "failed at apply, bao stopped"
            } else {
                "failed before start"
            }
        ));
    }
    Ok(summary.join("; "))
}
