//! The harness checking itself, as the last step of `cargo xtask test`:
//! runs `cargo xtask e2e` on the deliberately failing case in
//! `tests/selfcheck.rs`, with output captured (so not a terminal), and
//! checks what a person would get from a real failure:
//!
//! - the run fails;
//! - `junit.xml` holds the failure, naming what was expected, what was last
//!   seen and where the diagnostics are;
//! - the diagnostics bundle holds each component's log tail, Vault audit
//!   entries of the case, Envoy's `/stats` and `/clusters`, keygate's `/metrics`;
//! - the API key the case's wait observed is redacted, and the secret scan
//!   checked registered secrets and found none in the run's files;
//! - the captured output holds no control characters (no spinner, no colour).

use std::path::Path;

use anyhow::{Context, Result};
use rig::contract::report::Report;
use rig::say;

/// The `#[ignore]`d case of `tests/selfcheck.rs`.
const CASE: &str = "selfcheck_wrong_expected_value";
const GROUP: &str = "selfcheck";
/// Components of the local profile, each with a log in the bundle (and
/// the catalog's default gateway, whose Envoy admin the bundle reads).
const COMPONENTS: [&str; 3] = ["bao", "echo", "keygate"];

/// Runs the self-check; `Ok(false)` lists what was wrong.
pub fn run() -> Result<bool> {
    say!("harness self-check: a deliberately failing case must produce a useful failure");
    let report_dir = rig::base::paths::rig_dir().join("selfcheck-reports");
    if report_dir.exists() {
        std::fs::remove_dir_all(&report_dir)
            .with_context(|| format!("clearing {}", report_dir.display()))?;
    }
    let run = crate::runner::run_nested("the self-check's e2e run", |command| {
        command
            .args([
                "e2e",
                "--mode",
                "inline",
                "--filter",
                CASE,
                "--include-ignored",
                "--report-dir",
            ])
            .arg(&report_dir)
            // Only non-terminal detection counts here: `CI` must not mask it.
            .env_remove("CI")
            .env_remove("GITHUB_STEP_SUMMARY");
    })?;
    let problems = check(run.ok, &run.text, &report_dir);
    Ok(crate::runner::verdict(
        "harness self-check",
        "failure reported with expected/last seen, bundle complete, 0 secrets found, plain output",
        &run.text,
        &problems,
    ))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

fn check(succeeded: bool, output: &str, report_dir: &Path) -> Vec<String> {
    let mut problems = Problems::default();
    problems.expect(
        !succeeded,
        "the e2e run with a failing case exited 0".into(),
    );
    let controls: Vec<char> = output
        .chars()
        .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
        .collect();
    problems.expect(
        controls.is_empty(),
        format!("non-terminal output holds control characters {controls:?}"),
    );

    let report: Report = match read(&report_dir.join(rig::contract::report::REPORT_FILE))
        .and_then(|text| serde_json::from_str(&text).map_err(|err| format!("report.json: {err}")))
    {
        Ok(report) => report,
        Err(problem) => {
            problems.0.push(problem);
            return problems.0;
        }
    };
    let Some(case) = report
        .cases
        .iter()
        .find(|c| c.record.name == CASE && c.record.group == GROUP)
    else {
        problems
            .0
            .push(format!("report.json has no case {GROUP}/{CASE}"));
        return problems.0;
    };
    let record = &case.record;
    problems.expect(
        record.status == rig::contract::case::Status::Failed,
        format!("the case is {:?}, not failed", record.status),
    );
    problems.expect(
        record
            .expected
            .as_deref()
            .is_some_and(|e| e.contains("418")),
        format!(
            "the case does not say what it expected: {:?}",
            record.expected
        ),
    );
    let last_seen = record.last_seen.as_deref().unwrap_or_default();
    problems.expect(
        last_seen.starts_with("200 for key ") && last_seen.ends_with(rig::base::redact::REDACTED),
        format!("last seen should be the status with the key redacted, is {last_seen:?}"),
    );
    match &report.secret_scan {
        Some(scan) => {
            problems.expect(
                scan.hits.is_empty(),
                format!(
                    "the secret scan found registered secrets in {:?}",
                    scan.hits
                ),
            );
            // Root token, unseal key, keygate's secret-id, the test's key and tokens.
            problems.expect(
                scan.secrets_checked >= 4,
                format!("only {} secrets were registered", scan.secrets_checked),
            );
        }
        None => problems.0.push("report.json has no secret scan".into()),
    }

    match read(&report_dir.join(rig::contract::report::JUNIT_FILE)) {
        Ok(junit) => {
            let failure = junit
                .find("<failure")
                .map(|at| &junit[at..])
                .unwrap_or_default();
            problems.expect(!failure.is_empty(), "junit.xml has no <failure>".into());
            for needle in [
                "expected: a valid key gets 418",
                "last seen: 200",
                "diagnostics: ",
            ] {
                problems.expect(
                    failure.contains(needle),
                    format!("junit.xml's failure does not say {needle:?}"),
                );
            }
            problems.expect(
                output.contains("diagnostics: ")
                    && output.contains(&format!("FAILED {GROUP}/{CASE}")),
                "the run's output does not name the failure and its bundle".into(),
            );
        }
        Err(problem) => problems.0.push(problem),
    }

    let bundle = report_dir
        .join(rig::local::diagnostics::DIAGNOSTICS_DIR)
        .join(record.id());
    let default_gateway = rig::contract::gateways::Catalog::load_default()
        .map(|c| c.default_gateway().name.clone())
        .unwrap_or_default();
    for component in COMPONENTS.iter().copied().chain([default_gateway.as_str()]) {
        let log = bundle.join("logs").join(format!("{component}.log"));
        problems.expect(
            std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
            format!(
                "the bundle has no tail of the {component} log ({})",
                log.display()
            ),
        );
    }
    match read(&bundle.join("vault-audit.jsonl")) {
        Ok(audit) => {
            let entries: Vec<serde_json::Value> = audit
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            problems.expect(
                !entries.is_empty() && entries.len() == audit.lines().count(),
                format!(
                    "vault-audit.jsonl should hold JSON entries, has {} of {} lines",
                    entries.len(),
                    audit.lines().count()
                ),
            );
            // The case wrote its key's record with a token: the entry is there, HMAC-ed.
            problems.expect(
                entries.iter().any(|e| {
                    e["request"]["path"]
                        .as_str()
                        .is_some_and(|p| p.contains("/data/animal-rescue-api/"))
                        && e["request"]["client_token"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("hmac-sha256:"))
                }),
                "vault-audit.jsonl lacks the case's HMAC-ed KV write".into(),
            );
        }
        Err(problem) => problems.0.push(problem),
    }
    for (file, needle) in [
        ("envoy-stats.txt", "cluster."),
        ("envoy-clusters.txt", "::"),
        ("keygate-metrics.txt", "# "),
    ] {
        let text = read(&bundle.join(file)).unwrap_or_default();
        problems.expect(
            text.contains(needle) && !text.starts_with("# GET"),
            format!("{file} in the bundle does not look fetched (no {needle:?})"),
        );
    }
    problems.0
}

/// What the self-check found wrong, in the order it looked.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn expect(&mut self, ok: bool, problem: String) {
        if !ok {
            self.0.push(problem);
        }
    }
}
