//! `cargo xtask`: keyrig's CLI, a thin layer over the `rig` library. This
//! file parses the command line and dispatches; each subcommand is a module
//! of its own (`up`, `down`, `e2e`, `test`, `bench`, `tools`, ...), as in
//! rust-analyzer's xtask.
//!
//! Progress goes to stderr as `[keyrig] ...` lines; what a command is asked
//! for (a report, a results table, where things are) goes to stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use rig::say;

mod background;
mod bench;
mod build;
mod catalog_check;
mod docs;
mod down;
mod e2e;
mod e2e_report;
mod external;
mod external_check;
mod flags;
mod fuzz;
mod kube;
mod memcheck;
mod runner;
mod scan_uploads;
mod scenarios;
mod selection;
mod selfcheck;
mod status;
mod suite;
mod test;
mod tools;
mod up;

use crate::bench::bench;
use crate::down::down;
use crate::e2e::{E2eOptions, e2e_modes, modes_or_all, parse_gateway};
use crate::flags::{DeliveryMode, KubeArgs, Profile, ToolsProfile};
use crate::runner::runtime;
use crate::scan_uploads::scan_uploads;
use crate::test::test;
use crate::tools::tools;
use crate::up::up;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "keyrig's harness: pinned tools, environments, end-to-end tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Fails naming each flag given (`true`) that `what` does not use, rather
/// than running without it.
fn refuse_unused(what: &str, flags: &[(&str, bool)]) -> Result<()> {
    let given: Vec<&str> = flags
        .iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| *f)
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    bail!(
        "{} {} not used with {what}: leave {} out",
        given.join(", "),
        if given.len() == 1 { "is" } else { "are" },
        if given.len() == 1 { "it" } else { "them" }
    )
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the pinned tools a profile needs (env/tools.toml), then print `doctor`.
    Tools {
        #[arg(long, value_enum, default_value_t = ToolsProfile::All)]
        profile: ToolsProfile,
    },
    /// Search what CI uploads (target/rig/ without its secrets/ directories:
    /// every run, the kind cluster's logs) for every run's registered
    /// secrets; exits non-zero, naming the files, if one is there.
    ScanUploads {
        /// The directory to scan (default: target/rig/).
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
        /// Start Vault (with its setup, the delivered Secret and the
        /// upstream) but no keygate and no gateway: for putting your own
        /// validator under test with `cargo xtask e2e --gateway-url`; a
        /// read-only token for it is written to a 0600 file (local profile).
        #[arg(long)]
        no_keygate: bool,
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
        /// An assertion group's name (e.g. `tls`, `faults`: its file in
        /// tests/) runs that group; any other word, the tests whose names
        /// contain it.
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
        /// a directory name of the gateway catalog (env/gateways: envoy-grpc,
        /// envoy-http, envoy-module, traefik, nginx, caddy).
        /// Default: every gateway whose binary is installed.
        #[arg(long = "gateway", value_name = "NAME", value_parser = parse_gateway)]
        gateways: Vec<String>,
        /// A gateway you run yourself, configured to call the keygate of
        /// the running `cargo xtask up` (repeatable): the gateway-matrix
        /// groups run through it alone, against that environment.
        #[arg(long = "gateway-url", value_name = "NAME=URL", value_parser = external::parse_gateway_url)]
        gateway_urls: Vec<(String, String)>,
        /// What a --gateway-url gateway does differently: a file of
        /// `[deviations.<row>]` tables (or its gateway.toml). Default: the
        /// strict expectations.
        #[arg(long = "expect", value_name = "NAME=FILE", value_parser = external::parse_expect, requires = "gateway_urls")]
        expect: Vec<(String, PathBuf)>,
        /// Credential delivery mode(s), each its own environment, all
        /// running at once (default: all three). Repeatable.
        #[arg(long, value_enum)]
        mode: Vec<DeliveryMode>,
        /// How many e2e test binaries (one assertion group of one mode
        /// each) run at once. Default: three per core, 4 to 16.
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// What is running: each run with a pids.json, its components and addresses.
    Status,
    /// The scenarios (API groups, Vault setup, Kubernetes overlays) and the e2e assertion groups.
    Scenarios,
    /// Writes the docs generated from data: docs/gateways.md's gateway
    /// tables, from env/gateways/*/gateway.toml.
    Docs,
    /// The gateway catalog check of `cargo xtask test` alone: a gateway
    /// added as data, with one deviation declared falsely.
    #[command(hide = true)]
    CatalogCheck,
    /// The external gateway check of `cargo xtask test` alone, two passes:
    /// `up` and a Caddy started by hand; `up --no-keygate` and a validator
    /// started by hand; each tested with `e2e --gateway-url`, then `down`.
    #[command(hide = true)]
    ExternalCheck,
    /// Everything: install tools, unit and integration tests, then e2e on the local profile.
    Test,
    /// Run each cargo-fuzz target in fuzz/ for a while, with AddressSanitizer
    /// where a nightly toolchain is installed (installs cargo-fuzz if missing).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Only this target.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(fuzz::TARGETS))]
        target: Option<String>,
        /// Write new inputs to a temporary directory instead of adding them
        /// to fuzz/corpus/ (as the smoke run of `cargo xtask test` does,
        /// which also builds unoptimized; this builds optimized).
        #[arg(long)]
        scratch_corpus: bool,
    },
    /// Measure auth overhead (vs Envoy's native filter and no auth), rotation
    /// propagation, scale and suite speed; table on stdout, numbers in
    /// target/rig/bench/bench.json, plot in target/rig/bench/latency.svg.
    Bench {
        /// A short run (about a minute and a half): fewer rounds, events and keys.
        #[arg(long)]
        quick: bool,
        /// Rounds of the auth-overhead step (8 in a full run, 3 with
        /// --quick; each ~30 s in a full run): more rounds narrow the
        /// interval printed for each per-round ratio.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=200))]
        rounds: Option<u16>,
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
            no_keygate,
            kube,
        } => match profile.kube() {
            Some(_) if no_keygate => {
                anyhow::bail!(
                    "--no-keygate is for the local profile: the kind and cluster profiles deploy keygate as the gateway's validator"
                )
            }
            Some(which) => kube::up(which, mode.mode(), kube).map(|()| ExitCode::SUCCESS),
            None => up(profile, mode.mode(), !no_keygate).map(|()| ExitCode::SUCCESS),
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
            keep,
            include_ignored,
            gateways,
            gateway_urls,
            jobs,
            ..
        } if profile != Profile::Local => {
            refuse_unused(
                &format!("the {} profile", profile.name()),
                &[
                    ("--keep", keep),
                    ("--include-ignored", include_ignored),
                    ("--gateway", !gateways.is_empty()),
                    ("--gateway-url", !gateway_urls.is_empty()),
                    ("--jobs", jobs.is_some()),
                ],
            )?;
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
                    .mode(),
                kube,
                filter.as_deref(),
                report_dir.as_deref(),
            )
        }
        Cmd::E2e {
            gateway_urls,
            expect,
            filter,
            report_dir,
            jobs,
            mode,
            keep,
            include_ignored,
            gateways,
            ..
        } if !gateway_urls.is_empty() => {
            refuse_unused(
                "--gateway-url (it runs against the environment of `cargo xtask up`, in its mode)",
                &[
                    ("--mode", !mode.is_empty()),
                    ("--keep", keep),
                    ("--include-ignored", include_ignored),
                    ("--gateway", !gateways.is_empty()),
                ],
            )?;
            external::run(external::ExternalRun {
                gateways: &gateway_urls,
                expect: &expect,
                filter: filter.as_deref(),
                report_dir: report_dir.as_deref(),
                jobs: jobs.unwrap_or_else(crate::e2e::default_jobs),
            })
        }
        Cmd::E2e {
            profile,
            filter,
            keep,
            report_dir,
            include_ignored,
            gateways,
            mode,
            jobs,
            kube: _,
            ..
        } => e2e_modes(
            &E2eOptions {
                profile,
                filter,
                keep,
                report_dir,
                include_ignored,
                gateways,
                jobs: jobs.unwrap_or_else(crate::e2e::default_jobs),
            },
            &modes_or_all(&mode),
        ),
        Cmd::Status => status::print().map(|()| ExitCode::SUCCESS),
        Cmd::Scenarios => scenarios::print().map(|()| ExitCode::SUCCESS),
        Cmd::Docs => docs::write().map(|()| ExitCode::SUCCESS),
        Cmd::ExternalCheck => Ok(if external_check::run()? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Cmd::CatalogCheck => Ok(if catalog_check::run()? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
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
            fuzz::FuzzProfile::Release,
        ),
        Cmd::Bench { quick, rounds } => {
            bench(quick, rounds.map(usize::from), true).map(|()| ExitCode::SUCCESS)
        }
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
