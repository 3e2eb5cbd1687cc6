//! A run's reports: `junit.xml`, `report.json` and a Markdown summary, plus
//! the records tests add besides their case: secret rotations with their
//! propagation times, and lint findings.
//!
//! Tests (and rig code running inside them) record rotations through
//! [`crate::contract::rotation::record`] and findings through [`record_finding`]; each
//! call writes one JSON file under `$KEYRIG_RUN_DIR/rotations/` or
//! `findings/`, the way `CaseGuard` writes `cases/`, and `cargo xtask e2e`
//! gathers them into the reports.
//!
//! ```no_run
//! rig::contract::report::record_finding(rig::contract::report::Finding::warning(
//!     "plaintext-credentials",
//!     "scenarios/k8s/inline/values.yaml",
//!     "gateway.adminKey holds a literal credential: use existingSecret",
//! ));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::base::redact::ScanResult;
use crate::contract::case::{CaseRecord, Status};

/// Something a check found in the files under test, e.g. plaintext
/// credentials in a values file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `error` or `warning`.
    pub severity: String,
    /// A short stable id, e.g. `plaintext-credentials`.
    pub rule: String,
    /// The file (and field, if any) it is about, e.g. `values.yaml: gateway.adminKey`.
    pub location: String,
    pub message: String,
}

impl Finding {
    pub fn warning(rule: &str, location: &str, message: &str) -> Self {
        Self::new("warning", rule, location, message)
    }

    pub fn error(rule: &str, location: &str, message: &str) -> Self {
        Self::new("error", rule, location, message)
    }

    fn new(severity: &str, rule: &str, location: &str, message: &str) -> Self {
        Self {
            severity: severity.to_owned(),
            rule: rule.to_owned(),
            location: location.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Subdirectories of the run directory these records go to.
pub const FINDINGS_DIR: &str = "findings";

/// Records a finding for the run named by `$KEYRIG_RUN_DIR`; see [`record_rotation`].
pub fn record_finding(finding: Finding) {
    crate::contract::records::record_in_run(FINDINGS_DIR, &finding);
}

/// A tool as the run used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolVersion {
    pub name: String,
    pub version: String,
    pub source: String,
}

/// One case in the report: its record and, if it failed, its bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseReport {
    #[serde(flatten)]
    pub record: CaseRecord,
    /// The case's diagnostics directory, relative to the run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<PathBuf>,
}

impl CaseReport {
    /// The one-line failure message: what was expected, what was last
    /// seen and where the diagnostics are.
    pub fn failure_message(&self, run_dir: &Path) -> String {
        let record = &self.record;
        let mut message = match (&record.expected, &record.last_seen) {
            (Some(expected), Some(last_seen)) => {
                format!("expected: {expected}; last seen: {last_seen}")
            }
            _ => record
                .message
                .clone()
                .unwrap_or_else(|| "failed (no message)".into()),
        };
        if let Some(dir) = &self.diagnostics {
            let _ = write!(message, "; diagnostics: {}", run_dir.join(dir).display());
        }
        message
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub profile: String,
    /// The delivery mode of this run (env.json `mode`); each mode of a
    /// multi-mode run writes a report of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub wall_time_ms: u64,
    /// Starting the environment, and running the tests.
    pub up_ms: u64,
    pub tests_ms: u64,
    pub filter: Option<String>,
    /// Whether the run as a whole passed (cases, test runner, secret scan).
    pub passed: bool,
    /// Whether every test binary exited 0: false with no failed case means
    /// a binary failed outside any case (a build error, a panic before a
    /// case started), which its output under `tests/` shows.
    #[serde(default = "yes")]
    pub runner_ok: bool,
    pub totals: Totals,
    pub cases: Vec<CaseReport>,
    pub rotations: Vec<crate::contract::rotation::RotationRecord>,
    pub findings: Vec<Finding>,
    /// Each injected fault's figures (`crate::contract::fault`).
    #[serde(default)]
    pub faults: Vec<crate::contract::fault::Fault>,
    pub tools: Vec<ToolVersion>,
    /// The final secret scan; `None` only while it has not run yet.
    pub secret_scan: Option<ScanResult>,
    /// Each gateway that ran: its cases and its rows of the compatibility
    /// table, as declared and as found (`crate::contract::conformance`).
    #[serde(default)]
    pub conformance: Vec<crate::contract::conformance::GatewayConformance>,
}

/// File names the reports have in the run directory (and `--report-dir`).
pub const JUNIT_FILE: &str = "junit.xml";
pub const REPORT_FILE: &str = "report.json";
pub const SUMMARY_FILE: &str = "summary.md";

fn yes() -> bool {
    true
}

fn duration(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl Report {
    pub fn totals_of(cases: &[CaseReport]) -> Totals {
        let count = |status| cases.iter().filter(|c| c.record.status == status).count();
        Totals {
            passed: count(Status::Passed),
            failed: count(Status::Failed),
            skipped: count(Status::Skipped),
        }
    }

    /// JUnit XML: one testsuite per assertion group, one testcase per case;
    /// a failure carries the expected/last-seen message and the bundle path.
    pub fn junit(&self, run_dir: &Path) -> Result<String> {
        let mut report = quick_junit::Report::new(format!("keyrig e2e {}", self.run_id));
        report.set_time(duration(self.wall_time_ms));
        let mut groups: BTreeMap<&str, Vec<&CaseReport>> = BTreeMap::new();
        for case in &self.cases {
            groups.entry(&case.record.group).or_default().push(case);
        }
        for (group, cases) in groups {
            let mut suite = TestSuite::new(group);
            for case in cases {
                let record = &case.record;
                let status = match record.status {
                    Status::Passed => TestCaseStatus::success(),
                    Status::Skipped => {
                        let mut status = TestCaseStatus::skipped();
                        if let Some(reason) = &record.message {
                            status.set_message(reason.as_str());
                        }
                        status
                    }
                    Status::Failed => {
                        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        status.set_message(case.failure_message(run_dir));
                        status.set_type(if record.expected.is_some() {
                            "timeout"
                        } else {
                            "assertion"
                        });
                        if let Some(message) = &record.message {
                            status.set_description(message.as_str());
                        }
                        status
                    }
                };
                let mut test_case = TestCase::new(record.display_name(), status);
                test_case
                    .set_classname(format!("keyrig.{group}"))
                    .set_time(duration(record.duration_ms));
                suite.add_test_case(test_case);
            }
            report.add_test_suite(suite);
        }
        Ok(crate::base::redact::redact(&report.to_string()?))
    }

    /// The Markdown summary (for `$GITHUB_STEP_SUMMARY` and `summary.md`).
    pub fn markdown(&self, run_dir: &Path) -> String {
        let mut md = String::new();
        let verdict = if self.passed { "passed" } else { "FAILED" };
        let t = self.totals;
        let mode = self
            .mode
            .as_deref()
            .map(|m| format!(", {m} mode"))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "## keyrig e2e ({} profile{mode}): {verdict}\n\n{} passed, {} failed, {} skipped in {} (environment up {}, tests {}); run `{}`\n",
            self.profile,
            t.passed,
            t.failed,
            t.skipped,
            crate::base::progress::secs(duration(self.wall_time_ms)),
            crate::base::progress::secs(duration(self.up_ms)),
            crate::base::progress::secs(duration(self.tests_ms)),
            self.run_id
        );
        if !self.runner_ok && t.failed == 0 {
            md.push_str("A test binary failed though no case recorded a failure (a build error, or a panic outside any case): see its output under the run's `tests/`.\n\n");
        }
        if !self.cases.is_empty() {
            md.push_str("| group | case | status | duration | note |\n|---|---|---|---|---|\n");
            for case in &self.cases {
                let r = &case.record;
                let note = match r.status {
                    Status::Passed => String::new(),
                    Status::Failed => case.failure_message(run_dir),
                    Status::Skipped => r.message.clone().unwrap_or_default(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} ms | {} |",
                    r.group,
                    r.display_name(),
                    status_word(r.status),
                    r.duration_ms,
                    note.replace('|', "\\|")
                );
            }
            md.push('\n');
        }
        if !self.rotations.is_empty() {
            md.push_str("### Rotations\n\n| mode | what | propagation |\n|---|---|---|\n");
            for r in &self.rotations {
                let _ = writeln!(md, "| {} | {} | {} ms |", r.mode, r.what, r.propagation_ms);
            }
            md.push('\n');
        }
        if !self.conformance.is_empty() {
            md.push_str("### Gateway conformance\n\n");
            for gateway in &self.conformance {
                md.push_str(&crate::contract::conformance::markdown(gateway));
            }
        }
        md.push_str(&crate::contract::fault::markdown(&self.faults));
        if !self.findings.is_empty() {
            md.push_str(
                "### Findings\n\n| severity | rule | where | message |\n|---|---|---|---|\n",
            );
            for f in &self.findings {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    f.severity, f.rule, f.location, f.message
                );
            }
            md.push('\n');
        }
        if let Some(scan) = &self.secret_scan {
            let _ = writeln!(
                md,
                "Secret scan: {} files, {} registered secrets, {} hits{}\n",
                scan.files_scanned,
                scan.secrets_checked,
                scan.hits.len(),
                if scan.hits.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        scan.hits
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
        if !self.tools.is_empty() {
            let tools: Vec<String> = self
                .tools
                .iter()
                .map(|t| format!("{} {} ({})", t.name, t.version, t.source))
                .collect();
            let _ = writeln!(md, "Tools: {}", tools.join(", "));
        }
        crate::base::redact::redact(&md)
    }

    /// Writes `junit.xml`, `report.json` and `summary.md` into `dir`.
    pub fn write(&self, run_dir: &Path, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write(JUNIT_FILE, self.junit(run_dir)?)?;
        write(
            REPORT_FILE,
            crate::base::redact::redact(&serde_json::to_string_pretty(self)?),
        )?;
        write(SUMMARY_FILE, self.markdown(run_dir))?;
        if !self.conformance.is_empty() {
            let conformance = dir.join(crate::contract::conformance::CONFORMANCE_DIR);
            std::fs::create_dir_all(&conformance)
                .with_context(|| format!("creating {}", conformance.display()))?;
            for gateway in &self.conformance {
                let path = conformance.join(format!("{}.md", gateway.gateway));
                std::fs::write(
                    &path,
                    crate::base::redact::redact(&crate::contract::conformance::markdown(gateway)),
                )
                .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Ok(())
    }
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Passed => "passed",
        Status::Failed => "**failed**",
        Status::Skipped => "skipped",
    }
}

/// Appends the summary to `$GITHUB_STEP_SUMMARY` when that is set (GitHub
/// Actions shows it on the job's page); returns whether it did.
pub fn append_step_summary(markdown: &str) -> Result<bool> {
    let Some(file) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty()) else {
        return Ok(false);
    };
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .with_context(|| {
            format!(
                "opening $GITHUB_STEP_SUMMARY ({})",
                Path::new(&file).display()
            )
        })?;
    writeln!(out, "{markdown}").context("appending to $GITHUB_STEP_SUMMARY")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::records::{read_records, record_in};
    use rstest::rstest;

    fn record(group: &str, name: &str, status: Status) -> CaseRecord {
        CaseRecord {
            name: name.into(),
            group: group.into(),
            gateway: None,
            status,
            duration_ms: 1500,
            message: (status != Status::Passed).then(|| "the reason".into()),
            started_at: None,
            ended_at: None,
            expected: None,
            last_seen: None,
        }
    }

    fn report(cases: Vec<CaseReport>) -> Report {
        Report {
            run_id: "20250101T000000-1".into(),
            profile: "local".into(),
            mode: Some("inline".into()),
            started_at: OffsetDateTime::UNIX_EPOCH,
            wall_time_ms: 9000,
            up_ms: 2000,
            tests_ms: 6000,
            filter: None,
            passed: false,
            runner_ok: true,
            totals: Report::totals_of(&cases),
            cases,
            rotations: vec![crate::contract::rotation::RotationRecord::new(
                "inline",
                "admin key",
                Duration::from_millis(1200),
            )],
            findings: vec![Finding::warning(
                "plaintext-credentials",
                "values.yaml: adminKey",
                "literal key",
            )],
            faults: vec![],
            tools: vec![],
            secret_scan: Some(ScanResult::default()),
            conformance: Vec::new(),
        }
    }

    #[rstest]
    fn junit_has_a_suite_per_group_and_the_failure_with_its_bundle() {
        let mut failed = record("api_keys", "revoked", Status::Failed);
        failed.expected = Some("revoked key gets 401".into());
        failed.last_seen = Some("200".into());
        let cases = vec![
            CaseReport {
                record: failed,
                diagnostics: Some("diagnostics/api_keys__revoked".into()),
            },
            CaseReport {
                record: record("api_keys", "valid", Status::Passed),
                diagnostics: None,
            },
            CaseReport {
                record: record("rbac", "other", Status::Skipped),
                diagnostics: None,
            },
        ];
        let report = report(cases);
        assert_eq!(
            report.totals,
            Totals {
                passed: 1,
                failed: 1,
                skipped: 1
            }
        );
        let xml = report.junit(Path::new("/run")).unwrap();
        assert_eq!(xml.matches("<testsuite ").count(), 2, "{xml}");
        assert!(
            xml.contains(r#"<testsuite name="api_keys" tests="2""#),
            "{xml}"
        );
        assert!(
            xml.contains("expected: revoked key gets 401; last seen: 200; diagnostics: /run/diagnostics/api_keys__revoked"),
            "{xml}"
        );
        assert!(xml.contains("<skipped"), "{xml}");

        let md = report.markdown(Path::new("/run"));
        assert!(md.contains("1 passed, 1 failed, 1 skipped"), "{md}");
        assert!(md.contains("| inline | admin key | 1200 ms |"), "{md}");
        assert!(md.contains("plaintext-credentials"), "{md}");
        assert!(
            md.contains("Secret scan: 0 files, 0 registered secrets, 0 hits"),
            "{md}"
        );

        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    /// The same case through two gateways is two names in JUnit and the
    /// summary (a consumer merges testcases of one name), the heading says
    /// the mode, and a failed test binary without a failed case is said.
    #[rstest]
    fn matrix_cases_are_named_by_gateway_and_the_mode_is_in_the_heading() {
        let on = |gateway: &str| {
            let mut r = record("api_keys", "revoked", Status::Passed);
            r.gateway = Some(gateway.into());
            CaseReport {
                record: r,
                diagnostics: None,
            }
        };
        let mut report = report(vec![on("caddy"), on("nginx")]);
        let xml = report.junit(Path::new("/run")).unwrap();
        assert!(xml.contains(r#"name="revoked [caddy]""#), "{xml}");
        assert!(xml.contains(r#"name="revoked [nginx]""#), "{xml}");
        let md = report.markdown(Path::new("/run"));
        assert!(md.contains("| revoked [caddy] |"), "{md}");
        assert!(md.contains("(local profile, inline mode): FAILED"), "{md}");
        assert!(!md.contains("A test binary failed"), "{md}");
        report.runner_ok = false;
        let md = report.markdown(Path::new("/run"));
        assert!(
            md.contains("A test binary failed though no case recorded a failure"),
            "{md}"
        );
    }

    #[rstest]
    fn records_round_trip_through_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        for ms in [30, 10, 20] {
            record_in(
                dir.path(),
                FINDINGS_DIR,
                &Finding::warning("rule", &format!("file {ms}"), "message"),
            )
            .unwrap();
        }
        let findings: Vec<Finding> = read_records(dir.path(), FINDINGS_DIR).unwrap();
        let order: Vec<&str> = findings.iter().map(|f| f.location.as_str()).collect();
        assert_eq!(order, ["file 30", "file 10", "file 20"], "oldest first");
        let none: Vec<Finding> = read_records(dir.path(), "absent").unwrap();
        assert!(none.is_empty());
    }
}
