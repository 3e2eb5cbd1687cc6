//! The record store: what tests record besides their case (rotations'
//! findings, faults), one JSON file per record under a kind's directory of
//! the run directory, gathered by `cargo xtask e2e` into the reports. Files,
//! not a shared writer, because the test binaries of a run write at once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::base::run::current_run_dir;

/// Records one value under `<kind>/` of the current run
/// ([`current_run_dir`]); does nothing outside a run. Never panics: a test
/// must not fail for its bookkeeping, so a write error is printed.
pub fn record_in_run(kind: &str, value: &impl Serialize) {
    let Some(run_dir) = current_run_dir() else {
        return;
    };
    if let Err(err) = record_in(&run_dir, kind, value) {
        eprintln!("[keyrig] warning: could not record to {kind}/: {err:#}");
    }
}

/// Writes one record as `<run>/<kind>/<time>-<pid>-<n>.json` (unique across
/// the test binaries that run at once), redacted.
pub fn record_in(run_dir: &Path, kind: &str, value: &impl Serialize) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = run_dir.join(kind);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!(
        "{}-{}-{}.json",
        OffsetDateTime::now_utc().unix_timestamp_nanos(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let text = crate::base::redact::redact(&serde_json::to_string_pretty(value)?);
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// Every record of one kind in a run, oldest first.
pub fn read_records<T: DeserializeOwned>(run_dir: &Path, kind: &str) -> Result<Vec<T>> {
    let dir = run_dir.join(kind);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    // Names start with a timestamp in nanoseconds: sort numerically.
    files.sort_by_key(|p| {
        let stem = p.file_stem().unwrap_or_default().to_string_lossy();
        let nanos: i128 = stem
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (nanos, p.clone())
    });
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a {kind} record", file.display()))
        })
        .collect()
}
