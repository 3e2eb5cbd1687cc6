//! `cargo xtask bench`: what an auth path costs per request and how fast a
//! rotation or revocation lands, measured against the alternatives in the
//! same run on the same machine.
//!
//! - `variants`: the auth paths (no auth, Envoy's native api_key_auth,
//!   keygate gRPC/HTTP warm, keygate cold, keygate's Envoy module warm and
//!   cold) and the baseline Envoys;
//! - `load`: the load generator (fixed keep-alive connections, bounded by
//!   count and time, HDR histograms);
//! - `keys`: many keys written to Vault concurrently;
//! - `propagation`: Vault write -> first effect at the gateway, per mode;
//! - `scale`: keygate's memory and throughput with 100 .. 100 000 cached keys;
//! - `fixed_rate`: the warm variants' latency at one common rate (open
//!   loop), after the closed-loop rounds;
//! - `stats`: percentiles, ratios, the interleaved schedule;
//! - `cpu`: a process's CPU time, for the CPU each variant costs per request;
//! - `instructions`: Envoy's instructions per request under callgrind;
//! - `report`: the table and `bench.json`; `plot`: the latency SVG.
//!
//! Every process runs under a `Supervisor` (the local profile's), so all of
//! it stops when the bench ends, fails, panics or is interrupted.

pub mod cpu;
pub mod fixed_rate;
pub mod instructions;
pub mod keys;
pub mod load;
pub mod plot;
pub mod propagation;
pub mod report;
pub mod results;
pub mod scale;
pub mod stats;
pub mod variants;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use load::{Burst, Keys, LoadGenerator};
/// The catalog's gateways the bench's variants go through, found by what
/// they are rather than by name: the bench compares keygate with Envoy's
/// native key filter, so it measures keygate behind Envoy over each
/// contract (`tool = "envoy"`, nothing loaded) and as the dynamic module
/// (`loads = ["keygate-envoy"]`).
struct BenchGateways {
    grpc: String,
    http: String,
    module: String,
}

impl BenchGateways {
    fn find(catalog: &rig::contract::gateways::Catalog) -> Result<Self> {
        use rig::contract::gateways::{Contract, Extension};
        let find =
            |what: &str, pick: &dyn Fn(&rig::contract::gateways::GatewayManifest) -> bool| {
                catalog
                    .iter()
                    .find(|g| pick(g))
                    .map(|g| g.name.clone())
                    .with_context(|| {
                        format!("the bench needs {what} in {}", catalog.dir().display())
                    })
            };
        let plain = |g: &rig::contract::gateways::GatewayManifest, contract| {
            g.tool == "envoy" && g.contract == contract && g.loads.is_empty()
        };
        Ok(Self {
            grpc: find("an Envoy gateway over gRPC ext_authz", &|g| {
                plain(g, Contract::Grpc)
            })?,
            http: find("an Envoy gateway over HTTP ext_authz", &|g| {
                plain(g, Contract::Http)
            })?,
            module: find("a gateway that loads keygate-envoy", &|g| {
                g.loads(Extension::KeygateEnvoy)
            })?,
        })
    }
}
use rig::contract::modes::Mode;
use rig::local::LocalOptions;
use rig::say;
use rig::vault::client::{Secret, VaultClient};
use variants::Variant;

pub use results::{BenchReport, Machine, Plan, SuiteSpeed, VariantResult};

/// The e2e suite as a child, run by the caller's means (xtask tracks its
/// children, so a termination signal reaches this one too).
pub struct SuiteRunner {
    /// The command as the output shows it.
    pub shown: String,
    /// Runs it to the end, its standard output discarded.
    pub run: Box<dyn FnOnce() -> Result<std::process::ExitStatus>>,
}

/// What the caller supplies: the local profile's options (binaries,
/// templates) and how to run the e2e suite as a child for its wall time.
pub struct BenchOptions {
    pub plan: Plan,
    pub local: LocalOptions,
    /// `keyrig-bench-peer` (crates/bench-peer): the load generator and the
    /// upstream every variant reaches, built like the keygate measured.
    pub peer: PathBuf,
    /// `libkeyrig_bench_module.so` (crates/bench-module): the pass-through
    /// dynamic module of the `envoy-module-passthrough` baseline.
    pub passthrough_module: PathBuf,
    /// How to run the e2e suite as a child for its wall time (`cargo xtask
    /// e2e`, every mode; or nothing: not measured).
    pub suite: Option<SuiteRunner>,
    /// `target/rig/bench/`: bench.json, latency.svg, the runs.
    pub out_dir: PathBuf,
}

/// The load generator of an environment, under its Supervisor.
async fn start_generator(
    peer: &std::path::Path,
    run: &rig::base::run::RunDir,
    supervisor: &mut rig::process::supervisor::Supervisor,
) -> Result<LoadGenerator> {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], rig::base::ports::free_port()?));
    LoadGenerator::start("load-generator", peer, listen, run, supervisor).await
}

/// A short burst with the warm key through every variant that uses it:
/// connections open, the key cached (by keygate, and in the module's
/// table), Envoy's first-request costs paid.
async fn warm_up(
    generator: &LoadGenerator,
    urls: &BTreeMap<Variant, String>,
    warm: &Arc<str>,
    connections: usize,
) -> Result<()> {
    for variant in fixed_rate::VARIANTS {
        generator
            .run(Burst {
                url: &urls[&variant],
                keys: Keys::One(warm.clone()),
                connections,
                max_requests: 200,
                max_time: Duration::from_secs(2),
                rate: None,
            })
            .await?;
    }
    Ok(())
}

/// Round `round`'s keys of the miss variant's pool: each used in one round
/// only, so every one is new to the module.
fn miss_chunk(pool: &[String], round: usize, chunk: usize) -> Arc<Vec<String>> {
    let start = (round * chunk).min(pool.len());
    let end = (start + chunk).min(pool.len());
    Arc::new(pool[start..end].to_vec())
}

/// Asks keygate itself (its forward-auth endpoint) once about each key, so
/// keygate caches them and the module has never seen them. Every answer
/// must be 200: a key keygate refused would make the variant measure
/// denials.
async fn cache_in_keygate(
    generator: &LoadGenerator,
    keygate_auth_url: &str,
    keys: &Arc<Vec<String>>,
    connections: usize,
) -> Result<()> {
    let outcome = generator
        .run(Burst {
            url: keygate_auth_url,
            keys: Keys::Fresh {
                pool: keys.clone(),
                next: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            },
            connections,
            max_requests: keys.len() as u64,
            max_time: Duration::from_secs(30),
            rate: None,
        })
        .await?;
    if outcome.failed > 0 || outcome.ok < keys.len() as u64 {
        anyhow::bail!(
            "keygate answered 200 for {} of {} keys ({} failed; last failure: {}); see keygate's log under the run",
            outcome.ok,
            keys.len(),
            outcome.failed,
            outcome.last_failure.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// The baseline Envoys' component names (logs, pids, restarts).
const NO_AUTH_ENVOY: &str = "bench-envoy-no-auth";
const NATIVE_ENVOY: &str = "bench-envoy-api-key-auth";
const NATIVE_FORWARDING_ENVOY: &str = "bench-envoy-api-key-auth-forwarding";
/// The header the forwarding baseline puts the key's client in: the one
/// keygate's module sets to the key's owner.
const FORWARDED_OWNER_HEADER: &str = "x-keyrig-owner";
const MODULE_FLOOR_ENVOY: &str = "bench-envoy-module-passthrough";

/// The extra pause after the miss variant's keys went through keygate
/// (~3 000 audit entries for its feed), within keygate's 5 s positive TTL.
const MISS_SETTLE: Duration = Duration::from_millis(500);

/// The pause before each turn of the auth-overhead rounds.
const SETTLE: Duration = Duration::from_millis(250);

/// The bench peer's upstream, in place of xtask's echo: cheap, optimized,
/// the same for every variant.
fn peer_upstream(peer: &std::path::Path) -> rig::local::EchoCommand {
    rig::local::EchoCommand {
        program: peer.to_owned(),
        args: vec!["upstream".into()],
    }
}

/// The first literal path of a group's OpenAPI document, under its route
/// prefix: a request keygate routes to that group.
fn group_path(group: &rig::contract::scenario::ApiGroup) -> Result<String> {
    let text = std::fs::read_to_string(&group.file)
        .with_context(|| format!("reading {}", group.file.display()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not YAML", group.file.display()))?;
    let path = doc["paths"]
        .as_mapping()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(|k| k.as_str())
        .find(|p| !p.contains('{'))
        .with_context(|| {
            format!(
                "{}: paths has no path without parameters for the bench to request: add one",
                group.file.display()
            )
        })?;
    Ok(format!("{}{}", group.base_path, path))
}

fn machine(tools: &rig::process::tools::Tools, keygate: &std::path::Path) -> Machine {
    let version = |name: &str| {
        tools
            .resolve(name)
            .map(|t| t.version)
            .unwrap_or_else(|e| format!("unknown ({e})"))
    };
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut keygate_version = std::process::Command::new(keygate);
    keygate_version.arg("--version");
    // A version probe has no use for a Vault credential of the bench's.
    rig::process::supervisor::remove_secret_vars(&mut keygate_version);
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        loadavg_at_start: read("/proc/loadavg").trim().to_owned(),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        envoy: version("envoy"),
        bao: version("bao"),
        keygate: keygate_version
            .output()
            .map(|o| {
                format!(
                    "{} ({})",
                    String::from_utf8_lossy(&o.stdout).trim(),
                    keygate.display()
                )
            })
            .unwrap_or_else(|e| format!("unknown ({e})")),
    }
}

/// The latency-at-a-common-rate step (`fixed_rate`), in the auth-overhead
/// step's environment, with its generator, URLs, key and Envoys.
struct FixedRateStep<'a> {
    choice: fixed_rate::Choice,
    generator: &'a LoadGenerator,
    urls: &'a BTreeMap<Variant, String>,
    warm: &'a Arc<str>,
    /// Every Envoy, started again before each round after the first, as
    /// the closed-loop rounds do.
    restart_names: &'a [&'a str],
}

impl FixedRateStep<'_> {
    async fn run(
        &self,
        plan: &Plan,
        supervisor: &mut rig::process::supervisor::Supervisor,
    ) -> Result<fixed_rate::FixedRate> {
        let rate = self.choice.rate_per_s;
        say!(
            "bench: latency at a common rate: {} round{} of {} warm variants, each {rate:.0} req/s for {} (half of {}'s {:.0} req/s), {} connections, open loop",
            plan.fixed_rate_rounds,
            if plan.fixed_rate_rounds == 1 { "" } else { "s" },
            fixed_rate::VARIANTS.len(),
            rig::base::progress::secs(plan.fixed_rate_window),
            self.choice.slowest.name(),
            self.choice.slowest_rps,
            plan.connections
        );
        let schedule = stats::interleave_paired(
            &fixed_rate::VARIANTS,
            &Variant::PAIRED,
            plan.fixed_rate_rounds,
        );
        let mut totals: BTreeMap<Variant, load::Outcome> = BTreeMap::new();
        let mut bursts = Vec::new();
        // The first round follows the closed-loop rounds' Envoys, warm.
        let mut restarted_for = 0;
        for (round, variant) in schedule {
            if round > restarted_for {
                restarted_for = round;
                for name in self.restart_names {
                    supervisor.restart(name).await.with_context(|| {
                        format!("restarting {name} before common-rate round {}", round + 1)
                    })?;
                }
                warm_up(self.generator, self.urls, self.warm, plan.connections).await?;
            }
            tokio::time::sleep(SETTLE).await;
            let outcome = self
                .generator
                .run(Burst {
                    url: &self.urls[&variant],
                    keys: Keys::One(self.warm.clone()),
                    connections: plan.connections,
                    max_requests: u64::MAX,
                    max_time: plan.fixed_rate_window,
                    rate: Some(rate),
                })
                .await?;
            let latency = stats::Latency::of(&outcome.latencies_us);
            say!(
                "bench: common rate round {} {}: {} requests at {rate:.0}/s, p50 {} ms, p99 {} ms, {} late, {} failed",
                round + 1,
                variant.name(),
                outcome.requests(),
                report::ms(latency.p50_us),
                report::ms(latency.p99_us),
                outcome.late,
                outcome.failed
            );
            bursts.push(fixed_rate::FixedRateBurst::of(round + 1, variant, &outcome));
            fixed_rate::add(&mut totals, variant, outcome);
        }
        Ok(fixed_rate::FixedRate {
            choice: self.choice,
            rounds: plan.fixed_rate_rounds,
            window_ms: plan.fixed_rate_window.as_millis() as u64,
            connections: plan.connections,
            late_after_us: bench_peer::protocol::LATE_AFTER.as_micros() as u64,
            variants: fixed_rate::variant_results(&totals),
            bursts,
        })
    }
}

/// Runs everything the plan asks, prints progress, returns the numbers.
/// Every component is stopped before it returns (or fails).
pub async fn run(mut opts: BenchOptions) -> Result<BenchReport> {
    let plan = opts.plan;
    let wall = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let tools = rig::process::tools::Tools::load(
        &opts.local.env_dir.join("tools.toml"),
        rig::process::tools::ToolEnv::from_process(),
    )?;
    let machine = machine(&tools, &opts.local.keygate_bin);
    let envoy = tools.resolve("envoy").context("the bench needs Envoy")?;
    let mut left_out = Vec::new();

    // 1. The environment: external-secret mode (so the Secret-dir rotation
    // runs through bao agent), Envoy with gRPC and HTTP ext_authz, and
    // Envoy with keygate's module.
    let mut local = opts.local.clone();
    local.echo = peer_upstream(&opts.peer);
    local.mode = Mode::ExternalSecret;
    let gw = BenchGateways::find(&rig::contract::gateways::Catalog::load(
        &local.gateways_dir,
    )?)?;
    local.gateways = vec![gw.grpc.clone(), gw.http.clone(), gw.module.clone()];
    local.runs_dir = opts.out_dir.join("runs");
    // Each bench leaves two environments' logs; only the newest are kept.
    prune_runs(&local.runs_dir, RUNS_KEPT)?;
    let up_started = Instant::now();
    let mut env_a = rig::local::up(&local)
        .await
        .context("the bench environment did not come up")?;
    let up_ms = up_started.elapsed().as_millis() as u64;
    let env = env_a.environment.clone();
    let root = VaultClient::root(&env.vault_addr, Secret::new(env.root_token()?))?;
    let groups = rig::contract::scenario::load_apis(&local.scenarios_dir.join("apis"))?;
    let group = groups.first().context("no API group in the scenarios")?;
    let path = group_path(group)?;
    say!(
        "bench: environment up in {} ({}); requests go to {path} (group {})",
        rig::base::progress::secs(Duration::from_millis(up_ms)),
        env_a.run.path().display(),
        group.group_id
    );

    // 2. Propagation first, while Vault holds few keys: the keys-file
    // side's bao agent renders every key of the group each interval.
    let quick_note = plan.quick.then(|| {
        "--quick: fewer events than a full run (200 direct, 20 through agents)".to_owned()
    });
    say!(
        "bench: propagation, direct mode: {} API keys issued and revoked",
        plan.direct_revocations
    );
    let direct = propagation::KeyPath::direct(&env, format!("{}{path}", env.gateways[&gw.grpc]));
    let mut propagation = propagation::api_keys(
        &direct,
        &root,
        &env.kv_mount,
        &group.group_id,
        plan.direct_revocations,
        quick_note.clone(),
    )
    .await?;
    match propagation::KeyPath::keys_file(&env, &path) {
        Some(keys_file) => {
            say!(
                "bench: propagation, keys-file via bao agent: {} API keys issued and revoked",
                plan.revocations
            );
            propagation.extend(
                propagation::api_keys(
                    &keys_file,
                    &root,
                    &env.kv_mount,
                    &group.group_id,
                    plan.revocations,
                    quick_note.clone(),
                )
                .await?,
            );
        }
        None => left_out.push(
            "propagation keys-file via bao agent: this environment runs no keys-file gateway (env.json has no keys_file)".into(),
        ),
    }
    say!(
        "bench: propagation, Secret dir via bao agent: {} secret-id rotations",
        plan.secret_id_rotations
    );
    propagation.push(
        propagation::secret_id(
            &env,
            env_a.run.path(),
            &root,
            plan.secret_id_rotations,
            quick_note.clone(),
        )
        .await?,
    );
    // Then the keys-file agent stops: rendering the thousands of keys the
    // overhead variants need every second would load the machine they are
    // measured on.
    if env.keys_file.is_some() {
        env_a
            .supervisor
            .stop("keys-agent", rig::process::supervisor::StopMode::Graceful)?;
    }

    // 3. Keys: the warm key (also what the native filter knows, with 99
    // others), and the cold pool.
    let (native_keys, took) = keys::write_keys(&root, &env.kv_mount, &group.group_id, 100).await?;
    let warm: Arc<str> = Arc::from(native_keys[0].as_str());
    say!(
        "bench: writing {} keys for the cold-cache variant",
        plan.cold_pool
    );
    let (cold, cold_took) =
        keys::write_keys(&root, &env.kv_mount, &group.group_id, plan.cold_pool).await?;
    // The module's cold variant has a pool of its own: a key either cold
    // variant used is cached by keygate, and would spare the module's
    // callout its Vault read.
    say!(
        "bench: writing {} keys for the module's cold variant",
        plan.cold_pool
    );
    let (module_cold, module_cold_took) =
        keys::write_keys(&root, &env.kv_mount, &group.group_id, plan.cold_pool).await?;
    // And the module-miss variant's: a chunk per round, put in keygate's
    // cache right before its turn.
    let miss_pool_size = plan.miss_chunk * plan.rounds;
    say!("bench: writing {miss_pool_size} keys for the module's miss variant");
    let (module_miss, module_miss_took) =
        keys::write_keys(&root, &env.kv_mount, &group.group_id, miss_pool_size).await?;
    say!(
        "bench: keys written ({} in {}, {} in {}, {} in {}, {} in {})",
        native_keys.len(),
        rig::base::progress::secs(took),
        cold.len(),
        rig::base::progress::secs(cold_took),
        module_cold.len(),
        rig::base::progress::secs(module_cold_took),
        module_miss.len(),
        rig::base::progress::secs(module_miss_took)
    );
    // keygate's own forward-auth endpoint, to cache the miss variant's keys
    // without the module seeing them.
    let keygate_auth_url = format!("{}/auth{path}", env.keygate_url);
    let upstream: std::net::SocketAddr = env
        .upstream_url
        .trim_start_matches("http://")
        .parse()
        .context("env.json's upstream_url is not http://host:port")?;
    let mut baselines = Vec::new();
    for (name, auth) in [
        (NO_AUTH_ENVOY, variants::BaselineAuth::None),
        (
            NATIVE_ENVOY,
            variants::BaselineAuth::ApiKeyAuth {
                keys: &native_keys,
                forward_header: None,
            },
        ),
        (
            NATIVE_FORWARDING_ENVOY,
            variants::BaselineAuth::ApiKeyAuth {
                keys: &native_keys,
                forward_header: Some(FORWARDED_OWNER_HEADER),
            },
        ),
        (
            MODULE_FLOOR_ENVOY,
            variants::BaselineAuth::PassthroughModule(&opts.passthrough_module),
        ),
    ] {
        baselines.push(
            variants::start_baseline_envoy(
                name,
                auth,
                upstream,
                &envoy.path,
                &local.env_dir,
                &env_a.run,
                &mut env_a.supervisor,
            )
            .await?,
        );
    }
    let [no_auth, native, native_forwarding, module_floor]: [String; 4] =
        baselines.try_into().map_err(|started: Vec<String>| {
            anyhow::anyhow!("{} baselines started, not 4", started.len())
        })?;
    let urls: BTreeMap<Variant, String> = [
        (Variant::NoAuth, format!("{no_auth}{path}")),
        (Variant::Native, format!("{native}{path}")),
        (
            Variant::NativeForwarding,
            format!("{native_forwarding}{path}"),
        ),
        (Variant::ModuleFloor, format!("{module_floor}{path}")),
        (
            Variant::KeygateGrpc,
            format!("{}{path}", env.gateways[&gw.grpc]),
        ),
        (
            Variant::KeygateHttp,
            format!("{}{path}", env.gateways[&gw.http]),
        ),
        (
            Variant::KeygateCold,
            format!("{}{path}", env.gateways[&gw.grpc]),
        ),
        (
            Variant::ModuleWarm,
            format!("{}{path}", env.gateways[&gw.module]),
        ),
        (
            Variant::ModuleMiss,
            format!("{}{path}", env.gateways[&gw.module]),
        ),
        (
            Variant::ModuleCold,
            format!("{}{path}", env.gateways[&gw.module]),
        ),
    ]
    .into();

    // 4. Auth overhead, interleaved.
    let generator = start_generator(&opts.peer, &env_a.run, &mut env_a.supervisor).await?;
    // Warm-up: connections open, the warm key cached (by keygate, and in
    // the module's table), Envoy's first-request costs paid.
    warm_up(&generator, &urls, &warm, plan.connections).await?;
    let cold_pool = Arc::new(cold);
    let cold_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let module_cold_pool = Arc::new(module_cold);
    let module_cold_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut totals: BTreeMap<Variant, load::Outcome> = BTreeMap::new();
    // Whose CPU each variant costs: its Envoy's, and keygate's when the
    // variant goes through keygate.
    let envoys: BTreeMap<Variant, (&str, bool)> = [
        (Variant::NoAuth, (NO_AUTH_ENVOY, false)),
        (Variant::Native, (NATIVE_ENVOY, false)),
        (Variant::NativeForwarding, (NATIVE_FORWARDING_ENVOY, false)),
        (Variant::ModuleFloor, (MODULE_FLOOR_ENVOY, false)),
        (Variant::KeygateGrpc, (gw.grpc.as_str(), true)),
        (Variant::KeygateHttp, (gw.http.as_str(), true)),
        (Variant::KeygateCold, (gw.grpc.as_str(), true)),
        (Variant::ModuleWarm, (gw.module.as_str(), true)),
        (Variant::ModuleMiss, (gw.module.as_str(), true)),
        (Variant::ModuleCold, (gw.module.as_str(), true)),
    ]
    .into();
    let cpu_now = |supervisor: &rig::process::supervisor::Supervisor,
                   variant: Variant|
     -> Result<cpu::CpuUse> {
        let pid_of = |name: &str| {
            supervisor
                .pid(name)
                .with_context(|| format!("the bench's {name} is not running"))
        };
        let (envoy, through_keygate) = envoys[&variant];
        Ok(cpu::CpuUse {
            envoy: cpu::process_cpu(pid_of(envoy)?)?,
            keygate: through_keygate
                .then(|| pid_of("keygate").and_then(cpu::process_cpu))
                .transpose()?,
        })
    };
    // Every Envoy starts again before each round after the first: one
    // process per variant for the whole run would carry that process's own
    // offset (two Envoys of one config measured up to 5 % apart in CPU per
    // request, once 15 %) into every ratio, and rounds do not average it.
    let mut restart_names: Vec<&str> = envoys.values().map(|(name, _)| *name).collect();
    restart_names.sort_unstable();
    restart_names.dedup();
    let mut restarted_for = 0;
    let mut cpu_totals: BTreeMap<Variant, cpu::CpuUse> = BTreeMap::new();
    let mut rounds: Vec<results::RoundResult> = Vec::new();
    let mut miss_slow_noted = false;
    let schedule = stats::interleave_paired(&Variant::ALL, &Variant::PAIRED, plan.rounds);
    say!(
        "bench: auth overhead, {} rounds of {} variants, each at most {} requests or {} per round, {} connections",
        plan.rounds,
        Variant::ALL.len(),
        plan.requests_per_round,
        rig::base::progress::secs(plan.window),
        plan.connections
    );
    for (round, variant) in schedule {
        if round > restarted_for {
            restarted_for = round;
            for name in &restart_names {
                env_a
                    .supervisor
                    .restart(name)
                    .await
                    .with_context(|| format!("restarting {name} before round {}", round + 1))?;
            }
            warm_up(&generator, &urls, &warm, plan.connections).await?;
        }
        let keys = match variant {
            Variant::KeygateCold => Keys::Fresh {
                pool: cold_pool.clone(),
                next: cold_next.clone(),
            },
            Variant::ModuleCold => Keys::Fresh {
                pool: module_cold_pool.clone(),
                next: module_cold_next.clone(),
            },
            Variant::ModuleMiss => {
                let chunk = miss_chunk(&module_miss, round, plan.miss_chunk);
                let caching = Instant::now();
                cache_in_keygate(&generator, &keygate_auth_url, &chunk, plan.connections)
                    .await
                    .with_context(|| {
                        format!(
                            "round {}: putting the {} variant's keys in keygate's cache",
                            round + 1,
                            variant.name()
                        )
                    })?;
                // For Vault's audit entries of those reads to pass through
                // keygate's feed before the burst's CPU is read.
                tokio::time::sleep(MISS_SETTLE).await;
                // The first keys cached must still be in keygate's cache
                // when the module asks, or the variant measures Vault
                // reads: say so when a slow machine ate half the TTL.
                let took = caching.elapsed();
                if took > local.positive_ttl / 2 && !miss_slow_noted {
                    miss_slow_noted = true;
                    left_out.push(format!(
                        "{}: round {}'s keys took {} to put in keygate's cache (positive TTL {}), so some may have expired there before the module asked, and cost a Vault read",
                        variant.name(),
                        round + 1,
                        rig::base::progress::secs(took),
                        rig::base::progress::secs(local.positive_ttl)
                    ));
                }
                Keys::Fresh {
                    pool: chunk,
                    next: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                }
            }
            _ => Keys::One(warm.clone()),
        };
        // A moment between turns, for what the last one left behind
        // (Vault's audit writes after a cold turn, keygate's cache inserts).
        tokio::time::sleep(SETTLE).await;
        let cpu_before = cpu_now(&env_a.supervisor, variant)?;
        // The machine's ticks are a reading for the report, not a
        // precondition: a /proc without them loses the steal column only.
        let ticks_before = cpu::MachineTicks::now().ok();
        let outcome = generator
            .run(Burst {
                url: &urls[&variant],
                keys,
                connections: plan.connections,
                max_requests: plan.requests_per_round,
                max_time: plan.window,
                rate: None,
            })
            .await?;
        let cpu_after = cpu_now(&env_a.supervisor, variant)?;
        let steal_share = ticks_before
            .zip(cpu::MachineTicks::now().ok())
            .and_then(|(before, after)| after.steal_share_since(before));
        cpu_totals.entry(variant).or_default().add(cpu::CpuUse {
            envoy: cpu_after.envoy.saturating_sub(cpu_before.envoy),
            keygate: cpu_after
                .keygate
                .zip(cpu_before.keygate)
                .map(|(after, before)| after.saturating_sub(before)),
        });
        if outcome.requests() == 0 {
            say!(
                "bench: round {} {}: no request: its pool of fresh keys is spent",
                round + 1,
                variant.name()
            );
        } else {
            say!(
                "bench: round {} {}: {} requests in {} ({:.0}/s), {} failed",
                round + 1,
                variant.name(),
                outcome.requests(),
                rig::base::progress::secs(outcome.elapsed),
                outcome.rps(),
                outcome.failed
            );
        }
        if outcome.requests() > 0 {
            rounds.push(results::RoundResult {
                round: round + 1,
                variant,
                rps: outcome.rps(),
                steal_share,
            });
        }
        match totals.get_mut(&variant) {
            Some(total) => {
                total.latencies_us.add(&outcome.latencies_us)?;
                total.ok += outcome.ok;
                total.failed += outcome.failed;
                total.elapsed += outcome.elapsed;
                if outcome.last_failure.is_some() {
                    total.last_failure = outcome.last_failure;
                }
            }
            None => {
                totals.insert(variant, outcome);
            }
        }
    }
    for (variant, next, pool) in [
        (Variant::KeygateCold, &cold_next, &cold_pool),
        (Variant::ModuleCold, &module_cold_next, &module_cold_pool),
    ] {
        if next.load(std::sync::atomic::Ordering::Relaxed) >= pool.len() {
            left_out.push(format!(
                "{} ran out of its {} fresh keys, so some of its rounds ended early (fewer requests than the others)",
                variant.name(),
                pool.len()
            ));
        }
    }
    let variants = report::variant_results(&totals, &cpu_totals, &rounds);

    // 4a. Latency at a common rate: the warm variants, open loop, at half
    // the slowest one's closed-loop req/s, so none is saturated and their
    // p99s compare at equal load.
    let fixed_rate =
        match fixed_rate::choose(&variants.iter().map(|v| (v.variant, v.rps)).collect()) {
            Ok(choice) => {
                let step = FixedRateStep {
                    choice,
                    generator: &generator,
                    urls: &urls,
                    warm: &warm,
                    restart_names: &restart_names,
                };
                Some(step.run(&plan, &mut env_a.supervisor).await?)
            }
            Err(why) => {
                left_out.push(format!("latency at a common rate: {why}"));
                None
            }
        };

    // 4b. Envoy's instructions per request under callgrind: the same
    // Envoys, each started again under valgrind (`--quick`: the native
    // filter and the module only, fewer requests).
    let counted: Vec<instructions::Counted> = [
        Variant::NoAuth,
        Variant::Native,
        Variant::NativeForwarding,
        Variant::ModuleFloor,
        Variant::ModuleWarm,
    ]
    .into_iter()
    .filter(|v| !plan.quick || matches!(v, Variant::Native | Variant::ModuleWarm))
    .map(|variant| instructions::Counted {
        variant,
        envoy: envoys[&variant].0,
        url: &urls[&variant],
        key: warm.clone(),
        requests: plan.instruction_requests,
    })
    .collect();
    if plan.quick {
        left_out.push(format!(
            "instructions: --quick counts the native filter and the module only ({} requests each; a full run adds no-auth, the forwarding native filter and the pass-through module), with the module this run loads ({}: a debug build counts far more than a release one)",
            plan.instruction_requests,
            opts.local.keygate_envoy_module.display()
        ));
    }
    let instructions = instructions::count_each(
        &counted,
        &mut env_a.supervisor,
        &generator,
        &env_a.run.path().join("callgrind"),
        &mut left_out,
    )
    .await;

    env_a.supervisor.stop_all();
    let main_audit = env_a.run.logs_dir().join(rig::vault::audit::AUDIT_LOG);
    drop(env_a);
    spare_audit_log(&main_audit, "auth-overhead and propagation steps")?;

    // 5. Scale, in an environment whose cache keeps every key for the run.
    let mut scale_local = opts.local.clone();
    scale_local.echo = peer_upstream(&opts.peer);
    scale_local.mode = Mode::Inline;
    scale_local.gateways = vec![gw.grpc.clone()];
    scale_local.runs_dir = opts.out_dir.join("runs");
    scale_local.positive_ttl = Duration::from_secs(3600);
    let scale_started = Instant::now();
    let env_b = rig::local::up(&scale_local)
        .await
        .context("the scale environment did not come up")?;
    let scale_up_ms = scale_started.elapsed().as_millis() as u64;
    let mut env_b = env_b;
    if env_b.environment.keys_file.is_some() {
        // Its agent would render all 100 000 keys every second.
        env_b
            .supervisor
            .stop("keys-agent", rig::process::supervisor::StopMode::Graceful)?;
    }
    let root_b = VaultClient::root(
        &env_b.environment.vault_addr,
        Secret::new(env_b.environment.root_token()?),
    )?;
    let keygate_pid = env_b
        .supervisor
        .pid("keygate")
        .context("keygate is not running in the scale environment")?;
    let scale_generator = start_generator(&opts.peer, &env_b.run, &mut env_b.supervisor).await?;
    let scale = scale::run(
        &scale::ScaleSetup {
            root: &root_b,
            mount: &env_b.environment.kv_mount,
            group: &group.group_id,
            fill_url: &format!("{}/auth{path}", env_b.environment.keygate_url),
            gateway_url: &format!("{}{path}", env_b.environment.gateway_url),
            keygate_pid,
            generator: &scale_generator,
            connections: plan.connections,
            window: plan.scale_window,
        },
        plan.scale_sizes,
    )
    .await?;
    if plan.quick {
        left_out.push(
            "scale: --quick does 100 and 1 000 keys; 10 000 and 100 000 only in a full run".into(),
        );
    }
    let scale_audit = env_b.run.logs_dir().join(rig::vault::audit::AUDIT_LOG);
    drop(env_b);
    spare_audit_log(&scale_audit, "scale step")?;

    // 6. The e2e suite's wall time, as a child (full run only).
    let mut suite = SuiteSpeed {
        up_ms,
        scale_up_ms: Some(scale_up_ms),
        e2e_ms: None,
        e2e_ok: None,
        e2e_command: None,
        e2e_report_up_ms: None,
        e2e_report_tests_ms: None,
        e2e_report_wall_ms: None,
    };
    match (plan.suite, opts.suite.take()) {
        (true, Some(runner)) => {
            let shown = runner.shown;
            say!("bench: suite speed: {shown}");
            let started = Instant::now();
            let child_started = time::OffsetDateTime::now_utc();
            let status = (runner.run)().with_context(|| format!("running {shown}"))?;
            suite.e2e_ms = Some(started.elapsed().as_millis() as u64);
            suite.e2e_ok = Some(status.success());
            suite.e2e_command = Some(shown);
            // The child's own split (up, tests) from the run it left as
            // `latest`, if that run is the child's: one that failed before
            // writing a report leaves an older run there.
            let report = rig::base::paths::rig_dir().join("latest/report.json");
            match std::fs::read_to_string(&report)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .filter(|value| written_since(value, child_started))
            {
                Some(value) => {
                    suite.e2e_report_up_ms = value["up_ms"].as_u64();
                    suite.e2e_report_tests_ms = value["tests_ms"].as_u64();
                    suite.e2e_report_wall_ms = value["wall_time_ms"].as_u64();
                }
                None => left_out.push(format!(
                    "suite speed: {} is not the child's (absent, unreadable, or from a run that started before it), so its up/tests split is not given",
                    report.display()
                )),
            }
        }
        (true, None) => left_out.push("suite speed: no e2e command given".into()),
        (false, _) => {
            left_out.push("suite speed: the e2e suite's wall time only in a full run".into())
        }
    }

    let mut report = BenchReport {
        started_at,
        wall_ms: wall.elapsed().as_millis() as u64,
        plan,
        machine,
        load_generator: load::CLIENT.to_owned(),
        connections: plan.connections,
        path,
        native_keys: native_keys.len(),
        variants,
        rounds,
        fixed_rate,
        instructions,
        propagation,
        scale,
        suite,
        left_out,
    };
    let failures = report::failures(&report);
    report.left_out.extend(failures);
    Ok(report)
}

/// Whether a `report.json` (as JSON) is of a run that started at or after
/// `since`.
fn written_since(report: &serde_json::Value, since: time::OffsetDateTime) -> bool {
    report["started_at"]
        .as_str()
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        // Whole seconds: the child's clock reading is a little later.
        .is_some_and(|at| at >= since - time::Duration::seconds(1))
}

/// Vault's audit device logs every key written and read (~1.5 KB a line):
/// ~35 MB in a `--quick` run's main environment, ~600 MB at the scale
/// step's 100 000 keys, enough to fill a small disk over a few runs. The
/// bench asserts nothing on it, so one over 64 MiB is replaced by a note.
fn spare_audit_log(path: &Path, step: &str) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > 64 << 20
    {
        std::fs::write(
            path,
            format!(
                "{} bytes of Vault audit entries of the bench's {step} removed by cargo xtask bench to spare the disk\n",
                meta.len()
            ),
        )
        .with_context(|| format!("truncating {}", path.display()))?;
    }
    Ok(())
}

/// How many of the bench's environments (`<out>/runs/<run>`) a new bench
/// keeps: the previous bench's two (its main and scale environments), for
/// their logs; older ones are removed when a bench starts.
const RUNS_KEPT: usize = 2;

/// Removes all but the newest `keep` runs under `runs` (run names sort by
/// their start time).
fn prune_runs(runs: &Path, keep: usize) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return Ok(());
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    let old = names.len().saturating_sub(keep);
    for dir in &names[..old] {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the old bench run {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_report_of_the_childs_run_is_read() {
        let since = time::macros::datetime!(2026-12-07 12:00:00 UTC);
        let at = |s: &str| serde_json::json!({ "started_at": s, "up_ms": 1 });
        assert!(written_since(&at("2026-12-07T12:00:03Z"), since));
        assert!(!written_since(&at("2026-12-07T11:40:00Z"), since));
        assert!(!written_since(&serde_json::json!({ "up_ms": 1 }), since));
    }

    #[test]
    fn pruning_keeps_the_newest_runs() {
        let runs = tempfile::tempdir().unwrap();
        for name in [
            "20261201T000000-1",
            "20261203T000000-3",
            "20261202T000000-2",
        ] {
            std::fs::create_dir(runs.path().join(name)).unwrap();
        }
        std::fs::write(runs.path().join("not-a-run"), "").unwrap();
        prune_runs(runs.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(runs.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["20261202T000000-2", "20261203T000000-3", "not-a-run"]
        );
        // No runs directory yet: nothing to do.
        prune_runs(&runs.path().join("absent"), 2).unwrap();
    }

    #[test]
    fn each_round_of_the_miss_variant_takes_keys_of_its_own() {
        let pool: Vec<String> = (0..7).map(|n| n.to_string()).collect();
        assert_eq!(*miss_chunk(&pool, 0, 3), ["0", "1", "2"]);
        assert_eq!(*miss_chunk(&pool, 1, 3), ["3", "4", "5"]);
        // A short pool: the last round gets what is left, then nothing.
        assert_eq!(*miss_chunk(&pool, 2, 3), ["6"]);
        assert!(miss_chunk(&pool, 3, 3).is_empty());
    }
}
