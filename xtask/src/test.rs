//! `cargo xtask test`: the test command (`.ci/run` runs exactly this): tools,
//! unit and integration tests, the e2e suite in every mode, the harness
//! self-check, the gateway catalog and external gateway checks, `bench --quick`,
//! the Envoy module's unit tests under AddressSanitizer and its integration
//! test with Envoy under memcheck, and fuzz, each stage timed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use rig::say;

use crate::bench::bench_smoke;
use crate::e2e::{E2eOptions, e2e_modes};
use crate::flags::{Profile, ToolsProfile};
use crate::runner::run_cargo;
use crate::tools::tools;

pub(crate) fn test() -> Result<ExitCode> {
    let started = Instant::now();
    // Before the background build starts: it runs in a process group of
    // its own, which a terminal's Ctrl-C does not reach, so the handler
    // must be there to stop it.
    crate::runner::stop_on_interrupt()?;
    // cargo-fuzz's install (where missing) and the fuzz targets' sanitizer
    // build run beside the stages below at the lowest priority: about two
    // and a half minutes of compiling on a fresh machine, overlapped with
    // the stages' idle CPU instead of added after them.
    let fuzz_build = crate::fuzz::prebuild(crate::fuzz::FuzzProfile::Dev)?;
    let mut stages = Stages::new(started);
    // The local profile's tools, every gateway's, and the offline checks'
    // (the kind profile's manifests render with the pinned kubectl).
    stages.run("tools", || tools(ToolsProfile::All).map(|()| true))?;
    stages.run("unit and integration tests", || {
        // rig's module tests (crates/rig/tests/keygate_envoy.rs) load the
        // debug module: built here as e2e builds it, reusing xtask's units.
        // Left to the tests, `cargo build -p keygate-envoy` alone compiled
        // its dependencies again with their own features (16 s, twice at
        // once, on a fresh machine).
        crate::up::build_keygate()?;
        unit_tests()
    })?;
    stages.run("e2e", || {
        let e2e = e2e_modes(
            &E2eOptions {
                profile: Profile::Local,
                filter: None,
                keep: false,
                report_dir: None,
                include_ignored: false,
                gateways: Vec::new(),
                jobs: crate::e2e::default_jobs(),
            },
            &rig::contract::modes::Mode::ALL,
        )?;
        Ok(e2e == ExitCode::SUCCESS)
    })?;
    stages.run("harness self-check", crate::selfcheck::run)?;
    // A gateway added as data only, with one row declared falsely.
    stages.run("gateway catalog check", crate::catalog_check::run)?;
    // A gateway started by hand, tested through `e2e --gateway-url`.
    stages.run("external gateway check", crate::external_check::run)?;
    // The bench runs and writes bench.json; its timings are not judged here.
    stages.run("bench --quick", || Ok(bench_smoke()))?;
    // The Envoy module's FFI layer, where a memory error is Envoy's crash.
    stages.run_or_skip(
        "keygate-envoy under AddressSanitizer",
        crate::fuzz::module_tests_under_asan,
    )?;
    // The same module inside the real Envoy, Envoy under valgrind.
    stages.run_or_skip(
        "keygate-envoy inside Envoy under memcheck",
        crate::memcheck::module_in_envoy_under_memcheck,
    )?;
    // Last, so its background build has had every stage's idle CPU.
    // A few seconds per fuzz target, one per core at a time: a smoke run; longer
    // runs are in README.
    // It leaves fuzz/corpus/ as committed (the work tree stays clean), and
    // uses AddressSanitizer where a nightly toolchain is installed (it says
    // which build it picked).
    stages.run("fuzz", || {
        if let Err(err) = fuzz_build.wait() {
            say!("{err:#}");
            return Ok(false);
        }
        Ok(crate::fuzz::run(
            5,
            None,
            crate::fuzz::NewInputs::Discard,
            crate::fuzz::FuzzProfile::Dev,
        )? == ExitCode::SUCCESS)
    })?;
    Ok(stages.finish())
}

/// The workspace's unit and integration tests (all but the e2e crate's).
/// With cargo-nextest where it is installed (these machines have it):
/// every test in a process of its own and the test binaries side by side,
/// so the few that wait on real processes (Vault, Envoy, a backoff) no
/// longer run one binary after another; then the doc tests, which nextest
/// does not run. Without it, `cargo test`, which runs the same tests one
/// binary at a time.
fn unit_tests() -> Result<bool> {
    let excluded = crate::runner::WORKSPACE_TESTS;
    if !crate::runner::nextest_installed() {
        say!(
            "unit and integration tests: cargo-nextest is not installed, so `cargo test` runs the test binaries one after another"
        );
        return run_cargo(
            &[&["test"][..], &excluded].concat(),
            "unit and integration tests",
        );
    }
    // Four at a time on two cores: most of these tests wait on a process
    // they started rather than compute.
    let tests = run_cargo(
        &[
            &["nextest", "run"][..],
            &excluded,
            &["--no-fail-fast", "--test-threads", "4"],
        ]
        .concat(),
        "unit and integration tests",
    )?;
    let doc = run_cargo(&[&["test", "--doc"][..], &excluded].concat(), "doc tests")?;
    Ok(tests && doc)
}

/// The stages' verdicts and times, for the closing summary.
struct Stages {
    started: Instant,
    done: Vec<(&'static str, Verdict, Duration)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Passed,
    Failed,
    /// Could not run here; the stage said why.
    Skipped,
}

impl Stages {
    fn new(started: Instant) -> Self {
        Self {
            started,
            done: Vec::new(),
        }
    }

    /// Runs one stage (every stage runs, whatever the ones before found)
    /// and says its verdict, its time and the time since `test` started.
    fn run(&mut self, name: &'static str, stage: impl FnOnce() -> Result<bool>) -> Result<()> {
        self.run_or_skip(name, || stage().map(Some))
    }

    /// [`Stages::run`] for a stage that may not be able to run here
    /// (`None`: it said why): recorded as skipped, never as passed.
    fn run_or_skip(
        &mut self,
        name: &'static str,
        stage: impl FnOnce() -> Result<Option<bool>>,
    ) -> Result<()> {
        let started = Instant::now();
        let verdict = match stage()? {
            Some(true) => Verdict::Passed,
            Some(false) => Verdict::Failed,
            None => Verdict::Skipped,
        };
        let took = started.elapsed();
        say!(
            "test: {name} {} in {} [at {}]",
            word(verdict),
            secs(took),
            secs(self.started.elapsed())
        );
        self.done.push((name, verdict, took));
        Ok(())
    }

    fn finish(self) -> ExitCode {
        let summary: Vec<String> = self
            .done
            .iter()
            .map(|(name, verdict, took)| format!("{name}: {} ({})", word(*verdict), secs(*took)))
            .collect();
        say!(
            "{}; {} in all",
            summary.join("; "),
            secs(self.started.elapsed())
        );
        if self
            .done
            .iter()
            .all(|(_, verdict, _)| *verdict != Verdict::Failed)
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Passed => "passed",
        Verdict::Failed => "FAILED",
        Verdict::Skipped => "skipped",
    }
}

fn secs(d: Duration) -> String {
    rig::base::progress::secs(d)
}
