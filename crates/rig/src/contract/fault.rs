//! The figures of each injected fault, for the run's reports: requests
//! sent, false accepts (must be 0), 503s and recovery time. The `faults`
//! tests record one [`Fault`] per fault (per gateway where a fault runs
//! through several) into `$KEYRIG_RUN_DIR/faults/`, the way rotations are
//! recorded; `cargo xtask e2e` puts them into `report.json` (`faults`) and
//! `summary.md` ("Faults").

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Subdirectory of the run directory the records go to.
pub const FAULTS_DIR: &str = "faults";

/// One injected fault and what clients saw through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The e2e case that injected it.
    pub case: String,
    /// What was done, e.g. `Vault killed (SIGKILL) under load`.
    pub fault: String,
    /// The delivery mode of the environment it was injected into.
    pub mode: String,
    /// The gateway the requests went through.
    pub gateway: String,
    pub requests: u64,
    /// Requests that must not pass and got 2xx.
    pub false_accepts: u64,
    /// Answers with status 503.
    pub unavailable: u64,
    /// From the end of the fault (restart, unseal, ...) to the first
    /// correct answer; `None` where nothing had to recover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<u64>,
}

impl Fault {
    pub fn recovery(mut self, recovery: Option<Duration>) -> Self {
        self.recovery_ms = recovery.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

/// Records a fault for the run named by `$KEYRIG_RUN_DIR`; does nothing
/// without one. Never panics: a write error is printed.
pub fn record(fault: &Fault) {
    crate::contract::records::record_in_run(FAULTS_DIR, fault);
}

/// Every fault record of a run, oldest first.
pub fn read(run_dir: &Path) -> Result<Vec<Fault>> {
    crate::contract::records::read_records(run_dir, FAULTS_DIR)
}

/// The summary's "Faults" table; empty without records.
pub fn markdown(faults: &[Fault]) -> String {
    if faults.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "### Faults\n\n| case | fault | mode | gateway | requests | false accepts | 503s | recovery |\n|---|---|---|---|---|---|---|---|\n",
    );
    for f in faults {
        let recovery = f
            .recovery_ms
            .map_or_else(|| "n/a".to_owned(), |ms| format!("{ms} ms"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {recovery} |",
            f.case,
            f.fault.replace('|', "\\|"),
            f.mode,
            f.gateway,
            f.requests,
            f.false_accepts,
            f.unavailable
        );
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn outage() -> Fault {
        Fault {
            case: "vault_outage".into(),
            fault: "Vault killed".into(),
            mode: "inline".into(),
            gateway: "envoy-grpc".into(),
            requests: 120,
            false_accepts: 0,
            unavailable: 80,
            recovery_ms: None,
        }
        .recovery(Some(Duration::from_millis(950)))
    }

    #[rstest]
    fn the_table_lists_every_figure() {
        let md = markdown(&[outage()]);
        assert!(
            md.contains(
                "| vault_outage | Vault killed | inline | envoy-grpc | 120 | 0 | 80 | 950 ms |"
            ),
            "{md}"
        );
        assert_eq!(markdown(&[]), "");
    }

    #[rstest]
    fn records_round_trip_through_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        crate::contract::records::record_in(dir.path(), FAULTS_DIR, &outage()).unwrap();
        let mut none = outage();
        none.recovery_ms = None;
        crate::contract::records::record_in(dir.path(), FAULTS_DIR, &none).unwrap();
        assert_eq!(read(dir.path()).unwrap(), vec![outage(), none]);
    }
}
