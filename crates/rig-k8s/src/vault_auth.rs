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
//!
//! **keyrig's mount reviews the tokens of one cluster.** Its config names
//! that cluster (API server and CA); one already there for another cluster
//! (another keyrig on the same Vault) is refused, not replaced: replacing
//! it would lock that keyrig's pods out.

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

/// The cluster a Kubernetes auth config reviews tokens with: its API
/// server's address and CA (`None`: none given, Vault's own pod's).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReviewedCluster {
    host: String,
    ca: Option<String>,
}

impl ReviewedCluster {
    /// From a config as written (`config_body`) or as read back
    /// (`GET auth/<mount>/config`'s `data`); `None` without a host.
    fn of(config: &Value) -> Option<Self> {
        let host = config["kubernetes_host"]
            .as_str()?
            .trim()
            .trim_end_matches('/');
        if host.is_empty() {
            return None;
        }
        let ca = config["kubernetes_ca_cert"]
            .as_str()
            .map(str::trim)
            .filter(|ca| !ca.is_empty())
            .map(str::to_owned);
        Some(Self {
            host: host.to_owned(),
            ca,
        })
    }
}

/// Why writing `wanted` over the config `current` (the `data` of
/// `GET auth/<mount>/config`) would take the mount from another cluster,
/// if it would: another API server, or the same address with another CA.
fn config_conflict(mount: &str, current: &Value, wanted: &Value) -> Option<String> {
    let current = ReviewedCluster::of(current)?;
    let wanted = ReviewedCluster::of(wanted)?;
    if current == wanted {
        return None;
    }
    let what = if current.host == wanted.host {
        format!(
            "the API server at {} with another CA than this run's ({} CA now, {} for this run: \
             another cluster behind the same address, or this cluster's CA changed)",
            current.host,
            if current.ca.is_some() { "a" } else { "no" },
            if wanted.ca.is_some() {
                "this cluster's"
            } else {
                "none"
            },
        )
    } else {
        format!(
            "the API server at {}; this run would point it at {}",
            current.host, wanted.host
        )
    };
    Some(format!(
        "auth/{mount} (keyrig's) reviews ServiceAccount tokens with {what}. Another keyrig, \
         on another cluster, may be using this Vault: replacing the config would lock its pods \
         out, and its next `up` would take the mount back (one keyrig per Vault at a time). \
         Nothing was written to auth/{mount}. If that run is gone, remove the mount \
         (`bao auth disable {mount}`: its config and roles go with it, and `up` makes it \
         again); else run against another Vault"
    ))
}

/// Applies the file to keyrig's own mount. `outside`: Vault runs outside
/// the cluster (the cluster profile with KEYRIG_VAULT_KUBERNETES_HOST).
/// A config the mount already has for another cluster is refused
/// ([`config_conflict`]) before anything is written to the mount.
pub async fn apply(
    root: &VaultClient,
    file: &Path,
    outside: Option<&OutsideCluster>,
) -> Result<KubernetesAuth> {
    let auth = KubernetesAuth::load(file).map_err(|err| anyhow::anyhow!("{err}"))?;
    claim_mount(root, &auth.auth_mount, file).await?;
    let config = config_body(&auth, outside)?;
    let path = format!("auth/{}/config", auth.auth_mount);
    // Never configured: 404.
    let (status, current) = root
        .request(Method::GET, &path, None)
        .await
        .with_context(|| format!("reading {path}"))?;
    match status {
        status if status.is_success() => {
            if let Some(conflict) = config_conflict(&auth.auth_mount, &current["data"], &config) {
                bail!("{conflict}");
            }
        }
        reqwest::StatusCode::NOT_FOUND => {}
        status => bail!("reading {path}: Vault answered {status} {current}"),
    }
    root.call(Method::POST, &path, Some(&config))
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

    /// A config another cluster's keyrig wrote is not replaced: another
    /// API server, or the same one with another CA, is refused naming both
    /// and what to do; the same cluster again (a new reviewer JWT) is not.
    #[test]
    fn a_config_for_another_cluster_is_refused() {
        // As `GET auth/<mount>/config` answers (data), and as written.
        let read = |host: &str, ca: &str| {
            json!({"kubernetes_host": host, "kubernetes_ca_cert": ca,
                   "disable_local_ca_jwt": true, "token_reviewer_jwt_set": true})
        };
        let write = |host: &str, ca: Option<&str>| {
            let mut body = json!({"kubernetes_host": host});
            if let Some(ca) = ca {
                body["kubernetes_ca_cert"] = json!(ca);
                body["token_reviewer_jwt"] = json!("jwt");
            }
            body
        };
        let (a, b) = ("https://10.0.0.1:6443", "https://10.9.9.9:6443");
        let (ca_a, ca_b) = (
            "-----BEGIN CERTIFICATE-----\nA\n",
            "-----BEGIN CERTIFICATE-----\nB\n",
        );
        let mount = "keyrig-kubernetes";

        let other_host = config_conflict(mount, &read(a, ca_a), &write(b, Some(ca_b))).unwrap();
        assert!(
            other_host.contains(&format!(
                "the API server at {a}; this run would point it at {b}"
            )),
            "{other_host}"
        );
        assert!(
            other_host.contains("bao auth disable keyrig-kubernetes"),
            "{other_host}"
        );
        assert!(other_host.contains("another Vault"), "{other_host}");
        let other_ca = config_conflict(mount, &read(a, ca_a), &write(a, Some(ca_b))).unwrap();
        assert!(
            other_ca.contains(&format!("the API server at {a} with another CA")),
            "{other_ca}"
        );
        // In-cluster (no CA) over an outside cluster's config, and back.
        assert!(
            config_conflict(
                mount,
                &read(a, ca_a),
                &write("https://kubernetes.default.svc", None)
            )
            .is_some()
        );
        assert!(
            config_conflict(
                mount,
                &read("https://kubernetes.default.svc", ""),
                &write(a, Some(ca_a))
            )
            .is_some()
        );

        // The same cluster: a trailing slash, the PEM's last newline, a new reviewer JWT.
        assert_eq!(
            config_conflict(
                mount,
                &read(&format!("{a}/"), ca_a),
                &write(a, Some(&format!("{ca_a}\n")))
            ),
            None
        );
        assert_eq!(
            config_conflict(
                mount,
                &read("https://kubernetes.default.svc", ""),
                &write("https://kubernetes.default.svc", None)
            ),
            None
        );
        // Never configured (no host): nothing to take over.
        assert_eq!(
            config_conflict(mount, &json!({}), &write(b, Some(ca_b))),
            None
        );
        assert_eq!(
            config_conflict(mount, &read("", ""), &write(b, Some(ca_b))),
            None
        );
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
