//! Delivers keygate's credentials in the mode of `scenarios/modes/<mode>.yaml`
//! (see `rig::contract::modes`) into a Secret directory (`rig::local::secret_dir`), the way a
//! pod gets them:
//!
//! - inline: rig writes the inline values (placeholders filled) into the
//!   Secret, as the chart's Secret template would.
//! - existing-secret: rig plays the out-of-band `kubectl create secret` with
//!   the custom key names of `existingSecretKeys`.
//! - external-secret: rig stores the credentials in Vault KV v2 (as an
//!   operator would), and a real `bao agent`, logged in with its own AppRole,
//!   renders them every `refreshInterval`.
//!
//! Why the agent renders one JSON file and a hook publishes it: the agent
//! writes each template's destination on its own (temp file + rename per
//! file), so three destination files would be three separate moments and
//! keygate could read a new secret-id beside an old role-id. One template
//! holding every key is one consistent file; its `exec` hook
//! (`xtask publish-secret`) then swaps the Secret's `..data` symlink, the
//! kubelet's atomic update. The hook runs only when the rendered content
//! changed, so an unchanged secret does not churn the directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::base::run::RunDir;
use crate::contract::env::{DeliveryInfo, ExternalDelivery};
use crate::contract::modes::{Delivery, ExternalSecret, ModeValues, fill};
use crate::local::secret_dir::SecretDir;
use crate::process::supervisor::{Readiness, Supervisor};
use crate::say;
use crate::vault::client::VaultClient;
use crate::vault::setup::VaultSetup;

/// keygate polls its credential files this often (crates/keygate/src/watch.rs).
pub const KEYGATE_WATCH_INTERVAL_MS: u64 = 1000;

/// How to run the hook that publishes what `bao agent` rendered:
/// `<program> <args...> --from <rendered.json> --to <secret dir>`.
#[derive(Debug, Clone)]
pub struct PublishCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Checks the values against the Vault setup, before anything starts.
pub fn check_against_setup(values: &ModeValues, setup: &VaultSetup) -> Result<()> {
    let file = values.file.display();
    let has_role = |name: &str| setup.roles.iter().any(|r| r.name == name);
    if !has_role(&values.api_key.role) {
        bail!(
            "{file}: apiKey.vault.role is {:?}, which {} does not define: use one of {}",
            values.api_key.role,
            setup.file.display(),
            role_names(setup)
        );
    }
    if let Some(path) = &values.api_key.path
        && path.trim_matches('/') != setup.kv_mount
    {
        bail!(
            "{file}: apiKey.vault.path is {path:?} but the keys live in {:?} ({}): make them the same",
            setup.kv_mount,
            setup.file.display()
        );
    }
    if let Delivery::ExternalSecret(external) = &values.delivery {
        let Some(role) = setup.roles.iter().find(|r| r.name == external.role) else {
            bail!(
                "{file}: gateway.externalSecret.role is {:?}, which {} does not define: use one of {}",
                external.role,
                setup.file.display(),
                role_names(setup)
            );
        };
        let needle = format!("\"{}/data/", external.path);
        let reads_path = setup
            .policies
            .iter()
            .filter(|p| role.policies.contains(&p.name))
            .any(|p| p.hcl.contains(&needle));
        if !reads_path {
            bail!(
                "{file}: gateway.externalSecret.role {:?} has no policy on {}/data/ ({}): the agent could not read the credentials; grant it or fix gateway.externalSecret.path",
                external.role,
                external.path,
                setup.file.display()
            );
        }
    }
    Ok(())
}

fn role_names(setup: &VaultSetup) -> String {
    setup
        .roles
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where keygate finds its credentials: the Secret directory's key files.
pub struct SecretFiles {
    pub dir: SecretDir,
    pub role_id: PathBuf,
    pub secret_id: PathBuf,
    pub group: PathBuf,
}

impl SecretFiles {
    /// The Secret is mounted under the run's 0700 secrets directory.
    pub fn for_run(run: &RunDir, values: &ModeValues) -> Self {
        let dir = SecretDir::new(run.secrets_dir().join("volumes").join(&values.secret_name));
        Self {
            role_id: dir.key_path(&values.keys.role_id),
            secret_id: dir.key_path(&values.keys.secret_id),
            group: dir.key_path(&values.keys.group),
            dir,
        }
    }
}

/// Puts keygate's credentials where `values` says and returns env.json's
/// `delivery`. Needs Vault set up; starts `bao agent` in external-secret mode.
#[allow(clippy::too_many_arguments)]
pub async fn deliver(
    values: &ModeValues,
    files: &SecretFiles,
    root: &VaultClient,
    run: &RunDir,
    supervisor: &mut Supervisor,
    bao: &Path,
    publish: Option<&PublishCommand>,
    env_dir: &Path,
) -> Result<DeliveryInfo> {
    let role = &values.api_key.role;
    let role_id = root.approle_role_id(role).await?;
    let secret_id = root.approle_new_secret_id(role).await?;
    crate::base::redact::register_in_run(run.path(), secret_id.secret_id.expose())?;
    let vault_addr = root.addr().to_owned();
    let keys = &values.keys;
    let mut external_info = None;
    let group = match &values.delivery {
        Delivery::Inline {
            role_id: inline_role,
            secret_id: inline_secret,
            group,
            ..
        } => {
            let filled = |v: &str| fill(v, &vault_addr, &role_id, secret_id.secret_id.expose());
            files.dir.publish(&crate::contract::modes::secret_data(
                keys,
                &filled(inline_role),
                &filled(inline_secret),
                group,
            ))?;
            group.clone()
        }
        Delivery::ExistingSecret { group } => {
            files.dir.publish(&crate::contract::modes::secret_data(
                keys,
                &role_id,
                secret_id.secret_id.expose(),
                group,
            ))?;
            group.clone()
        }
        Delivery::ExternalSecret(external) => {
            let by_key = crate::contract::modes::secret_data(
                keys,
                &role_id,
                secret_id.secret_id.expose(),
                &external.group,
            );
            store_in_vault(root, external, &by_key).await?;
            let publish = publish.context(
                "the external-secret mode needs a publish hook for bao agent (LocalOptions::publish)",
            )?;
            start_agent(
                values, external, files, root, run, supervisor, bao, publish, env_dir,
            )
            .await?;
            let secret_ref = external
                .data
                .iter()
                .find(|d| d.secret_key == keys.secret_id)
                .expect("validated: data covers every key");
            external_info = Some(ExternalDelivery {
                kv_mount: external.path.clone(),
                secret_id_path: secret_ref.key.clone(),
                secret_id_property: secret_ref.property.clone(),
                refresh_interval_ms: external.refresh_interval.as_millis() as u64,
            });
            external.group.clone()
        }
    };
    say!(
        "delivery: {} mode, Secret {:?} at {} (keys {}, {}, {}); keygate logs in as AppRole {role:?} (secret-id accessor {})",
        values.mode,
        values.secret_name,
        files.dir.path().display(),
        keys.role_id,
        keys.secret_id,
        keys.group,
        secret_id.accessor
    );
    for finding in values.findings() {
        say!("delivery: finding for {}: {finding}", values.file.display());
    }
    Ok(DeliveryInfo {
        mode: values.mode.as_str().to_owned(),
        values_file: values.file.clone(),
        secret_name: values.secret_name.clone(),
        secret_dir: files.dir.path().to_owned(),
        keys: keys.clone(),
        group,
        approle_role: role.clone(),
        watch_interval_ms: KEYGATE_WATCH_INTERVAL_MS,
        external: external_info,
        findings: values.findings(),
    })
}

/// Writes each Vault path the ExternalSecret reads: property -> value.
async fn store_in_vault(
    root: &VaultClient,
    external: &ExternalSecret,
    by_key: &BTreeMap<String, String>,
) -> Result<()> {
    root.enable_kv2(&external.path).await?;
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for entry in &external.data {
        let value = by_key.get(&entry.secret_key).cloned().unwrap_or_default();
        paths
            .entry(&entry.key)
            .or_default()
            .insert(entry.property.clone(), Value::String(value));
    }
    for (path, data) in paths {
        root.kv2_put(&external.path, path, &Value::Object(data))
            .await
            .with_context(|| {
                format!(
                    "storing the gateway credentials at {}/{path}",
                    external.path
                )
            })?;
    }
    Ok(())
}

#[derive(Serialize)]
struct AgentContext<'a> {
    vault_addr: &'a str,
    role_id_file: &'a Path,
    secret_id_file: &'a Path,
    render_interval: String,
    destination: &'a Path,
    contents: String,
    hook: Vec<String>,
}

/// The consul-template source: one JSON object, key -> the Vault field.
pub fn agent_template(external: &ExternalSecret) -> String {
    let mut out = String::from("{\n");
    for (i, entry) in external.data.iter().enumerate() {
        let comma = if i + 1 < external.data.len() { "," } else { "" };
        let _ = writeln!(
            out,
            "  {}: {{{{ with secret {} }}}}{{{{ index .Data.data {} | toJSON }}}}{{{{ end }}}}{comma}",
            json!(entry.secret_key),
            json!(format!("{}/data/{}", external.path, entry.key)),
            json!(entry.property),
        );
    }
    out.push_str("}\n");
    out
}

#[allow(clippy::too_many_arguments)]
async fn start_agent(
    values: &ModeValues,
    external: &ExternalSecret,
    files: &SecretFiles,
    root: &VaultClient,
    run: &RunDir,
    supervisor: &mut Supervisor,
    bao: &Path,
    publish: &PublishCommand,
    env_dir: &Path,
) -> Result<()> {
    // The agent's own AppRole credentials, 0600.
    let role_id = root.approle_role_id(&external.role).await?;
    let secret_id = root.approle_new_secret_id(&external.role).await?;
    crate::base::redact::register_in_run(run.path(), secret_id.secret_id.expose())?;
    let role_id_file = run.write_secret("delivery-agent-role-id", &role_id)?;
    let secret_id_file =
        run.write_secret("delivery-agent-secret-id", secret_id.secret_id.expose())?;

    // Staging: the one rendered file, beside (not in) the Secret directory.
    let staging = run.secrets_dir().join("delivery-staging");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    let destination = staging.join(format!("{}.json", values.secret_name));
    let mut hook = vec![publish.program.display().to_string()];
    hook.extend(publish.args.iter().cloned());
    hook.extend([
        "--from".to_owned(),
        destination.display().to_string(),
        "--to".to_owned(),
        files.dir.path().display().to_string(),
    ]);
    let config = crate::base::templates::render(
        &env_dir.join("bao-agent/agent.hcl.j2"),
        AgentContext {
            vault_addr: root.addr(),
            role_id_file: &role_id_file,
            secret_id_file: &secret_id_file,
            render_interval: humantime::format_duration(external.refresh_interval).to_string(),
            destination: &destination,
            contents: agent_template(external),
            hook,
        },
    )?;
    let config_file = run.path().join("bao-agent.hcl");
    std::fs::write(&config_file, config).context("writing bao agent's config")?;
    say!(
        "delivery: bao agent renders {}/{{{}}} every {} (static_secret_render_interval) as AppRole {:?}",
        external.path,
        external
            .data
            .iter()
            .map(|d| format!("{}#{}", d.key, d.property))
            .collect::<Vec<_>>()
            .join(", "),
        humantime::format_duration(external.refresh_interval),
        external.role
    );
    // Ready = the first render published: `..data` exists.
    crate::process::components::BaoAgent::new(
        "bao-agent",
        &config_file,
        Readiness::Path(files.dir.path().join(crate::local::secret_dir::DATA_LINK)),
    )
    .start(bao, run, supervisor)
    .await?;
    Ok(())
}

/// Puts a new secret-id where the run's delivery mode takes keygate's
/// credentials from (external-secret: Vault KV, which bao agent renders;
/// otherwise: the Secret directory, rewritten whole with an atomic swap).
/// Returns the moment of the write, where propagation starts. Shared by the
/// rotation e2e tests and `cargo xtask bench`.
pub async fn deliver_secret_id(
    root: &crate::vault::client::VaultClient,
    d: &crate::contract::env::DeliveryInfo,
    secret_id: &crate::vault::client::Secret,
) -> Result<std::time::Instant> {
    match &d.external {
        Some(ext) => {
            let mut data = root
                .kv2_get(&ext.kv_mount, &ext.secret_id_path)
                .await?
                .context("the delivery path in Vault is empty")?;
            data[&ext.secret_id_property] =
                serde_json::Value::String(secret_id.expose().to_owned());
            let at = std::time::Instant::now();
            root.kv2_put(&ext.kv_mount, &ext.secret_id_path, &data)
                .await?;
            Ok(at)
        }
        None => {
            let dir = SecretDir::new(&d.secret_dir);
            let mut data = std::collections::BTreeMap::new();
            for key in [&d.keys.role_id, &d.keys.secret_id, &d.keys.group] {
                data.insert(key.clone(), dir.read(key)?);
            }
            data.insert(d.keys.secret_id.clone(), secret_id.expose().to_owned());
            let at = std::time::Instant::now();
            dir.publish(&data)?;
            Ok(at)
        }
    }
}

/// The accessor of keygate's current Vault token, from its `/readyz`: it
/// changes when keygate logged in again (with a rotated secret-id).
pub async fn keygate_accessor(http: &reqwest::Client, keygate_url: &str) -> Result<String> {
    let url = format!("{keygate_url}/readyz");
    let ready: serde_json::Value = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}: keygate did not answer"))?
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))?;
    ready["vault_token_accessor"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("/readyz has no vault_token_accessor: {ready}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::modes::Mode;
    use rstest::rstest;

    #[rstest]
    fn the_agent_template_renders_one_json_object() {
        let values =
            ModeValues::load_mode(&crate::base::paths::scenarios_dir(), Mode::ExternalSecret)
                .unwrap();
        let Delivery::ExternalSecret(external) = &values.delivery else {
            panic!("external-secret values");
        };
        let template = agent_template(external);
        assert!(
            template.contains(r#""secret-id": {{ with secret "gateway-credentials/data/keygate" }}{{ index .Data.data "secret_id" | toJSON }}{{ end }},"#),
            "{template}"
        );
        assert!(template.trim_end().ends_with("}\n}") || template.trim_end().ends_with('}'));
    }

    #[rstest]
    fn the_shipped_modes_fit_the_shipped_vault_setup() {
        let setup = crate::vault::setup::load_default(&["animal-rescue-api".into()]).unwrap();
        for mode in Mode::ALL {
            let values = ModeValues::load_mode(&crate::base::paths::scenarios_dir(), mode).unwrap();
            check_against_setup(&values, &setup).unwrap();
        }
    }

    #[rstest]
    fn an_unknown_role_is_named_with_the_field() {
        let setup = crate::vault::setup::load_default(&["animal-rescue-api".into()]).unwrap();
        let mut values =
            ModeValues::load_mode(&crate::base::paths::scenarios_dir(), Mode::Inline).unwrap();
        values.api_key.role = "nobody".into();
        let err = check_against_setup(&values, &setup)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apiKey.vault.role is \"nobody\", which"),
            "{err}"
        );
    }
}
