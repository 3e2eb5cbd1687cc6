//! keygate's config file: its types and parsing are keygate-config's
//! (`keygate_config::config`, no I/O beyond reading files, so the fuzz
//! targets build it alone); loading it here adds the check that needs
//! keygate's TLS stack: `vault.ca_cert_file` holds usable CA certificates.

use std::path::Path;

pub use keygate_config::config::*;

/// [`Config::load`], then `vault.ca_cert_file` read as the Vault client
/// will read it, so a bad CA file fails at start naming the field.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let config = Config::load(file)?;
    if let Some(ca) = &config.vault.ca_cert_file {
        crate::vault_http::load_ca_file(ca).map_err(|err| ConfigError::new(file.display(), err))?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid config (the full set of config tests is keygate-config's).
    const VALID: &str = "\
listen:
  grpc: 127.0.0.1:9001
  http: 127.0.0.1:9002
vault:
  address: http://127.0.0.1:8200/
  auth:
    approle:
      role_id_file: secrets/role-id
      secret_id_file: secrets/secret-id
apis:
  - apis/billing.yaml
";

    #[test]
    fn load_checks_the_ca_file_and_names_field_and_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/role-id"), "r").unwrap();
        std::fs::write(dir.path().join("secrets/secret-id"), "s").unwrap();
        let file = dir.path().join("keygate.yaml");
        std::fs::write(
            &file,
            VALID
                .replace("http://", "https://")
                .replace("  auth:\n", "  ca_cert_file: ca.pem\n  auth:\n"),
        )
        .unwrap();
        let ca = dir.path().join("ca.pem");
        let err = load(&file).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "vault.ca_cert_file points to {}, which cannot be read",
                ca.display()
            )),
            "{err}"
        );
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(
            err.contains("which holds no certificate: give a PEM file with at least one -----BEGIN CERTIFICATE----- block"),
            "{err}"
        );
    }
}
