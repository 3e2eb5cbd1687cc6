//! `cargo xtask e2e`: one build, the local profile up once per delivery
//! mode (all at once), the e2e suite against each (and the keys-file pass),
//! side by side, then each mode's reports and teardown.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use rig::say;

use crate::flags::{DeliveryMode, Profile};
use crate::runner::{runtime, stop_on_interrupt};
use crate::selection::Selection;

/// What `cargo xtask e2e` was asked to do.
#[derive(Clone)]
pub(crate) struct E2eOptions {
    pub(crate) profile: Profile,
    pub(crate) filter: Option<String>,
    pub(crate) keep: bool,
    pub(crate) report_dir: Option<PathBuf>,
    pub(crate) include_ignored: bool,
    /// Names of the gateway catalog (env/gateways); empty: all of them.
    pub(crate) gateways: Vec<String>,
    /// How many test binaries run at once (each one assertion group of one
    /// mode's environment).
    pub(crate) jobs: usize,
}

/// The TLS gateway's certificate lifetime in the suite's environments
/// (setup.yaml ships 20 s, for a person watching rotations by hand): the
/// tls group waits for three rotations, one at 85-95% of each lifetime.
const SUITE_TLS_CERT_TTL: std::time::Duration = std::time::Duration::from_secs(8);

/// The default of `--jobs`: three per core. The binaries mostly wait on
/// real clocks, so more than one per core keeps the cores busy; but on two
/// cores, 8 at once already starved the load cases now and then (keygate's
/// Vault reads and bao agent's renders past their deadlines) and 16 failed
/// 17 cases, so the default stays below that.
pub(crate) fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 3).clamp(4, 16)
}

/// A `--gateway` name: one of the catalog's (`env/gateways/<name>`, or
/// `$KEYRIG_GATEWAYS_DIR`), checked before anything is built.
pub(crate) fn parse_gateway(name: &str) -> Result<String> {
    let catalog = rig::contract::gateways::Catalog::load_default()?;
    Ok(catalog.get(name)?.name.clone())
}

pub(crate) fn modes_or_all(modes: &[DeliveryMode]) -> Vec<rig::contract::modes::Mode> {
    if modes.is_empty() {
        rig::contract::modes::Mode::ALL.to_vec()
    } else {
        modes.iter().map(|m| m.mode()).collect()
    }
}

/// One environment per delivery mode, all started at once after one build;
/// then every test binary of every mode side by side (`suite`); then each
/// mode's reports as before, and one table of every case (group prefixed
/// with the mode) and the propagation summary.
pub(crate) fn e2e_modes(
    base: &E2eOptions,
    modes: &[rig::contract::modes::Mode],
) -> Result<ExitCode> {
    let profile = base.profile;
    profile.require_local()?;
    let wall = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    // The main job installs what it runs: every gateway of the matrix, so
    // none is skipped for want of a `cargo xtask tools`.
    crate::tools::install(crate::flags::ToolsProfile::Local)?;
    let selection = Selection::new(base.filter.as_deref())?;
    stop_on_interrupt()?;

    // Compile first, so a build error starts nothing and no environment
    // idles while the tests compile.
    let build_started = Instant::now();
    let keygate = crate::up::build_keygate()?;
    let binaries = crate::suite::build(&selection)?;
    let build_time = build_started.elapsed();

    // Every mode's environment at once; dropping a `LocalRun` stops it (at
    // the end, on `?`, on panic), so one that fails to come up takes the
    // others down with it.
    let started = Instant::now();
    let rt = runtime()?;
    let mut pending = Vec::new();
    for &mode in modes {
        let mut local = crate::up::local_options_with(mode, &keygate)?;
        local.gateways = base.gateways.clone();
        local.tls_cert_ttl = Some(SUITE_TLS_CERT_TTL);
        pending.push((mode, local));
    }
    say!(
        "starting {} environment{} at once: {}",
        modes.len(),
        if modes.len() == 1 { "" } else { "s" },
        modes
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // On one thread (a LocalSet): `up`'s future is not Send, and starting
    // processes and waiting on probes needs no second core.
    let local_set = tokio::task::LocalSet::new();
    let results = local_set.block_on(&rt, async {
        let handles: Vec<_> = pending
            .iter()
            .map(|(mode, local)| {
                let local = local.clone();
                let mode = *mode;
                tokio::task::spawn_local(async move {
                    rig::local::up(&local)
                        .await
                        .with_context(|| format!("the local profile ({mode}) did not come up"))
                })
            })
            .collect();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await);
        }
        results
    });
    let mut runs = Vec::new();
    let mut first_error = None;
    for ((mode, local), result) in pending.into_iter().zip(results) {
        match result.context("an environment's start panicked")? {
            Ok(run) => runs.push(ModeRun { mode, local, run }),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    let up_time = started.elapsed();
    say!(
        "environments up in {}; running the e2e tests",
        rig::base::progress::secs(up_time)
    );

    // Every group of every mode, side by side.
    let tests_started = Instant::now();
    let mode_independent_in = (modes.len() > 1).then(|| modes[0]);
    let mut jobs = Vec::new();
    for mode_run in &runs {
        jobs.extend(mode_run.jobs(
            &binaries,
            &selection,
            base.include_ignored,
            mode_independent_in,
        ));
    }
    let results = crate::suite::run(jobs, base.jobs)?;
    let test_time = tests_started.elapsed();

    // Each mode's reports, as when the modes ran in turn.
    let mut all_cases = Vec::new();
    let mut rotations = Vec::new();
    let mut notes = Vec::new();
    let mut ok = true;
    for mode_run in runs {
        let mode = mode_run.mode;
        println!();
        say!("=== delivery mode {mode} ===");
        let runner_ok = results
            .iter()
            .filter(|r| r.label.starts_with(&format!("{mode}/")))
            .all(|r| r.status.success());
        let opts = FinishMode {
            profile,
            filter: base.filter.clone(),
            keep: base.keep,
            // Each mode's reports in a directory of its own.
            report_dir: match &base.report_dir {
                Some(dir) if modes.len() > 1 => Some(dir.join(mode.as_str())),
                other => other.clone(),
            },
            started_at,
            wall,
            build: build_time,
            up: up_time,
            tests: test_time,
            runner_ok,
        };
        let outcome = finish_mode(mode_run, &opts, &rt)?;
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
    say!(
        "e2e: build {}, environments up {}, tests {}, wall {}",
        rig::base::progress::secs(build_time),
        rig::base::progress::secs(up_time),
        rig::base::progress::secs(test_time),
        rig::base::progress::secs(wall.elapsed())
    );
    let (_, failed, _) = rig::contract::case::totals(&all_cases);
    Ok(if ok && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One mode's running environment.
struct ModeRun {
    mode: rig::contract::modes::Mode,
    local: rig::local::LocalOptions,
    run: rig::local::LocalRun,
}

impl ModeRun {
    /// This mode's test binaries against its environment, and the api_keys
    /// group again through its keys-file gateway (`env-keys-file.json`:
    /// same Vault, `key_source: file`), so both validation modes pass the
    /// same assertions.
    fn jobs(
        &self,
        binaries: &[crate::suite::TestBinary],
        selection: &Selection,
        include_ignored: bool,
        mode_independent_in: Option<rig::contract::modes::Mode>,
    ) -> Vec<crate::suite::Job> {
        let run_dir = self.run.run.path();
        let env = |env_file: PathBuf| {
            let mut env = vec![
                (rig::contract::env::ENV_FILE_VAR.to_owned(), env_file),
                (
                    rig::contract::case::RUN_DIR_VAR.to_owned(),
                    run_dir.to_owned(),
                ),
                // Fault tests start environments of their own with these binaries.
                ("KEYRIG_KEYGATE".to_owned(), self.local.keygate_bin.clone()),
                (
                    rig::process::envoy_module::MODULE_VAR.to_owned(),
                    self.local.keygate_envoy_module.clone(),
                ),
                (
                    "KEYRIG_ECHO_PROGRAM".to_owned(),
                    self.local.echo.program.clone(),
                ),
            ];
            if let Some(mode) = mode_independent_in {
                env.push((
                    rig::contract::once::VAR.to_owned(),
                    PathBuf::from(mode.as_str()),
                ));
            }
            env
        };
        let args = crate::suite::test_args(selection, include_ignored);
        let mut jobs = Vec::new();
        for binary in binaries {
            let Some(cases) = &binary.cases else {
                jobs.push(crate::suite::Job {
                    label: format!("{}/{}", self.mode, binary.group),
                    binary: binary.path.clone(),
                    args: args.clone(),
                    env: env(self.run.run.env_file()),
                    log: crate::suite::log_path(run_dir, &binary.group),
                });
                continue;
            };
            for case in cases
                .iter()
                .filter(|c| selection.name_filter().is_none_or(|w| c.contains(w)))
            {
                let mut case_args = vec!["--exact".to_owned(), case.clone()];
                if include_ignored {
                    case_args.push("--include-ignored".to_owned());
                }
                let short = case.rsplit("::").next().unwrap_or(case);
                jobs.push(crate::suite::Job {
                    label: format!("{}/{}::{short}", self.mode, binary.group),
                    binary: binary.path.clone(),
                    args: case_args,
                    env: env(self.run.run.env_file()),
                    log: crate::suite::log_path(run_dir, &format!("{}__{short}", binary.group)),
                });
            }
        }
        let view = rig::contract::env::Environment::keys_file_env_path(&self.run.run.env_file());
        if let Some(api_keys) = binaries.iter().find(|b| b.group == "api_keys")
            && view.is_file()
        {
            jobs.push(crate::suite::Job {
                label: format!("{}/api_keys@keys-file", self.mode),
                binary: api_keys.path.clone(),
                args,
                env: env(view),
                log: crate::suite::log_path(run_dir, "api_keys@keys-file"),
            });
        }
        jobs
    }
}

/// What a mode's reports are made from, besides its run.
struct FinishMode {
    profile: Profile,
    filter: Option<String>,
    keep: bool,
    report_dir: Option<PathBuf>,
    started_at: time::OffsetDateTime,
    wall: Instant,
    build: std::time::Duration,
    up: std::time::Duration,
    tests: std::time::Duration,
    /// Every test binary of this mode exited 0.
    runner_ok: bool,
}

/// What one mode's e2e run produced.
pub(crate) struct E2eOutcome {
    pub(crate) code: ExitCode,
    pub(crate) cases: Vec<rig::contract::case::CaseRecord>,
    pub(crate) rotations: Vec<rig::contract::rotation::RotationRecord>,
    /// The intervals configured in this run, for the propagation summary.
    pub(crate) notes: Vec<String>,
}

/// A mode's cases read back, diagnostics collected while its components
/// are still up, then its environment stopped (or kept) and its reports
/// written.
fn finish_mode(
    mode_run: ModeRun,
    opts: &FinishMode,
    rt: &tokio::runtime::Runtime,
) -> Result<E2eOutcome> {
    let ModeRun { mut run, .. } = mode_run;
    let cases = rig::contract::case::read_cases(run.run.path())?;
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
    let any_failed = !opts.runner_ok
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
        "build {}, up {}, tests {} (all modes at once); logs in {}",
        rig::base::progress::secs(opts.build),
        rig::base::progress::secs(opts.up),
        rig::base::progress::secs(opts.tests),
        run.environment.logs_dir.display()
    );

    let outcome = crate::e2e_report::finish(crate::e2e_report::Finish {
        run_dir: run.run.path(),
        run_id: run.run.id(),
        profile: opts.profile.name(),
        mode: run.environment.mode.as_deref(),
        filter: opts.filter.clone(),
        started_at: opts.started_at,
        wall: opts.wall.elapsed(),
        up: opts.up,
        tests: opts.tests,
        cases,
        runner_ok: opts.runner_ok,
        gateway_deviations: &run.environment.gateway_deviations,
        report_dir: opts.report_dir.as_deref(),
    })?;
    if kept {
        crate::e2e_report::print_kept(&run.environment, run.run.path());
    }
    if !opts.runner_ok && failed == 0 {
        say!(
            "a test binary failed though no case recorded a failure: see its output above (and under {}/tests/)",
            run.run.path().display()
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
    // The catalog's order (by name): every gateway this run ran or skipped.
    let names: std::collections::BTreeSet<&str> = env
        .gateways
        .keys()
        .chain(env.skipped_gateways.keys())
        .map(String::as_str)
        .collect();
    let order: Vec<&str> = names.into_iter().collect();
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
