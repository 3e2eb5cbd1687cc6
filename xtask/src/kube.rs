//! `up`, `e2e` (and via main, `down`) for the kind and cluster profiles:
//! the tool check first (fails in well under 2 s with every missing tool
//! named), then rig_k8s does the work.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rig::say;
use rig_k8s::KubeProfile;
use rig_k8s::profile::{KubeOptions, KubeRun};

use crate::flags::KubeArgs;
use crate::runner::{cargo, run_cargo, runtime, stop_on_interrupt, wait_for_test};

fn options(profile: KubeProfile, mode: rig::contract::modes::Mode, args: KubeArgs) -> KubeOptions {
    let mut opts = KubeOptions::new(profile, mode);
    opts.recreate = args.recreate;
    opts.vault = args.vault.into();
    opts
}

/// The tool check, before anything is built or started.
fn preflight(profile: KubeProfile) -> Result<rig_k8s::preflight::KubeTools> {
    let started = Instant::now();
    let tools = rig_k8s::profile::preflight(profile);
    say!(
        "{profile} profile: tool check took {}",
        rig::base::progress::secs(started.elapsed())
    );
    tools
}

/// What `down` undoes, said where a user decides whether to run it.
fn what_down_removes(profile: KubeProfile) -> String {
    match profile {
        KubeProfile::Kind => "`cargo xtask down --profile kind` stops the port-forwards and deletes the kind cluster if a run created it".to_owned(),
        KubeProfile::Cluster => "`cargo xtask down --profile cluster` stops the port-forwards; what was applied to the cluster stays, every object labelled app.kubernetes.io/part-of=keyrig (docs/kubernetes.md: removing keyrig from a cluster)".to_owned(),
    }
}

pub fn up(profile: KubeProfile, mode: rig::contract::modes::Mode, args: KubeArgs) -> Result<()> {
    let tools = preflight(profile)?;
    stop_on_interrupt()?;
    let run = runtime()?
        .block_on(rig_k8s::profile::up(
            &options(profile, mode, args),
            &tools,
            rig::base::run::RunDir::create()?,
        ))
        .with_context(|| {
            format!(
                "the {profile} profile did not come up ({})",
                what_down_removes(profile)
            )
        })?;
    println!("{}", rig_k8s::profile::describe(&run));
    println!(
        "stop with `cargo xtask down --profile {profile}`: {}",
        what_down_removes(profile)
    );
    run.supervisor.detach();
    Ok(())
}

pub fn e2e(
    profile: KubeProfile,
    mode: rig::contract::modes::Mode,
    args: KubeArgs,
    filter: Option<&str>,
    report_dir: Option<&std::path::Path>,
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
    let wall = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let run_dir = rig::base::run::RunDir::create()?;
    let run_path = run_dir.path().to_owned();
    let outcome = rt.block_on(rig_k8s::profile::up(
        &options(profile, mode, args),
        &tools,
        run_dir,
    ));
    let result = match outcome {
        Ok(run) => run_tests(&rt, run, filter, report_dir, wall, started_at),
        Err(err) => Err(err.context(format!("the {profile} profile did not come up"))),
    };
    // Whatever happened: the kind cluster this run created goes; one it
    // reused (another run's, e.g. `up`'s) stays.
    if profile == KubeProfile::Kind {
        match rt.block_on(rig_k8s::profile::delete_created_cluster(&run_path, &[])) {
            Ok(Some(name)) => say!("kind: deleted cluster {name}, which this run created"),
            Ok(None) => {}
            Err(err) => say!("warning: {err:#}"),
        }
    }
    result
}

fn run_tests(
    rt: &tokio::runtime::Runtime,
    mut run: KubeRun,
    filter: Option<&str>,
    report_dir: Option<&std::path::Path>,
    wall: Instant,
    started_at: time::OffsetDateTime,
) -> Result<ExitCode> {
    let up_time = wall.elapsed();
    say!(
        "environment up in {}; running the e2e tests",
        rig::base::progress::secs(up_time)
    );
    let selection = crate::selection::Selection::new(filter)?;
    let tests_started = Instant::now();
    let mut command = cargo();
    command
        .args(["test", "-p", "keyrig-e2e", "--no-fail-fast"])
        .args(selection.cargo_args())
        .arg("--")
        .args(selection.name_filter())
        .env(rig::contract::env::ENV_FILE_VAR, run.run.env_file())
        .env(rig::contract::case::RUN_DIR_VAR, run.run.path())
        .current_dir(rig::base::paths::workspace_root());
    // The tests read the root token from its 0600 file; the admin token the
    // cluster profile was given stays out of their environment.
    rig::process::supervisor::remove_secret_vars(&mut command);
    let mut child = crate::runner::spawn_tracked(&mut command).context("running cargo test")?;
    let status = wait_for_test(&mut child).context("waiting for cargo test")?;
    let test_time = tests_started.elapsed();
    let cases = rig::contract::case::read_cases(run.run.path())?;
    // Diagnostics while the port-forwards are still up.
    let cases = rt.block_on(crate::e2e_report::collect_diagnostics(
        run.run.path(),
        &run.environment,
        cases,
    ));
    run.supervisor.stop_all();
    println!();
    let records: Vec<_> = cases.iter().map(|c| c.record.clone()).collect();
    rig::contract::case::print_table(&records);
    crate::e2e::print_gateway_matrix(&records, &run.environment);
    say!(
        "up {}, tests {}; logs in {}",
        rig::base::progress::secs(up_time),
        rig::base::progress::secs(test_time),
        run.environment.logs_dir.display()
    );
    let report = crate::e2e_report::finish(crate::e2e_report::Finish {
        run_dir: run.run.path(),
        run_id: run.run.id(),
        profile: run.environment.profile.as_str(),
        mode: run.environment.mode.as_deref(),
        filter: filter.map(str::to_owned),
        started_at,
        wall: wall.elapsed(),
        up: up_time,
        tests: test_time,
        cases,
        runner_ok: status.success(),
        gateway_deviations: &run.environment.gateway_deviations,
        report_dir,
    })?;
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
