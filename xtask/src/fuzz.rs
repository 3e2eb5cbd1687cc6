//! `cargo xtask fuzz`: each cargo-fuzz target of `fuzz/` for a bounded
//! time, corpus in `fuzz/corpus/<target>/` (new inputs are added there).
//!
//! cargo-fuzz needs nightly-only compiler flags (`-Z` options for the
//! sanitizer-coverage passes). Only a stable toolchain is pinned here, so the
//! build runs with `RUSTC_BOOTSTRAP=1`, which lets stable rustc accept them,
//! and without a sanitizer (`-s none`): AddressSanitizer needs a std built
//! for it, which stable does not ship. Rust code is memory-safe anyway; what
//! this finds is panics, hangs and failed invariants.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use rig::say;

pub const TARGETS: [&str; 4] = [
    "apikey_parse",
    "keygate_config",
    "scenario_loader",
    "forward_auth_headers",
];

fn cargo_fuzz_installed() -> bool {
    Command::new(super::cargo())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run(seconds: u64, only: Option<&str>) -> Result<ExitCode> {
    if let Some(name) = only.filter(|n| !TARGETS.contains(n)) {
        bail!(
            "no fuzz target {name:?}: pick one of {}",
            TARGETS.join(", ")
        );
    }
    if !cargo_fuzz_installed() {
        say!("cargo-fuzz is missing: installing it from crates.io (takes minutes, once)");
        let status = Command::new(super::cargo())
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("running cargo install cargo-fuzz")?;
        if !status.success() {
            bail!("`cargo install cargo-fuzz --locked` failed: see cargo's output above");
        }
    }
    let dir = rig::paths::workspace_root().join("fuzz");
    let mut failed = Vec::new();
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        say!("fuzz {target}: {seconds} s, corpus {}", corpus.display());
        let status = Command::new(super::cargo())
            .args(["fuzz", "run", "-s", "none", "-O", target])
            .arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=1024",
            ])
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir(&dir)
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            say!(
                "fuzz {target}: FAILED ({status}); the crashing input is under fuzz/artifacts/{target}/"
            );
            failed.push(*target);
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        say!("fuzz targets that failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
