//! Applying a [`VaultSetup`] (`scenarios/vault/setup.yaml`, loaded and
//! checked by `keyrig-scenario`, which the fuzz targets build without rig)
//! to a Vault.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde_json::json;

pub use keyrig_scenario::setup::*;

use crate::say;
use crate::vault::client::VaultClient;
use crate::vault::ownership;
use crate::vault::pki::PkiVault;

/// `scenarios/vault/setup.yaml` of this workspace, expanded for `groups`.
pub fn load_default(groups: &[String]) -> Result<VaultSetup> {
    VaultSetup::load(
        &crate::base::paths::scenarios_dir().join("vault/setup.yaml"),
        groups,
    )
}

/// Mounts KV v2, enables AppRole, writes the policies and roles.
/// Idempotent: applying twice changes nothing. **Writes only what keyrig
/// made** (`ownership`): every policy, role and mount of the same name is
/// looked at first, and if any is someone else's, all of those are named
/// and nothing is written.
pub async fn apply(setup: &VaultSetup, root: &VaultClient) -> Result<()> {
    say!(
        "vault: applying {}: kv-v2 at {}/, AppRole, {} policies, {} roles",
        setup.file.display(),
        setup.kv_mount,
        setup.policies.len(),
        setup.roles.len()
    );
    let source = ownership::source_name(&setup.file);
    let policy_source = |file: &std::path::Path| {
        format!(
            "{} (policies[].file in {source})",
            ownership::source_name(file)
        )
    };
    let managed: BTreeSet<String> = setup.policies.iter().map(|p| p.name.clone()).collect();
    let kv_field = format!("kv_mount in {source}");
    let mut conflicts = Vec::new();
    conflicts.extend(ownership::mount_conflict(root, &setup.kv_mount, "kv", &kv_field).await?);
    for policy in &setup.policies {
        conflicts.extend(
            ownership::policy_conflict(root, &policy.name, &policy_source(&policy.file)).await?,
        );
    }
    for role in &setup.roles {
        let role_source = format!("{source} (approle_roles[].name)");
        conflicts.extend(
            ownership::role_conflict(root, "approle", &role.name, &managed, &role_source).await?,
        );
    }
    if let Some(pki) = &setup.pki {
        let field = format!("pki.mount in {source}");
        conflicts.extend(ownership::mount_conflict(root, &pki.mount, "pki", &field).await?);
    }
    ownership::refuse(conflicts)?;

    ownership::claim_secrets_mount(
        root,
        &setup.kv_mount,
        "kv",
        json!({"options": {"version": "2"}}),
        &kv_field,
    )
    .await?;
    root.enable_kv2(&setup.kv_mount).await?;
    root.enable_auth("approle", "approle").await?;
    for policy in &setup.policies {
        ownership::put_managed_policy(
            root,
            &policy.name,
            &policy.hcl,
            &policy_source(&policy.file),
        )
        .await?;
    }
    for role in &setup.roles {
        root.approle_write_role(
            &role.name,
            &role.policies,
            role.token_ttl,
            role.token_max_ttl,
        )
        .await
        .with_context(|| format!("writing AppRole role {}", role.name))?;
    }
    if let Some(pki) = &setup.pki {
        pki.apply(root).await.with_context(|| {
            format!(
                "applying the pki section of {} (mount {}/, role {})",
                setup.file.display(),
                pki.mount,
                pki.role
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use rstest::rstest;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[rstest]
    fn expands_the_repository_setup_per_group() {
        let setup = load_default(&groups(&["billing-api", "pets"])).unwrap();
        assert_eq!(setup.kv_mount, "api-portal-keys");
        let names: Vec<_> = setup.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "api-portal-policy",
                "gateway-policy",
                "gateway-policy-billing-api",
                "gateway-policy-pets",
                "secret-delivery-policy",
                "keygate-references",
                "tls-agent-policy"
            ]
        );
        let billing = &setup.policies[2].hcl;
        assert!(
            billing.contains(r#"path "api-portal-keys/data/billing-api*""#),
            "{billing}"
        );
        assert!(!billing.contains("{{"), "{billing}");
        let roles: Vec<_> = setup
            .roles
            .iter()
            .map(|r| (r.name.as_str(), r.policies.clone()))
            .collect();
        assert_eq!(
            roles[3],
            ("gateway-pets", vec!["gateway-policy-pets".to_string()])
        );
        assert_eq!(roles.len(), 6);
        let tls = &setup.policies[6].hcl;
        assert!(tls.contains(r#"path "pki/issue/gateway-serving""#), "{tls}");
        assert_eq!(
            setup.pki.as_ref().map(|p| p.agent_role.as_str()),
            Some("tls-agent")
        );
        assert_eq!(setup.roles[0].token_ttl, Duration::from_secs(3600));
        assert_eq!(setup.keygate_role, "gateway");
    }
}
