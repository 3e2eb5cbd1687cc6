//! The keys-file side of the local profile: a second keygate + Envoy pair
//! that validates from keys files rendered by a real `bao agent`, the way
//! Spring Cloud Gateway for Kubernetes gets its keys from the Vault Agent.
//!
//! Why a second pair in the same environment rather than a second
//! environment: Vault, its setup and the upstream are shared, so the extra
//! cost is three processes (agent, keygate, Envoy) and about a second, and
//! one key written to Vault can be watched landing at both gateways.
//!
//! `bao agent` logs in with its own AppRole secret-id (0600 files), renders
//! one file per API group every `static_secret_render_interval`, and is
//! ready when every file has been rendered once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::base::run::RunDir;
use crate::contract::env::KeysFileSettings;
use crate::contract::scenario::ApiGroup;
use crate::process::components::{BaoAgent, Keygate};
use crate::process::supervisor::{Readiness, Supervisor};
use crate::say;
use crate::vault::client::VaultClient;

/// How often the agent re-reads KV v2 data. Tanzu's default is 5 minutes;
/// short here so revocation tests wait seconds.
pub const RENDER_INTERVAL: Duration = Duration::from_secs(1);
/// How often keygate checks the files for a change.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What the pair needs from the rest of the profile.
pub struct KeysFileInputs<'a> {
    pub run: &'a RunDir,
    pub env_dir: &'a Path,
    pub bao: &'a Path,
    /// The gateway in front of the keys-file keygate: a second instance of
    /// the catalog's default gateway, and `gateway_bin` its tool's binary.
    /// Its cases are recorded under the default gateway's name.
    pub gateway: &'a crate::contract::gateways::GatewayManifest,
    pub gateway_bin: &'a Path,
    pub keygate_bin: &'a Path,
    pub vault_addr: &'a str,
    pub root: &'a VaultClient,
    /// The AppRole the agent logs in with (the gateway's read-only role).
    pub agent_role: &'a str,
    pub kv_mount: &'a str,
    pub groups: &'a [ApiGroup],
    /// keygate's rendered config for the Vault side; the file side is the
    /// same plus `keys:` and its own listeners.
    pub keygate_config: &'a dyn Fn(&str, &str) -> Result<String>,
    pub upstream_port: u16,
}

/// The consul-template that renders one group's keys file: list
/// `<mount>/metadata/<groupId>`, then `<selector>,<hash>` per key from the
/// secret's `key` field (what SCG's template reads).
pub fn keys_template(kv_mount: &str, group: &str) -> String {
    format!(
        "{{{{- range secrets \"{kv_mount}/metadata/{group}\" }}}}\n\
         {{{{ . }}}},{{{{ with secret (printf \"{kv_mount}/data/{group}/%s\" .) }}}}{{{{ .Data.data.key }}}}{{{{ end }}}}\n\
         {{{{- end }}}}\n"
    )
}

#[derive(Serialize)]
struct AgentTemplate {
    source: PathBuf,
    destination: PathBuf,
}

#[derive(Serialize)]
struct AgentContext<'a> {
    vault_addr: &'a str,
    role_id_file: &'a Path,
    secret_id_file: &'a Path,
    render_interval: String,
    templates: Vec<AgentTemplate>,
}

/// Starts agent, keygate and Envoy of the keys-file side.
pub async fn start(
    supervisor: &mut Supervisor,
    input: KeysFileInputs<'_>,
) -> Result<KeysFileSettings> {
    let run = input.run;
    // 1. The agent's own AppRole credentials.
    let role_id = input.root.approle_role_id(input.agent_role).await?;
    let secret_id = input.root.approle_new_secret_id(input.agent_role).await?;
    // Registered like the delivery and TLS agents' secret-ids, so a leak of
    // it is redacted and fails the run's scan.
    crate::base::redact::register_in_run(run.path(), secret_id.secret_id.expose())?;
    let role_id_file = run.write_secret("keys-agent-role-id", &role_id)?;
    let secret_id_file = run.write_secret("keys-agent-secret-id", secret_id.secret_id.expose())?;

    // 2. Templates and destinations.
    let agent_dir = run.path().join("keys-agent");
    let keys_dir = run.path().join("keys");
    for dir in [&agent_dir, &keys_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut templates = Vec::new();
    for group in input.groups {
        let source = agent_dir.join(format!("{}.ctmpl", group.group_id));
        std::fs::write(&source, keys_template(input.kv_mount, &group.group_id))
            .with_context(|| format!("writing {}", source.display()))?;
        templates.push(AgentTemplate {
            source,
            destination: keys_dir.join(&group.group_id),
        });
    }
    let destinations: Vec<PathBuf> = templates.iter().map(|t| t.destination.clone()).collect();
    let agent_config = crate::base::templates::render(
        &input.env_dir.join("bao-agent/keys-agent.hcl.j2"),
        AgentContext {
            vault_addr: input.vault_addr,
            role_id_file: &role_id_file,
            secret_id_file: &secret_id_file,
            render_interval: humantime::format_duration(RENDER_INTERVAL).to_string(),
            templates,
        },
    )?;
    let agent_config_file = agent_dir.join("agent.hcl");
    std::fs::write(&agent_config_file, agent_config).context("writing the keys agent's config")?;
    say!(
        "keys-file mode: bao agent renders {} keys file(s) every {} (Tanzu's staticSecretRenderInterval; its default is 5m)",
        destinations.len(),
        humantime::format_duration(RENDER_INTERVAL)
    );
    BaoAgent::new(
        "keys-agent",
        &agent_config_file,
        Readiness::Files(destinations.clone()),
    )
    .start(input.bao, run, supervisor)
    .await?;

    // 3. keygate reading those files.
    let (grpc_port, http_port) = (
        crate::base::ports::free_port()?,
        crate::base::ports::free_port()?,
    );
    let base = (input.keygate_config)(
        &format!("127.0.0.1:{grpc_port}"),
        &format!("127.0.0.1:{http_port}"),
    )?;
    let mut keys = format!(
        "keys:\n  source: file\n  poll_interval: {}\n  files:\n",
        serde_json::to_string(&humantime::format_duration(POLL_INTERVAL).to_string())?
    );
    for (group, path) in input.groups.iter().zip(&destinations) {
        keys.push_str(&format!(
            "    {}: {}\n",
            serde_json::to_string(&group.group_id)?,
            serde_json::to_string(&path.display().to_string())?
        ));
    }
    let config_file = run.path().join("keygate-keys-file.yaml");
    std::fs::write(&config_file, format!("{base}\n{keys}"))
        .context("writing the keys-file keygate's config")?;
    let keygate_url = Keygate::default()
        .with_name("keygate-keys-file")
        .with_binary(input.keygate_bin)
        .with_config(
            &config_file,
            std::net::SocketAddr::from(([127, 0, 0, 1], http_port)),
        )
        .start(run, supervisor)
        .await?;

    // 4. Its gateway: the default gateway's manifest, pointed at this keygate.
    let component = format!("{}-keys-file", input.gateway.name);
    let addr = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ctx = crate::local::gateway::context::GatewayContext {
        name: &component,
        groups: input.groups,
        listen: addr(crate::base::ports::free_port()?),
        admin: addr(crate::base::ports::free_port()?),
        keygate_grpc: addr(grpc_port),
        keygate_http: addr(http_port),
        upstream: addr(input.upstream_port),
        dir: run.path().join("gateways").join(&component),
        env_dir: input.env_dir,
        envoy_module: None,
    };
    let launch = crate::local::gateway::plan(&ctx, input.gateway, input.gateway_bin)?;
    std::fs::create_dir_all(&ctx.dir).with_context(|| format!("creating {}", ctx.dir.display()))?;
    for (path, text) in &launch.files {
        std::fs::write(path, text).with_context(|| {
            format!("writing the keys-file gateway's config {}", path.display())
        })?;
    }
    supervisor.start(launch.component, launch.readiness).await?;

    Ok(KeysFileSettings {
        gateway: input.gateway.name.clone(),
        gateway_url: ctx.url(),
        keygate_url,
        render_interval_ms: RENDER_INTERVAL.as_millis() as u64,
        poll_interval_ms: POLL_INTERVAL.as_millis() as u64,
        keys_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_lists_metadata_and_reads_the_key_field() {
        let text = keys_template("api-portal-keys", "billing-api");
        assert_eq!(
            text,
            "{{- range secrets \"api-portal-keys/metadata/billing-api\" }}\n\
             {{ . }},{{ with secret (printf \"api-portal-keys/data/billing-api/%s\" .) }}{{ .Data.data.key }}{{ end }}\n\
             {{- end }}\n"
        );
    }
}
