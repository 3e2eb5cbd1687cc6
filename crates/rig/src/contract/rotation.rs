//! Rotation measurements: how long a change made in Vault (or in the
//! delivered Secret) took to show at the gateway. Each e2e rotation writes
//! `<run>/rotations/<mode>__<what>.json` = `{mode, what, propagation_ms}`
//! (a repeated sample of the same kind: `<mode>__<what>__<n>.json`, same
//! shape); the run report and the terminal summary read them all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRecord {
    pub mode: String,
    pub what: String,
    pub propagation_ms: u64,
}

impl RotationRecord {
    pub fn new(mode: &str, what: &str, propagation: std::time::Duration) -> Self {
        Self {
            mode: mode.to_owned(),
            what: what.to_owned(),
            propagation_ms: u64::try_from(propagation.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Writes one record under `$KEYRIG_RUN_DIR/rotations/` (nothing when the
/// variable is unset, e.g. `cargo test` by hand). `sample` numbers repeats.
pub fn record(record: &RotationRecord, sample: Option<u32>) -> Result<()> {
    let Some(run_dir) = crate::base::run::current_run_dir() else {
        return Ok(());
    };
    record_in(&run_dir, record, sample)
}

pub fn record_in(run_dir: &Path, record: &RotationRecord, sample: Option<u32>) -> Result<()> {
    let dir = run_dir.join("rotations");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = format!("{}__{}", record.mode, record.what);
    let name = match sample {
        Some(n) => format!("{stem}__{n}.json"),
        None => format!("{stem}.json"),
    };
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(record)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Every record of a run (none if no rotation ran).
pub fn read(run_dir: &Path) -> Result<Vec<RotationRecord>> {
    let dir = run_dir.join("rotations");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            out.push(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a rotation record", path.display()))?,
            );
        }
    }
    Ok(out)
}

/// The median (lower of the two middle values) and the maximum.
pub fn p50_max(samples: &[u64]) -> Option<(u64, u64)> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let max = *sorted.last()?;
    Some((sorted[(sorted.len() - 1) / 2], max))
}

/// `propagation per mode` table: mode, what, n, p50, max; then `notes`
/// (the configured intervals), one per line.
pub fn render_summary(records: &[RotationRecord], notes: &[String]) -> String {
    let mut groups: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.mode.as_str(), r.what.as_str()))
            .or_default()
            .push(r.propagation_ms);
    }
    let mut out = String::new();
    if groups.is_empty() {
        return out;
    }
    let rows: Vec<[String; 5]> = groups
        .iter()
        .map(|((mode, what), samples)| {
            let (p50, max) = p50_max(samples).expect("non-empty group");
            [
                (*mode).to_owned(),
                (*what).to_owned(),
                samples.len().to_string(),
                format!("{p50} ms"),
                format!("{max} ms"),
            ]
        })
        .collect();
    let headers = ["mode", "rotation", "n", "p50", "max"];
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let _ = writeln!(
        out,
        "propagation (Vault write -> first effect at the gateway):"
    );
    let line = |out: &mut String, c: [&str; 5]| {
        let _ = writeln!(
            out,
            "  {:w0$}  {:w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
    };
    line(&mut out, headers);
    for row in &rows {
        line(&mut out, [&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    for note in notes {
        let _ = writeln!(out, "  {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn records_round_trip_and_summarise() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |what: &str, ms| RotationRecord {
            mode: "inline".into(),
            what: what.into(),
            propagation_ms: ms,
        };
        record_in(dir.path(), &rec("kv-secret-id", 900), None).unwrap();
        for (n, ms) in [(1, 300), (2, 100), (3, 200)] {
            record_in(dir.path(), &rec("api-key-revoke", ms), Some(n)).unwrap();
        }
        assert!(
            dir.path()
                .join("rotations/inline__kv-secret-id.json")
                .is_file()
        );
        let text = std::fs::read_to_string(dir.path().join("rotations/inline__kv-secret-id.json"))
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"mode": "inline", "what": "kv-secret-id", "propagation_ms": 900})
        );
        let records = read(dir.path()).unwrap();
        assert_eq!(records.len(), 4);
        let summary = render_summary(&records, &["cache TTL 5 s".into()]);
        assert!(
            summary.contains("inline  api-key-revoke  3  200 ms  300 ms"),
            "{summary}"
        );
        assert!(summary.ends_with("  cache TTL 5 s\n"), "{summary}");
    }

    #[rstest]
    fn p50_is_the_lower_middle() {
        assert_eq!(p50_max(&[4, 1, 3, 2]), Some((2, 4)));
        assert_eq!(p50_max(&[]), None);
    }
}
