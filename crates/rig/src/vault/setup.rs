//! Applying a [`VaultSetup`] (`scenarios/vault/setup.yaml`, loaded and
//! checked by `keyrig-scenario`, which the fuzz targets build without rig)
//! to a Vault.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use serde_json::json;

pub use keyrig_scenario::setup::*;

use crate::say;
use crate::vault::client::VaultClient;
use crate::vault::ownership::{self, Owner};
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
/// made** (`ownership`): a policy, role or mount of the same name that is
/// someone else's is refused, untouched.
pub async fn apply(setup: &VaultSetup, root: &VaultClient) -> Result<()> {
    say!(
        "vault: applying {}: kv-v2 at {}/, AppRole, {} policies, {} roles",
        setup.file.display(),
        setup.kv_mount,
        setup.policies.len(),
        setup.roles.len()
    );
    let source = setup.file.display().to_string();
    ownership::claim_secrets_mount(
        root,
        &setup.kv_mount,
        "kv",
        json!({"options": {"version": "2"}}),
        &format!("kv_mount in {source}"),
    )
    .await?;
    root.enable_kv2(&setup.kv_mount).await?;
    root.enable_auth("approle", "approle").await?;
    for policy in &setup.policies {
        ownership::put_managed_policy(
            root,
            &policy.name,
            &policy.hcl,
            &format!("{} (policies[].file in {source})", policy.file.display()),
        )
        .await?;
    }
    let managed: BTreeSet<String> = setup.policies.iter().map(|p| p.name.clone()).collect();
    for role in &setup.roles {
        if let Owner::Other(what) =
            ownership::approle_role_owner(root, "approle", &role.name, &managed).await?
        {
            bail!(
                "Vault already has an AppRole role named {:?} on auth/approle ({what}); keyrig does \
                 not overwrite it. Rename keyrig's role in {source} (approle_roles[].name) or, if \
                 this Vault is a throwaway one, delete that role",
                role.name
            );
        }
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
