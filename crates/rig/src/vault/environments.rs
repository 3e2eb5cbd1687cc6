//! Environment-specific paths in Vault: a KV mount, one policy and AppRole
//! role per environment of `contract::environments`.

use anyhow::Result;
use serde_json::json;

use crate::contract::environments::Environments;
use crate::vault::client::VaultClient;
use crate::vault::ownership;

/// Enables the mount and writes each environment's policy and role.
pub async fn apply(environments: &Environments, root: &VaultClient) -> Result<()> {
    // The dev server's own `secret/` (local profile only): used as it is,
    // not claimed. The policies and roles are checked like setup.yaml's.
    root.enable_kv2(&environments.kv_mount).await?;
    for env in &environments.names {
        let role = environments.role(env);
        ownership::put_managed_policy(
            root,
            &role,
            &environments.policy(env)?,
            "rig::contract::environments",
        )
        .await?;
        let managed = std::collections::BTreeSet::from([role.clone()]);
        if let Some(conflict) = ownership::role_conflict(
            root,
            "approle",
            &role,
            &managed,
            "rig::contract::environments (the environment names)",
        )
        .await?
        {
            anyhow::bail!("{conflict}; keyrig does not overwrite it");
        }
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
