//! Propagation records: how long a change in Vault took to show at the
//! gateway. Each rotation test writes `<run>/rotations/<mode>__<what>.json`
//! = `{mode, what, propagation_ms}`; the run report collects them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    /// How the change travels, e.g. `keys-file` or `tls`.
    pub mode: String,
    /// What changed, e.g. `api-key-new` or `serving-cert`.
    pub what: String,
    pub propagation_ms: u64,
}

/// `<run>/rotations/<mode>__<what>.json`.
pub fn record_path(run_dir: &Path, mode: &str, what: &str) -> PathBuf {
    run_dir
        .join("rotations")
        .join(format!("{mode}__{what}.json"))
}

/// Writes the record into the run named by `$KEYRIG_RUN_DIR`; without one
/// (a test run by hand against `cargo xtask up`) nothing is written.
pub fn record(mode: &str, what: &str, took: Duration) -> Result<Option<PathBuf>> {
    let Some(run_dir) = std::env::var_os(crate::case::RUN_DIR_VAR).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    record_in(Path::new(&run_dir), mode, what, took).map(Some)
}

pub fn record_in(run_dir: &Path, mode: &str, what: &str, took: Duration) -> Result<PathBuf> {
    let path = record_path(run_dir, mode, what);
    let parent = path.parent().expect("a rotations directory");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let record = Propagation {
        mode: mode.into(),
        what: what.into(),
        propagation_ms: took.as_millis() as u64,
    };
    std::fs::write(&path, serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_file_per_mode_and_what() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_in(
            dir.path(),
            "tls",
            "serving-cert",
            Duration::from_millis(1234),
        )
        .unwrap();
        assert_eq!(path, dir.path().join("rotations/tls__serving-cert.json"));
        let back: Propagation =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(back.propagation_ms, 1234);
        assert_eq!(back.mode, "tls");
    }
}
