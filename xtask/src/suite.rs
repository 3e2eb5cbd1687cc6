//! The e2e test binaries: built once by one cargo invocation, then run side
//! by side, every assertion group of every delivery mode at once (each
//! binary is one group: `tests/<group>.rs`). cargo runs test binaries one
//! after another and holds the build directory's lock while it does, so
//! three modes under `cargo test` would run in turn; run directly, they
//! share the wall clock, which is mostly spent waiting on real clocks
//! (cache TTLs, token lifetimes, certificate rotations).
//!
//! Each binary's output goes to `<run>/tests/<group>.log` (inside the run
//! directory, so the secret scan reads it too); progress is one line per
//! binary as it ends, and a failed binary's failures are printed. The
//! binaries stay in xtask's process group, as under `cargo test`, so a
//! terminal's Ctrl-C reaches them; xtask's handler sends SIGTERM to each
//! for any other termination.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rig::say;

use crate::selection::Selection;

/// One e2e test binary (an assertion group).
#[derive(Debug, Clone)]
pub(crate) struct TestBinary {
    pub(crate) group: String,
    pub(crate) path: PathBuf,
    /// For the groups in [`ONE_PROCESS_PER_CASE`]: their cases, each run
    /// as a job of its own.
    pub(crate) cases: Option<Vec<String>>,
}

/// Groups whose every case starts an environment of its own and then
/// waits on real clocks (token lifetimes, outages, restarts): one process
/// per case, so they run side by side rather than two at a time (the test
/// harness's threads on two cores).
const ONE_PROCESS_PER_CASE: [&str; 1] = ["faults"];

/// Jobs that wait longest on real clocks start first, so the short ones
/// fill the time beside them instead of after (longest processing time
/// first: with six jobs at a time the run is as long as its slots' sums).
/// An entry names a job by what follows `<mode>/` in its label: a group,
/// a case of a one-process-per-case group (`faults::<case>`), or the
/// keys-file pass (`api_keys@keys-file`); the first that matches ranks it.
/// Measured on two cores (`[at ...]` lines of `cargo xtask e2e`): the five
/// faults cases 23-37 s each, tls 20-22 s (three certificate lifetimes),
/// the keys-file passes 11-20 s, the other faults cases 1-16 s,
/// keys_file_rotation and rotation 6-10 s, api_keys 5-9 s.
const START_ORDER: [&str; 11] = [
    "faults::vault_outage_fails_closed_resurrects_then_recovers",
    "faults::bao_agent_restart_keeps_last_good_data_and_catches_up",
    "faults::vault_started_without_keygate_serves_then_keygate_catches_up",
    "faults::token_expiry_three_times_loses_no_request",
    "faults::revoked_key_is_not_resurrected_when_vault_dies",
    "tls",
    "api_keys@keys-file",
    "faults",
    "keys_file_rotation",
    "rotation",
    "api_keys",
];

/// Builds the e2e crate's test binaries (those `selection` runs) in one
/// cargo invocation, with cargo's progress on stderr, and lists them.
pub(crate) fn build(selection: &Selection) -> Result<Vec<TestBinary>> {
    let mut args = vec!["test", "-p", "keyrig-e2e", "--no-run"];
    let group_args = selection.cargo_args();
    args.extend(group_args.iter().map(String::as_str));
    let built = crate::build::cargo_build(&args, "building the e2e tests")?;
    let mut binaries = test_binaries(&built)?;
    for binary in &mut binaries {
        if ONE_PROCESS_PER_CASE.contains(&binary.group.as_str()) {
            binary.cases = Some(list_cases(&binary.path)?);
        }
    }
    say!("e2e tests: {} binaries", binaries.len());
    Ok(binaries)
}

/// The e2e crate's test executables among a build's artifacts.
fn test_binaries(built: &crate::build::Built) -> Result<Vec<TestBinary>> {
    let binaries: Vec<TestBinary> = built
        .artifacts
        .iter()
        .filter(|a| a.test && a.package == "keyrig-e2e")
        .filter_map(|a| {
            Some(TestBinary {
                group: a.target.replace('-', "_"),
                path: a.executable.clone()?,
                cases: None,
            })
        })
        .collect();
    if binaries.is_empty() {
        bail!("cargo built no e2e test binary: is tests/Cargo.toml's [[test]] list empty?");
    }
    Ok(binaries)
}

/// The cases of a test binary (`--list --format terse`: `<name>: test`).
fn list_cases(binary: &Path) -> Result<Vec<String>> {
    let mut command = Command::new(binary);
    command
        .args(["--list", "--format", "terse"])
        .stdin(Stdio::null());
    rig::process::supervisor::remove_secret_vars(&mut command);
    let output = command
        .output()
        .with_context(|| format!("listing the cases of {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "{} --list failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_case_list(&String::from_utf8_lossy(&output.stdout)))
}

fn parse_case_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// One test binary to run against one environment.
#[derive(Debug)]
pub(crate) struct Job {
    /// `<mode>/<group>` (and `@keys-file` for that pass, `::<case>` for a
    /// case of its own).
    pub(crate) label: String,
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, PathBuf)>,
    pub(crate) log: PathBuf,
}

/// How a job ended.
#[derive(Debug)]
pub(crate) struct JobResult {
    pub(crate) label: String,
    pub(crate) status: ExitStatus,
    pub(crate) elapsed: Duration,
    pub(crate) log: PathBuf,
    /// The run whose registry holds the secrets the job's tests minted.
    pub(crate) run_dir: Option<PathBuf>,
}

/// Where a job starts in the queue ([`START_ORDER`]; the rest after).
fn rank(label: &str) -> usize {
    let job = label.split_once('/').map_or(label, |(_, job)| job);
    START_ORDER
        .iter()
        .position(|entry| {
            job == *entry
                || job
                    .strip_prefix(entry)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
        .unwrap_or(START_ORDER.len())
}

/// Runs every job, at most `parallel` at a time, the longest-waiting
/// groups of every mode first; returns when all have ended.
pub(crate) fn run(mut jobs: Vec<Job>, parallel: usize) -> Result<Vec<JobResult>> {
    jobs.sort_by_key(|job| rank(&job.label));
    let total = jobs.len();
    let queue = Mutex::new(jobs.into_iter().collect::<std::collections::VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..parallel.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
                        else {
                            return Ok(());
                        };
                        let result = run_one(job)?;
                        report(&result, started.elapsed());
                        results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(result);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a test runner thread panicked"))??;
        }
        Ok(())
    })?;
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    say!(
        "{} test binaries ran in {}",
        total,
        rig::base::progress::secs(started.elapsed())
    );
    Ok(results)
}

fn run_one(job: Job) -> Result<JobResult> {
    if let Some(dir) = job.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = std::fs::File::create(&job.log)
        .with_context(|| format!("creating {}", job.log.display()))?;
    let mut command = Command::new(&job.binary);
    command
        .args(&job.args)
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .current_dir(rig::base::paths::workspace_root().join("tests"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sharing the test log")?)
        .stderr(log);
    if !rig::base::progress::is_interactive() {
        command.env("CARGO_TERM_COLOR", "never");
    }
    // As cargo test would: the package's directory and name.
    command
        .env(
            "CARGO_MANIFEST_DIR",
            rig::base::paths::workspace_root().join("tests"),
        )
        .env("CARGO_PKG_NAME", "keyrig-e2e");
    rig::process::supervisor::remove_secret_vars(&mut command);
    let run_dir = job
        .env
        .iter()
        .find(|(k, _)| k == rig::contract::case::RUN_DIR_VAR)
        .map(|(_, v)| v.clone());
    let started = Instant::now();
    let mut child = crate::runner::spawn_tracked(&mut command)
        .with_context(|| format!("running {}", job.binary.display()))?;
    let status = crate::runner::wait_for_test(&mut child)
        .with_context(|| format!("waiting for {}", job.label))?;
    Ok(JobResult {
        label: job.label,
        status,
        elapsed: started.elapsed(),
        log: job.log,
        run_dir,
    })
}

/// One line per finished binary with the test harness's own counts; a
/// failed one's failures (the harness's `failures:` section) too.
fn report(result: &JobResult, since_start: Duration) {
    let text = std::fs::read_to_string(&result.log).unwrap_or_default();
    let counts = text
        .lines()
        .filter_map(|l| l.strip_prefix("test result: "))
        .next_back()
        .map(|l| l.split(';').take(3).collect::<Vec<_>>().join(";"))
        .unwrap_or_else(|| "no test result line".into());
    let verdict = if result.status.success() {
        "ok"
    } else {
        "FAILED"
    };
    say!(
        "{}: {verdict} ({counts}) in {} [at {}]",
        result.label,
        rig::base::progress::secs(result.elapsed),
        rig::base::progress::secs(since_start)
    );
    if !result.status.success() {
        eprintln!(
            "{}\n[keyrig] {}'s whole output: {}",
            shown_failures(&text, result.run_dir.as_deref()),
            result.label,
            result.log.display()
        );
    }
}

/// A failed binary's failures as the console shows them: redacted with
/// the secrets its tests registered in `run_dir`'s registry (the API keys
/// and tokens they minted), which this process learns only from there.
fn shown_failures(text: &str, run_dir: Option<&Path>) -> String {
    if let Some(run_dir) = run_dir
        && let Err(err) = rig::base::redact::load_run_registry(run_dir)
    {
        // Not shown at all, rather than shown unredacted.
        return format!(
            "[keyrig] the failures are not shown: the run's secret registry could not be read ({err:#})"
        );
    }
    rig::base::redact::redact(failure_section(text))
}

/// From the harness's first `failures:` heading on (the one with each
/// failed test's output) (or the last 60 lines
/// when it has none, e.g. a crash).
fn failure_section(text: &str) -> &str {
    if let Some(at) = text.find("\nfailures:\n") {
        return &text[at + 1..];
    }
    let lines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
    match lines.len().checked_sub(61) {
        Some(n) => &text[lines[n] + 1..],
        None => text,
    }
}

/// The test-binary arguments for a selection (`--include-ignored`, the
/// name filter).
pub(crate) fn test_args(selection: &Selection, include_ignored: bool) -> Vec<String> {
    let mut args = Vec::new();
    if include_ignored {
        args.push("--include-ignored".to_owned());
    }
    args.extend(selection.name_filter().map(str::to_owned));
    args
}

/// Where a job's output goes.
pub(crate) fn log_path(run_dir: &Path, group: &str) -> PathBuf {
    run_dir.join("tests").join(format!("{group}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_order_names_cases_that_exist() {
        // A renamed case would silently lose its place in the queue.
        let faults = include_str!("../../tests/faults.rs");
        for entry in START_ORDER {
            if let Some(case) = entry.strip_prefix("faults::") {
                assert!(
                    faults.contains(&format!("fn {case}(")),
                    "START_ORDER names {case}, which tests/faults.rs does not define"
                );
            }
        }
    }

    #[test]
    fn the_longest_waits_start_first() {
        let mut labels = vec![
            "inline/api_keys",
            "inline/faults::bad_scenario_input_fails_early_and_leaves_nothing_running",
            "inline/api_keys@keys-file",
            "inline/references",
            "external-secret/tls",
            "inline/faults::vault_outage_fails_closed_resurrects_then_recovers",
        ];
        labels.sort_by_key(|l| rank(l));
        assert_eq!(
            labels,
            vec![
                "inline/faults::vault_outage_fails_closed_resurrects_then_recovers",
                "external-secret/tls",
                "inline/api_keys@keys-file",
                "inline/faults::bad_scenario_input_fails_early_and_leaves_nothing_running",
                "inline/api_keys",
                "inline/references",
            ]
        );
    }

    #[test]
    fn the_e2e_crates_test_executables_are_the_binaries() {
        let id = "path+file:///w/tests#keyrig-e2e@0.1.0";
        let messages = format!(
            r#"{{"reason":"compiler-artifact","package_id":"{id}","target":{{"name":"api_keys","kind":["test"]}},"profile":{{"test":true}},"executable":"/t/deps/api_keys-1","fresh":true}}
{{"reason":"compiler-artifact","package_id":"{id}","target":{{"name":"keyrig_e2e","kind":["lib"]}},"profile":{{"test":false}},"executable":null,"fresh":true}}
{{"reason":"compiler-artifact","package_id":"path+file:///w/crates/rig#0.1.0","target":{{"name":"layers","kind":["test"]}},"profile":{{"test":true}},"executable":"/t/deps/layers-3","fresh":true}}
{{"reason":"compiler-artifact","package_id":"{id}","target":{{"name":"tls","kind":["test"]}},"profile":{{"test":true}},"executable":"/t/deps/tls-2","fresh":false}}
{{"reason":"build-finished","success":true}}"#
        );
        let built = crate::build::parse_messages(&messages).unwrap();
        let binaries = test_binaries(&built).unwrap();
        assert!(binaries.iter().all(|b| b.cases.is_none()));
        let names: Vec<_> = binaries
            .iter()
            .map(|b| (b.group.as_str(), b.path.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [("api_keys", "/t/deps/api_keys-1"), ("tls", "/t/deps/tls-2")]
        );
        let none = crate::build::parse_messages("{\"reason\":\"build-finished\"}").unwrap();
        assert!(test_binaries(&none).is_err());
    }

    #[test]
    fn cases_are_read_from_the_terse_list() {
        let list =
            "fault_cases::vault_outage: test\nfault_cases::sealed: test\n\n2 tests, 0 benchmarks\n";
        assert_eq!(
            parse_case_list(list),
            ["fault_cases::vault_outage", "fault_cases::sealed"]
        );
    }

    /// A secret a test registered (in the run's registry, never in this
    /// process) is redacted from its failed binary's output on the console.
    #[test]
    fn a_failed_binarys_output_is_shown_without_what_its_tests_registered() {
        let base = tempfile::tempdir().unwrap();
        let run = rig::base::run::RunDir::create_in(base.path()).unwrap();
        let registry = run.path().join(rig::base::redact::REGISTRY_DIR);
        std::fs::create_dir_all(&registry).unwrap();
        let key = "kr_testkey.minted-by-a-test-0123456789";
        rig::base::run::write_secret_file(&registry.join("a"), key).unwrap();
        let text = format!(
            "running 1 test\n\nfailures:\n\n---- k stdout ----\nkey {key} got 401\n\ntest result: FAILED. 0 passed; 1 failed\n"
        );
        let shown = shown_failures(&text, Some(run.path()));
        assert!(!shown.contains(key), "{shown}");
        assert!(shown.contains("key <redacted> got 401"), "{shown}");
    }

    #[test]
    fn a_failed_binarys_failures_section_is_what_is_shown() {
        let text = "running 2 tests\ntest a ... ok\ntest b ... FAILED\n\nfailures:\n\n---- b stdout ----\nboom\n\nfailures:\n    b\n\ntest result: FAILED. 1 passed; 1 failed\n";
        assert!(failure_section(text).starts_with("failures:\n\n---- b stdout ----\nboom"));
        let crash: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = failure_section(&crash);
        assert!(
            tail.starts_with("line 40\n") && tail.ends_with("line 99\n"),
            "{tail}"
        );
    }
}
