//! The load generator: a fixed number of HTTP/1.1 keep-alive connections
//! (one reqwest client with a one-connection pool per connection, one
//! request in flight on each), bounded by a request count AND a duration,
//! latencies into an HDR histogram. Served as `POST /burst`; the clients
//! live as long as the process, so a connection opened in one burst is
//! reused by the next burst to the same gateway, as before the generator
//! left the xtask process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::sync::Mutex;

use crate::protocol::{BurstReport, BurstSpec, KeySpec, latency_histogram};

/// How the client is described in the bench's output.
pub const CLIENT: &str = "keyrig-bench-peer load-generator (reqwest 0.13 over hyper, HTTP/1.1 keep-alive, one request in flight per connection; its own process, built like the keygate measured)";

/// One client per connection, so the connection count is exact.
fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the load generator's HTTP client")
}

/// The clients, one per connection, grown to the largest burst's count.
#[derive(Default)]
pub struct Generator {
    clients: Vec<reqwest::Client>,
}

impl Generator {
    pub async fn run(&mut self, burst: BurstSpec) -> Result<BurstReport> {
        while self.clients.len() < burst.connections {
            self.clients.push(client()?);
        }
        run(&burst, &self.clients[..burst.connections]).await
    }
}

async fn run(burst: &BurstSpec, clients: &[reqwest::Client]) -> Result<BurstReport> {
    let keys: Arc<Vec<String>> = Arc::new(match &burst.keys {
        KeySpec::One(key) => vec![key.clone()],
        KeySpec::Fresh(keys) | KeySpec::Cycle(keys) => keys.clone(),
    });
    anyhow::ensure!(!keys.is_empty(), "a burst needs at least one key");
    let fresh = matches!(burst.keys, KeySpec::Fresh(_));
    let started = Instant::now();
    let deadline = started + burst.max_time();
    let issued = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (client, url, keys, issued, next) = (
            client.clone(),
            burst.url.clone(),
            keys.clone(),
            issued.clone(),
            next.clone(),
        );
        let max_requests = burst.max_requests;
        tasks.spawn(async move {
            let mut h = latency_histogram();
            let (mut ok, mut failed, mut last_failure) = (0u64, 0u64, None);
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_requests
            {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let key: &str = if fresh {
                    match keys.get(n) {
                        Some(key) => key,
                        None => break,
                    }
                } else {
                    &keys[n % keys.len()]
                };
                let sent = Instant::now();
                let answer = client.get(&url).header("x-api-key", key).send().await;
                let status = match answer {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // Read the body so the connection is reused.
                        let _ = response.bytes().await;
                        Ok(status)
                    }
                    Err(err) => Err(describe(&err)),
                };
                let us = sent.elapsed().as_micros().max(1) as u64;
                let _ = h.record(us.min(h.high()));
                match status {
                    Ok(200) => ok += 1,
                    Ok(other) => {
                        failed += 1;
                        last_failure = Some(format!("HTTP {other}"));
                    }
                    Err(err) => {
                        failed += 1;
                        last_failure = Some(err);
                    }
                }
            }
            (h, ok, failed, last_failure)
        });
    }
    let mut latencies = latency_histogram();
    let (mut ok, mut failed, mut last_failure) = (0, 0, None);
    while let Some(joined) = tasks.join_next().await {
        let (h, o, f, last) = joined.context("a load generator task panicked")?;
        latencies.add(&h).context("merging latency histograms")?;
        ok += o;
        failed += f;
        if last.is_some() {
            last_failure = last;
        }
    }
    let elapsed = started.elapsed();
    Ok(BurstReport {
        ok,
        failed,
        elapsed_us: elapsed.as_micros() as u64,
        last_failure,
        latency_counts: BurstReport::counts_of(&latencies),
        keys_used: if fresh {
            next.load(Ordering::Relaxed).min(keys.len())
        } else {
            0
        },
    })
}

/// A transport error as one line: the innermost cause (reqwest's own text
/// names only the URL, which carries no key). The same as rig's
/// `describe_request_error`, which this crate cannot use: it builds
/// without any workspace crate.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "no answer (timeout)".into();
    }
    let mut source: Option<&dyn std::error::Error> = Some(err);
    let mut deepest = err.to_string();
    while let Some(current) = source {
        deepest = current.to_string();
        source = current.source();
    }
    deepest.to_lowercase()
}

/// The largest burst description accepted.
const MAX_BURST_BYTES: usize = 256 << 20;

/// Serves `POST /burst` (one burst at a time: the bench runs them in
/// turn) and `GET /healthz`.
pub async fn serve(listen: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("bench load generator listening on http://{listen}");
    let generator = Arc::new(Mutex::new(Generator::default()));
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(async || "ok"))
        .route("/burst", axum::routing::post(burst))
        // A burst may carry every key of the bench's scale step (100 000
        // keys, ~7 MB of JSON); axum's default limit is 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BURST_BYTES))
        .with_state(generator);
    axum::serve(listener, app)
        .await
        .context("serving the bench load generator")
}

async fn burst(
    State(generator): State<Arc<Mutex<Generator>>>,
    Json(spec): Json<BurstSpec>,
) -> Result<Json<BurstReport>, (StatusCode, String)> {
    let mut generator = generator.lock().await;
    generator
        .run(spec)
        .await
        .map(Json)
        .map_err(|err| (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")))
}
