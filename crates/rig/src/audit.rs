//! Vault's file audit device: every request and response Vault handles, as
//! one JSON object per line, with secret values (tokens, secret-ids, KV
//! data) HMAC-ed by Vault itself. The local profile turns it on at startup;
//! diagnostics copy the entries of a failed case's time window.

use std::path::Path;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::vault::VaultClient;

/// The audit log's file name under `logs/`.
pub const AUDIT_LOG: &str = "vault-audit.log";

/// Enables a file audit device writing to `file`. Vault's defaults are kept
/// on purpose (`hmac_accessor` and no `log_raw`), so the log holds HMACs of
/// secret values, never the values.
pub async fn enable_file_audit(root: &VaultClient, file: &Path) -> Result<()> {
    let body = json!({
        "type": "file",
        "description": "keyrig: per-case audit entries for failure diagnostics",
        "options": { "file_path": file.to_string_lossy() },
    });
    let (status, reply) = root
        .request(Method::PUT, "sys/audit/file", Some(&body))
        .await
        .context("enabling Vault's file audit device")?;
    if !status.is_success() {
        bail!(
            "enabling Vault's file audit device (sys/audit/file) answered {status}: {}",
            reply["errors"]
        );
    }
    Ok(())
}

/// The audit log lines whose `time` falls in `[from, to]`. Lines that are
/// not JSON or have no time are left out; a missing file gives none.
pub fn entries_between(
    file: &Path,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<String>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", file.display())),
    };
    Ok(text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|entry| OffsetDateTime::parse(entry["time"].as_str()?, &Rfc3339).ok())
                .is_some_and(|time| from <= time && time <= to)
        })
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use time::macros::datetime;

    #[rstest]
    fn keeps_the_entries_of_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(AUDIT_LOG);
        std::fs::write(
            &file,
            concat!(
                r#"{"time":"2025-01-01T10:00:00.5Z","type":"request","n":1}"#,
                "\n",
                r#"{"time":"2025-01-01T10:00:02.123456789Z","type":"response","n":2}"#,
                "\n",
                "not json\n",
                r#"{"time":"2025-01-01T10:00:09Z","type":"request","n":3}"#,
                "\n"
            ),
        )
        .unwrap();
        let lines = entries_between(
            &file,
            datetime!(2025-01-01 10:00:01 UTC),
            datetime!(2025-01-01 10:00:05 UTC),
        )
        .unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains(r#""n":2"#));
        assert!(
            entries_between(
                &dir.path().join("none"),
                OffsetDateTime::UNIX_EPOCH,
                OffsetDateTime::now_utc()
            )
            .unwrap()
            .is_empty()
        );
    }
}
