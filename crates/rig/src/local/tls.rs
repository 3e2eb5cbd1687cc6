//! The gateway's TLS listener with a Vault-issued, rotating serving
//! certificate (API7 Cloud's "certificates signed by Vault"):
//!
//! ```text
//! Vault pki (<mount>/issue/<role>, setup.yaml `pki`)
//!   -> bao agent "tls-agent" (own AppRole, issue only): one JSON render
//!   -> exec hook `xtask publish-secret`: tls.crt, tls.key (0600), ca.crt
//!      into <run>/secrets/volumes/gateway-tls with an atomic `..data` swap
//!   -> Envoy "envoy-tls": SDS from a file (path_config_source) whose
//!      tls_certificate reads those files and watches that directory
//!   -> https://127.0.0.1:<port>, the same routes and keygate ext_authz as
//!      the plain gateway
//! ```
//!
//! The agent re-issues at 85-95% of each certificate's lifetime (see the
//! comment in `env/bao-agent/tls-agent.hcl.j2`), Envoy re-reads the pair on
//! each swap and is never restarted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::base::run::RunDir;
use crate::base::wait::{Probe, wait_until};
use crate::contract::env::TlsEnvironment;
use crate::contract::gateways::Contract;
use crate::local::delivery::PublishCommand;
use crate::local::envoy::TlsListener;
use crate::local::gateway::context::GatewayContext;
use crate::local::secret_dir::SecretDir;
use crate::process::supervisor::{Readiness, Supervisor};
use crate::say;
use crate::vault::client::VaultClient;
use crate::vault::pki::{PkiSetup, PkiVault};

/// The SDS secret's name and the certificate Secret's name.
pub const SECRET_NAME: &str = "gateway-tls";
/// Key names in the certificate directory (a `kubernetes.io/tls` Secret's).
pub const CERT_KEY: &str = "tls.crt";
pub const PRIVATE_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";
/// Component names (logs/<name>.log, pids.json).
pub const AGENT: &str = "tls-agent";
pub const ENVOY: &str = "envoy-tls";

/// What `start` needs besides Vault and the run.
pub struct TlsStart<'a> {
    pub pki: &'a PkiSetup,
    pub bao: &'a Path,
    pub envoy: &'a Path,
    pub publish: &'a PublishCommand,
    pub env_dir: &'a Path,
    /// The plain Envoy gateway's context (groups, keygate, upstream); the
    /// TLS Envoy gets its own ports and directory.
    pub gateway: GatewayContext<'a>,
}

#[derive(Serialize)]
struct AgentContext<'a> {
    vault_addr: &'a str,
    role_id_file: &'a Path,
    secret_id_file: &'a Path,
    destination: &'a Path,
    contents: String,
    hook: Vec<String>,
    issue_path: String,
    cert_ttl: String,
}

/// The consul-template source: one `secret` write to the issue path, its
/// answer as one JSON object (the publish hook's input).
pub fn agent_template(pki: &PkiSetup) -> String {
    let mut args = vec![
        format!("common_name={}", pki.common_name),
        format!("ttl={}s", pki.cert_ttl.as_secs()),
    ];
    if !pki.ip_sans.is_empty() {
        let ips: Vec<String> = pki.ip_sans.iter().map(ToString::to_string).collect();
        args.push(format!("ip_sans={}", ips.join(",")));
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| serde_json::to_string(a).expect("a string serializes"))
        .collect();
    format!(
        "{{{{ with secret {} {} }}}}{{\n  {}: {{{{ .Data.certificate | toJSON }}}},\n  {}: {{{{ .Data.private_key | toJSON }}}},\n  {}: {{{{ .Data.issuing_ca | toJSON }}}}\n}}\n{{{{ end }}}}",
        serde_json::to_string(&pki.issue_path()).expect("a string serializes"),
        args.join(" "),
        serde_json::to_string(CERT_KEY).expect("a string serializes"),
        serde_json::to_string(PRIVATE_KEY).expect("a string serializes"),
        serde_json::to_string(CA_KEY).expect("a string serializes"),
    )
}

#[derive(Serialize)]
struct SdsContext<'a> {
    secret_name: &'a str,
    cert_file: &'a Path,
    key_file: &'a Path,
    cert_dir: &'a Path,
}

/// Starts the TLS agent and the TLS Envoy; returns env.json's `tls` once a
/// handshake verified against the pki CA succeeds.
pub async fn start(
    opts: TlsStart<'_>,
    root: &VaultClient,
    run: &RunDir,
    supervisor: &mut Supervisor,
) -> Result<TlsEnvironment> {
    let pki = opts.pki;

    // The CA clients trust: public, beside the run's other files.
    let ca_cert_file = run.path().join("tls").join("ca.crt");
    pki.save_ca(root, &ca_cert_file).await?;

    // The agent's AppRole credentials, 0600, registered for redaction.
    let role_id = root.approle_role_id(&pki.agent_role).await?;
    let secret_id = root.approle_new_secret_id(&pki.agent_role).await?;
    crate::base::redact::register_in_run(run.path(), secret_id.secret_id.expose())?;
    let role_id_file = run.write_secret("tls-agent-role-id", &role_id)?;
    let secret_id_file = run.write_secret("tls-agent-secret-id", secret_id.secret_id.expose())?;

    // Key material stays under the 0700 secrets directory: the staging
    // render and the published certificate directory (0600 files).
    let cert_dir = SecretDir::new(run.secrets_dir().join("volumes").join(SECRET_NAME));
    let staging = run.secrets_dir().join("tls-staging");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    let destination = staging.join(format!("{SECRET_NAME}.json"));
    let mut hook = vec![opts.publish.program.display().to_string()];
    hook.extend(opts.publish.args.iter().cloned());
    hook.extend([
        "--from".to_owned(),
        destination.display().to_string(),
        "--to".to_owned(),
        cert_dir.path().display().to_string(),
        // Each new private key becomes a registered secret of the run.
        "--secret-key".to_owned(),
        PRIVATE_KEY.to_owned(),
        "--register-in".to_owned(),
        run.path().display().to_string(),
    ]);
    let config = crate::base::templates::render(
        &opts.env_dir.join("bao-agent/tls-agent.hcl.j2"),
        AgentContext {
            vault_addr: root.addr(),
            role_id_file: &role_id_file,
            secret_id_file: &secret_id_file,
            destination: &destination,
            contents: agent_template(pki),
            hook,
            issue_path: pki.issue_path(),
            cert_ttl: humantime::format_duration(pki.cert_ttl).to_string(),
        },
    )?;
    let config_file = run.path().join("tls-agent.hcl");
    std::fs::write(&config_file, config).context("writing the TLS agent's config")?;
    say!(
        "tls: bao agent issues {} (cn {}, ttl {}) as AppRole {:?}; re-issue at 85-95% of the TTL",
        pki.issue_path(),
        pki.common_name,
        humantime::format_duration(pki.cert_ttl),
        pki.agent_role
    );
    // Ready = the first certificate published: `..data` exists.
    crate::process::components::BaoAgent::new(
        AGENT,
        &config_file,
        Readiness::Path(cert_dir.path().join(crate::local::secret_dir::DATA_LINK)),
    )
    .start(opts.bao, run, supervisor)
    .await?;

    // SDS: one static resource naming the certificate files, published the
    // ConfigMap way into the directory the listener's SDS source watches.
    let gateway_dir = run.path().join("gateways").join(ENVOY);
    let sds_dir = SecretDir::new(gateway_dir.join("sds"));
    let sds_file_name = format!("{SECRET_NAME}.yaml");
    let sds = crate::base::templates::render(
        &opts.env_dir.join("envoy/sds.yaml.j2"),
        SdsContext {
            secret_name: SECRET_NAME,
            cert_file: &cert_dir.key_path(CERT_KEY),
            key_file: &cert_dir.key_path(PRIVATE_KEY),
            cert_dir: cert_dir.path(),
        },
    )?;
    sds_dir.publish(&BTreeMap::from([(sds_file_name.clone(), sds)]))?;

    // The TLS Envoy: the plain gateway's routes and ext_authz, TLS listener.
    let listen = SocketAddr::from(([127, 0, 0, 1], crate::base::ports::free_port()?));
    let admin = SocketAddr::from(([127, 0, 0, 1], crate::base::ports::free_port()?));
    let ctx = GatewayContext {
        listen,
        admin,
        dir: gateway_dir.clone(),
        ..opts.gateway
    };
    let listener = TlsListener {
        secret_name: SECRET_NAME.to_owned(),
        sds_file: sds_dir.key_path(&sds_file_name),
        sds_dir: sds_dir.path().to_owned(),
    };
    let envoy_config = crate::local::envoy::render_with(&ctx, Contract::Grpc, Some(&listener))?;
    let envoy_config_file = gateway_dir.join("envoy.yaml");
    std::fs::write(&envoy_config_file, envoy_config)
        .with_context(|| format!("writing {}", envoy_config_file.display()))?;
    let admin_url = format!("http://{admin}");
    supervisor
        .start(
            crate::local::envoy::command(ENVOY, opts.envoy, &envoy_config_file, "info")
                // SDS needs a node identity, which the plain Envoys lack.
                .args(["--service-node", ENVOY, "--service-cluster", "keyrig"])
                .current_dir(&gateway_dir),
            // LIVE once initialized, which includes the SDS secret.
            Readiness::http(format!("{admin_url}/ready"), 200),
        )
        .await?;

    // The TLS listener is ready when a verified handshake succeeds.
    let url = format!("https://{listen}");
    let server_name = pki
        .ip_sans
        .first()
        .map(ToString::to_string)
        .unwrap_or_else(|| pki.common_name.clone());
    let environment = TlsEnvironment {
        url: url.clone(),
        server_name,
        ca_cert_file,
        admin_url,
        pki_mount: pki.mount.clone(),
        pki_role: pki.role.clone(),
        cert_ttl_ms: pki.cert_ttl.as_millis() as u64,
        cert_dir: cert_dir.path().to_owned(),
    };
    let probe = crate::local::tls_probe::TlsProbe::for_env(&environment)?;
    let served = wait_until(
        &format!("a verified TLS handshake with {url}"),
        Duration::from_secs(30),
        async || {
            Ok(match probe.served_certificate().await {
                Ok(served) => Probe::Ready(served),
                Err(err) => Probe::seen(format!("{err:#}")),
            })
        },
    )
    .await?;
    say!(
        "tls: {url} serves serial {} (valid until {}), issued by {}",
        served.info.serial,
        served.info.not_after,
        served.info.issuer
    );
    Ok(environment)
}

/// Registers the values of `keys` in the agent's render `rendered` (a JSON
/// object) as secrets of the run: the whole value and each line of a PEM
/// body, so a leak of even part of a private key is redacted from output
/// and fails the run's final scan.
pub fn register_rendered_secrets(rendered: &Path, keys: &[String], run_dir: &Path) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let text = std::fs::read_to_string(rendered)
        .with_context(|| format!("reading the rendered Secret {}", rendered.display()))?;
    let data: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON object", rendered.display()))?;
    for key in keys {
        let value = data.get(key).and_then(|v| v.as_str()).with_context(|| {
            format!(
                "{} has no string {key:?} to register as a secret",
                rendered.display()
            )
        })?;
        crate::base::redact::register_in_run(run_dir, value.trim())?;
        for line in value.lines().map(str::trim) {
            if !line.starts_with("-----") {
                crate::base::redact::register_in_run(run_dir, line)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn a_rendered_private_key_is_registered_line_by_line() {
        let run = tempfile::tempdir().unwrap();
        let rendered = run.path().join("render.json");
        let key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIExampleExampleExampleExampleExample\nAwEHoUQDQgAEExampleExampleExampleExample==\n-----END EC PRIVATE KEY-----";
        std::fs::write(
            &rendered,
            serde_json::json!({"tls.key": key, "tls.crt": "public"}).to_string(),
        )
        .unwrap();
        register_rendered_secrets(&rendered, &[PRIVATE_KEY.to_owned()], run.path()).unwrap();
        let registered = crate::base::redact::load_registry(run.path()).unwrap();
        assert!(registered.iter().any(|s| s == key), "{registered:?}");
        assert!(
            registered
                .iter()
                .any(|s| s == "MHcCAQEEIExampleExampleExampleExampleExample")
        );
        assert!(
            !registered
                .iter()
                .any(|s| s.contains("BEGIN EC") && s.len() < 40)
        );
        assert!(!registered.iter().any(|s| s == "public"));
        let err = register_rendered_secrets(&rendered, &["nope".into()], run.path()).unwrap_err();
        assert!(err.to_string().contains("has no string \"nope\""), "{err}");
    }

    #[rstest]
    fn the_agent_issues_once_and_renders_one_json_object() {
        let setup = crate::vault::setup::load_default(&["animal-rescue-api".into()]).unwrap();
        let pki = setup.pki.expect("the shipped setup has a pki section");
        let template = agent_template(&pki);
        assert_eq!(template.matches("with secret").count(), 1, "{template}");
        assert!(
            template.starts_with(
                r#"{{ with secret "pki/issue/gateway-serving" "common_name=localhost" "ttl=20s" "ip_sans=127.0.0.1" }}"#
            ),
            "{template}"
        );
        assert!(
            template.contains(r#""tls.key": {{ .Data.private_key | toJSON }},"#),
            "{template}"
        );
    }

    #[rstest]
    fn the_agent_config_is_rendered_with_the_hook_and_no_secret() {
        let setup = crate::vault::setup::load_default(&["animal-rescue-api".into()]).unwrap();
        let pki = setup.pki.unwrap();
        let text = crate::base::templates::render(
            &crate::base::paths::env_dir().join("bao-agent/tls-agent.hcl.j2"),
            AgentContext {
                vault_addr: "http://127.0.0.1:8200",
                role_id_file: Path::new("/run/secrets/tls-agent-role-id"),
                secret_id_file: Path::new("/run/secrets/tls-agent-secret-id"),
                destination: Path::new("/run/secrets/tls-staging/gateway-tls.json"),
                contents: agent_template(&pki),
                hook: vec!["xtask".into(), "publish-secret".into()],
                issue_path: pki.issue_path(),
                cert_ttl: "20s".into(),
            },
        )
        .unwrap();
        assert!(
            text.contains(
                r#"secret_id_file_path                 = "/run/secrets/tls-agent-secret-id""#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"command = ["xtask","publish-secret"]"#),
            "{text}"
        );
        assert!(text.contains(r#"perms       = "0600""#), "{text}");
    }
}
