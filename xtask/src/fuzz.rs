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
//! cargo-fuzz needs nightly-only compiler flags (`-Z` options for the
//! sanitizer-coverage passes). Only a stable toolchain is pinned here, so the
//! build runs with `RUSTC_BOOTSTRAP=1`, which lets stable rustc accept them,
//! and without a sanitizer (`-s none`): AddressSanitizer needs a std built
//! for it, which stable does not ship. Rust code is memory-safe anyway; what
//! this finds is panics, hangs and failed invariants.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use rig::say;

pub const TARGETS: [&str; 4] = [
    "apikey_parse",
    "keygate_config",
    "scenario_loader",
    "forward_auth_headers",
];

fn cargo_fuzz_installed() -> bool {
    crate::runner::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What happens to the inputs a run finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewInputs {
    /// Added to `fuzz/corpus/<target>/` (the long run).
    GrowCorpus,
    /// Written to a temporary directory, dropped at the end (the smoke run).
    Discard,
}

pub fn run(seconds: u64, only: Option<&str>, new_inputs: NewInputs) -> Result<ExitCode> {
    if let Some(name) = only.filter(|n| !TARGETS.contains(n)) {
        bail!(
            "no fuzz target {name:?}: pick one of {}",
            TARGETS.join(", ")
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
    let dir = rig::base::paths::workspace_root().join("fuzz");
    let mut failed = Vec::new();
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        // Held until the target's run ends, then removed.
        let scratch = match new_inputs {
            NewInputs::GrowCorpus => None,
            NewInputs::Discard => Some(
                tempfile::Builder::new()
                    .prefix(&format!("keyrig-fuzz-{target}-"))
                    .tempdir()
                    .context("creating a temporary directory for new fuzz inputs")?,
            ),
        };
        let mut corpora = Vec::new();
        corpora.extend(scratch.as_ref().map(|dir| dir.path().to_owned()));
        corpora.push(corpus.clone());
        say!(
            "fuzz {target}: {seconds} s, corpus {}{}",
            corpus.display(),
            match &scratch {
                Some(dir) => format!(
                    " (read only; new inputs to {}, dropped after)",
                    dir.path().display()
                ),
                None => " (new inputs added to it)".to_owned(),
            }
        );
        let status = crate::runner::cargo()
            .args(["fuzz", "run", "-s", "none", "-O", target])
            .args(&corpora)
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
