//! Vault's Kubernetes auth method from scenarios/k8s/vault/kubernetes-roles.yaml,
//! applied through Vault's HTTP API after scenarios/vault/setup.yaml: the
//! auth mount, its config, the policies only these profiles need, and one
//! role per ServiceAccount (api-portal, gateway, eso).

use std::path::Path;

use anyhow::{Context, Result};
use manifests::files::KubernetesAuth;
use reqwest::Method;
use serde_json::json;

use crate::say;
use crate::vault::VaultClient;

/// scenarios/k8s/vault/kubernetes-roles.yaml of this workspace.
pub fn roles_file() -> std::path::PathBuf {
    crate::paths::scenarios_dir().join("k8s/vault/kubernetes-roles.yaml")
}

/// Applies the file. `kubernetes_host` overrides the file's
/// `config.kubernetes_host` (the cluster profile's Vault may run outside
/// the cluster and reach the API server by another address).
pub async fn apply(
    root: &VaultClient,
    file: &Path,
    kubernetes_host: Option<&str>,
) -> Result<KubernetesAuth> {
    let auth = KubernetesAuth::load(file).map_err(|err| anyhow::anyhow!("{err}"))?;
    root.enable_auth("kubernetes", &auth.auth_mount)
        .await
        .with_context(|| {
            format!(
                "enabling the Kubernetes auth method at auth/{}",
                auth.auth_mount
            )
        })?;
    let mut config = serde_json::to_value(&auth.config)?;
    if let Some(host) = kubernetes_host {
        config["kubernetes_host"] = json!(host);
    }
    root.call(
        Method::POST,
        &format!("auth/{}/config", auth.auth_mount),
        Some(&config),
    )
    .await
    .with_context(|| format!("{}: config", file.display()))?;
    for policy in &auth.policies {
        let hcl = auth
            .policy_text(file, &policy.name)
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        root.put_policy(&policy.name, &hcl)
            .await
            .with_context(|| format!("{}: policy {}", file.display(), policy.name))?;
    }
    for role in &auth.roles {
        root.call(
            Method::POST,
            &format!("auth/{}/role/{}", auth.auth_mount, role.name),
            Some(&serde_json::to_value(role)?),
        )
        .await
        .with_context(|| format!("{}: roles[{}]", file.display(), role.name))?;
        say!(
            "vault: kubernetes role {:?} bound to ServiceAccount {:?} in {:?}",
            role.name,
            role.bound_service_account_names,
            role.bound_service_account_namespaces
        );
    }
    Ok(auth)
}
