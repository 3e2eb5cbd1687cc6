//! The gateway's TLS serving certificate in Vault: applying the `pki`
//! section of `scenarios/vault/setup.yaml` (loaded and checked by
//! `keyrig-scenario`: a pki secrets engine with an internal root CA, one role
//! for the gateway's names, the serving certificate the TLS agent asks for,
//! and that agent's AppRole role) and reading its CA.
//!
//! Vault keeps every issued certificate (`no_store` stays false), so tests
//! can match the served serial against `LIST pki/certs`.

use std::path::Path;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{Value, json};

pub use keyrig_scenario::pki::*;

use crate::vault::client::VaultClient;

/// What rig does with a [`PkiSetup`] against a Vault.
#[allow(async_fn_in_trait)]
pub trait PkiVault {
    /// Mounts the engine, generates the root CA once, writes the role.
    /// Idempotent: an existing CA is kept.
    async fn apply(&self, root: &VaultClient) -> Result<()>;
    /// The CA certificate (PEM) from the unauthenticated `<mount>/ca/pem`;
    /// `None` before a root exists.
    async fn ca_pem(&self, vault: &VaultClient) -> Result<Option<String>>;
    /// Writes the CA certificate (public, not a secret) to `file`.
    async fn save_ca(&self, vault: &VaultClient, file: &Path) -> Result<()>;
}

impl PkiVault for PkiSetup {
    /// Mounts the engine, generates the root CA once, writes the role.
    /// Idempotent: an existing CA is kept.
    async fn apply(&self, root: &VaultClient) -> Result<()> {
        crate::vault::ownership::claim_secrets_mount(
            root,
            &self.mount,
            "pki",
            json!({"config": {"max_lease_ttl": format!("{}s", self.root_ttl.as_secs())}}),
            "pki.mount in scenarios/vault/setup.yaml",
        )
        .await?;
        if self.ca_pem(root).await?.is_none() {
            let body = json!({
                "common_name": self.root_common_name,
                "ttl": format!("{}s", self.root_ttl.as_secs()),
                "key_type": self.key_type,
            });
            root.call(
                Method::POST,
                &format!("{}/root/generate/internal", self.mount),
                Some(&body),
            )
            .await
            .context("generating the pki root CA")?;
        }
        let key_bits = if self.key_type == "ec" { 256 } else { 2048 };
        let body = json!({
            "allowed_domains": self.allowed_domains,
            "allow_bare_domains": true,
            "allow_subdomains": false,
            "allow_glob_domains": false,
            "allow_any_name": false,
            "allow_localhost": self.allowed_domains.iter().any(|d| d == "localhost"),
            "allow_ip_sans": self.allow_ip_sans,
            "enforce_hostnames": true,
            "server_flag": true,
            "client_flag": false,
            "max_ttl": format!("{}s", self.max_ttl.as_secs()),
            "key_type": self.key_type,
            "key_bits": key_bits,
            // Kept, so `LIST <mount>/certs` shows every serial issued.
            "no_store": false,
        });
        root.call(
            Method::POST,
            &format!("{}/roles/{}", self.mount, self.role),
            Some(&body),
        )
        .await
        .with_context(|| format!("writing the pki role {}", self.role))?;
        Ok(())
    }

    /// The CA certificate (PEM) from the unauthenticated `<mount>/ca/pem`;
    /// `None` before a root exists.
    async fn ca_pem(&self, vault: &VaultClient) -> Result<Option<String>> {
        let (status, body) = vault
            .request(Method::GET, &format!("{}/ca/pem", self.mount), None)
            .await?;
        Ok(match body {
            Value::String(pem) if status.is_success() && pem.contains("BEGIN CERTIFICATE") => {
                Some(pem)
            }
            _ => None,
        })
    }

    /// Writes the CA certificate (public, not a secret) to `file`.
    async fn save_ca(&self, vault: &VaultClient, file: &Path) -> Result<()> {
        let pem = self.ca_pem(vault).await?.with_context(|| {
            format!(
                "{}/ca/pem is empty: the pki root was not generated",
                self.mount
            )
        })?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(file, pem).with_context(|| format!("writing {}", file.display()))
    }
}

/// Serial numbers the way Vault writes them: lowercase hex pairs joined by
/// `:`, leading zero bytes dropped (e.g. `1d:4f:...`).
pub fn vault_serial(bytes: &[u8]) -> String {
    let trimmed = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => &bytes[bytes.len().saturating_sub(1)..],
    };
    trimmed
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(&[0x00, 0x1d, 0x4f], "1d:4f")]
    #[case(&[0x7a, 0x00, 0x01], "7a:00:01")]
    #[case(&[0x00], "00")]
    fn serials_print_like_vault(#[case] bytes: &[u8], #[case] expected: &str) {
        assert_eq!(vault_serial(bytes), expected);
    }
}
