//! `up`, `e2e` (and via main, `down`) for the kind and cluster profiles:
//! the tool check first (fails in well under 2 s with every missing tool
//! named), then rig::k8s does the work.

use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rig::k8s::KubeProfile;
use rig::k8s::profile::{KubeOptions, KubeRun};
use rig::say;

use super::{KubeArgs, TEST_PID, cargo, run_cargo, runtime, stop_on_interrupt};

fn options(profile: KubeProfile, mode: rig::k8s::Mode, args: KubeArgs) -> KubeOptions {
    let mut opts = KubeOptions::new(profile, mode);
    opts.recreate = args.recreate;
    opts
}

/// The tool check, before anything is built or started.
fn preflight(profile: KubeProfile) -> Result<rig::k8s::preflight::KubeTools> {
    let started = Instant::now();
    let tools = rig::k8s::profile::preflight(profile);
    say!(
        "{profile} profile: tool check took {}",
        rig::secs(started.elapsed())
    );
    tools
}

pub fn up(profile: KubeProfile, mode: rig::k8s::Mode, args: KubeArgs) -> Result<()> {
    let tools = preflight(profile)?;
    stop_on_interrupt()?;
    let run = runtime()?
        .block_on(rig::k8s::profile::up(&options(profile, mode, args), &tools))
        .with_context(|| {
            format!(
                "the {profile} profile did not come up (`cargo xtask down --profile {profile}` removes what it made)"
            )
        })?;
    println!("{}", rig::k8s::profile::describe(&run));
    println!("stop with `cargo xtask down --profile {profile}`");
    run.supervisor.detach();
    Ok(())
}

pub fn e2e(
    profile: KubeProfile,
    mode: rig::k8s::Mode,
    args: KubeArgs,
    filter: Option<&str>,
) -> Result<ExitCode> {
    let tools = preflight(profile)?;
    stop_on_interrupt()?;
    if !run_cargo(
        &["test", "-p", "keyrig-e2e", "--no-run"],
        "building the e2e tests",
    )? {
        bail!("the e2e tests do not build: see cargo's output above");
    }
    let rt = runtime()?;
    let started = Instant::now();
    let outcome = rt.block_on(rig::k8s::profile::up(&options(profile, mode, args), &tools));
    let result = match outcome {
        Ok(run) => run_tests(run, filter, started),
        Err(err) => Err(err.context(format!("the {profile} profile did not come up"))),
    };
    // Whatever happened: a kind cluster this run created goes.
    if profile == KubeProfile::Kind
        && let Err(err) = rt.block_on(rig::k8s::profile::delete_created_clusters())
    {
        say!("warning: {err:#}");
    }
    result
}

fn run_tests(mut run: KubeRun, filter: Option<&str>, started: Instant) -> Result<ExitCode> {
    let up_time = started.elapsed();
    say!(
        "environment up in {}; running the e2e tests",
        rig::secs(up_time)
    );
    let tests_started = Instant::now();
    let mut command = Command::new(cargo());
    command
        .args(["test", "-p", "keyrig-e2e", "--no-fail-fast", "--"])
        .args(filter)
        .env(rig::env::ENV_FILE_VAR, run.run.env_file())
        .env(rig::case::RUN_DIR_VAR, run.run.path())
        .current_dir(rig::paths::workspace_root());
    let mut child = command.spawn().context("running cargo test")?;
    TEST_PID.store(child.id() as i32, Ordering::SeqCst);
    let status = child.wait().context("waiting for cargo test")?;
    TEST_PID.store(0, Ordering::SeqCst);
    let cases = rig::case::read_cases(run.run.path())?;
    run.supervisor.stop_all();
    println!();
    rig::case::print_table(&cases);
    let (_, failed, _) = rig::case::totals(&cases);
    say!(
        "up {}, tests {}; logs in {}",
        rig::secs(up_time),
        rig::secs(tests_started.elapsed()),
        run.environment.logs_dir.display()
    );
    Ok(if status.success() && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
