//! Environment-specific paths in Vault: a KV mount, one policy and AppRole
//! role per environment of `contract::environments`.

use anyhow::Result;
use serde_json::json;

use crate::contract::environments::Environments;
use crate::vault::client::VaultClient;

/// Enables the mount and writes each environment's policy and role.
pub async fn apply(environments: &Environments, root: &VaultClient) -> Result<()> {
    root.enable_kv2(&environments.kv_mount).await?;
    for env in &environments.names {
        let role = environments.role(env);
        root.put_policy(&role, &environments.policy(env)?).await?;
        root.approle_write_role(
            &role,
            std::slice::from_ref(&role),
            environments.token_ttl,
            environments.token_ttl * 4,
        )
        .await?;
        root.kv2_put(
            &environments.kv_mount,
            &environments.sample(env),
            &json!({ "environment": env }),
        )
        .await?;
    }
    crate::say!(
        "vault: environments {} under {}/{}/<environment>/, one policy and AppRole role each",
        environments.names.join(", "),
        environments.kv_mount,
        environments.app
    );
    Ok(())
}
