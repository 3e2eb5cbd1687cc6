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

/// A fuzz target and the features of the fuzz package it needs (its
/// `required-features` in fuzz/Cargo.toml; the unit test below keeps the
/// two in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub name: &'static str,
    pub features: &'static [&'static str],
}

pub const TARGETS: [Target; 6] = [
    Target {
        name: "apikey_parse",
        features: &[],
    },
    Target {
        name: "keygate_config",
        features: &[],
    },
    // The only target that builds rig (the harness); the others' build
    // leaves it out (see fuzz/Cargo.toml).
    Target {
        name: "scenario_loader",
        features: &["rig"],
    },
    Target {
        name: "forward_auth_headers",
        features: &[],
    },
    Target {
        name: "route_resolve",
        features: &[],
    },
    Target {
        name: "openapi_docs",
        features: &[],
    },
];

fn names() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.name).collect()
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
        let probe = Command::new("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            // A missing nightly is a fallback, not something to download.
            .env("RUSTUP_AUTO_INSTALL", "0")
            .output();
        match probe {
            Ok(out) if out.status.success() => {
                say!(
                    "fuzz: building with AddressSanitizer on {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                );
                Self::AddressSanitizer
            }
            Ok(out) => {
                say!(
                    "fuzz: no nightly toolchain (rustup run nightly: {}): building without a sanitizer \
                     on stable (RUSTC_BOOTSTRAP=1, -s none); `rustup toolchain install nightly` enables it",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Self::NoSanitizer
            }
            Err(err) => {
                say!(
                    "fuzz: no rustup ({err}), so no nightly toolchain: building without a sanitizer \
                     on this toolchain (RUSTC_BOOTSTRAP=1, -s none)"
                );
                Self::NoSanitizer
            }
        }
    }

    /// `cargo fuzz run` for `target`, up to the corpus directories.
    fn command(&self, target: &Target, profile: FuzzProfile) -> Command {
        let mut command = match self {
            Self::AddressSanitizer => {
                let mut command = crate::runner::cargo_on("nightly");
                command.args(["fuzz", "run", "-s", "address"]);
                command
            }
            Self::NoSanitizer => {
                let mut command = crate::runner::cargo();
                command
                    .args(["fuzz", "run", "-s", "none"])
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
        if !target.features.is_empty() {
            command.args(["--features", &target.features.join(",")]);
        }
        command.arg(target.name);
        command
    }
}

fn cargo_fuzz_installed() -> bool {
    crate::runner::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
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
    if !cargo_fuzz_installed() {
        say!("cargo-fuzz is missing: installing it from crates.io (takes minutes, once)");
        let status = crate::runner::cargo()
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("running cargo install cargo-fuzz")?;
        if !status.success() {
            bail!("`cargo install cargo-fuzz --locked` failed: see cargo's output above");
        }
    }
    let build = Build::pick();
    let dir = rig::base::paths::workspace_root().join("fuzz");
    let mut failed = Vec::new();
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == t.name)) {
        let name = target.name;
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
        let status = build
            .command(target, profile)
            .args(&corpora)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=1024",
            ])
            .current_dir(&dir)
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            say!(
                "fuzz {name}: FAILED ({status}); the crashing input is under fuzz/artifacts/{name}/"
            );
            failed.push(name);
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        say!("fuzz targets that failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `[[bin]]` of fuzz/Cargo.toml is a target here, with its
    /// `required-features` as the features xtask enables: a target left
    /// out would never run, one without its features would not build.
    #[test]
    fn targets_are_the_fuzz_packages_bins_with_their_features() {
        let file = rig::base::paths::workspace_root().join("fuzz/Cargo.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let manifest: toml::Table = toml::from_str(&text).unwrap();
        let mut bins: Vec<(String, Vec<String>)> = manifest["bin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|bin| {
                let features = bin
                    .get("required-features")
                    .and_then(|f| f.as_array())
                    .map(|f| f.iter().map(|f| f.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                (bin["name"].as_str().unwrap().to_owned(), features)
            })
            .collect();
        let mut targets: Vec<(String, Vec<String>)> = TARGETS
            .iter()
            .map(|t| {
                (
                    t.name.to_owned(),
                    t.features.iter().map(|f| (*f).to_owned()).collect(),
                )
            })
            .collect();
        bins.sort();
        targets.sort();
        assert_eq!(bins, targets, "{}", file.display());
    }

    #[test]
    fn only_the_target_needing_rig_enables_a_feature() {
        let build = Build::NoSanitizer;
        let args = |name: &str| -> Vec<String> {
            let target = TARGETS.iter().find(|t| t.name == name).unwrap();
            build
                .command(target, FuzzProfile::Release)
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            args("scenario_loader"),
            [
                "fuzz",
                "run",
                "-s",
                "none",
                "-O",
                "--features",
                "rig",
                "scenario_loader"
            ]
        );
        assert_eq!(
            args("route_resolve"),
            ["fuzz", "run", "-s", "none", "-O", "route_resolve"]
        );
        let smoke: Vec<String> = Build::AddressSanitizer
            .command(&TARGETS[0], FuzzProfile::Dev)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(smoke.contains(&"--dev".to_owned()), "{smoke:?}");
    }
}
