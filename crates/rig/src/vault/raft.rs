//! OpenBao with persistent raft storage instead of `-dev`, for fault tests
//! that stop, restart and seal Vault and expect its data to survive.
//!
//! The server starts uninitialized; rig initializes it through the HTTP API
//! (`sys/init`, one key share), keeps the unseal key and the root token in
//! 0600 files of the run, and unseals it (`sys/unseal`) after each start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::json;

use crate::base::run::RunDir;
use crate::base::wait::{Probe, wait_until};
use crate::vault::client::{Secret, VaultClient};

/// How long an unsealed single-node raft cluster may take to elect itself.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(30);

/// The server config: raft data under `data_dir`, plain HTTP on loopback,
/// the cluster listener on the next port. No secret in it.
pub fn server_config(port: u16, data_dir: &Path) -> String {
    let data = serde_json::to_string(&data_dir.display().to_string()).expect("a string serializes");
    let cluster = port + 1;
    format!(
        r#"storage "raft" {{
  path    = {data}
  node_id = "keyrig"
}}

listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable     = true
}}

api_addr      = "http://127.0.0.1:{port}"
cluster_addr  = "http://127.0.0.1:{cluster}"
disable_mlock = true
ui            = false
"#
    )
}

/// Where init put its secrets.
#[derive(Debug, Clone)]
pub struct InitSecrets {
    pub unseal_key_file: PathBuf,
    pub root_token_file: PathBuf,
    pub root_token: Secret,
}

/// `sys/init` with one key share; the key and root token go straight to
/// `secrets/unseal-key` and `secrets/root-token` (0600).
pub async fn init(vault: &VaultClient, run: &RunDir) -> Result<InitSecrets> {
    let body = json!({ "secret_shares": 1, "secret_threshold": 1 });
    let answer = vault
        .call(Method::PUT, "sys/init", Some(&body))
        .await
        .context("initializing OpenBao (sys/init)")?;
    let key = answer["keys_base64"][0]
        .as_str()
        .or_else(|| answer["keys"][0].as_str())
        .context("sys/init answered without an unseal key")?;
    let token = answer["root_token"]
        .as_str()
        .context("sys/init answered without a root token")?;
    crate::base::redact::register_in_run(run.path(), key)?;
    crate::base::redact::register_in_run(run.path(), token)?;
    Ok(InitSecrets {
        unseal_key_file: run.write_secret("unseal-key", key)?,
        root_token_file: run.write_secret("root-token", token)?,
        root_token: Secret::new(token),
    })
}

/// Unseals with the key in `unseal_key_file`, then waits until the node is
/// active (`sys/health` 200), which on raft takes a leader election.
pub async fn unseal(vault: &VaultClient, unseal_key_file: &Path) -> Result<()> {
    let key = std::fs::read_to_string(unseal_key_file)
        .with_context(|| format!("reading the unseal key {}", unseal_key_file.display()))?;
    let body = json!({ "key": key.trim() });
    let answer = vault
        .call(Method::PUT, "sys/unseal", Some(&body))
        .await
        .context("unsealing OpenBao (sys/unseal)")?;
    if answer["sealed"].as_bool() != Some(false) {
        bail!(
            "OpenBao is still sealed after sys/unseal with the key in {}",
            unseal_key_file.display()
        );
    }
    wait_active(vault).await
}

/// Waits until `sys/health` says active and unsealed.
pub async fn wait_active(vault: &VaultClient) -> Result<()> {
    wait_until("OpenBao to become active", ACTIVE_DEADLINE, async || {
        Ok(match vault.request(Method::GET, "sys/health", None).await {
            Ok((status, _)) if status.as_u16() == 200 => Probe::Ready(()),
            Ok((status, body)) => Probe::seen(format!(
                "status {} (sealed {}, standby {})",
                status.as_u16(),
                body["sealed"],
                body["standby"]
            )),
            Err(err) => Probe::seen(err),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_quotes_the_data_path_and_uses_the_next_port_for_the_cluster() {
        let text = server_config(8200, Path::new("/tmp/a \"b\"/raft"));
        assert!(text.contains(r#"path    = "/tmp/a \"b\"/raft""#), "{text}");
        assert!(
            text.contains(r#"cluster_address = "127.0.0.1:8201""#),
            "{text}"
        );
        assert!(text.contains("tls_disable     = true"), "{text}");
    }
}
