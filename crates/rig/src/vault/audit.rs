//! Vault's file audit device: every request and response Vault handles, as
//! one JSON object per line, with secret values (tokens, secret-ids, KV
//! data) HMAC-ed by Vault itself. The local profile declares it in bao's config;
//! diagnostics copy the entries of a failed case's time window.

use std::path::Path;

use anyhow::{Context, Result};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The audit log's file name under `logs/`.
pub const AUDIT_LOG: &str = "vault-audit.log";

/// A server config stanza declaring a file audit device that writes to
/// `file`. OpenBao refuses to enable audit devices through its API (they are
/// declarative, config-based), so the local profile passes this with
/// `-config`. Vault's defaults are kept on purpose (`hmac_accessor`, no
/// `log_raw`), so the log holds HMACs of secret values, never the values.
pub fn file_audit_config(file: &Path) -> String {
    // JSON string quoting is valid HCL string quoting.
    let path = serde_json::Value::String(file.to_string_lossy().into_owned());
    format!("audit \"file\" \"keyrig\" {{\n  options {{\n    file_path = {path}\n  }}\n}}\n")
}

/// A server config stanza declaring a socket audit device that streams
/// every entry as a JSON line to keygate's invalidation listener at `addr`
/// (`invalidation.listen`; see crates/keygate/README.md, "Invalidation").
/// `skip_test = "true"` is what lets Vault start and unseal while keygate is
/// down: without it OpenBao refuses to come up when the listener does not
/// answer. Vault serves while any one audit device succeeds, so the file
/// device stays beside it.
pub fn socket_audit_config(addr: std::net::SocketAddr) -> String {
    format!(
        "audit \"socket\" \"keygate\" {{\n  options {{\n    address = \"{addr}\"\n    socket_type = \"tcp\"\n    skip_test = \"true\"\n  }}\n}}\n"
    )
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
    fn the_socket_device_skips_its_test_so_vault_starts_without_keygate() {
        let stanza = socket_audit_config("127.0.0.1:9003".parse().unwrap());
        assert_eq!(
            stanza,
            "audit \"socket\" \"keygate\" {\n  options {\n    address = \"127.0.0.1:9003\"\n    socket_type = \"tcp\"\n    skip_test = \"true\"\n  }\n}\n"
        );
    }

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
