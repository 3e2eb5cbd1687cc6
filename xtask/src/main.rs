//! `cargo xtask`: keyrig's CLI, a thin layer over the `rig` library.
//!
//! Progress goes to stderr as `[keyrig] ...` lines; what a command is asked
//! for (a report, a results table, where things are) goes to stdout.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rig::process::StopOutcome;
use rig::say;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "keyrig's harness: pinned tools, environments, end-to-end tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the pinned tools a profile needs (env/tools.toml), then print `doctor`.
    Tools {
        #[arg(long, value_enum, default_value_t = Profile::Local)]
        profile: Profile,
    },
    /// Show each tool's version and source, warnings, and what each profile lacks.
    Doctor,
    /// Start an environment and leave it running; `cargo xtask down` stops it.
    Up {
        #[arg(long, value_enum, default_value_t = Profile::Local)]
        profile: Profile,
    },
    /// Stop what `up` left running (every run under target/rig with a pids.json).
    Down,
    /// Start an environment, run the e2e tests against it, print the results, stop it.
    E2e {
        #[arg(long, value_enum, default_value_t = Profile::Local)]
        profile: Profile,
        /// Run only the tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Everything: install tools, unit and integration tests, then e2e on the local profile.
    Test,
    /// The echo upstream the local profile puts behind the gateway.
    #[command(hide = true)]
    EchoUpstream {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    /// Every component a process on loopback.
    Local,
    /// A kind cluster.
    Kind,
    /// The current kubectl context's cluster.
    Cluster,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Kind => "kind",
            Profile::Cluster => "cluster",
        }
    }

    fn require_local(self) -> Result<()> {
        if self != Profile::Local {
            bail!(
                "the {} profile is not implemented yet in this build: use --profile local",
                self.name()
            );
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            let mut chain = err.chain();
            if let Some(first) = chain.next() {
                eprintln!("[keyrig] error: {first}");
            }
            for cause in chain {
                eprintln!("[keyrig]   because: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Cmd) -> Result<ExitCode> {
    match command {
        Cmd::Tools { profile } => tools(profile).map(|()| ExitCode::SUCCESS),
        Cmd::Doctor => {
            print!("{}", rig::tools::Tools::load_default()?.doctor());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Up { profile } => up(profile).map(|()| ExitCode::SUCCESS),
        Cmd::Down => down().map(|()| ExitCode::SUCCESS),
        Cmd::E2e { profile, filter } => e2e(profile, filter.as_deref()),
        Cmd::Test => test(),
        Cmd::EchoUpstream { listen } => {
            runtime()?.block_on(rig::echo::serve(listen))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// pid of the running `cargo test`, so a termination signal reaches it too
/// (a terminal's Ctrl-C does anyway; `kill` or a CI timeout does not).
static TEST_PID: AtomicI32 = AtomicI32::new(0);

/// On SIGINT/SIGTERM: stop every component this process started, and exit
/// 130. Components run in their own process groups, so they never see the
/// terminal's Ctrl-C themselves and are stopped in order here.
fn stop_on_interrupt() -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("[keyrig] interrupted: stopping what this run started");
        let test_pid = TEST_PID.load(Ordering::SeqCst);
        if test_pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(test_pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        rig::process::stop_all_registered();
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs cargo with inherited output, in the workspace root.
fn run_cargo(args: &[&str], what: &str) -> Result<bool> {
    say!("{what}: cargo {}", args.join(" "));
    let status = Command::new(cargo())
        .args(args)
        .current_dir(rig::paths::workspace_root())
        .status()
        .with_context(|| format!("running cargo for {what}"))?;
    Ok(status.success())
}

fn tools(profile: Profile) -> Result<()> {
    let tools = rig::tools::Tools::load_default()?;
    tools.ensure_installed(profile.name())?;
    let doctor = tools.doctor();
    print!("{doctor}");
    if !doctor.profile_ready(profile.name()) {
        bail!(
            "the {} profile still lacks tools (see above)",
            profile.name()
        );
    }
    Ok(())
}

/// Builds keygate (unless `$KEYRIG_KEYGATE` names a binary) and says how
/// to run the echo upstream: this very binary, hidden subcommand.
fn local_options() -> Result<rig::local::LocalOptions> {
    let keygate = match std::env::var_os("KEYRIG_KEYGATE").filter(|v| !v.is_empty()) {
        Some(path) => {
            say!(
                "keygate: using KEYRIG_KEYGATE={}",
                Path::new(&path).display()
            );
            PathBuf::from(path)
        }
        None => {
            if !run_cargo(&["build", "-p", "keygate"], "building keygate")? {
                bail!("keygate does not build: see cargo's output above");
            }
            rig::paths::target_dir().join("debug/keygate")
        }
    };
    let echo = rig::local::EchoCommand {
        program: std::env::current_exe().context("finding the xtask binary")?,
        args: vec!["echo-upstream".into()],
    };
    Ok(rig::local::LocalOptions::new(keygate, echo))
}

fn up(profile: Profile) -> Result<()> {
    profile.require_local()?;
    stop_on_interrupt()?;
    let opts = local_options()?;
    let started = Instant::now();
    // On error, `local::up` has already stopped what it started.
    let run = runtime()?
        .block_on(rig::local::up(&opts))
        .context("the local profile did not come up")?;
    let env = &run.environment;
    println!(
        "keyrig local environment {} is up ({}):",
        env.run_id,
        rig::secs(started.elapsed())
    );
    println!("  gateway   {}", env.gateway_url);
    for (group, prefix) in &env.groups {
        println!("              {prefix}  ({group})");
    }
    println!(
        "  vault     {}  (root token in {})",
        env.vault_addr,
        env.root_token_file.display()
    );
    println!(
        "  keygate   {}  (/readyz, /healthz, /metrics)",
        env.keygate_url
    );
    println!("  upstream  {}", env.upstream_url);
    if let Some(side) = &env.keys_file {
        println!(
            "  keys-file gateway {} (keygate {}; bao agent renders every {} ms)",
            side.gateway_url, side.keygate_url, side.render_interval_ms
        );
    }
    println!("  env.json  {}", run.run.env_file().display());
    println!("  logs      {}", env.logs_dir.display());
    println!("stop with `cargo xtask down`");
    run.supervisor.detach();
    Ok(())
}

fn down() -> Result<()> {
    let rig_dir = rig::paths::rig_dir();
    let mut pid_files: Vec<PathBuf> = match std::fs::read_dir(&rig_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path().join("pids.json"))
            .filter(|p| p.is_file())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", rig_dir.display())),
    };
    pid_files.sort();
    if pid_files.is_empty() {
        say!(
            "nothing to stop: no run under {} has a pids.json",
            rig_dir.display()
        );
        return Ok(());
    }
    for file in pid_files {
        let run = file
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (record, outcome) in rig::process::stop_from_pid_file(&file)? {
            let (name, pid) = (&record.name, record.pid);
            match outcome {
                StopOutcome::Stopped => say!("run {run}: stopped {name} (pid {pid})"),
                StopOutcome::Killed => {
                    say!("run {run}: killed {name} (pid {pid}), which ignored SIGTERM")
                }
                StopOutcome::AlreadyGone => {
                    say!("run {run}: {name} (pid {pid}) had already exited")
                }
                StopOutcome::NotOurs => {
                    say!("run {run}: pid {pid} no longer runs {name}: left alone")
                }
            }
        }
    }
    Ok(())
}

fn e2e(profile: Profile, filter: Option<&str>) -> Result<ExitCode> {
    profile.require_local()?;
    stop_on_interrupt()?;
    // Compile first, so a build error starts nothing and the environment
    // does not idle while the tests compile.
    let opts = local_options()?;
    if !run_cargo(
        &["test", "-p", "keyrig-e2e", "--no-run"],
        "building the e2e tests",
    )? {
        bail!("the e2e tests do not build: see cargo's output above");
    }

    let started = Instant::now();
    // Dropping `run` stops everything: at the end, on `?`, and on panic.
    let mut run = runtime()?
        .block_on(rig::local::up(&opts))
        .context("the local profile did not come up")?;
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
    let mut status = child.wait().context("waiting for cargo test")?;
    TEST_PID.store(0, Ordering::SeqCst);
    if let Some(keys_file_status) = keys_file_pass(&run, filter)?
        && !keys_file_status.success()
    {
        status = keys_file_status;
    }
    let test_time = tests_started.elapsed();

    let cases = rig::case::read_cases(run.run.path())?;
    run.supervisor.stop_all();
    println!();
    if cases.is_empty() {
        println!(
            "no e2e case records in {}/cases (tests record themselves with rig::case::CaseGuard)",
            run.run.path().display()
        );
    } else {
        rig::case::print_table(&cases);
    }
    let (_, failed, _) = rig::case::totals(&cases);
    say!(
        "up {}, tests {}; logs in {}",
        rig::secs(up_time),
        rig::secs(test_time),
        run.environment.logs_dir.display()
    );
    if !status.success() {
        if failed == 0 {
            say!(
                "cargo test failed ({status}) though no case recorded a failure: see cargo's output above"
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The api_keys group again, through the keys-file gateway of the same
/// environment (`env-keys-file.json`: same Vault, `key_source: file`), so
/// both validation modes pass the same assertions.
fn keys_file_pass(
    run: &rig::local::LocalRun,
    filter: Option<&str>,
) -> Result<Option<std::process::ExitStatus>> {
    let view = rig::env::Environment::keys_file_env_path(&run.run.env_file());
    if !view.is_file() {
        return Ok(None);
    }
    say!(
        "api_keys again through the keys-file gateway ({})",
        view.display()
    );
    let mut command = Command::new(cargo());
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
        .args(filter)
        .env(rig::env::ENV_FILE_VAR, &view)
        .env(rig::case::RUN_DIR_VAR, run.run.path())
        .current_dir(rig::paths::workspace_root());
    let mut child = command.spawn().context("running cargo test")?;
    TEST_PID.store(child.id() as i32, Ordering::SeqCst);
    let status = child.wait().context("waiting for cargo test")?;
    TEST_PID.store(0, Ordering::SeqCst);
    Ok(Some(status))
}

fn test() -> Result<ExitCode> {
    tools(Profile::Local)?;
    // The offline checks of the kind profile render manifests with the pinned kubectl.
    rig::tools::Tools::load_default()?.ensure_installed("offline")?;
    let unit_ok = run_cargo(
        &["test", "--workspace", "--exclude", "keyrig-e2e"],
        "unit and integration tests",
    )?;
    let e2e = e2e(Profile::Local, None)?;
    let e2e_ok = e2e == ExitCode::SUCCESS;
    say!(
        "unit and integration tests: {}; e2e: {}",
        if unit_ok { "passed" } else { "FAILED" },
        if e2e_ok { "passed" } else { "FAILED" }
    );
    Ok(if unit_ok && e2e_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
