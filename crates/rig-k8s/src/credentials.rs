//! keygate's Vault credentials, registered per mode (scenarios/k8s/README.md
//! step 7):
//! - `inline`, `existing-secret` on **kind**: the overlay's Secret holds fixed
//!   dev values committed to git; Vault (a throwaway dev server in the kind
//!   cluster) is told to accept them as the gateway AppRole's custom role_id
//!   and secret_id. The values are read from the manifests, never repeated
//!   here, and the report flags them.
//! - **cluster**: never the committed values, since that AppRole reads every
//!   group's keys and anyone with the repository could log in to a real
//!   Vault. `existing-secret` gets the AppRole's own role_id (never
//!   changed in a shared Vault) and a secret_id generated for the run, which
//!   the harness writes into the Secret itself; `inline` is refused.
//! - `external-secret`: the AppRole's real role_id and a fresh secret_id go to
//!   the KV secret the ExternalSecret reads.
//!
//! **On the cluster profile every secret_id keyrig makes in the user's
//! Vault expires after [`CLUSTER_SECRET_ID_TTL`]**: nothing revokes them
//! (what `up` applied keeps running after the run), and keyrig's AppRole
//! reads every group's keys.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Secret as KubeSecret};
use manifests::files::KubernetesAuth;
use reqwest::Method;
use serde_json::{Value, json};

use super::names::CREDENTIALS_SECRET;
use super::{KubeProfile, Mode};
use rig::say;
use rig::vault::client::{Secret, VaultClient};

/// The AppRole credentials a mode's Secret carries.
pub struct DevCredentials {
    pub role_id: String,
    pub secret_id: Secret,
}

/// How long a secret_id keyrig makes in the cluster profile's Vault lives:
/// a run and a day to look at what it left running. keygate in the
/// cluster can no longer log in after that, until `up` runs again.
pub const CLUSTER_SECRET_ID_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The lifetime of a secret_id made for `profile`: kind's dev server is
/// thrown away with the cluster.
pub fn secret_id_ttl(profile: KubeProfile) -> Option<std::time::Duration> {
    (profile == KubeProfile::Cluster).then_some(CLUSTER_SECRET_ID_TTL)
}

/// The default key names of the credentials Secret (base, inline, ESO).
const ROLE_ID_KEY: &str = "role-id";
const SECRET_ID_KEY: &str = "secret-id";

/// The Secret's string values: `stringData`, else `data` (base64, which
/// k8s-openapi's ByteString decodes).
fn secret_values(secret: &KubeSecret) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    values.extend(secret.string_data.clone().unwrap_or_default());
    values
}

fn value(values: &BTreeMap<String, String>, key: &str, origin: &str) -> Result<String> {
    values.get(key).cloned().ok_or_else(|| {
        anyhow!(
            "{origin}: Secret {CREDENTIALS_SECRET} has no key {key:?} (it has {:?})",
            values.keys().collect::<Vec<_>>()
        )
    })
}

/// The dev credentials of the `inline` overlay, from its rendered objects.
pub fn inline_credentials(rendered: &[Value]) -> Result<DevCredentials> {
    let object = manifests::find(rendered, "Secret", CREDENTIALS_SECRET)
        .ok_or_else(|| anyhow!("the inline overlay renders no Secret {CREDENTIALS_SECRET}"))?;
    // kubectl may wrap a long base64 value over lines; base64 has no whitespace.
    let mut object = object.clone();
    if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            if let Some(text) = value.as_str() {
                *value = Value::String(text.split_whitespace().collect());
            }
        }
    }
    let secret: KubeSecret =
        serde_json::from_value(object).context("the inline overlay's credentials Secret")?;
    let values = secret_values(&secret);
    Ok(DevCredentials {
        role_id: value(&values, ROLE_ID_KEY, "scenarios/k8s/inline")?,
        secret_id: Secret::new(value(&values, SECRET_ID_KEY, "scenarios/k8s/inline")?),
    })
}

/// The dev credentials of the `existing-secret` mode: the pre-created Secret,
/// read with the custom key names its values.yaml declares.
pub fn existing_secret_credentials(overlay_dir: &Path) -> Result<DevCredentials> {
    let secret_file = overlay_dir.join("precreate/secret.yaml");
    let (role_key, secret_key, _) = existing_secret_keys(overlay_dir)?;
    let secret: KubeSecret = one(&secret_file)?;
    let values = secret_values(&secret);
    let origin = secret_file.display().to_string();
    Ok(DevCredentials {
        role_id: value(&values, &role_key, &origin)?,
        secret_id: Secret::new(value(&values, &secret_key, &origin)?),
    })
}

/// The existing-secret mode's key names (values.yaml `existingSecretKeys.*`).
/// The existing-secret overlay's key names: (role-id, secret-id, Vault address).
fn existing_secret_keys(overlay_dir: &Path) -> Result<(String, String, String)> {
    let values_file = overlay_dir.join("values.yaml");
    let config: ConfigMap = one(&values_file)?;
    let keys = config.data.unwrap_or_default();
    let key = |name: &str| {
        keys.get(&format!("existingSecretKeys.{name}"))
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "{}: data has no existingSecretKeys.{name}",
                    values_file.display()
                )
            })
    };
    Ok((key("roleId")?, key("secretId")?, key("vaultUrl")?))
}

/// The cluster profile's existing-secret mode: the overlay's precreated
/// Secret (its name, labels, key names and other values) with this run's
/// credentials in place of the committed ones, created through the API
/// (server-side apply): no value on a command line.
pub async fn apply_existing_secret(
    client: &kube::Client,
    overlay_dir: &Path,
    creds: &DevCredentials,
    vault_url: Option<&str>,
) -> Result<()> {
    let secret_file = overlay_dir.join("precreate/secret.yaml");
    let mut secret: KubeSecret = one(&secret_file)?;
    let (role_key, secret_key, url_key) = existing_secret_keys(overlay_dir)?;
    let mut values = secret_values(&secret);
    for key in [&role_key, &secret_key, &url_key] {
        if !values.contains_key(key) {
            bail!(
                "{}: the Secret has no key {key:?}, which values.yaml names",
                secret_file.display()
            );
        }
    }
    values.insert(role_key, creds.role_id.clone());
    values.insert(secret_key, creds.secret_id.expose().to_owned());
    if let Some(url) = vault_url {
        // The cluster profile's Vault, as keygate's config names it.
        values.insert(url_key, url.to_owned());
    }
    secret.data = None;
    secret.string_data = Some(values);
    let name = secret
        .metadata
        .name
        .clone()
        .with_context(|| format!("{}: the Secret has no name", secret_file.display()))?;
    let mut object = serde_json::to_value(&secret)?;
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Secret");
    kube::api::Api::<KubeSecret>::namespaced(client.clone(), super::names::NAMESPACE)
        .patch(
            &name,
            &kube::api::PatchParams::apply("keyrig").force(),
            &kube::api::Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("creating Secret {name} with this run's credentials"))?;
    say!("k8s: Secret {name} created with credentials generated for this run");
    Ok(())
}

fn one<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T> {
    let objects = manifests::read_yaml_file(file).map_err(|err| anyhow!("{err}"))?;
    let [object] = objects.as_slice() else {
        bail!("{} must hold exactly one object", file.display());
    };
    serde_json::from_value(object.clone()).with_context(|| format!("{}", file.display()))
}

/// Where a run's AppRole credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// The values committed in the overlay (kind only).
    Committed,
    /// Generated for this run; the harness writes the Secret.
    PerRun,
    /// A fresh secret-id from Vault, synced by ESO.
    FromVault,
}

/// What `profile` and `mode` may use, or why the combination is refused.
pub fn source_for(profile: KubeProfile, mode: Mode) -> Result<CredentialSource> {
    Ok(match (profile, mode) {
        (_, Mode::ExternalSecret) => CredentialSource::FromVault,
        (KubeProfile::Kind, Mode::Inline | Mode::ExistingSecret) => CredentialSource::Committed,
        (KubeProfile::Cluster, Mode::ExistingSecret) => CredentialSource::PerRun,
        (KubeProfile::Cluster, Mode::Inline) => bail!(
            "mode inline is refused on the cluster profile: its credentials are literals committed in scenarios/k8s/inline, \
             and registering them in a real Vault would let anyone with the repository log in as the gateway AppRole \
             (which reads every group's keys). Use --mode existing-secret (credentials generated per run) or \
             --mode external-secret, or the kind profile for inline"
        ),
    })
}

/// AppRole credentials for one run of the cluster profile: the role's own
/// `role_id`, read from Vault (a shared Vault's role_id is never changed:
/// every Secret naming it, another keyrig's too, would stop logging in),
/// and a fresh secret_id (random, never written to git).
pub fn per_run_credentials(role_id: String) -> DevCredentials {
    DevCredentials {
        role_id,
        secret_id: Secret::new(apikey::ApiKey::generate().expose().to_owned()),
    }
}

/// The committed dev values of both overlays that carry any: the inline
/// literals (already rendered by the caller, when given) and the
/// existing-secret overlay's precreated Secret.
pub fn committed_credentials(inline_rendered: Option<&[Value]>) -> Result<Vec<DevCredentials>> {
    let mut committed = vec![existing_secret_credentials(
        &rig::base::paths::scenarios_dir().join("k8s/existing-secret"),
    )?];
    if let Some(rendered) = inline_rendered {
        committed.push(inline_credentials(rendered)?);
    }
    Ok(committed)
}

/// Makes Vault accept `creds` as the AppRole `role`'s credentials. On the
/// cluster profile, credentials equal to a committed value are refused
/// (`committed`: [`committed_credentials`]) whatever the caller meant, and
/// the role's role_id is never changed (only kind's throwaway Vault is
/// given the committed one): `creds.role_id` must be the role's.
pub async fn register_dev_credentials(
    root: &VaultClient,
    role: &str,
    creds: &DevCredentials,
    profile: KubeProfile,
    committed: &[DevCredentials],
) -> Result<()> {
    if profile == KubeProfile::Cluster
        && committed
            .iter()
            .any(|c| c.role_id == creds.role_id || c.secret_id.expose() == creds.secret_id.expose())
    {
        bail!(
            "refusing to register the committed dev credentials of scenarios/k8s in the cluster profile's Vault: \
             they are public in the repository; the cluster profile uses credentials generated per run \
             (if AppRole {role}'s role_id in this Vault is the committed one, give it another: \
             `bao write auth/approle/role/{role}/role-id role_id=<new>`)"
        );
    }
    match profile {
        KubeProfile::Kind => {
            root.call(
                Method::POST,
                &format!("auth/approle/role/{role}/role-id"),
                Some(&json!({"role_id": creds.role_id})),
            )
            .await
            .with_context(|| format!("setting AppRole {role}'s role_id"))?;
        }
        KubeProfile::Cluster => {
            if root.approle_role_id(role).await? != creds.role_id {
                bail!(
                    "refusing to change AppRole {role}'s role_id in the cluster profile's Vault: \
                     every Secret that names the current one (another keyrig's on this Vault too) \
                     would stop logging in; a run's credentials use the role's own role_id"
                );
            }
        }
    }
    let mut body = json!({"secret_id": creds.secret_id.expose()});
    if let Some(ttl) = secret_id_ttl(profile) {
        body["ttl"] = json!(format!("{}s", ttl.as_secs()));
    }
    let answer = root
        .request(
            Method::POST,
            &format!("auth/approle/role/{role}/custom-secret-id"),
            Some(&body),
        )
        .await
        .with_context(|| format!("registering AppRole {role}'s custom secret_id"))?;
    // Registering the same custom secret_id again (a reused cluster) is
    // refused as a duplicate: it is registered, which is what we want.
    let (status, body) = answer;
    if !status.is_success() && !body.to_string().contains("already registered") {
        bail!("Vault refused AppRole {role}'s custom secret_id: {status} {body}");
    }
    say!(
        "vault: AppRole {role:?} accepts this run's {} credentials",
        match profile {
            KubeProfile::Kind => "committed dev".to_owned(),
            KubeProfile::Cluster => format!(
                "per-run (the secret_id expires in {} h)",
                CLUSTER_SECRET_ID_TTL.as_secs() / 3600
            ),
        }
    );
    Ok(())
}

/// Writes the ExternalSecret's source: the AppRole's role_id and a fresh
/// secret_id, plus the address and group keygate needs. Returns the
/// secret_id's accessor (for revoking it later). The secret_id expires
/// after `ttl` ([`secret_id_ttl`]) and is registered in `run_dir` for
/// redaction and the upload scan.
///
/// The mount (`secret`, Vault's usual KV) is used as it is when it exists,
/// whoever made it: keyrig writes only its own path there. When it does not
/// exist, keyrig creates it, marked as its own.
pub async fn write_external_secret_source(
    root: &VaultClient,
    auth: &KubernetesAuth,
    role: &str,
    vault_url_in_cluster: &str,
    gateway_group: &str,
    ttl: Option<std::time::Duration>,
    run_dir: &std::path::Path,
) -> Result<String> {
    let mount = &auth.gateway_credentials.mount;
    let field = "scenarios/k8s/vault/kubernetes-roles.yaml gateway_credentials.mount";
    if rig::vault::ownership::mount_conflict(root, mount, "kv", field)
        .await?
        .is_none()
    {
        // Absent, or keyrig's: (created and) marked.
        rig::vault::ownership::claim_secrets_mount(
            root,
            mount,
            "kv",
            json!({"options": {"version": "2"}}),
            field,
        )
        .await?;
    }
    root.enable_kv2(mount)
        .await
        .with_context(|| format!("enabling KV v2 at {mount}"))?;
    let role_id = root.approle_role_id(role).await?;
    let secret_id = match ttl {
        Some(ttl) => root.approle_new_secret_id_expiring(role, ttl).await?,
        None => root.approle_new_secret_id(role).await?,
    };
    rig::base::redact::register_in_run(run_dir, secret_id.secret_id.expose())?;
    let data = json!({
        "vault_url": vault_url_in_cluster,
        "role_id": role_id,
        "secret_id": secret_id.secret_id.expose(),
        "gateway_group": gateway_group,
    });
    let mut written: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    written.sort_unstable();
    let mut expected: Vec<&str> = auth
        .gateway_credentials
        .properties
        .iter()
        .map(String::as_str)
        .collect();
    expected.sort_unstable();
    if written != expected {
        bail!(
            "kubernetes-roles.yaml gateway_credentials.properties is {expected:?}, but the harness writes {written:?}: keep them in step"
        );
    }
    root.kv2_put(
        &auth.gateway_credentials.mount,
        &auth.gateway_credentials.path,
        &data,
    )
    .await
    .context("writing the ExternalSecret's source in Vault")?;
    say!(
        "vault: {}/{} holds AppRole {role:?}'s role_id and a new secret_id (accessor {}{})",
        auth.gateway_credentials.mount,
        auth.gateway_credentials.path,
        secret_id.accessor,
        ttl.map(|ttl| format!(", expires in {} h", ttl.as_secs() / 3600))
            .unwrap_or_default()
    );
    Ok(secret_id.accessor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_existing_secret_mode_with_its_custom_keys() {
        let dir = rig::base::paths::scenarios_dir().join("k8s/existing-secret");
        let creds = existing_secret_credentials(&dir).unwrap();
        assert!(!creds.role_id.is_empty());
        assert!(!creds.secret_id.expose().is_empty());
    }

    #[test]
    fn reads_the_inline_mode_from_the_rendered_overlay() {
        // The pinned kubectl is installed by `cargo xtask test`; without it
        // crates/manifests' own tests fail loudly, so this one need not.
        let kubectl = super::super::pinned_tool("kubectl");
        let rendered = manifests::render_overlay(
            &kubectl,
            &rig::base::paths::scenarios_dir().join("k8s/inline"),
        )
        .unwrap();
        let inline = inline_credentials(&rendered).unwrap();
        let existing = existing_secret_credentials(
            &rig::base::paths::scenarios_dir().join("k8s/existing-secret"),
        )
        .unwrap();
        // Both modes register the same dev AppRole credentials.
        assert_eq!(inline.role_id, existing.role_id);
        assert_eq!(inline.secret_id.expose(), existing.secret_id.expose());
    }
}
