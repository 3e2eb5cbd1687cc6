//! What the fault tests share. Each fault test owns a local environment,
//! started here through rig, so the `Supervisor` that started the processes
//! lives in the test process and stops them when the test ends or panics.
//! Assertions still go through public endpoints only: the gateway, the Vault
//! HTTP API and keygate's /readyz and /metrics.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apikey::{ApiKey, KeyRecord};
use rig::contract::env::Environment;
use rig::contract::fault::Fault;
use rig::local::delivery::PublishCommand;
use rig::local::{EchoCommand, LocalOptions, LocalRun};
use rig::vault::client::{Secret, VaultClient};
use serde_json::Value;

pub const ASSERTION_GROUP: &str = "faults";

/// Where fault tests put their runs, so `target/rig/latest` stays the shared
/// run; `cargo xtask down` looks here too.
pub fn runs_dir() -> PathBuf {
    rig::base::paths::rig_dir().join("faults")
}

/// The binaries an owned environment needs, or why they are missing (the
/// test then skips by name with that reason). `cargo xtask e2e` builds them
/// and passes their paths.
pub fn local_options() -> Result<LocalOptions, String> {
    let from_env = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| rig::base::paths::target_dir().join(default))
    };
    let keygate = from_env("KEYRIG_KEYGATE", "debug/keygate");
    let echo = from_env("KEYRIG_ECHO_PROGRAM", "debug/xtask");
    for (what, path) in [("keygate", &keygate), ("the echo upstream (xtask)", &echo)] {
        if !path.is_file() {
            return Err(format!(
                "no {what} binary at {}: run the fault tests through `cargo xtask e2e`, which builds it",
                path.display()
            ));
        }
    }
    let mut opts = LocalOptions::new(
        keygate,
        EchoCommand {
            program: echo,
            args: vec!["echo-upstream".into()],
        },
    );
    // keygate's Envoy module for the envoy-module gateway: absent, that
    // gateway is skipped with the reason, like a gateway's missing binary.
    opts.keygate_envoy_module = from_env(
        rig::process::envoy_module::MODULE_VAR,
        "debug/libkeygate_envoy.so",
    );
    opts.runs_dir = runs_dir();
    // Only what a fault case goes through: keygate behind the catalog's
    // default gateway (env.json `gateway_url`). Each case starts an
    // environment of its own, about a dozen at once in a run, and the
    // other five gateways, the keys-file pair (whose bao agent re-reads
    // every key each second) and the TLS pair only cost CPU on the two
    // cores the rest of the suite shares. A case that needs more asks for
    // it (every gateway for the hostile requests, envoy-module for the
    // module's outage).
    // A broken catalog is a defect to fail on, not a reason to skip.
    let catalog = rig::contract::gateways::Catalog::load(&opts.gateways_dir)
        .unwrap_or_else(|err| panic!("the gateway catalog: {err:#}"));
    opts.gateways = vec![catalog.default_gateway().name.clone()];
    opts.keys_file = false;
    opts.tls = false;
    // Other helpers' e2e runs share the machine's two cores.
    opts.ready_timeout = Duration::from_secs(90);
    // xtask also hosts bao agent's publish hook (external-secret mode).
    opts.publish = Some(PublishCommand {
        program: opts.echo.program.clone(),
        args: vec!["publish-secret".into()],
    });
    Ok(opts)
}

/// The delivery mode of the shared run this test process belongs to
/// (env.json `mode`), if there is one.
pub fn run_mode() -> Option<String> {
    Environment::discover().ok().and_then(|env| env.mode)
}

/// Background requests through the default gateway until stopped: a valid
/// key (must pass) and a fresh unknown key (must never pass) per round, on
/// the e2e crate's `Load` (one loop, 50 ms apart), tallied as a fault's
/// figures.
pub struct Load {
    load: keyrig_e2e::Load,
    result: Arc<Mutex<LoadResult>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub tally: Tally,
    /// Valid-key requests that did not get 200, with the first such answer.
    pub failed: u64,
    pub first_failure: Option<String>,
}

impl Load {
    pub fn start(env: &Owned, path: &str, valid: &ApiKey) -> Self {
        let result = Arc::new(Mutex::new(LoadResult::default()));
        let (http, gateway) = (env.http.clone(), env.env().gateway_url.clone());
        let (path, valid) = (path.to_owned(), valid.expose().to_owned());
        let shared = result.clone();
        let load = keyrig_e2e::Load::start_with(1, Duration::from_millis(50), move || {
            let (http, gateway, path, valid, result) = (
                http.clone(),
                gateway.clone(),
                path.clone(),
                valid.clone(),
                shared.clone(),
            );
            async move {
                let unknown = ApiKey::generate();
                let denied = gateway_get(&http, &gateway, &path, Some(unknown.expose())).await;
                let reply = gateway_get(&http, &gateway, &path, Some(&valid)).await;
                let mut result = result.lock().unwrap();
                result.tally.count(&denied, true);
                result.tally.count(&reply, false);
                if reply.status != 200 {
                    result.failed += 1;
                    result
                        .first_failure
                        .get_or_insert_with(|| format!("valid key: {}", reply.short()));
                }
                Ok((reply.status, reply.short()))
            }
        });
        Self { load, result }
    }

    pub async fn finish(self) -> LoadResult {
        self.load.finish().await;
        std::mem::take(&mut *self.result.lock().unwrap())
    }
}

/// A running environment this test owns, and clients for it.
pub struct Owned {
    pub run: LocalRun,
    pub http: reqwest::Client,
    pub root: VaultClient,
}

impl Owned {
    pub async fn start(opts: &LocalOptions) -> Result<Self> {
        let run = rig::local::up(opts).await?;
        let root = VaultClient::root(
            &run.environment.vault_addr,
            Secret::new(run.environment.root_token()?),
        )?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { run, http, root })
    }

    pub fn env(&self) -> &Environment {
        &self.run.environment
    }

    /// The first two API groups (sorted), for "group A" and "group B".
    pub fn groups(&self) -> (String, String) {
        let mut names = self.env().groups.keys().cloned();
        let a = names.next().expect("the scenario has API groups");
        let b = names.next().expect("the scenario has two API groups");
        (a, b)
    }

    /// A path the group's OpenAPI document declares.
    pub fn api_path(&self, group: &str) -> String {
        self.env().route(group).expect("group from env.json");
        match self.env().api_paths.get(group) {
            Some(path) => path.clone(),
            None => panic!(
                "env.json has no api_paths entry for {group}: give its OpenAPI document a GET path without parameters"
            ),
        }
    }

    /// Writes a fresh key's record to Vault (root token, through the API).
    pub async fn issue_key(&self, group: &str) -> Result<ApiKey> {
        let key = ApiKey::generate();
        // A valid key: registered before use, as the other groups' keys
        // (tests/lib.rs `issue_key`), with the shared run and with this
        // environment's own run, whose logs the upload scan reads.
        rig::base::redact::register_secret(key.expose());
        rig::base::redact::register_in_run(self.run.run.path(), key.expose())?;
        let record = serde_json::to_value(KeyRecord::for_key(&key, "fault-owner"))?;
        self.root
            .kv2_put(
                &self.env().kv_mount,
                &format!("{group}/{}", key.selector().as_str()),
                &record,
            )
            .await?;
        Ok(key)
    }

    /// Whether the key's record is in Vault.
    pub async fn record_exists(&self, group: &str, key: &ApiKey) -> Result<bool> {
        Ok(self
            .root
            .kv2_get(
                &self.env().kv_mount,
                &format!("{group}/{}", key.selector().as_str()),
            )
            .await?
            .is_some())
    }

    /// GET at the gateway with `x-api-key`; a transport error is status 0.
    pub async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        gateway_get(&self.http, &self.env().gateway_url, path, key).await
    }

    /// GET at `gateway` (a URL of env.json's `gateways`) with `x-api-key`.
    pub async fn get_at(&self, gateway: &str, path: &str, key: Option<&str>) -> Reply {
        gateway_get(&self.http, gateway, path, key).await
    }

    /// `keygate_vault_reads_total`, summed over results.
    pub async fn vault_reads(&self) -> Result<u64> {
        self.metric_sum("keygate_vault_reads_total").await
    }

    /// The sum of a metric's series on keygate's /metrics.
    pub async fn metric_sum(&self, name: &str) -> Result<u64> {
        let url = format!("{}/metrics", self.env().keygate_url);
        let text = self.http.get(&url).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// keygate's Vault token accessor, from /readyz (None while not ready).
    pub async fn keygate_accessor(&self) -> Option<String> {
        let url = format!("{}/readyz", self.env().keygate_url);
        let body: Value = self.http.get(&url).send().await.ok()?.json().await.ok()?;
        body.get("vault_token_accessor")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// A root client that reads the token again (raft init wrote it).
    pub fn vault_without_token(&self) -> Result<VaultClient> {
        VaultClient::new(&self.env().vault_addr)
    }

    /// The name of the gateway `get` goes through (env.json `gateway_url`).
    pub fn default_gateway(&self) -> String {
        let env = self.env();
        env.gateways
            .iter()
            .find(|(_, url)| **url == env.gateway_url)
            .map_or_else(|| env.gateway_url.clone(), |(name, _)| name.clone())
    }

    /// Records a fault's figures for the run's reports (`rig::contract::fault`).
    pub fn record_fault(&self, case: &str, fault: &str, gateway: &str, tally: &Tally) {
        rig::contract::fault::record(
            &Fault {
                case: case.to_owned(),
                fault: fault.to_owned(),
                mode: self.env().mode.clone().unwrap_or_else(|| "-".into()),
                gateway: gateway.to_owned(),
                requests: tally.requests,
                false_accepts: tally.false_accepts,
                unavailable: tally.unavailable,
                recovery_ms: None,
            }
            .recovery(tally.recovery),
        );
    }

    pub fn unseal_key_file(&self) -> Result<PathBuf> {
        self.env()
            .unseal_key_file
            .clone()
            .context("this environment has no unseal key file")
    }
}

/// What a client saw: the e2e crate's one reply type (status 0 when the
/// gateway did not answer at all).
pub use keyrig_e2e::GatewayReply as Reply;

/// A fault's figures for the case message: what the report lists per fault.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub requests: u64,
    pub false_accepts: u64,
    pub unavailable: u64,
    pub recovery: Option<Duration>,
}

impl Tally {
    pub fn count(&mut self, reply: &Reply, must_not_pass: bool) {
        self.requests += 1;
        if reply.status == 503 {
            self.unavailable += 1;
        }
        if must_not_pass && reply.allowed() {
            self.false_accepts += 1;
        }
    }

    /// Adds what a [`Load`] counted.
    pub fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.false_accepts += other.false_accepts;
        self.unavailable += other.unavailable;
    }

    pub fn message(&self, extra: &str) -> String {
        let recovery = self
            .recovery
            .map_or_else(|| "n/a".to_owned(), |d| format!("{} ms", d.as_millis()));
        format!(
            "requests {}, false accepts {}, 503s {}, recovery {recovery}{}{extra}",
            self.requests,
            self.false_accepts,
            self.unavailable,
            if extra.is_empty() { "" } else { "; " }
        )
    }
}

/// Polls the gateway until `path` with `key` answers `status`; returns how
/// long it took. Every reply is tallied; `must_not_pass` marks replies that
/// would be false accepts.
pub async fn until_status(
    env: &Owned,
    tally: &mut Tally,
    path: &str,
    key: &str,
    status: u16,
    deadline: Duration,
    must_not_pass: bool,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last = String::from("nothing yet");
    while started.elapsed() < deadline {
        let reply = env.get(path, Some(key)).await;
        tally.count(&reply, must_not_pass);
        if reply.status == status {
            return Ok(started.elapsed());
        }
        last = reply.short();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{path} did not answer {status} within {}: last saw {last}",
        rig::base::progress::secs(deadline)
    )
}

/// GET `path` at `gateway` with `x-api-key`; a transport error is status 0.
pub async fn gateway_get(
    http: &reqwest::Client,
    gateway: &str,
    path: &str,
    key: Option<&str>,
) -> Reply {
    let url = format!("{gateway}{path}");
    let mut request = http.get(&url);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let answer = match request.send().await {
        Ok(response) => Reply::read(response).await,
        Err(err) => Err(err.without_url().into()),
    };
    match answer {
        Ok(reply) => reply,
        Err(err) => Reply {
            status: 0,
            reason: Some(format!("no answer: {err:#}")),
            body: Value::Null,
        },
    }
}

/// The hostile requests through the harness's own gateways: keys written
/// with the root token, keygate's Vault reads counted (the case sets TTLs
/// that outlast it).
impl keyrig_e2e::hostile::HostileTarget for Owned {
    fn env(&self) -> &Environment {
        Owned::env(self)
    }

    async fn issue_key(&self, group: &str) -> Result<ApiKey> {
        Owned::issue_key(self, group).await
    }

    async fn vault_reads(&self) -> Result<Option<u64>> {
        Owned::vault_reads(self).await.map(Some)
    }
}
