//! `cargo xtask e2e`: the local profile up, the e2e suite once per delivery
//! mode (and the keys-file pass), the reports, teardown.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rig::say;

use crate::flags::{DeliveryMode, Profile};
use crate::runner::{
    TEST_PID, cargo, plain_output_unless_interactive, run_cargo, runtime, stop_on_interrupt,
};
use crate::up::local_options;

/// What `cargo xtask e2e` was asked to do.
#[derive(Clone)]
pub(crate) struct E2eOptions {
    pub(crate) profile: Profile,
    pub(crate) filter: Option<String>,
    pub(crate) keep: bool,
    pub(crate) report_dir: Option<PathBuf>,
    pub(crate) include_ignored: bool,
    pub(crate) gateways: Vec<rig::contract::gateways::GatewayKind>,
    pub(crate) mode: rig::contract::modes::Mode,
    /// When several modes run: the one in which mode-independent groups
    /// (faults) run; the others skip them (see `rig::contract::once`).
    pub(crate) mode_independent_in: Option<rig::contract::modes::Mode>,
}

pub(crate) fn parse_gateway(name: &str) -> Result<rig::contract::gateways::GatewayKind> {
    rig::contract::gateways::GatewayKind::parse(name)
}

pub(crate) fn modes_or_all(modes: &[DeliveryMode]) -> Vec<rig::contract::modes::Mode> {
    if modes.is_empty() {
        rig::contract::modes::Mode::ALL.to_vec()
    } else {
        modes.iter().map(|m| m.mode()).collect()
    }
}

/// One environment per delivery mode, in turn; then one table of every
/// case (group prefixed with the mode) and the propagation summary.
pub(crate) fn e2e_modes(
    base: &E2eOptions,
    modes: &[rig::contract::modes::Mode],
) -> Result<ExitCode> {
    // The main job installs what it runs: every gateway of the matrix, so
    // none is skipped for want of a `cargo xtask tools`.
    if base.profile == Profile::Local {
        crate::tools::install(crate::flags::ToolsProfile::Local)?;
    }
    let mut all_cases = Vec::new();
    let mut rotations = Vec::new();
    let mut notes = Vec::new();
    let mut ok = true;
    for &mode in modes {
        say!("=== delivery mode {mode} ===");
        let opts = E2eOptions {
            mode,
            // Mode-independent groups (faults) once, in the first mode.
            mode_independent_in: (modes.len() > 1).then(|| modes[0]),
            // Each mode's reports in a directory of its own.
            report_dir: match &base.report_dir {
                Some(dir) if modes.len() > 1 => Some(dir.join(mode.as_str())),
                other => other.clone(),
            },
            ..base.clone()
        };
        let outcome = e2e(&opts)?;
        ok &= outcome.code == ExitCode::SUCCESS;
        for mut case in outcome.cases {
            case.group = format!("{mode}/{}", case.group);
            all_cases.push(case);
        }
        rotations.extend(outcome.rotations);
        // Mode-independent notes (TLS) come once.
        for note in outcome.notes {
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    if modes.len() > 1 {
        println!();
        println!(
            "all modes ({}):",
            modes
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        rig::contract::case::print_table(&all_cases);
    }
    print!(
        "{}",
        rig::contract::rotation::render_summary(&rotations, &notes)
    );
    let (_, failed, _) = rig::contract::case::totals(&all_cases);
    Ok(if ok && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What one mode's e2e run produced.
pub(crate) struct E2eOutcome {
    pub(crate) code: ExitCode,
    pub(crate) cases: Vec<rig::contract::case::CaseRecord>,
    pub(crate) rotations: Vec<rig::contract::rotation::RotationRecord>,
    /// The intervals configured in this run, for the propagation summary.
    pub(crate) notes: Vec<String>,
}

pub(crate) fn e2e(opts: &E2eOptions) -> Result<E2eOutcome> {
    let profile = opts.profile;
    profile.require_local()?;
    let selection = Selection::new(opts.filter.as_deref())?;
    stop_on_interrupt()?;
    let wall = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    // Compile first, so a build error starts nothing and the environment
    // does not idle while the tests compile.
    let mut local = local_options(opts.mode)?;
    local.gateways = opts.gateways.clone();
    if !run_cargo(
        &["test", "-p", "keyrig-e2e", "--no-run"],
        "building the e2e tests",
    )? {
        bail!("the e2e tests do not build: see cargo's output above");
    }

    let started = Instant::now();
    let rt = runtime()?;
    // Dropping `run` stops everything: at the end, on `?`, and on panic.
    let mut run = rt
        .block_on(rig::local::up(&local))
        .context("the local profile did not come up")?;
    let up_time = started.elapsed();
    say!(
        "environment up in {}; running the e2e tests",
        rig::base::progress::secs(up_time)
    );

    let tests_started = Instant::now();
    let mut command = cargo();
    plain_output_unless_interactive(&mut command);
    command
        .args(["test", "-p", "keyrig-e2e", "--no-fail-fast"])
        .args(selection.cargo_args())
        .arg("--")
        .args(selection.name_filter())
        .args(opts.include_ignored.then_some("--include-ignored"))
        .env(rig::contract::env::ENV_FILE_VAR, run.run.env_file())
        .env(rig::contract::case::RUN_DIR_VAR, run.run.path())
        // Fault tests start environments of their own with these binaries.
        .env("KEYRIG_KEYGATE", &local.keygate_bin)
        .env("KEYRIG_ECHO_PROGRAM", &local.echo.program)
        .envs(
            opts.mode_independent_in
                .map(|mode| (rig::contract::once::VAR, mode.as_str())),
        )
        .current_dir(rig::base::paths::workspace_root());
    rig::process::supervisor::remove_secret_vars(&mut command);
    let mut child = command.spawn().context("running cargo test")?;
    TEST_PID.store(child.id() as i32, Ordering::SeqCst);
    let mut status = child.wait().context("waiting for cargo test")?;
    TEST_PID.store(0, Ordering::SeqCst);
    if let Some(keys_file_status) = keys_file_pass(&run, &selection)?
        && !keys_file_status.success()
    {
        status = keys_file_status;
    }
    let test_time = tests_started.elapsed();

    let cases = rig::contract::case::read_cases(run.run.path())?;
    // Diagnostics while the components are still up to be asked.
    let cases = rt.block_on(crate::e2e_report::collect_diagnostics(
        run.run.path(),
        &run.environment,
        cases,
    ));
    let rotations = rig::contract::rotation::read(run.run.path())?;
    let notes = interval_notes(&run.environment);
    if let Some(delivery) = &run.environment.delivery {
        for finding in &delivery.findings {
            rig::contract::records::record_in(
                run.run.path(),
                "findings",
                &rig::contract::report::Finding::warning(
                    "plaintext-credentials",
                    &delivery.values_file.display().to_string(),
                    finding,
                ),
            )?;
        }
    }
    let any_failed = !status.success()
        || cases
            .iter()
            .any(|c| c.record.status == rig::contract::case::Status::Failed);
    let kept = opts.keep && any_failed;
    if kept {
        run.supervisor.detach();
    } else {
        run.supervisor.stop_all();
    }
    println!();
    let records: Vec<_> = cases.iter().map(|c| c.record.clone()).collect();
    if cases.is_empty() {
        println!(
            "no e2e case records in {}/cases (tests record themselves with rig::contract::case::CaseGuard)",
            run.run.path().display()
        );
    } else {
        rig::contract::case::print_table(&records);
        print_gateway_matrix(&records, &run.environment);
    }
    let failed = cases
        .iter()
        .filter(|c| c.record.status == rig::contract::case::Status::Failed)
        .count();
    say!(
        "up {}, tests {}; logs in {}",
        rig::base::progress::secs(up_time),
        rig::base::progress::secs(test_time),
        run.environment.logs_dir.display()
    );

    let outcome = crate::e2e_report::finish(crate::e2e_report::Finish {
        run_dir: run.run.path(),
        run_id: run.run.id(),
        profile: profile.name(),
        filter: opts.filter.clone(),
        started_at,
        wall: wall.elapsed(),
        up: up_time,
        tests: test_time,
        cases,
        runner_ok: status.success(),
        report_dir: opts.report_dir.as_deref(),
    })?;
    if kept {
        crate::e2e_report::print_kept(&run.environment, run.run.path());
    }
    if !status.success() && failed == 0 {
        say!(
            "cargo test failed ({status}) though no case recorded a failure: see cargo's output above"
        );
    }
    Ok(E2eOutcome {
        code: if outcome.passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
        cases: records,
        rotations,
        notes,
    })
}

/// The gateway x case matrix, and which gateways did not run and why.
pub(crate) fn print_gateway_matrix(
    cases: &[rig::contract::case::CaseRecord],
    env: &rig::contract::env::Environment,
) {
    let order: Vec<&str> = rig::contract::gateways::GatewayKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|name| env.gateways.contains_key(*name) || env.skipped_gateways.contains_key(*name))
        .collect();
    if let Some(matrix) = rig::contract::case::render_matrix(cases, &order) {
        println!();
        print!("{matrix}");
    }
    for (name, reason) in &env.skipped_gateways {
        println!("gateway {name} skipped: {reason}");
    }
}

/// The intervals that bound propagation in this run, one line per mode.
pub(crate) fn interval_notes(env: &rig::contract::env::Environment) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(tls) = &env.tls {
        notes.push(format!(
            "tls: serving certificate ttl {} ms, bao agent re-issues at 85-95% of it; Envoy reloads through SDS (watched directory)",
            tls.cert_ttl_ms
        ));
    }
    notes.extend(delivery_notes(env));
    notes
}

pub(crate) fn delivery_notes(env: &rig::contract::env::Environment) -> Vec<String> {
    let Some(delivery) = &env.delivery else {
        return Vec::new();
    };
    let mut note = format!(
        "{}: keygate cache TTL {} ms (negative {} ms), credential-file poll {} ms",
        delivery.mode,
        env.cache.positive_ttl_ms,
        env.cache.negative_ttl_ms,
        delivery.watch_interval_ms
    );
    if let Some(external) = &delivery.external {
        note.push_str(&format!(
            ", bao agent static_secret_render_interval {} ms",
            external.refresh_interval_ms
        ));
    }
    let mut notes = vec![note];
    if let Some(side) = &env.keys_file {
        notes.push(format!(
            "keys-file: bao agent static_secret_render_interval {} ms, keygate file poll {} ms",
            side.render_interval_ms, side.poll_interval_ms
        ));
    }
    notes
}

/// The api_keys group again, through the keys-file gateway of the same
/// environment (`env-keys-file.json`: same Vault, `key_source: file`), so
/// both validation modes pass the same assertions.
pub(crate) fn keys_file_pass(
    run: &rig::local::LocalRun,
    selection: &Selection,
) -> Result<Option<std::process::ExitStatus>> {
    // The keys-file pass is the api_keys group again; another group named
    // by --filter has nothing to run in it.
    if let Selection::Group(group) = selection
        && group != "api_keys"
    {
        return Ok(None);
    }
    let view = rig::contract::env::Environment::keys_file_env_path(&run.run.env_file());
    if !view.is_file() {
        return Ok(None);
    }
    say!(
        "api_keys again through the keys-file gateway ({})",
        view.display()
    );
    let mut command = cargo();
    command
        .args([
            "test",
            "-p",
            "keyrig-e2e",
            "--no-fail-fast",
            "--test",
            "api_keys",
            "--",
        ])
        .args(selection.name_filter())
        .env(rig::contract::env::ENV_FILE_VAR, &view)
        .env(rig::contract::case::RUN_DIR_VAR, run.run.path())
        .current_dir(rig::base::paths::workspace_root());
    rig::process::supervisor::remove_secret_vars(&mut command);
    let mut child = command.spawn().context("running cargo test")?;
    TEST_PID.store(child.id() as i32, Ordering::SeqCst);
    let status = child.wait().context("waiting for cargo test")?;
    TEST_PID.store(0, Ordering::SeqCst);
    Ok(Some(status))
}

/// What `--filter` selects: an assertion group by name (the e2e crate's
/// `[[test]]` target, its file and its recorded group share it), else the
/// tests whose names hold the word, as `cargo test` filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    All,
    Group(String),
    Names(String),
}

impl Selection {
    pub(crate) fn new(filter: Option<&str>) -> Result<Self> {
        let Some(word) = filter else {
            return Ok(Selection::All);
        };
        let tests = rig::base::paths::workspace_root().join("tests");
        let is_group = crate::scenarios::assertion_groups(&tests)?
            .iter()
            .any(|g| g.name == word);
        Ok(if is_group {
            Selection::Group(word.to_owned())
        } else {
            Selection::Names(word.to_owned())
        })
    }

    /// cargo's arguments before `--`: the group's test target.
    pub(crate) fn cargo_args(&self) -> Vec<String> {
        match self {
            Selection::Group(group) => vec!["--test".into(), group.clone()],
            _ => Vec::new(),
        }
    }

    /// The test binaries' name filter.
    pub(crate) fn name_filter(&self) -> Option<&str> {
        match self {
            Selection::Names(word) => Some(word),
            _ => None,
        }
    }
}
