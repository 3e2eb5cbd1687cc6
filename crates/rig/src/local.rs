//! The local profile: every component a process on loopback.
//!
//! `bao server -dev` -> `VaultSetup` -> echo upstream -> keygate -> Envoy,
//! each started only once the one before is ready, then `env.json`. All
//! input (tools, scenarios, templates) is checked before anything starts.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::env::{CacheSettings, Environment};
use crate::process::{Component, Readiness, Supervisor};
use crate::run::RunDir;
use crate::say;
use crate::scenario::ApiGroup;
use crate::tools::Tools;
use crate::vault::{VaultClient, VaultSetup};

/// keygate's cache TTLs on this profile: short, so tests of revocation and
/// rotation wait seconds, and long enough that caching is observable.
const POSITIVE_TTL: Duration = Duration::from_secs(5);
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// How to run the echo upstream: rig is a library, so the binary that hosts
/// `rig::echo::serve` (xtask's hidden `echo-upstream`) is supplied by the
/// caller. `--listen <addr>` is appended.
#[derive(Debug, Clone)]
pub struct EchoCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The keygate binary (xtask builds it first).
    pub keygate_bin: PathBuf,
    pub echo: EchoCommand,
    /// Holds `apis/` and `vault/setup.yaml`.
    pub scenarios_dir: PathBuf,
    /// Holds `tools.toml`, `keygate/keygate.yaml.j2` and `envoy/envoy.yaml.j2`.
    pub env_dir: PathBuf,
    /// Per component.
    pub ready_timeout: Duration,
}

impl LocalOptions {
    /// This workspace's scenarios and templates.
    pub fn new(keygate_bin: PathBuf, echo: EchoCommand) -> Self {
        Self {
            keygate_bin,
            echo,
            scenarios_dir: crate::paths::scenarios_dir(),
            env_dir: crate::paths::env_dir(),
            ready_timeout: crate::process::DEFAULT_READY_TIMEOUT,
        }
    }
}

/// A running local environment. Dropping it stops everything; call
/// `supervisor.detach()` to leave it for `cargo xtask down`.
pub struct LocalRun {
    pub supervisor: Supervisor,
    pub environment: Environment,
    pub run: RunDir,
}

/// Loopback ports, all bound at once so they differ, then released for the
/// components to bind (a port may in theory be taken in between; the
/// component then fails to start and says so).
struct Ports {
    vault: u16,
    echo: u16,
    keygate_grpc: u16,
    keygate_http: u16,
    envoy_admin: u16,
    gateway: u16,
}

impl Ports {
    fn pick() -> Result<Self> {
        let mut held = Vec::new();
        // `bao server -dev` also binds its cluster listener on port + 1.
        let vault = loop {
            let first = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
            let port = first.local_addr()?.port();
            if let Some(next) = port
                .checked_add(1)
                .and_then(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            {
                held.push(first);
                held.push(next);
                break port;
            }
            held.push(first);
        };
        let mut next = || -> Result<u16> {
            let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
            let port = listener.local_addr()?.port();
            held.push(listener);
            Ok(port)
        };
        Ok(Self {
            vault,
            echo: next()?,
            keygate_grpc: next()?,
            keygate_http: next()?,
            envoy_admin: next()?,
            gateway: next()?,
        })
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Renders a template of `env/`; `q` quotes a value as a JSON string, which
/// YAML reads as the same string whatever characters a path holds.
pub fn render(template: &Path, context: impl Serialize) -> Result<String> {
    let source = std::fs::read_to_string(template)
        .with_context(|| format!("reading the template {}", template.display()))?;
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("q", |value: minijinja::Value| {
        serde_json::to_string(&value).map_err(|err| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, err.to_string())
        })
    });
    let name = template.display().to_string();
    env.add_template_owned(name.clone(), source)
        .with_context(|| format!("{} is not a valid template", template.display()))?;
    env.get_template(&name)?
        .render(context)
        .with_context(|| format!("rendering {}", template.display()))
}

#[derive(Serialize)]
struct KeygateContext<'a> {
    grpc_addr: String,
    http_addr: String,
    vault_addr: &'a str,
    kv_mount: &'a str,
    role_id_file: &'a Path,
    secret_id_file: &'a Path,
    api_files: Vec<&'a Path>,
    positive_ttl: String,
    negative_ttl: String,
}

#[derive(Serialize)]
struct EnvoyContext<'a> {
    admin_port: u16,
    gateway_port: u16,
    keygate_grpc_port: u16,
    upstream_port: u16,
    /// Longest prefix first, so a nested group wins over its parent.
    groups: Vec<&'a ApiGroup>,
    /// A group served at `/` replaces the catch-all route.
    root_group: bool,
}

/// Envoy's config for these groups and ports (exposed for `envoy --mode validate`).
pub fn render_envoy(
    env_dir: &Path,
    groups: &[ApiGroup],
    ports: (u16, u16, u16, u16),
) -> Result<String> {
    let (admin_port, gateway_port, keygate_grpc_port, upstream_port) = ports;
    let mut sorted: Vec<&ApiGroup> = groups.iter().collect();
    sorted.sort_by_key(|g| std::cmp::Reverse(g.route_prefix.len()));
    render(
        &env_dir.join("envoy/envoy.yaml.j2"),
        EnvoyContext {
            admin_port,
            gateway_port,
            keygate_grpc_port,
            upstream_port,
            root_group: groups.iter().any(|g| g.route_prefix == "/"),
            groups: sorted,
        },
    )
}

/// Starts the local profile. On error, whatever was started is stopped
/// (the `Supervisor` drops) and the error says which step failed.
pub async fn up(opts: &LocalOptions) -> Result<LocalRun> {
    let started = Instant::now();

    // 1. Everything that can be wrong with the input, before any process.
    let tools = Tools::load(
        &opts.env_dir.join("tools.toml"),
        crate::tools::ToolEnv::from_process(),
    )?;
    let resolved = tools.ensure_installed("local")?;
    let tool = |name: &str| {
        resolved.iter().find(|t| t.name == name).cloned().with_context(|| {
            format!("env/tools.toml does not list {name} for the local profile: add \"local\" to tools.{name}.profiles")
        })
    };
    let (bao, envoy) = (tool("bao")?, tool("envoy")?);
    if !opts.keygate_bin.is_file() {
        bail!(
            "no keygate binary at {}: build it with `cargo build -p keygate`, or point KEYRIG_KEYGATE at one",
            opts.keygate_bin.display()
        );
    }
    let groups = crate::scenario::load_apis(&opts.scenarios_dir.join("apis"))?;
    let group_ids: Vec<String> = groups.iter().map(|g| g.group_id.clone()).collect();
    let setup = VaultSetup::load(&opts.scenarios_dir.join("vault/setup.yaml"), &group_ids)?;
    let policy_names: Vec<String> = setup.policies.iter().map(|p| p.name.clone()).collect();
    let identity = crate::identity::WorkloadIdentity::load(
        &opts.scenarios_dir.join("vault/workload-identity.yaml"),
        &policy_names,
    )?;
    let environments = crate::environments::Environments::load(
        &opts.scenarios_dir.join("vault/environments.yaml"),
    )?;
    say!(
        "local profile: bao {} ({}), envoy {} ({}), {} API groups: {}",
        bao.version,
        bao.source,
        envoy.version,
        envoy.source,
        groups.len(),
        group_ids.join(", ")
    );

    // 2. Run directory and ports; configs rendered before starting anything.
    let run = RunDir::create()?;
    say!("run {}: {}", run.id(), run.path().display());
    let ports = Ports::pick()?;
    let vault_addr = format!("http://{}", addr(ports.vault));
    let role_id_file = run.secrets_dir().join("keygate-role-id");
    let secret_id_file = run.secrets_dir().join("keygate-secret-id");
    let references = crate::references::ReferenceSettings::default();
    let render_keygate = |grpc_addr: &str, http_addr: &str| -> Result<String> {
        let base = render(
            &opts.env_dir.join("keygate/keygate.yaml.j2"),
            KeygateContext {
                grpc_addr: grpc_addr.to_owned(),
                http_addr: http_addr.to_owned(),
                vault_addr: &vault_addr,
                kv_mount: &setup.kv_mount,
                role_id_file: &role_id_file,
                secret_id_file: &secret_id_file,
                api_files: groups.iter().map(|g| g.file.as_path()).collect(),
                positive_ttl: humantime::format_duration(POSITIVE_TTL).to_string(),
                negative_ttl: humantime::format_duration(NEGATIVE_TTL).to_string(),
            },
        )?;
        Ok(format!("{base}\n{}", references.keygate_yaml()))
    };
    let keygate_config = render_keygate(
        &addr(ports.keygate_grpc).to_string(),
        &addr(ports.keygate_http).to_string(),
    )?;
    let keygate_config_file = run.path().join("keygate.yaml");
    std::fs::write(&keygate_config_file, keygate_config).context("writing keygate's config")?;
    let envoy_config = render_envoy(
        &opts.env_dir,
        &groups,
        (
            ports.envoy_admin,
            ports.gateway,
            ports.keygate_grpc,
            ports.echo,
        ),
    )?;
    let envoy_config_file = run.path().join("envoy.yaml");
    std::fs::write(&envoy_config_file, envoy_config).context("writing Envoy's config")?;

    let mut supervisor = Supervisor::new(&run).with_ready_timeout(opts.ready_timeout);

    // 3. Vault. The root token reaches bao through its environment, never
    // argv; dev mode prints it (and the unseal key) on stdout, so stdout goes
    // to a 0600 file under secrets/ and only stderr (the log) to logs/.
    let root_token = apikey::ApiKey::generate().expose().to_owned();
    let root_token_file = run.write_secret("root-token", &root_token)?;
    let bao_stdout = run.secrets_dir().join("bao-stdout");
    supervisor
        .start(
            Component::new("bao", &bao.path)
                .args(["server", "-dev", "-dev-no-store-token"])
                .arg(format!("-dev-listen-address={}", addr(ports.vault)))
                .env("BAO_DEV_ROOT_TOKEN_ID", &root_token)
                .stdout_file(&bao_stdout)
                .current_dir(run.path()),
            Readiness::http(format!("{vault_addr}/v1/sys/health"), 200),
        )
        .await?;
    let unseal_key_file = save_unseal_key(&run, &bao_stdout).await;

    // 4. Vault setup, and keygate's AppRole credentials as 0600 files.
    let root = VaultClient::new(&vault_addr)?.with_token(crate::vault::Secret::new(root_token));
    setup.apply(&root).await?;
    let identity = identity.apply(&root, &run).await?;
    environments.apply(&root).await?;
    references.apply(&root).await?;
    let role_id = root.approle_role_id(&setup.keygate_role).await?;
    let secret_id = root.approle_new_secret_id(&setup.keygate_role).await?;
    run.write_secret("keygate-role-id", &role_id)?;
    run.write_secret("keygate-secret-id", secret_id.secret_id.expose())?;
    say!(
        "vault: keygate logs in as AppRole {:?} (secret-id accessor {})",
        setup.keygate_role,
        secret_id.accessor
    );

    // 5. The echo upstream.
    let upstream_url = format!("http://{}", addr(ports.echo));
    supervisor
        .start(
            Component::new("echo", &opts.echo.program)
                .args(&opts.echo.args)
                .args(["--listen".to_owned(), addr(ports.echo).to_string()])
                .current_dir(run.path()),
            Readiness::http(format!("{upstream_url}/healthz"), 200),
        )
        .await?;

    // 6. keygate.
    let keygate_url = format!("http://{}", addr(ports.keygate_http));
    supervisor
        .start(
            Component::new("keygate", &opts.keygate_bin)
                .arg("--config")
                .arg(&keygate_config_file)
                .env(crate::references::GATEWAY_NAME_VAR, "keygate")
                .current_dir(run.path()),
            Readiness::http(format!("{keygate_url}/readyz"), 200),
        )
        .await?;

    // 7. Envoy. No hot restart: it needs shared memory keyed by a base id,
    // which two Envoys on one machine (two runs, or a developer's own) would
    // fight over. Logs go to stderr, which is logs/envoy.log.
    supervisor
        .start(
            Component::new("envoy", &envoy.path)
                .arg("-c")
                .arg(&envoy_config_file)
                .args([
                    "--disable-hot-restart",
                    "--concurrency",
                    "2",
                    "--log-level",
                    "info",
                ])
                .current_dir(run.path()),
            Readiness::http(format!("http://{}/ready", addr(ports.envoy_admin)), 200),
        )
        .await?;

    // 8. The keys-file gateway: bao agent -> keys files -> keygate -> Envoy.
    let keys_file = crate::keys_file::start(
        &mut supervisor,
        crate::keys_file::KeysFileInputs {
            run: &run,
            env_dir: &opts.env_dir,
            bao: &bao.path,
            envoy: &envoy.path,
            keygate_bin: &opts.keygate_bin,
            vault_addr: &vault_addr,
            root: &root,
            agent_role: &setup.keygate_role,
            kv_mount: &setup.kv_mount,
            groups: &groups,
            keygate_config: &render_keygate,
            upstream_port: ports.echo,
        },
    )
    .await
    .context("starting the keys-file gateway")?;

    // 9. env.json for the tests.
    let environment = Environment {
        profile: "local".into(),
        run_id: run.id().to_owned(),
        gateway_url: format!("http://{}", addr(ports.gateway)),
        vault_addr,
        kv_mount: setup.kv_mount.clone(),
        groups: groups
            .iter()
            .map(|g| (g.group_id.clone(), g.route_prefix.clone()))
            .collect(),
        root_token_file,
        unseal_key_file,
        logs_dir: run.logs_dir(),
        keygate_url,
        upstream_url,
        cache: CacheSettings {
            positive_ttl_ms: POSITIVE_TTL.as_millis() as u64,
            negative_ttl_ms: NEGATIVE_TTL.as_millis() as u64,
        },
        key_source: crate::env::KEY_SOURCE_VAULT.into(),
        keys_file: Some(keys_file),
        workload_identity: Some(identity),
        environments: Some(environments),
        references: Some(references),
    };
    environment.save(&run.env_file())?;
    if let Some(view) = environment.as_keys_file() {
        view.save(&Environment::keys_file_env_path(&run.env_file()))?;
    }
    say!("local profile up in {}", crate::secs(started.elapsed()));
    Ok(LocalRun {
        supervisor,
        environment,
        run,
    })
}

/// Copies the dev server's unseal key from its stdout into
/// `secrets/unseal-key`, so tests can seal and unseal Vault through its API.
/// Not fatal when missing: only outage tests need it.
async fn save_unseal_key(run: &RunDir, bao_stdout: &Path) -> Option<PathBuf> {
    let found = crate::wait::wait_until(
        "the unseal key in bao's output",
        Duration::from_secs(5),
        async || {
            let text = std::fs::read_to_string(bao_stdout).unwrap_or_default();
            let key = text
                .lines()
                .find_map(|l| l.strip_prefix("Unseal Key: "))
                .map(|k| k.trim().to_owned());
            anyhow::Ok(match key {
                Some(key) => crate::wait::Probe::Ready(key),
                None => crate::wait::Probe::seen("no `Unseal Key:` line"),
            })
        },
    )
    .await;
    match found.and_then(|key| run.write_secret("unseal-key", &key)) {
        Ok(path) => Some(path),
        Err(err) => {
            say!("warning: no unseal key for tests: {err:#}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn envoy_config_routes_every_group_then_the_rest() {
        let groups = crate::scenario::load_default_apis().unwrap();
        let text = render_envoy(
            &crate::paths::env_dir(),
            &groups,
            (9901, 10000, 10001, 10002),
        )
        .unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let routes = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["route_config"]["virtual_hosts"][0]["routes"];
        let prefixes: Vec<_> = routes
            .as_sequence()
            .unwrap()
            .iter()
            .map(|r| r["match"]["prefix"].as_str().unwrap())
            .collect();
        assert_eq!(prefixes, ["/animal-rescue/", "/billing/", "/"]);
        assert_eq!(
            doc["admin"]["address"]["socket_address"]["port_value"].as_u64(),
            Some(9901)
        );
    }

    #[rstest]
    fn keygate_config_quotes_paths() {
        let text = render(
            &crate::paths::env_dir().join("keygate/keygate.yaml.j2"),
            KeygateContext {
                grpc_addr: "127.0.0.1:1".into(),
                http_addr: "127.0.0.1:2".into(),
                vault_addr: "http://127.0.0.1:3",
                kv_mount: "api-portal-keys",
                role_id_file: Path::new("/tmp/a b/role-id"),
                secret_id_file: Path::new("/tmp/secret: id"),
                api_files: vec![Path::new("/x/a.yaml"), Path::new("/x/b.yaml")],
                positive_ttl: "5s".into(),
                negative_ttl: "1s".into(),
            },
        )
        .unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            doc["vault"]["auth"]["approle"]["secret_id_file"].as_str(),
            Some("/tmp/secret: id")
        );
        assert_eq!(doc["apis"][1].as_str(), Some("/x/b.yaml"));
        assert_eq!(doc["listen"]["grpc"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(doc["cache"]["negative_ttl"].as_str(), Some("1s"));
    }

    #[rstest]
    fn picked_ports_differ_and_leave_room_for_the_vault_cluster_port() {
        let ports = Ports::pick().unwrap();
        let all = [
            ports.vault,
            ports.vault + 1,
            ports.echo,
            ports.keygate_grpc,
            ports.keygate_http,
            ports.envoy_admin,
            ports.gateway,
        ];
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }
}
