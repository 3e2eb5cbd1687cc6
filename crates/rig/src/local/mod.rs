//! The local profile: every component a process on loopback.
//!
//! `bao server -dev` -> `VaultSetup` -> echo upstream -> keygate -> Envoy,
//! each started only once the one before is ready, then `env.json`. All
//! input (tools, scenarios, templates) is checked before anything starts.
//!
//! **Imports any layer above it; nothing imports `local` but the crates
//! over rig (xtask, rig-k8s, rig-bench, the e2e tests).**

pub mod delivery;
pub mod diagnostics;
pub mod envoy;
pub mod gateway;
pub mod keys_file;
pub mod secret_dir;
pub mod tls;
pub mod tls_probe;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::base::run::RunDir;
use crate::contract::env::{CacheSettings, Environment};
use crate::contract::gateways::{Catalog, Extension, GatewayManifest};
use crate::local::gateway::context::{EnvoyModuleSettings, GatewayContext};
use crate::process::components::{DevVault, EchoUpstream, Keygate, RaftVault};
use crate::process::supervisor::Supervisor;
use crate::process::tools::Tools;
use crate::say;
use crate::vault::client::VaultClient;
use crate::vault::setup::VaultSetup;

/// keygate's cache TTLs on this profile: short, so tests of revocation and
/// rotation wait seconds, and long enough that caching is observable.
const POSITIVE_TTL: Duration = Duration::from_secs(5);
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// keygate's default (`cache.resurrect_ttl`), unless a test asks otherwise.
const RESURRECT_TTL: Duration = Duration::from_secs(30);

/// How OpenBao keeps its data on this profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaultStorage {
    /// `bao server -dev`: in memory, unsealed, gone when it stops.
    #[default]
    Dev,
    /// A raft data directory in the run, initialized and unsealed by rig
    /// (see [`crate::vault::raft`]): survives restarts, can be sealed and unsealed.
    Raft,
}

/// How to run the echo upstream: rig is a library, so the binary that hosts
/// `rig::process::echo::serve` (xtask's hidden `echo-upstream`) is supplied by the
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
    /// keygate's Envoy module (`libkeygate_envoy.so`) for the
    /// `envoy-module` gateway; by default beside the keygate binary, where
    /// the build that makes keygate puts it.
    pub keygate_envoy_module: PathBuf,
    pub echo: EchoCommand,
    /// Holds `apis/` and `vault/setup.yaml`.
    pub scenarios_dir: PathBuf,
    /// Holds `tools.toml`, `keygate/keygate.yaml.j2` and the harness's own
    /// Envoy template (`envoy/`).
    pub env_dir: PathBuf,
    /// The gateway catalog: one directory per gateway (`<name>/gateway.toml`
    /// and its templates); default `env/gateways` (or `$KEYRIG_GATEWAYS_DIR`).
    pub gateways_dir: PathBuf,
    /// Per component.
    pub ready_timeout: Duration,
    /// The gateways to start. Empty: every gateway whose binary is
    /// installed (the others are reported as skipped); named ones are
    /// installed when missing, and their absence is an error.
    pub gateways: Vec<String>,
    /// How keygate's credentials are delivered (`scenarios/modes/<mode>.yaml`).
    pub mode: crate::contract::modes::Mode,
    /// The hook `bao agent` runs to publish a render (external-secret mode).
    pub publish: Option<crate::local::delivery::PublishCommand>,
    /// Where the run directory is created (default `target/rig`). A test
    /// that owns its environment uses its own, so `target/rig/latest` keeps
    /// pointing at the shared run.
    pub runs_dir: PathBuf,
    pub vault_storage: VaultStorage,
    /// Replaces the keygate AppRole's `token_ttl` and `token_max_ttl` from
    /// `setup.yaml` (token-expiry tests use seconds).
    pub keygate_token_ttl: Option<(Duration, Duration)>,
    /// keygate's `cache.resurrect_ttl`.
    pub resurrect_ttl: Duration,
    /// keygate's `cache.positive_ttl` and `cache.negative_ttl`.
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    /// Replaces `pki.serving_cert.ttl` from `setup.yaml` (whole seconds, at
    /// most the role's `max_ttl`): the e2e suite rotates the TLS gateway's
    /// certificate faster than the shipped setup does.
    pub tls_cert_ttl: Option<Duration>,
    /// keygate listens for Vault's socket audit device (`invalidation:`).
    /// `false`: bao.hcl still declares the device, but nothing listens at
    /// its address, as when keygate's listener is down (fault tests).
    pub invalidation: bool,
    /// Start keygate and what runs in front of it (the gateways, the
    /// keys-file pair, the TLS gateway). `false` (`cargo xtask up
    /// --no-keygate`): Vault with its setup, the delivered Secret and the
    /// upstream only, for a validator the user runs; env.json then says
    /// `key_source: external` and names a read-only token file for it.
    pub keygate: bool,
    /// Start the keys-file gateway (bao agent -> keys files -> keygate ->
    /// Envoy). `false`: not started, and env.json has no `keys_file`
    /// section (a fault test that owns its environment and never uses it).
    pub keys_file: bool,
    /// Start the TLS gateway with the Vault-issued serving certificate
    /// (when the setup has a pki section). `false`: not started, as for
    /// `keys_file`.
    pub tls: bool,
}

impl LocalOptions {
    /// This workspace's scenarios and templates.
    pub fn new(keygate_bin: PathBuf, echo: EchoCommand) -> Self {
        Self {
            keygate_envoy_module: module_beside(&keygate_bin),
            keygate_bin,
            echo,
            scenarios_dir: crate::base::paths::scenarios_dir(),
            env_dir: crate::base::paths::env_dir(),
            gateways_dir: Catalog::default_dir(),
            ready_timeout: crate::process::supervisor::DEFAULT_READY_TIMEOUT,
            gateways: Vec::new(),
            mode: crate::contract::modes::Mode::Inline,
            publish: None,
            runs_dir: crate::base::paths::rig_dir(),
            vault_storage: VaultStorage::Dev,
            keygate_token_ttl: None,
            resurrect_ttl: RESURRECT_TTL,
            positive_ttl: POSITIVE_TTL,
            negative_ttl: NEGATIVE_TTL,
            tls_cert_ttl: None,
            invalidation: true,
            keygate: true,
            keys_file: true,
            tls: true,
        }
    }
}

/// Where a build of keygate puts keygate's Envoy module: beside the
/// binary (`target/<profile>/libkeygate_envoy.so`).
pub fn module_beside(keygate_bin: &Path) -> PathBuf {
    let file = format!("lib{}.so", crate::process::envoy_module::MODULE_NAME);
    match keygate_bin.parent() {
        Some(dir) => dir.join(file),
        None => PathBuf::from(file),
    }
}

/// A running local environment. Dropping it stops everything; call
/// `supervisor.detach()` to leave it for `cargo xtask down`.
pub struct LocalRun {
    pub supervisor: Supervisor,
    pub environment: Environment,
    pub run: RunDir,
}

/// Loopback ports of the run's components (`crate::base::ports`: distinct, and
/// outside the range outgoing connections draw from).
struct Ports {
    vault: u16,
    echo: u16,
    keygate_grpc: u16,
    keygate_http: u16,
    /// keygate's invalidation listener, which Vault's socket audit device
    /// connects to.
    keygate_audit: u16,
    /// (listener, admin) per gateway, in the order asked for.
    gateways: Vec<(u16, u16)>,
}

impl Ports {
    fn pick(gateways: usize) -> Result<Self> {
        use crate::base::ports::free_port;
        Ok(Self {
            // `bao server -dev` also binds its cluster listener on port + 1.
            vault: crate::base::ports::free_port_pair()?,
            echo: free_port()?,
            keygate_grpc: free_port()?,
            keygate_http: free_port()?,
            keygate_audit: free_port()?,
            gateways: (0..gateways)
                .map(|_| Ok((free_port()?, free_port()?)))
                .collect::<Result<_>>()?,
        })
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
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
    /// The group key of the delivered Secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_group_file: Option<&'a Path>,
    resurrect_ttl: String,
    /// `invalidation.listen`; the keys-file keygate has none (it caches nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    invalidation_addr: Option<String>,
}

/// What `up` starts from, all of it loaded and checked before any process
/// starts: pinned tools, the gateways to run (and the skipped ones, with
/// why), the scenario's API groups, Vault setup, delivery values, workload
/// identity and environments.
struct Inputs {
    bao: crate::process::tools::ResolvedTool,
    envoy: crate::process::tools::ResolvedTool,
    /// The catalog's default gateway (it may not run).
    default_gateway: String,
    /// The default gateway and its binary, for the keys-file pass.
    keys_file_gateway: GatewayManifest,
    keys_file_gateway_bin: crate::process::tools::ResolvedTool,
    gateways: Vec<GatewayPick>,
    skipped_gateways: Skipped,
    groups: Vec<crate::contract::scenario::ApiGroup>,
    setup: VaultSetup,
    values: crate::contract::modes::ModeValues,
    identity: crate::contract::identity::WorkloadIdentity,
    environments: crate::contract::environments::Environments,
}

impl Inputs {
    fn check(opts: &LocalOptions) -> Result<Self> {
        let tools = Tools::load(
            &opts.env_dir.join("tools.toml"),
            crate::process::tools::ToolEnv::from_process(),
        )?;
        let resolved = tools.ensure_installed("local")?;
        let tool = |name: &str| {
            resolved.iter().find(|t| t.name == name).cloned().with_context(|| {
                format!("env/tools.toml does not list {name} for the local profile: add \"local\" to tools.{name}.profiles")
            })
        };
        let bao = tool("bao")?;
        // The TLS gateway is an Envoy whatever gateways the run asked for.
        let envoy = tool("envoy")?;
        let catalog = Catalog::load(&opts.gateways_dir)?;
        // The keys-file pass runs the default gateway whatever gateways the
        // run asked for.
        let keys_file_gateway = catalog.default_gateway().clone();
        let keys_file_gateway_bin = tool(&keys_file_gateway.tool)?;
        let (gateways, skipped_gateways) = if opts.keygate {
            Keygate::check_binary(&opts.keygate_bin)?;
            select_gateways(&tools, &catalog, &opts.gateways, &opts.keygate_envoy_module)?
        } else {
            // The user's gateways and validator are what is under test.
            (Vec::new(), Skipped::new())
        };
        let groups = crate::contract::scenario::load_apis(&opts.scenarios_dir.join("apis"))?;
        let group_ids: Vec<String> = groups.iter().map(|g| g.group_id.clone()).collect();
        let mut setup = VaultSetup::load(&opts.scenarios_dir.join("vault/setup.yaml"), &group_ids)?;
        let values = crate::contract::modes::ModeValues::load_mode(&opts.scenarios_dir, opts.mode)?;
        crate::local::delivery::check_against_setup(&values, &setup)?;
        if let Some((ttl, max_ttl)) = opts.keygate_token_ttl {
            for role in setup
                .roles
                .iter_mut()
                .filter(|r| r.name == values.api_key.role)
            {
                role.token_ttl = ttl;
                role.token_max_ttl = max_ttl;
            }
        }
        if let (Some(ttl), Some(pki)) = (opts.tls_cert_ttl, setup.pki.as_mut()) {
            pki.override_cert_ttl(ttl)?;
        }
        let policy_names: Vec<String> = setup.policies.iter().map(|p| p.name.clone()).collect();
        let identity = crate::contract::identity::WorkloadIdentity::load(
            &opts.scenarios_dir.join("vault/workload-identity.yaml"),
            &policy_names,
        )?;
        let environments = crate::contract::environments::Environments::load(
            &opts.scenarios_dir.join("vault/environments.yaml"),
        )?;
        say!(
            "local profile: bao {} ({}), gateways {}, {} API groups: {}",
            bao.version,
            bao.source,
            gateways
                .iter()
                .map(|(gateway, tool)| format!(
                    "{gateway} ({} {}, {})",
                    tool.name, tool.version, tool.source
                ))
                .collect::<Vec<_>>()
                .join(", "),
            groups.len(),
            group_ids.join(", ")
        );
        for (name, reason) in &skipped_gateways {
            say!("gateway {name} skipped: {reason}");
        }
        Ok(Self {
            bao,
            envoy,
            default_gateway: catalog.default_gateway().name.clone(),
            keys_file_gateway,
            keys_file_gateway_bin,
            gateways,
            skipped_gateways,
            groups,
            setup,
            values,
            identity,
            environments,
        })
    }
}

/// Starts the local profile. On error, whatever was started is stopped
/// (the `Supervisor` drops) and the error says which step failed.
pub async fn up(opts: &LocalOptions) -> Result<LocalRun> {
    let started = Instant::now();

    // 1. Everything that can be wrong with the input, before any process.
    let Inputs {
        bao,
        envoy,
        default_gateway,
        keys_file_gateway,
        keys_file_gateway_bin,
        gateways,
        skipped_gateways,
        groups,
        setup,
        values,
        identity,
        environments,
    } = Inputs::check(opts)?;

    // 2. Run directory and ports; configs rendered before starting anything.
    let run = RunDir::create_in(&opts.runs_dir)?;
    say!("run {}: {}", run.id(), run.path().display());
    let ports = Ports::pick(gateways.len())?;
    let vault_addr = format!("http://{}", addr(ports.vault));
    // keygate reads its credentials from the delivered Secret's key files.
    let secret_files = crate::local::delivery::SecretFiles::for_run(&run, &values);
    let role_id_file = secret_files.role_id.clone();
    let secret_id_file = secret_files.secret_id.clone();
    let keygate_vault_addr =
        crate::contract::modes::fill(&values.api_key.vault_url, &vault_addr, "", "");
    let references = crate::contract::references::ReferenceSettings::default();
    // Both keygates (Vault-direct and keys-file) share the delivered credentials.
    let render_keygate = |grpc_addr: &str,
                          http_addr: &str,
                          invalidation_addr: Option<SocketAddr>|
     -> Result<String> {
        let base = crate::base::templates::render(
            &opts.env_dir.join("keygate/keygate.yaml.j2"),
            KeygateContext {
                grpc_addr: grpc_addr.to_owned(),
                http_addr: http_addr.to_owned(),
                vault_addr: &keygate_vault_addr,
                kv_mount: &setup.kv_mount,
                role_id_file: &role_id_file,
                secret_id_file: &secret_id_file,
                api_files: groups.iter().map(|g| g.file.as_path()).collect(),
                positive_ttl: humantime::format_duration(opts.positive_ttl).to_string(),
                negative_ttl: humantime::format_duration(opts.negative_ttl).to_string(),
                resurrect_ttl: humantime::format_duration(opts.resurrect_ttl).to_string(),
                gateway_group_file: Some(&secret_files.group),
                invalidation_addr: invalidation_addr.map(|a| a.to_string()),
            },
        )?;
        Ok(format!("{base}\n{}", references.keygate_yaml()))
    };
    let keygate_config = render_keygate(
        &addr(ports.keygate_grpc).to_string(),
        &addr(ports.keygate_http).to_string(),
        opts.invalidation.then(|| addr(ports.keygate_audit)),
    )?;
    let render_keys_file_keygate =
        |grpc_addr: &str, http_addr: &str| render_keygate(grpc_addr, http_addr, None);
    let keygate_config_file = run.path().join("keygate.yaml");
    if opts.keygate {
        std::fs::write(&keygate_config_file, keygate_config).context("writing keygate's config")?;
    }
    let mut supervisor = Supervisor::new(&run).with_ready_timeout(opts.ready_timeout);

    // 3. Vault. The root token reaches bao through its environment, never
    // argv; dev mode prints it (and the unseal key) on stdout, so stdout goes
    // to a 0600 file under secrets/ and only stderr (the log) to logs/.
    // A file audit device from the start (diagnostics of a failed case
    // include its entries), and a socket device streaming to keygate's
    // invalidation listener (skip_test: Vault starts before keygate does);
    // OpenBao only takes them from a config file.
    let audit_config = format!(
        "{}{}",
        crate::vault::audit::file_audit_config(
            &run.logs_dir().join(crate::vault::audit::AUDIT_LOG),
        ),
        if opts.keygate {
            crate::vault::audit::socket_audit_config(addr(ports.keygate_audit))
        } else {
            String::new()
        },
    );
    let (root_token, root_token_file, unseal_key_file) = match opts.vault_storage {
        VaultStorage::Dev => {
            let bao_config = run.path().join("bao.hcl");
            std::fs::write(&bao_config, &audit_config).context("writing bao's config")?;
            let vault = DevVault::default()
                .with_listen(addr(ports.vault))
                .with_config_file(&bao_config)
                .start(&bao.path, &run, &mut supervisor)
                .await?;
            let unseal_key_file = save_unseal_key(&run, &vault.stdout).await;
            let root_token = vault.root.token().expect("a root token").clone();
            (root_token, vault.root_token_file, unseal_key_file)
        }
        VaultStorage::Raft => {
            let vault = RaftVault::new(ports.vault)
                .with_config(&audit_config)
                .start(&bao.path, &run, &mut supervisor)
                .await?;
            (
                vault.root_token,
                vault.root_token_file,
                Some(vault.unseal_key_file),
            )
        }
    };

    // 4. Vault setup, and keygate's AppRole credentials delivered into its
    // Secret the way the mode says (external-secret: by a bao agent).
    let root = VaultClient::new(&vault_addr)?.with_token(root_token);
    crate::vault::setup::apply(&setup, &root).await?;
    let delivery = crate::local::delivery::deliver(
        &values,
        &secret_files,
        &root,
        &run,
        &mut supervisor,
        &bao.path,
        opts.publish.as_ref(),
        &opts.env_dir,
    )
    .await?;
    let identity = crate::vault::identity::apply(identity, &root, &run).await?;
    crate::vault::environments::apply(&environments, &root).await?;
    crate::vault::references::apply(&references, &root, run.path()).await?;

    // 5. The echo upstream.
    let upstream_url = EchoUpstream::new(&opts.echo.program, &opts.echo.args, addr(ports.echo))
        .start(&run, &mut supervisor)
        .await?;

    // 6.-8. keygate and what runs in front of it; with --no-keygate, a
    // token for the user's validator instead.
    let served = if !opts.keygate {
        Served {
            validator_token_file: Some(
                validator_token(&root, &setup, &values.api_key.role, &run).await?,
            ),
            ..Served::default()
        }
    } else {
        // 6. keygate.
        let keygate_url = Keygate::default()
            .with_binary(&opts.keygate_bin)
            .with_config(&keygate_config_file, addr(ports.keygate_http))
            .start(&run, &mut supervisor)
            .await?;

        // 7. The gateways, each in front of keygate and the echo upstream.
        let mut gateway_urls = std::collections::BTreeMap::new();
        // The module's table keeps keygate's answers as long as keygate's own
        // cache would.
        let envoy_module = EnvoyModuleSettings {
            library: opts.keygate_envoy_module.clone(),
            positive_ttl: opts.positive_ttl,
            negative_ttl: opts.negative_ttl,
            resurrect_ttl: opts.resurrect_ttl,
        };
        // The diagnostics read the admin paths the default gateway declares
        // (Envoy's /stats and /clusters).
        let mut envoy_admin_url = None;
        let mut gateway_deviations = std::collections::BTreeMap::new();
        let mut gateway_admin = std::collections::BTreeMap::new();
        for ((gateway, tool), (listen, admin)) in gateways.iter().zip(&ports.gateways) {
            if gateway.name == default_gateway && !gateway.diagnostics.admin.is_empty() {
                envoy_admin_url = Some(format!("http://{}", addr(*admin)));
            }
            let ctx = GatewayContext {
                name: &gateway.name,
                groups: &groups,
                listen: addr(*listen),
                admin: addr(*admin),
                keygate_grpc: addr(ports.keygate_grpc),
                keygate_http: addr(ports.keygate_http),
                upstream: addr(ports.echo),
                dir: run.path().join("gateways").join(&gateway.name),
                env_dir: &opts.env_dir,
                envoy_module: Some(&envoy_module),
            };
            let url =
                crate::local::gateway::start(&ctx, gateway, &tool.path, &mut supervisor).await?;
            gateway_urls.insert(gateway.name.clone(), url);
            gateway_deviations.insert(gateway.name.clone(), gateway.deviations.clone());
            if !gateway.diagnostics.admin.is_empty() {
                gateway_admin.insert(
                    gateway.name.clone(),
                    crate::contract::env::GatewayAdmin {
                        url: format!("http://{}", addr(*admin)),
                        paths: gateway.diagnostics.admin.clone(),
                    },
                );
            }
        }
        let default_gateway_url = gateway_urls
            .get(&default_gateway)
            .or_else(|| gateway_urls.values().next())
            .cloned()
            .context("no gateway to start")?;

        // 8. The keys-file gateway: bao agent -> keys files -> keygate -> Envoy.
        let keys_file = if !opts.keys_file {
            say!("keys-file gateway: not started (LocalOptions::keys_file)");
            None
        } else {
            Some(
                crate::local::keys_file::start(
                    &mut supervisor,
                    crate::local::keys_file::KeysFileInputs {
                        run: &run,
                        env_dir: &opts.env_dir,
                        bao: &bao.path,
                        gateway: &keys_file_gateway,
                        gateway_bin: &keys_file_gateway_bin.path,
                        keygate_bin: &opts.keygate_bin,
                        vault_addr: &vault_addr,
                        root: &root,
                        agent_role: &setup.keygate_role,
                        kv_mount: &setup.kv_mount,
                        groups: &groups,
                        keygate_config: &render_keys_file_keygate,
                        upstream_port: ports.echo,
                    },
                )
                .await
                .context("starting the keys-file gateway")?,
            )
        };
        // 8. The TLS listener with the Vault-issued, rotating serving
        // certificate (rig::local::tls), when the setup has a pki section and there is
        // a hook to publish the agent's renders.
        let tls = match (&setup.pki, &opts.publish) {
            _ if !opts.tls => {
                say!("tls: not served (LocalOptions::tls)");
                None
            }
            (Some(pki), Some(publish)) => {
                let start = crate::local::tls::TlsStart {
                    pki,
                    bao: &bao.path,
                    envoy: &envoy.path,
                    publish,
                    env_dir: &opts.env_dir,
                    gateway: GatewayContext {
                        name: crate::local::tls::ENVOY,
                        groups: &groups,
                        listen: addr(0),
                        admin: addr(0),
                        keygate_grpc: addr(ports.keygate_grpc),
                        keygate_http: addr(ports.keygate_http),
                        upstream: addr(ports.echo),
                        dir: run.path().join("gateways"),
                        env_dir: &opts.env_dir,
                        envoy_module: None,
                    },
                };
                Some(crate::local::tls::start(start, &root, &run, &mut supervisor).await?)
            }
            (None, _) => {
                say!(
                    "tls: not served: {} has no pki section",
                    setup.file.display()
                );
                None
            }
            (_, None) => {
                say!("tls: not served: no publish hook for the TLS agent (LocalOptions::publish)");
                None
            }
        };

        Served {
            keygate_url,
            gateway_url: default_gateway_url,
            gateways: gateway_urls,
            gateway_deviations,
            gateway_admin,
            envoy_admin_url,
            keys_file,
            tls,
            validator_token_file: None,
        }
    };

    // 9. env.json for the tests.
    let environment = Environment {
        profile: "local".into(),
        run_id: run.id().to_owned(),
        gateway_url: served.gateway_url,
        gateways: served.gateways,
        skipped_gateways,
        gateway_deviations: served.gateway_deviations,
        gateway_admin: served.gateway_admin,
        vault_addr,
        kv_mount: setup.kv_mount.clone(),
        groups: crate::contract::env::group_routes(&groups),
        api_paths: crate::contract::env::group_api_paths(&groups),
        root_token_file,
        unseal_key_file,
        logs_dir: run.logs_dir(),
        keygate_grpc: (!served.keygate_url.is_empty())
            .then(|| addr(ports.keygate_grpc).to_string()),
        keygate_url: served.keygate_url,
        upstream_url,
        cache: CacheSettings {
            positive_ttl_ms: opts.positive_ttl.as_millis() as u64,
            negative_ttl_ms: opts.negative_ttl.as_millis() as u64,
            resurrect_ttl_ms: opts.resurrect_ttl.as_millis() as u64,
            invalidation_addr: (opts.invalidation && opts.keygate)
                .then(|| addr(ports.keygate_audit)),
        },
        envoy_admin_url: served.envoy_admin_url,
        mode: Some(delivery.mode.clone()),
        delivery: Some(delivery),
        kube: None,
        key_source: if opts.keygate {
            crate::contract::env::KEY_SOURCE_VAULT
        } else {
            crate::contract::env::KEY_SOURCE_EXTERNAL
        }
        .into(),
        // The traits of the user's validator come with the run that tests
        // it (`e2e --gateway-url ... --expect`).
        validator: None,
        validator_token_file: served.validator_token_file,
        user_gateways: false,
        keys_file: served.keys_file,
        workload_identity: Some(identity),
        environments: Some(environments),
        references: Some(references),
        tls: served.tls,
    };
    environment.save(&run.env_file())?;
    if let Some(view) = environment.as_keys_file() {
        view.save(&Environment::keys_file_env_path(&run.env_file()))?;
    }
    say!(
        "local profile up in {}",
        crate::base::progress::secs(started.elapsed())
    );
    Ok(LocalRun {
        supervisor,
        environment,
        run,
    })
}

/// What runs in front of Vault: keygate, the gateways, the keys-file pair
/// and the TLS gateway (all empty with `--no-keygate`), or the token of the
/// user's validator.
#[derive(Default)]
struct Served {
    keygate_url: String,
    gateway_url: String,
    gateways: std::collections::BTreeMap<String, String>,
    gateway_deviations: std::collections::BTreeMap<String, crate::contract::gateways::Deviations>,
    gateway_admin: std::collections::BTreeMap<String, crate::contract::env::GatewayAdmin>,
    envoy_admin_url: Option<String>,
    keys_file: Option<crate::contract::env::KeysFileSettings>,
    tls: Option<crate::contract::env::TlsEnvironment>,
    validator_token_file: Option<PathBuf>,
}

/// How long the token of the user's validator lives: a working day of
/// tries against one environment (`cargo xtask up` again gives a new one).
const VALIDATOR_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// A token with the policies of `role` (the gateway's read-only AppRole),
/// in `secrets/validator-token` (0600, redacted from the run's logs), for a
/// validator the user runs against this Vault.
async fn validator_token(
    root: &VaultClient,
    setup: &VaultSetup,
    role: &str,
    run: &RunDir,
) -> Result<PathBuf> {
    let policies = &setup
        .roles
        .iter()
        .find(|r| r.name == role)
        .with_context(|| {
            format!(
                "{}: no AppRole role {role:?} for the validator's token (the mode's api_key.role)",
                setup.file.display()
            )
        })?
        .policies;
    let token = root
        .token_create(policies, VALIDATOR_TOKEN_TTL)
        .await
        .context("creating the validator's token")?;
    crate::base::redact::register_in_run(run.path(), token.expose())?;
    let file = run.write_secret("validator-token", token.expose())?;
    say!(
        "no keygate: a token with the policies {} of role {role} for your validator is in {}",
        policies.join(", "),
        file.display()
    );
    Ok(file)
}

/// A gateway to start and the binary that runs it.
type GatewayPick = (GatewayManifest, crate::process::tools::ResolvedTool);
/// Gateway name -> why it does not run.
type Skipped = std::collections::BTreeMap<String, String>;

/// The gateways to start, each with its binary, and the ones skipped with
/// the reason. Asked-for gateways are installed when missing (an error if
/// that fails); by default every gateway whose binary is installed runs.
/// A gateway that loads keygate's Envoy module (`module`) also needs it:
/// absent, it is skipped like a missing binary (an error when asked for);
/// built for another Envoy than the one resolved, it is an error either
/// way, naming both versions, since that is a broken build rather than a
/// missing part.
fn select_gateways(
    tools: &Tools,
    catalog: &Catalog,
    asked: &[String],
    module: &Path,
) -> Result<(Vec<GatewayPick>, Skipped)> {
    let mut running = Vec::new();
    let mut skipped = std::collections::BTreeMap::new();
    let picked: Vec<&GatewayManifest> = if asked.is_empty() {
        catalog.iter().collect()
    } else {
        let mut names = asked.to_vec();
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|name| catalog.get(name))
            .collect::<Result<_>>()?
    };
    for gateway in picked {
        let resolved = match tools.resolve(&gateway.tool) {
            Ok(tool) => Ok(tool),
            Err(crate::process::tools::ToolError::Missing { .. }) if !asked.is_empty() => {
                tools.install(&gateway.tool)
            }
            Err(err) => Err(anyhow::Error::from(err)),
        };
        let resolved = match resolved {
            Ok(tool) if gateway.loads(Extension::KeygateEnvoy) => {
                match envoy_module_missing(&gateway.name, module, &tool)? {
                    Some(why) => Err(anyhow::anyhow!(why)),
                    None => Ok(tool),
                }
            }
            other => other,
        };
        match resolved {
            Ok(tool) => {
                for warning in &tool.warnings {
                    say!("warning: {warning}");
                }
                running.push((gateway.clone(), tool));
            }
            Err(err) if asked.is_empty() => {
                skipped.insert(gateway.name.clone(), format!("{err:#}"));
            }
            Err(err) => {
                return Err(err.context(format!("the {gateway} gateway cannot run")));
            }
        }
    }
    if running.is_empty() {
        bail!(
            "no gateway can run: {}",
            skipped
                .iter()
                .map(|(name, why)| format!("{name}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok((running, skipped))
}

/// Why a gateway that loads keygate's Envoy module lacks it (`Some`: skipped like a
/// missing binary, or an error when asked for), or `None` when `module` is
/// a keygate module built for `envoy`'s release series. A module for
/// another series is an error naming both versions: a broken build, found
/// before anything starts (`envoy_module::command` checks again at start).
fn envoy_module_missing(
    gateway: &str,
    module: &Path,
    envoy: &crate::process::tools::ResolvedTool,
) -> Result<Option<String>> {
    if !module.is_file() {
        return Ok(Some(format!(
            "no keygate Envoy module at {}: build it with `cargo build -p keygate-envoy` (`cargo xtask e2e` does), or point {} at one",
            module.display(),
            crate::process::envoy_module::MODULE_VAR
        )));
    }
    let build = crate::process::envoy_module::read_build(module)?;
    crate::process::envoy_module::supported(module, &build, &envoy.path, &envoy.version)
        .with_context(|| format!("the {gateway} gateway cannot run"))?;
    Ok(None)
}

/// Copies the dev server's unseal key from its stdout into
/// `secrets/unseal-key`, so tests can seal and unseal Vault through its API.
/// Not fatal when missing: only outage tests need it.
async fn save_unseal_key(run: &RunDir, bao_stdout: &Path) -> Option<PathBuf> {
    let found = crate::base::wait::wait_until(
        "the unseal key in bao's output",
        Duration::from_secs(5),
        async || {
            let text = std::fs::read_to_string(bao_stdout).unwrap_or_default();
            let key = text
                .lines()
                .find_map(|l| l.strip_prefix("Unseal Key: "))
                .map(|k| k.trim().to_owned());
            anyhow::Ok(match key {
                Some(key) => crate::base::wait::Probe::Ready(key),
                None => crate::base::wait::Probe::seen("no `Unseal Key:` line"),
            })
        },
    )
    .await;
    let saved = found.and_then(|key| {
        crate::base::redact::register_in_run(run.path(), &key)?;
        run.write_secret("unseal-key", &key)
    });
    match saved {
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
    fn keygate_config_quotes_paths() {
        let text = crate::base::templates::render(
            &crate::base::paths::env_dir().join("keygate/keygate.yaml.j2"),
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
                gateway_group_file: Some(Path::new("/run/secret/gateway-group")),
                resurrect_ttl: "30s".into(),
                invalidation_addr: Some("127.0.0.1:4".into()),
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
        assert_eq!(doc["invalidation"]["listen"].as_str(), Some("127.0.0.1:4"));
        assert_eq!(
            doc["gateway_group_file"].as_str(),
            Some("/run/secret/gateway-group")
        );
    }

    #[rstest]
    fn the_envoy_module_is_checked_against_the_envoy_that_will_load_it() {
        let dir = tempfile::tempdir().unwrap();
        let envoy = crate::process::tools::ResolvedTool {
            name: "envoy".into(),
            path: PathBuf::from("/bin/envoy"),
            version: "1.40.0".into(),
            source: crate::process::tools::Source::Cache,
            warnings: Vec::new(),
        };
        let module = dir.path().join("libkeygate_envoy.so");
        let missing = envoy_module_missing("envoy-module", &module, &envoy)
            .unwrap()
            .unwrap();
        assert!(
            missing.starts_with("no keygate Envoy module at"),
            "{missing}"
        );

        std::fs::write(
            &module,
            b"\x7fELF keygate-envoy-build abi=v0.2.0 envoy=1.40;",
        )
        .unwrap();
        assert_eq!(
            envoy_module_missing("envoy-module", &module, &envoy).unwrap(),
            None
        );

        std::fs::write(
            &module,
            b"\x7fELF keygate-envoy-build abi=v0.3.0 envoy=1.41;",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            envoy_module_missing("envoy-module", &module, &envoy).unwrap_err()
        );
        assert!(
            err.starts_with("the envoy-module gateway cannot run: ")
                && err.contains("was built for Envoy 1.41 (dynamic-module ABI v0.3.0)")
                && err.contains("/bin/envoy is Envoy 1.40.0"),
            "{err}"
        );

        std::fs::write(&module, b"\x7fELF not a module").unwrap();
        let err = format!(
            "{:#}",
            envoy_module_missing("envoy-module", &module, &envoy).unwrap_err()
        );
        assert!(
            err.contains("carries no keygate-envoy build marker"),
            "{err}"
        );
    }

    #[rstest]
    fn picked_ports_differ_and_leave_room_for_the_vault_cluster_port() {
        let ports = Ports::pick(2).unwrap();
        let mut all = vec![
            ports.vault,
            ports.vault + 1,
            ports.echo,
            ports.keygate_grpc,
            ports.keygate_http,
            ports.keygate_audit,
        ];
        all.extend(ports.gateways.iter().flat_map(|&(a, b)| [a, b]));
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }
}
