//! .github/workflows/e2e.yml: what issue 12 found wrong with it stays fixed
//! (Helm pinned from env/k8s.toml, the offline tools installed before the
//! kind e2e step, no secrets/ uploaded, every action pinned by commit), and
//! the pinned zizmor finds nothing of medium severity or above.

mod common;

use std::process::Command;

use common::root;
use serde_json::Value;

const WORKFLOW: &str = ".github/workflows/e2e.yml";

fn workflow() -> Value {
    let path = root().join(WORKFLOW);
    let documents = manifests::read_yaml_file(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(documents.len(), 1, "{WORKFLOW}: one document");
    documents[0].clone()
}

fn jobs(workflow: &Value) -> Vec<(&str, &[Value])> {
    workflow["jobs"]
        .as_object()
        .expect("jobs")
        .iter()
        .map(|(name, job)| {
            let steps = job["steps"]
                .as_array()
                .unwrap_or_else(|| panic!("jobs.{name}.steps"));
            (name.as_str(), steps.as_slice())
        })
        .collect()
}

fn uses(step: &Value) -> Option<&str> {
    step.get("uses").and_then(Value::as_str)
}

fn run(step: &Value) -> &str {
    step.get("run").and_then(Value::as_str).unwrap_or("")
}

fn position(steps: &[Value], what: &str, found: impl Fn(&Value) -> bool) -> usize {
    steps
        .iter()
        .position(found)
        .unwrap_or_else(|| panic!("{WORKFLOW}: no step {what}"))
}

#[test]
fn helm_is_installed_at_the_env_k8s_toml_pin() {
    let pins = manifests::files::K8sPins::load(&root().join("env/k8s.toml"))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(pins.helm.major(), Some(manifests::files::HelmPin::MAJOR));
    let workflow = workflow();
    let steps = jobs(&workflow)
        .into_iter()
        .find(|(name, _)| *name == "kind-e2e")
        .expect("jobs.kind-e2e")
        .1;
    let helm = position(steps, "with azure/setup-helm", |s| {
        uses(s).is_some_and(|u| u.to_ascii_lowercase().starts_with("azure/setup-helm@"))
    });
    // The version comes from the step that reads env/k8s.toml, not a copy.
    let version = steps[helm]["with"]["version"]
        .as_str()
        .expect("azure/setup-helm has a version input (its default is the latest Helm, 4)");
    let output = version
        .strip_prefix("${{ steps.")
        .and_then(|v| v.strip_suffix(" }}"))
        .unwrap_or_else(|| panic!("helm version {version:?} is not read from a step's output"));
    let (step_id, key) = output
        .split_once(".outputs.")
        .unwrap_or_else(|| panic!("{output:?}"));
    let reader = position(steps, &format!("with id {step_id}"), |s| {
        s.get("id").and_then(Value::as_str) == Some(step_id)
    });
    assert!(reader < helm, "the pins are read before Helm is installed");
    let script = run(&steps[reader]);
    assert!(script.contains("env/k8s.toml"), "{script}");
    assert!(
        script.contains(&format!("print(f\"{key}=v{{pins['helm']['version']}}\")")),
        "step {step_id} does not print {key} from env/k8s.toml's [helm] version:\n{script}"
    );
}

#[test]
fn the_kind_job_installs_the_offline_tools_before_the_e2e_step() {
    let workflow = workflow();
    let steps = jobs(&workflow)
        .into_iter()
        .find(|(name, _)| *name == "kind-e2e")
        .expect("jobs.kind-e2e")
        .1;
    let tools = position(
        steps,
        "running `cargo xtask tools --profile offline`",
        |s| run(s).trim() == "cargo xtask tools --profile offline",
    );
    let e2e = position(steps, "running the kind e2e suite", |s| {
        run(s).contains("cargo xtask e2e --profile kind")
    });
    assert!(tools < e2e, "tools at step {tools}, e2e at step {e2e}");
}

/// Every upload leaves out every secrets/ directory, and runs only after a
/// secret scan of what it uploads passed.
#[test]
fn uploads_exclude_secrets_and_follow_a_passing_scan() {
    let workflow = workflow();
    let mut uploads = 0;
    for (job, steps) in jobs(&workflow) {
        for (i, step) in steps.iter().enumerate() {
            if !uses(step).is_some_and(|u| u.starts_with("actions/upload-artifact@")) {
                continue;
            }
            uploads += 1;
            let paths: Vec<&str> = step["with"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("jobs.{job}.steps[{i}]: no path"))
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            assert!(
                paths.contains(&"!target/rig/**/secrets/**"),
                "jobs.{job}.steps[{i}] uploads {paths:?} without excluding secrets/"
            );
            for path in paths.iter().filter(|p| !p.starts_with('!')) {
                assert!(
                    path.starts_with("target/rig"),
                    "jobs.{job}.steps[{i}] uploads {path}, which the scan does not cover"
                );
            }
            let scan = position(&steps[..i], "scanning the upload", |s| {
                run(s).trim() == "cargo xtask scan-uploads"
            });
            let id = steps[scan]["id"].as_str().expect("the scan step has an id");
            assert_eq!(
                steps[scan]["if"], "always()",
                "jobs.{job}: scan even after a failure"
            );
            assert_eq!(
                step["if"].as_str(),
                Some(format!("always() && steps.{id}.outcome == 'success'").as_str()),
                "jobs.{job}.steps[{i}]"
            );
        }
    }
    assert_eq!(uploads, 2, "one upload per job");
}

/// `uses: owner/repo@<40 hex> # vX.Y.Z`: a tag can be moved, a commit cannot.
#[test]
fn every_action_is_pinned_by_commit_sha() {
    let text = std::fs::read_to_string(root().join(WORKFLOW)).unwrap();
    let mut seen = 0;
    for (n, line) in text.lines().enumerate() {
        let Some(rest) = line
            .trim_start()
            .trim_start_matches("- ")
            .strip_prefix("uses:")
        else {
            continue;
        };
        seen += 1;
        let (reference, comment) = rest.split_once('#').unwrap_or((rest, ""));
        let (action, sha) = reference
            .trim()
            .split_once('@')
            .unwrap_or_else(|| panic!("line {}: {line}", n + 1));
        assert!(
            sha.len() == 40
                && sha
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "line {}: {action} is pinned to {sha:?}, not a commit SHA",
            n + 1
        );
        assert!(
            comment.trim().starts_with('v'),
            "line {}: say which tag {sha} is in a trailing comment",
            n + 1
        );
    }
    // The parsed workflow agrees with the line scan.
    let workflow = workflow();
    let parsed = jobs(&workflow)
        .iter()
        .flat_map(|(_, steps)| steps.iter())
        .filter(|s| uses(s).is_some())
        .count();
    assert_eq!(seen, parsed);
    assert!(seen >= 7, "{seen} uses: lines");
}

#[test]
fn checkouts_do_not_persist_credentials() {
    let workflow = workflow();
    for (job, steps) in jobs(&workflow) {
        for step in steps {
            if uses(step).is_some_and(|u| u.starts_with("actions/checkout@")) {
                assert_eq!(
                    step["with"]["persist-credentials"],
                    Value::Bool(false),
                    "jobs.{job}"
                );
            }
        }
    }
}

/// The pinned zizmor (env/tools.toml), offline, on every workflow: no
/// finding of medium severity or above.
#[test]
fn zizmor_finds_nothing_of_medium_severity_or_above() {
    let zizmor = common::tool("zizmor");
    let output = Command::new(&zizmor)
        .args(["--offline", "--min-severity", "medium", "--no-progress"])
        .arg(root().join(".github/workflows"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", zizmor.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "zizmor ({}) exited with {}:\n{report}",
        zizmor.display(),
        output.status
    );
    assert!(report.contains("No findings to report"), "{report}");
}
