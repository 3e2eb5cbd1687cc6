//! Vault's Kubernetes auth method from scenarios/k8s/vault/kubernetes-roles.yaml,
//! applied through Vault's HTTP API after scenarios/vault/setup.yaml: the
//! auth mount, its config, the policies only these profiles need, and one
//! role per ServiceAccount (api-portal, gateway, eso).
//!
//! **The harness configures only a mount it created.** The cluster profile
//! runs against someone's real Vault, where `auth/kubernetes` (or any other
//! mount) may serve other clusters: rewriting its config would reset its CA,
//! reviewer JWT and keys. So the mount is keyrig's own (`keyrig-kubernetes`),
//! created with [`OWNER_MARK`] in its description; a mount of that name
//! without the mark is refused, untouched, with what to do.

use std::path::Path;

use anyhow::{Context, Result, bail};
use manifests::files::KubernetesAuth;
use reqwest::Method;
use serde_json::{Value, json};

use rig::say;
use rig::vault::client::{Secret, VaultClient};

/// In the description of every auth mount keyrig creates; the only mounts
/// it ever configures carry it (the same mark as its policies and secrets
/// mounts: `rig::vault::ownership`).
pub use rig::vault::ownership::OWNER_MARK;

/// The mount other tools and Vault's docs use by default: never keyrig's.
const DEFAULT_KUBERNETES_MOUNT: &str = "kubernetes";

/// scenarios/k8s/vault/kubernetes-roles.yaml of this workspace.
pub fn roles_file() -> std::path::PathBuf {
    rig::base::paths::scenarios_dir().join("k8s/vault/kubernetes-roles.yaml")
}

/// How a Vault that runs outside the cluster reviews ServiceAccount tokens:
/// it cannot use a pod's own token and CA, so it is given both.
#[derive(Debug, Clone)]
pub struct OutsideCluster {
    /// The API server as Vault reaches it.
    pub kubernetes_host: String,
    /// The cluster's CA certificate (PEM), e.g. ConfigMap kube-root-ca.crt.
    pub kubernetes_ca_cert: String,
    /// A token of a ServiceAccount bound to system:auth-delegator.
    pub token_reviewer_jwt: Secret,
}

/// What `sys/auth` says of a mount path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOwner {
    Absent,
    /// Created by keyrig (its description carries [`OWNER_MARK`]).
    Keyrig,
    /// Someone else's: never modified.
    Other {
        kind: String,
        description: String,
    },
}

/// Who owns auth mount `path`, from `GET sys/auth`.
pub async fn mount_owner(root: &VaultClient, path: &str) -> Result<MountOwner> {
    let auths = root
        .call(Method::GET, "sys/auth", None)
        .await
        .context("listing Vault's auth methods (sys/auth)")?;
    Ok(owner_in(&auths, path))
}

fn owner_in(auths: &Value, path: &str) -> MountOwner {
    let key = format!("{}/", path.trim_end_matches('/'));
    let Some(found) = auths.get("data").unwrap_or(auths).get(&key) else {
        return MountOwner::Absent;
    };
    let kind = found["type"].as_str().unwrap_or("?").to_owned();
    let description = found["description"].as_str().unwrap_or("").to_owned();
    if kind == "kubernetes" && description.contains(OWNER_MARK) {
        MountOwner::Keyrig
    } else {
        MountOwner::Other { kind, description }
    }
}

/// Creates the mount, or confirms keyrig created it; refuses any other.
async fn claim_mount(root: &VaultClient, mount: &str, file: &Path) -> Result<()> {
    if mount.trim_end_matches('/') == DEFAULT_KUBERNETES_MOUNT {
        bail!(
            "{}: auth_mount is `{DEFAULT_KUBERNETES_MOUNT}`, the default mount other clusters may use: keyrig configures only a mount of its own (e.g. keyrig-kubernetes)",
            file.display()
        );
    }
    match mount_owner(root, mount).await? {
        MountOwner::Keyrig => {
            say!("vault: reusing auth/{mount}, which keyrig created");
            Ok(())
        }
        MountOwner::Other { kind, description } => bail!(
            "Vault already has an auth method at auth/{mount} (type {kind}, description {description:?}) that keyrig did not create; keyrig never changes a mount it did not create: \
             remove it if it is a leftover, or set another `auth_mount` in {}",
            file.display()
        ),
        MountOwner::Absent => {
            root.call(
                Method::POST,
                &format!("sys/auth/{mount}"),
                Some(&json!({
                    "type": "kubernetes",
                    "description": format!("{OWNER_MARK}: Kubernetes auth of the keyrig e2e harness (cargo xtask); safe to disable"),
                })),
            )
            .await
            .with_context(|| format!("enabling the Kubernetes auth method at auth/{mount}"))?;
            say!("vault: created auth/{mount} (Kubernetes auth, {OWNER_MARK})");
            Ok(())
        }
    }
}

/// The body of `POST auth/<mount>/config`.
fn config_body(auth: &KubernetesAuth, outside: Option<&OutsideCluster>) -> Result<Value> {
    let mut config = serde_json::to_value(&auth.config)?;
    if let Some(outside) = outside {
        config["kubernetes_host"] = json!(outside.kubernetes_host);
        config["kubernetes_ca_cert"] = json!(outside.kubernetes_ca_cert);
        config["token_reviewer_jwt"] = json!(outside.token_reviewer_jwt.expose());
        // Outside a pod there is no local token or CA to fall back on.
        config["disable_local_ca_jwt"] = json!(true);
    }
    Ok(config)
}

/// Applies the file to keyrig's own mount. `outside`: Vault runs outside
/// the cluster (the cluster profile with KEYRIG_VAULT_KUBERNETES_HOST).
pub async fn apply(
    root: &VaultClient,
    file: &Path,
    outside: Option<&OutsideCluster>,
) -> Result<KubernetesAuth> {
    let auth = KubernetesAuth::load(file).map_err(|err| anyhow::anyhow!("{err}"))?;
    claim_mount(root, &auth.auth_mount, file).await?;
    root.call(
        Method::POST,
        &format!("auth/{}/config", auth.auth_mount),
        Some(&config_body(&auth, outside)?),
    )
    .await
    .with_context(|| match outside {
        // Vault outside a pod has no ServiceAccount CA or token to fall back on.
        None => format!(
            "{}: config (if this Vault runs outside the cluster, set KEYRIG_VAULT_KUBERNETES_HOST to the API server's address as Vault reaches it: keyrig then gives Vault the cluster's CA and a reviewer token)",
            file.display()
        ),
        Some(_) => format!("{}: config", file.display()),
    })?;
    for policy in &auth.policies {
        let hcl = auth
            .policy_text(file, &policy.name)
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        rig::vault::ownership::put_managed_policy(
            root,
            &policy.name,
            &hcl,
            &format!("{} (policies[{}])", file.display(), policy.name),
        )
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kubernetes_mount_with_the_mark_is_keyrigs() {
        let auths = json!({"data": {
            "kubernetes/": {"type": "kubernetes", "description": ""},
            "keyrig-kubernetes/": {"type": "kubernetes", "description": "managed by keyrig: ..."},
            "marked-but-other/": {"type": "approle", "description": "managed by keyrig"},
        }});
        assert_eq!(owner_in(&auths, "keyrig-kubernetes"), MountOwner::Keyrig);
        assert_eq!(owner_in(&auths, "absent"), MountOwner::Absent);
        assert!(matches!(
            owner_in(&auths, "kubernetes"),
            MountOwner::Other { .. }
        ));
        assert!(matches!(
            owner_in(&auths, "marked-but-other/"),
            MountOwner::Other { .. }
        ));
    }

    #[test]
    fn the_shipped_roles_file_names_a_mount_of_keyrigs_own() {
        let auth = KubernetesAuth::load(&roles_file()).unwrap();
        assert_ne!(auth.auth_mount, DEFAULT_KUBERNETES_MOUNT);
        let body = config_body(&auth, None).unwrap();
        assert_eq!(
            body,
            json!({"kubernetes_host": "https://kubernetes.default.svc"})
        );
        let outside = OutsideCluster {
            kubernetes_host: "https://10.0.0.1:6443".into(),
            kubernetes_ca_cert: "-----BEGIN CERTIFICATE-----".into(),
            token_reviewer_jwt: Secret::new("jwt"),
        };
        let body = config_body(&auth, Some(&outside)).unwrap();
        assert_eq!(body["kubernetes_host"], "https://10.0.0.1:6443");
        assert_eq!(body["token_reviewer_jwt"], "jwt");
        assert_eq!(body["disable_local_ca_jwt"], true);
    }
}
