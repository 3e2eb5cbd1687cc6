//! `cargo xtask fuzz`: each cargo-fuzz target of `fuzz/` for a bounded
//! time, corpus in `fuzz/corpus/<target>/`.
//!
//! Where new inputs go: `cargo xtask fuzz` (the long run README documents)
//! adds them to the committed corpus. The smoke run of `cargo xtask test`
//! must leave the work tree clean, so it hands libFuzzer a fresh temporary
//! directory first and the committed corpus second: libFuzzer reads both
//! and writes new inputs only into the first corpus directory (and deletes
//! only files it wrote there), so `fuzz/corpus/` is read, never written.
//!
//! How it builds ([`Build`]): with AddressSanitizer on the nightly
//! toolchain where rustup has one (`rustup run nightly cargo fuzz run -s
//! address`); otherwise on the stable toolchain, which takes cargo-fuzz's
//! nightly-only `-Z` flags only with `RUSTC_BOOTSTRAP=1`, and without a
//! sanitizer (`-s none`): stable ships no sanitizer runtime. Safe Rust is
//! memory-safe, but what the targets run is not all safe Rust: serde_yaml
//! parses with unsafe-libyaml (a C parser translated to `unsafe` Rust),
//! and only the sanitizer checks its memory accesses. Both builds find
//! panics, hangs and failed invariants.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use rig::say;

use crate::background::Background;

/// The fuzz targets: every `[[bin]]` of fuzz/Cargo.toml (the unit test
/// below keeps the two in step). None builds rig: the scenario loaders are
/// `keyrig-scenario`'s, keygate's parsing is `keygate-config`'s, the Envoy
/// module's feed reader is keygate-envoy's rlib.
pub const TARGETS: [&str; 7] = [
    "apikey_parse",
    "keygate_config",
    "scenario_loader",
    "forward_auth_headers",
    "route_resolve",
    "openapi_docs",
    "module_feed",
];

fn names() -> Vec<&'static str> {
    TARGETS.to_vec()
}

/// The toolchain and sanitizer the targets are built with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Build {
    /// `rustup run nightly cargo fuzz run -s address`: release build with
    /// debug assertions (cargo-fuzz's default), so overflows fail too.
    AddressSanitizer,
    /// The stable toolchain, `RUSTC_BOOTSTRAP=1`, `-s none -O`.
    NoSanitizer,
}

impl Build {
    /// AddressSanitizer where rustup has a nightly toolchain; says which
    /// build it picked and why.
    fn pick() -> Self {
        match nightly() {
            Ok(nightly) => {
                say!(
                    "fuzz: building with AddressSanitizer on {}",
                    nightly.version
                );
                Self::AddressSanitizer
            }
            Err(why) => {
                say!(
                    "fuzz: {why}: building without a sanitizer on this toolchain \
                     (RUSTC_BOOTSTRAP=1, -s none); `rustup toolchain install nightly` enables it"
                );
                Self::NoSanitizer
            }
        }
    }

    /// `cargo fuzz run` for `target`, up to the corpus directories.
    fn command(&self, target: &str, profile: FuzzProfile) -> Command {
        let mut command = self.cargo_fuzz("run", profile);
        command.arg(target);
        command
    }

    /// `cargo fuzz build` of every target, with the flags `run` takes, so
    /// a `run` after it compiles nothing.
    fn build_all(&self, profile: FuzzProfile) -> Command {
        self.cargo_fuzz("build", profile)
    }

    fn cargo_fuzz(&self, verb: &str, profile: FuzzProfile) -> Command {
        let mut command = match self {
            Self::AddressSanitizer => {
                let mut command = crate::runner::cargo_on("nightly");
                command.args(["fuzz", verb, "-s", "address"]);
                command
            }
            Self::NoSanitizer => {
                let mut command = crate::runner::cargo();
                command
                    .args(["fuzz", verb, "-s", "none"])
                    .env("RUSTC_BOOTSTRAP", "1");
                if profile == FuzzProfile::Release {
                    command.arg("-O");
                }
                command
            }
        };
        if profile == FuzzProfile::Dev {
            command.arg("--dev");
        }
        command.current_dir(fuzz_dir());
        command
    }
}

/// The nightly toolchain rustup has, which alone ships the sanitizer
/// runtimes.
struct Nightly {
    /// `rustc --version`.
    version: String,
    /// The host's target triple (`-Zsanitizer` needs an explicit
    /// `--target`, so build scripts and proc macros are built without it).
    host: String,
}

/// The nightly toolchain, or why there is none (never downloads one).
fn nightly() -> std::result::Result<Nightly, String> {
    let mut probe = Command::new("rustup");
    probe
        .args(["run", "nightly", "rustc", "-vV"])
        // A missing nightly is a fallback, not something to download.
        .env("RUSTUP_AUTO_INSTALL", "0");
    rig::process::supervisor::remove_secret_vars(&mut probe);
    let out = probe
        .output()
        .map_err(|err| format!("no rustup ({err}), so no nightly toolchain"))?;
    if !out.status.success() {
        return Err(format!(
            "no nightly toolchain (rustup run nightly: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Nightly::from_verbose_version(&String::from_utf8_lossy(&out.stdout))
}

impl Nightly {
    /// From `rustc -vV`: the version line, then `key: value` lines.
    fn from_verbose_version(text: &str) -> std::result::Result<Self, String> {
        let version = text.lines().next().unwrap_or_default().trim().to_owned();
        let host = text
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("rustc -vV on nightly names no host: {text}"))?
            .to_owned();
        Ok(Self { version, host })
    }
}

/// keygate-envoy's unit tests under AddressSanitizer: its hooks are
/// `unsafe` FFI code that runs inside Envoy's process, and its tests drive
/// them through a scripted host that calls back into them as Envoy does
/// (`crates/keygate-envoy/src/filter/tests.rs`), so a use after free there
/// is a sanitizer report here. `None`: skipped, with the reason said (no
/// nightly toolchain: stable ships no sanitizer runtime). Built into
/// `target/asan`, apart from the ordinary builds.
pub(crate) fn module_tests_under_asan() -> Result<Option<bool>> {
    let nightly = match nightly() {
        Ok(nightly) => nightly,
        Err(why) => {
            say!(
                "keygate-envoy under AddressSanitizer: skipped: {why}; `rustup toolchain install nightly` enables it"
            );
            return Ok(None);
        }
    };
    let args = [
        "test",
        "-p",
        "keygate-envoy",
        "--lib",
        "--target",
        nightly.host.as_str(),
    ];
    say!(
        "keygate-envoy under AddressSanitizer ({}): cargo {}",
        nightly.version,
        args.join(" ")
    );
    let root = rig::base::paths::workspace_root();
    let mut command = crate::runner::cargo_on("nightly");
    crate::runner::plain_output_unless_interactive(&mut command);
    command
        .args(args)
        .env("RUSTFLAGS", "-Zsanitizer=address")
        .env("CARGO_TARGET_DIR", root.join("target").join("asan"))
        .current_dir(&root);
    // Tracked, as every test process xtask waits for.
    let mut child = crate::runner::spawn_tracked(&mut command)?;
    let status = crate::runner::wait_for_test(&mut child)
        .context("running keygate-envoy's unit tests under AddressSanitizer")?;
    Ok(Some(status.success()))
}

fn fuzz_dir() -> std::path::PathBuf {
    rig::base::paths::workspace_root().join("fuzz")
}

/// `cargo install` of the pinned cargo-fuzz (env/tools.toml `[cargo]`), so
/// two fresh machines fuzz with the same one.
fn install_cargo_fuzz(version: &str) -> Command {
    let mut command = crate::runner::cargo();
    command.args(["install", "cargo-fuzz", "--locked", "--version", version]);
    command
}

/// Installs cargo-fuzz where it is missing and builds every target as
/// [`run`] will, in the background at the lowest priority ([`Background`]):
/// on a fresh machine that is a minute of cargo-fuzz's own build and a
/// minute and a half of instrumented dependencies, which `cargo xtask test`
/// overlaps with its other stages. Wait for it before [`run`].
pub(crate) fn prebuild(profile: FuzzProfile) -> Result<Background> {
    let mut steps = Vec::new();
    let tools = rig::process::tools::Tools::load_default()?;
    let pin = tools.cargo_pin("cargo-fuzz")?;
    match cargo_fuzz_version() {
        None => {
            say!(
                "cargo-fuzz is missing: installing {pin} from crates.io (in the background, once)"
            );
            steps.push(install_cargo_fuzz(pin));
        }
        Some(version) if version != pin => say!(
            "warning: cargo-fuzz {version} is installed, pin is {pin}: used (`cargo install cargo-fuzz --locked --version {pin}` to match)"
        ),
        Some(_) => {}
    }
    steps.push(Build::pick().build_all(profile));
    Background::spawn(
        "fuzz build",
        &rig::base::paths::rig_dir().join("fuzz-build.log"),
        steps,
    )
}

/// The installed cargo-fuzz's version (`cargo-fuzz 0.13.2`), if any.
fn cargo_fuzz_version() -> Option<String> {
    let output = crate::runner::cargo()
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout);
    Some(
        text.split_whitespace()
            .nth(1)
            .unwrap_or("(unknown)")
            .to_owned(),
    )
}

/// How the targets are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuzzProfile {
    /// Optimized (with debug assertions): the long runs, where executions
    /// per second are what finds bugs.
    Release,
    /// Unoptimized (`--dev`): the seconds-long smoke run of `cargo xtask
    /// test`, where a fresh machine's build time (every dependency of
    /// keygate, instrumented) is most of the cost and speed per input is not.
    Dev,
}

/// What happens to the inputs a run finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewInputs {
    /// Added to `fuzz/corpus/<target>/` (the long run).
    GrowCorpus,
    /// Written to a temporary directory, dropped at the end (the smoke run).
    Discard,
}

pub fn run(
    seconds: u64,
    only: Option<&str>,
    new_inputs: NewInputs,
    profile: FuzzProfile,
) -> Result<ExitCode> {
    if let Some(name) = only.filter(|n| !names().contains(n)) {
        bail!(
            "no fuzz target {name:?}: pick one of {}",
            names().join(", ")
        );
    }
    if cargo_fuzz_version().is_none() {
        let tools = rig::process::tools::Tools::load_default()?;
        let pin = tools.cargo_pin("cargo-fuzz")?;
        say!("cargo-fuzz is missing: installing {pin} from crates.io (takes minutes, once)");
        let status = install_cargo_fuzz(pin)
            .status()
            .context("running cargo install cargo-fuzz")?;
        if !status.success() {
            bail!(
                "`cargo install cargo-fuzz --locked --version {pin}` failed: see cargo's output above"
            );
        }
    }
    let build = Build::pick();
    let dir = fuzz_dir();
    let mut runs = Vec::new();
    for &name in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = dir.join("corpus").join(name);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        // Held until the target's run ends, then removed.
        let scratch = match new_inputs {
            NewInputs::GrowCorpus => None,
            NewInputs::Discard => Some(
                tempfile::Builder::new()
                    .prefix(&format!("keyrig-fuzz-{name}-"))
                    .tempdir()
                    .context("creating a temporary directory for new fuzz inputs")?,
            ),
        };
        let mut corpora = Vec::new();
        corpora.extend(scratch.as_ref().map(|dir| dir.path().to_owned()));
        corpora.push(corpus.clone());
        say!(
            "fuzz {name}: {seconds} s, corpus {}{}",
            corpus.display(),
            match &scratch {
                Some(dir) => format!(
                    " (read only; new inputs to {}, dropped after)",
                    dir.path().display()
                ),
                None => " (new inputs added to it)".to_owned(),
            }
        );
        let mut command = build.command(name, profile);
        command.args(&corpora).args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=1024",
        ]);
        runs.push(TargetRun {
            name,
            command,
            _scratch: scratch,
        });
    }
    let failed = match new_inputs {
        // The long runs: one after another, libFuzzer's output as it comes.
        NewInputs::GrowCorpus => one_after_another(runs)?,
        NewInputs::Discard => side_by_side(runs)?,
    };
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        say!("fuzz targets that failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// One target's `cargo fuzz run`, with its scratch corpus (removed on drop).
struct TargetRun {
    name: &'static str,
    command: Command,
    _scratch: Option<tempfile::TempDir>,
}

fn one_after_another(runs: Vec<TargetRun>) -> Result<Vec<&'static str>> {
    let mut failed = Vec::new();
    for mut run in runs {
        let status = run.command.status().context("running cargo fuzz")?;
        if !status.success() {
            say!(
                "fuzz {}: FAILED ({status}); the crashing input is under fuzz/artifacts/{}/",
                run.name,
                run.name
            );
            failed.push(run.name);
        }
    }
    Ok(failed)
}

/// The smoke run: as many targets at once as there are cores (libFuzzer
/// runs one thread, so each still has a core for its seconds), each one's
/// output in `target/rig/fuzz/<target>.log`; a line per target, and the
/// log's end for one that failed.
fn side_by_side(runs: Vec<TargetRun>) -> Result<Vec<&'static str>> {
    let at_once = std::thread::available_parallelism().map_or(1, |n| n.get());
    let logs = rig::base::paths::rig_dir().join("fuzz");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut failed = Vec::new();
    let mut runs = runs.into_iter().peekable();
    while runs.peek().is_some() {
        let wave: Vec<TargetRun> = runs.by_ref().take(at_once).collect();
        let mut started = Vec::new();
        for mut run in wave {
            let log = logs.join(format!("{}.log", run.name));
            let out = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            // Tracked from the start: the wave's others run while the
            // first is waited for, and a SIGTERM must reach them too.
            let child = crate::runner::spawn_tracked(
                run.command
                    .stdin(std::process::Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out),
            )
            .context("running cargo fuzz")?;
            started.push((run, child, log));
        }
        for (run, mut child, log) in started {
            let status =
                crate::runner::wait_for_test(&mut child).context("waiting for cargo fuzz")?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if status.success() {
                // libFuzzer's last line: "Done 5348 runs in 5 second(s)".
                let done = text
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("Done "))
                    .unwrap_or("no summary line");
                say!("fuzz {}: passed: {done} (log {})", run.name, log.display());
            } else {
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
                say!(
                    "fuzz {}: FAILED ({status}); the crashing input is under fuzz/artifacts/{}/, the whole output in {}",
                    run.name,
                    run.name,
                    log.display()
                );
                failed.push(run.name);
            }
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nightly_host_comes_from_rustc_verbose_version() {
        let text = "rustc 1.94.0-nightly (e50aa6fba 2026-11-30)\nbinary: rustc\n\
                    commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\n\
                    host: x86_64-unknown-linux-gnu\nrelease: 1.94.0-nightly\nLLVM version: 21.1.5\n";
        let nightly = Nightly::from_verbose_version(text).unwrap();
        assert_eq!(
            nightly.version,
            "rustc 1.94.0-nightly (e50aa6fba 2026-11-30)"
        );
        assert_eq!(nightly.host, "x86_64-unknown-linux-gnu");
        let err = Nightly::from_verbose_version("rustc 1.94.0-nightly\nhost: \n")
            .err()
            .unwrap();
        assert!(err.contains("names no host"), "{err}");
    }

    /// Every `[[bin]]` of fuzz/Cargo.toml is a target here, and none needs
    /// a feature (a target left out would never run; one behind a feature
    /// would not build from these commands).
    #[test]
    fn targets_are_the_fuzz_packages_bins() {
        let file = rig::base::paths::workspace_root().join("fuzz/Cargo.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let manifest: toml::Table = toml::from_str(&text).unwrap();
        let mut bins: Vec<&str> = manifest["bin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|bin| {
                assert!(
                    bin.get("required-features").is_none(),
                    "{}: {bin:?} needs features",
                    file.display()
                );
                bin["name"].as_str().unwrap()
            })
            .collect();
        let mut targets = TARGETS.to_vec();
        bins.sort();
        targets.sort();
        assert_eq!(bins, targets, "{}", file.display());
        assert!(
            manifest.get("features").is_none(),
            "{}: the fuzz package has features again",
            file.display()
        );
    }

    #[test]
    fn commands_name_the_target_and_the_build() {
        let args = |build: Build, name: &str, profile| -> Vec<String> {
            build
                .command(name, profile)
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            args(Build::NoSanitizer, "route_resolve", FuzzProfile::Release),
            ["fuzz", "run", "-s", "none", "-O", "route_resolve"]
        );
        let smoke: Vec<String> = Build::AddressSanitizer
            .command(TARGETS[0], FuzzProfile::Dev)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(smoke.contains(&"--dev".to_owned()), "{smoke:?}");
        // The background build compiles exactly what `run` then runs.
        for build in [Build::AddressSanitizer, Build::NoSanitizer] {
            for profile in [FuzzProfile::Dev, FuzzProfile::Release] {
                let mut run = args(build.clone(), "route_resolve", profile);
                assert_eq!(run.pop().as_deref(), Some("route_resolve"));
                let verb = run.iter().position(|a| a == "fuzz").unwrap() + 1;
                run[verb] = "build".to_owned();
                let built: Vec<String> = build
                    .build_all(profile)
                    .get_args()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                assert_eq!(built, run, "{build:?} {profile:?}");
            }
        }
    }
}
