//! The end of `cargo xtask e2e`: diagnostics of failed cases (while the
//! environment is still up), the reports, the secret scan, and what a
//! person needs to know to reach a kept environment.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rig::contract::case::{CaseRecord, Status};
use rig::contract::env::Environment;
use rig::contract::report::{CaseReport, Report};
use rig::say;

/// Collects a bundle for each failed case; a collection that fails is
/// reported and leaves the case without one.
pub async fn collect_diagnostics(
    run_dir: &Path,
    env: &Environment,
    cases: Vec<CaseRecord>,
) -> Vec<CaseReport> {
    let mut reports = Vec::new();
    for record in cases {
        let diagnostics = if record.status == Status::Failed {
            match rig::local::diagnostics::collect(run_dir, env, &record).await {
                Ok(dir) => Some(dir),
                Err(err) => {
                    say!(
                        "warning: no diagnostics for {}/{}: {err:#}",
                        record.group,
                        record.name
                    );
                    None
                }
            }
        } else {
            None
        };
        reports.push(CaseReport {
            record,
            diagnostics,
        });
    }
    reports
}

pub struct Finish<'a> {
    pub run_dir: &'a Path,
    pub run_id: &'a str,
    pub profile: &'a str,
    /// env.json's `mode`, for the report and the summary's heading.
    pub mode: Option<&'a str>,
    pub filter: Option<String>,
    pub started_at: time::OffsetDateTime,
    pub wall: Duration,
    pub up: Duration,
    pub tests: Duration,
    pub cases: Vec<CaseReport>,
    /// Whether `cargo test` itself succeeded.
    pub runner_ok: bool,
    /// env.json's `gateway_deviations`: the gateways of the conformance report.
    pub gateway_deviations:
        &'a std::collections::BTreeMap<String, rig::contract::gateways::Deviations>,
    pub report_dir: Option<&'a Path>,
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Writes the reports, runs the secret scan (which can fail the run),
/// copies to `--report-dir`, appends to `$GITHUB_STEP_SUMMARY` (unless the
/// scan found a secret), and prints each failure with its bundle.
pub fn finish(f: Finish<'_>) -> Result<Report> {
    let run_dir = f.run_dir;
    // What the tests registered (tokens, API keys they minted) is in the
    // run's registry only; this process redacts the reports, the summary
    // and the FAILED lines with it.
    rig::base::redact::load_run_registry(run_dir)?;
    let totals = Report::totals_of(&f.cases);
    let mut report = Report {
        run_id: f.run_id.to_owned(),
        profile: f.profile.to_owned(),
        mode: f.mode.map(str::to_owned),
        started_at: f.started_at,
        wall_time_ms: ms(f.wall),
        up_ms: ms(f.up),
        tests_ms: ms(f.tests),
        filter: f.filter,
        passed: false,
        runner_ok: f.runner_ok,
        totals,
        cases: f.cases,
        rotations: rig::contract::rotation::read(run_dir)?,
        findings: rig::contract::records::read_records(
            run_dir,
            rig::contract::report::FINDINGS_DIR,
        )?,
        faults: rig::contract::fault::read(run_dir)?,
        tools: rig::process::tools::tool_versions(f.profile),
        secret_scan: None,
        conformance: Vec::new(),
    };
    let records: Vec<_> = report.cases.iter().map(|c| c.record.clone()).collect();
    report.conformance = rig::contract::conformance::assess(&records, f.gateway_deviations);

    // Reports first, so the scan covers them too; then again with the
    // scan's result, and a last scan of that final version.
    report.write(run_dir, run_dir)?;
    let mut scan = rig::base::redact::scan_run(run_dir)?;
    report.secret_scan = Some(scan.clone());
    report.passed = f.runner_ok && totals.failed == 0 && scan.hits.is_empty();
    report.write(run_dir, run_dir)?;
    scan = rig::base::redact::scan_run(run_dir)?;

    if let Some(dir) = f.report_dir {
        copy_reports(run_dir, dir)?;
        let copies = rig::base::redact::scan_dir(dir, &rig::base::redact::all_secrets(run_dir)?)?;
        scan.hits.extend(copies.hits.iter().map(|p| dir.join(p)));
        say!("reports also in {}", dir.display());
    }
    if !scan.hits.is_empty() {
        report.passed = false;
    }

    if !scan.hits.is_empty() {
        // A secret got into the run's files, so possibly into what the
        // summary is made of; the step summary is public to anyone who can
        // see the job, unlike the files (which the upload scan checks).
        if std::env::var_os("GITHUB_STEP_SUMMARY").is_some_and(|v| !v.is_empty()) {
            say!(
                "summary NOT appended to $GITHUB_STEP_SUMMARY: the secret scan found registered secrets in the run's files"
            );
        }
    } else if rig::contract::report::append_step_summary(&report.markdown(run_dir))? {
        say!("summary appended to $GITHUB_STEP_SUMMARY");
    }
    for case in report
        .cases
        .iter()
        .filter(|c| c.record.status == Status::Failed)
    {
        println!(
            "FAILED {}/{}: {}",
            case.record.group,
            case.record.name,
            rig::base::redact::redact(&case.failure_message(run_dir))
        );
    }
    println!(
        "reports: {}/{{{}, {}, {}}}",
        run_dir.display(),
        rig::contract::report::JUNIT_FILE,
        rig::contract::report::REPORT_FILE,
        rig::contract::report::SUMMARY_FILE
    );
    if scan.hits.is_empty() {
        println!(
            "secret scan: {} registered secrets, {} files, 0 hits",
            scan.secrets_checked, scan.files_scanned
        );
    } else {
        for hit in &scan.hits {
            println!(
                "secret scan: a registered secret is in {}",
                run_dir.join(hit).display()
            );
        }
        println!(
            "secret scan FAILED: {} files hold a registered secret (the secret itself is not shown; look for what wrote it)",
            scan.hits.len()
        );
    }
    Ok(report)
}

/// Copies junit.xml, report.json, summary.md, conformance/ and
/// diagnostics/ into `dir`.
fn copy_reports(run_dir: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating --report-dir {}", dir.display()))?;
    for name in [
        rig::contract::report::JUNIT_FILE,
        rig::contract::report::REPORT_FILE,
        rig::contract::report::SUMMARY_FILE,
    ] {
        std::fs::copy(run_dir.join(name), dir.join(name))
            .with_context(|| format!("copying {name} to {}", dir.display()))?;
    }
    for tree in [
        rig::local::diagnostics::DIAGNOSTICS_DIR,
        rig::contract::conformance::CONFORMANCE_DIR,
    ] {
        if run_dir.join(tree).is_dir() {
            copy_tree(&run_dir.join(tree), &dir.join(tree))?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// `--keep` after a failure: where everything is, and how to stop it.
pub fn print_kept(env: &Environment, run_dir: &Path) {
    println!();
    println!("--keep: the environment of run {} is still up:", env.run_id);
    println!("  gateway   {}", env.gateway_url);
    println!(
        "  vault     {}  (export VAULT_ADDR={}; the root token is in {})",
        env.vault_addr,
        env.vault_addr,
        env.root_token_file.display()
    );
    println!("  keygate   {}  (/readyz, /metrics)", env.keygate_url);
    if let Some(admin) = &env.envoy_admin_url {
        println!("  envoy     {admin}  (admin: /stats, /clusters, /config_dump)");
    }
    println!("  logs      {}", env.logs_dir.display());
    println!(
        "  tests     KEYRIG_ENV={} cargo test -p keyrig-e2e -- <name>",
        run_dir.join("env.json").display()
    );
    println!("see it with `cargo xtask status`; stop it with `cargo xtask down`");
}
