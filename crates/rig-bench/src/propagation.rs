//! Rotation and revocation propagation: the time from a Vault write to the
//! first effect a client can observe, per delivery path, as distributions.
//!
//! - direct (keygate reads Vault, records cached `positive_ttl`): an API
//!   key deleted in Vault -> the gateway's first 401; a new key written ->
//!   the gateway's first 200. Revocations run concurrently (each waits out
//!   its own cache entry), so 20 events take one TTL, not twenty.
//! - keys-file via bao agent: the same two changes, observed through the
//!   keys-file gateway (keygate validating from the files bao agent renders).
//! - Secret dir via bao agent (external-secret): keygate's secret-id
//!   written to Vault KV -> bao agent renders, the Secret's `..data` swaps,
//!   keygate logs in again -> a new token accessor on `/readyz`. One at a
//!   time: there is one keygate.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::stats::Distribution;
use rig::contract::env::Environment;
use rig::vault::client::VaultClient;

/// How often a waiting event asks the gateway or keygate: the resolution of
/// every measured time where changes take a second or more (renders, file
/// polls).
pub const POLL: Duration = Duration::from_millis(20);
/// The same for keygate reading Vault directly, whose changes land in
/// milliseconds (its targets are 10 and 50 ms): one request is ~2 ms, so
/// this is about back to back.
pub const DIRECT_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Serialize)]
pub struct PropagationResult {
    /// `direct`, `secret-dir (bao agent)`, `keys-file (bao agent)`.
    pub mode: String,
    /// What changed and what was observed.
    pub what: String,
    pub distribution: Option<Distribution>,
    pub samples_ms: Vec<u64>,
    /// The configured intervals that bound it.
    pub intervals: String,
    /// E.g. fewer events in --quick.
    pub note: Option<String>,
}

fn http() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")
}

async fn status_of(http: &reqwest::Client, url: &str, key: &str) -> Result<u16> {
    Ok(http
        .get(url)
        .header("x-api-key", key)
        .send()
        .await
        .with_context(|| format!("GET {url}: the gateway did not answer"))?
        .status()
        .as_u16())
}

/// Polls until `url` answers `want` with `key`; the time since `since`.
async fn until_status(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    want: u16,
    since: Instant,
    deadline: Duration,
    poll: Duration,
) -> Result<Duration> {
    let mut last = 0;
    while since.elapsed() < deadline {
        last = status_of(http, url, key).await?;
        if last == want {
            return Ok(since.elapsed());
        }
        tokio::time::sleep(poll).await;
    }
    bail!(
        "no {want} from {url} within {} of the Vault write; last answer {last}",
        rig::base::progress::secs(deadline)
    )
}

fn direct_intervals(env: &Environment) -> String {
    let invalidation = match &env.cache.invalidation_addr {
        Some(addr) => format!(", invalidation from Vault's socket audit device at {addr}"),
        None => ", no invalidation stream".to_owned(),
    };
    format!(
        "keygate cache positive_ttl {} ms, negative_ttl {} ms{invalidation}; poll {} ms",
        env.cache.positive_ttl_ms,
        env.cache.negative_ttl_ms,
        DIRECT_POLL.as_millis()
    )
}

/// Where API keys are validated and what bounds their propagation.
pub struct KeyPath {
    /// `direct` or `keys-file (bao agent)`.
    pub mode: String,
    /// The gateway URL of the group's path.
    pub url: String,
    pub intervals: String,
    /// How long a cached answer may outlive the change (the cache TTL, the
    /// render interval): revocations are spread over it.
    pub spread: Duration,
    /// How often a waiting event asks (the resolution of its times).
    pub poll: Duration,
}

impl KeyPath {
    /// keygate reading Vault, through the profile's gRPC gateway.
    pub fn direct(env: &Environment, url: String) -> Self {
        Self {
            mode: "direct".into(),
            url,
            intervals: direct_intervals(env),
            spread: Duration::from_millis(env.cache.positive_ttl_ms),
            poll: DIRECT_POLL,
        }
    }

    /// keygate reading the keys files bao agent renders (keys-file mode),
    /// through that side's Envoy; `None` when the profile runs no such side.
    pub fn keys_file(env: &Environment, path: &str) -> Option<Self> {
        let side = env.keys_file.as_ref()?;
        Some(Self {
            mode: "keys-file (bao agent)".into(),
            url: format!("{}{path}", side.gateway_url),
            intervals: format!(
                "bao agent static_secret_render_interval {} ms, keygate keys-file poll {} ms; poll {} ms",
                side.render_interval_ms,
                side.poll_interval_ms,
                POLL.as_millis()
            ),
            spread: Duration::from_millis(side.render_interval_ms + side.poll_interval_ms),
            poll: POLL,
        })
    }
}

/// `events` API keys: each issued (written -> first 200), then all of them
/// in use (cached, where the path caches), then each revoked (deleted ->
/// first 401), the revocations concurrent and spread over `spread`.
pub async fn api_keys(
    at: &KeyPath,
    root: &VaultClient,
    mount: &str,
    group: &str,
    events: usize,
    note: Option<String>,
) -> Result<Vec<PropagationResult>> {
    let http = http()?;
    let poll = at.poll;
    let url = at.url.as_str();
    let deadline = at.spread + Duration::from_secs(10);
    let mut keys = Vec::new();
    let mut issued = Vec::new();
    for _ in 0..events {
        let (written, _) = super::keys::write_keys(root, mount, group, 1).await?;
        let key = written.into_iter().next().context("one key written")?;
        // write_keys timed the write; the effect is timed from its end, a
        // slight undercount of the write's own latency.
        let at = Instant::now();
        let took = until_status(&http, url, &key, 200, at, deadline, poll).await?;
        issued.push(took.as_millis() as u64);
        keys.push(key);
    }
    // Every key answered 200 once. Revoke them spread over the interval.
    let mut tasks = tokio::task::JoinSet::new();
    for (n, key) in keys.into_iter().enumerate() {
        let (http, root, url) = (http.clone(), root.clone(), url.to_owned());
        let (mount, group) = (mount.to_owned(), group.to_owned());
        let offset = at.spread.mul_f64(n as f64 / events.max(1) as f64);
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let selector = &key[..apikey::SELECTOR_LEN];
            // Timed from Vault's answer, like an issued key from its
            // write's: Vault's own latency (its storage, its audit devices)
            // is the same for any validator and is reported beside.
            let sent = Instant::now();
            root.kv2_delete_metadata(&mount, &format!("{group}/{selector}"))
                .await?;
            let at = Instant::now();
            let took = until_status(&http, &url, &key, 401, at, deadline, poll).await?;
            anyhow::Ok((
                took.as_millis() as u64,
                at.duration_since(sent).as_millis() as u64,
            ))
        });
    }
    let mut revoked = Vec::new();
    let mut deletes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (took, delete) = done.context("a revocation task panicked")??;
        revoked.push(took);
        deletes.push(delete);
    }
    let vault_delete = Distribution::of(&deletes).map(|d| {
        format!(
            "Vault's own KV delete (request -> answer, not included): p50 {} ms, p99 {} ms, max {} ms",
            d.p50_ms, d.p99_ms, d.max_ms
        )
    });
    let revoked_note = match (&note, vault_delete) {
        (Some(note), Some(delete)) => Some(format!("{note}; {delete}")),
        (None, delete) => delete,
        (note, None) => note.clone(),
    };
    Ok(vec![
        PropagationResult {
            mode: at.mode.clone(),
            what: "API key revoked (KV delete answered -> first 401)".into(),
            distribution: Distribution::of(&revoked),
            samples_ms: revoked,
            intervals: at.intervals.clone(),
            note: revoked_note,
        },
        PropagationResult {
            mode: at.mode.clone(),
            what: "API key issued (KV write answered -> first 200)".into(),
            distribution: Distribution::of(&issued),
            samples_ms: issued,
            intervals: at.intervals.clone(),
            note,
        },
    ])
}

/// `events` secret-id rotations, one after another, through the run's
/// delivery (the bench runs external-secret: Vault KV -> bao agent ->
/// Secret dir -> keygate's file poll -> login). Each new secret-id is
/// registered in the registry of the run in `run_dir`.
pub async fn secret_id(
    env: &Environment,
    run_dir: &std::path::Path,
    root: &VaultClient,
    events: usize,
    note: Option<String>,
) -> Result<PropagationResult> {
    let d = env
        .delivery
        .as_ref()
        .context("env.json has no delivery: no Secret to rotate")?;
    let http = http()?;
    let render = d.external.as_ref().map_or(0, |e| e.refresh_interval_ms);
    let deadline = Duration::from_millis(render + d.watch_interval_ms) + Duration::from_secs(10);
    let mut samples = Vec::new();
    for _ in 0..events {
        let before = rig::local::delivery::keygate_accessor(&http, &env.keygate_url).await?;
        let new = root.approle_new_secret_id(&d.approle_role).await?;
        rig::base::redact::register_in_run(run_dir, new.secret_id.expose())?;
        let at = rig::local::delivery::deliver_secret_id(root, d, &new.secret_id).await?;
        loop {
            let now = rig::local::delivery::keygate_accessor(&http, &env.keygate_url).await?;
            if now != before {
                samples.push(at.elapsed().as_millis() as u64);
                break;
            }
            if at.elapsed() > deadline {
                bail!(
                    "keygate did not log in with the rotated secret-id within {}",
                    rig::base::progress::secs(deadline)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let mut intervals = format!(
        "keygate credential-file poll {} ms; poll {} ms",
        d.watch_interval_ms,
        POLL.as_millis()
    );
    if let Some(ext) = &d.external {
        intervals = format!(
            "bao agent static_secret_render_interval {} ms, {intervals}",
            ext.refresh_interval_ms
        );
    }
    Ok(PropagationResult {
        mode: format!("secret-dir ({} via bao agent)", d.mode),
        what: "keygate secret-id rotated (KV write -> new token on /readyz)".into(),
        distribution: Distribution::of(&samples),
        samples_ms: samples,
        intervals,
        note,
    })
}
