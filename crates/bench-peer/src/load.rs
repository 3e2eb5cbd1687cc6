//! The load generator: a fixed number of HTTP/1.1 keep-alive connections
//! (one reqwest client with a one-connection pool per connection, one
//! request in flight on each), bounded by a request count AND a duration,
//! latencies into an HDR histogram. Closed loop (each connection as fast
//! as answers come) or, with a rate, open loop (requests due on a fixed
//! schedule, latencies from when each was due). Served as `POST /burst`; the clients
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

use hdrhistogram::Histogram;

use crate::protocol::{BurstReport, BurstSpec, KeySpec, LATE_AFTER, latency_histogram};

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
    match burst.rate_per_s {
        None => closed_loop(burst, clients, keys).await,
        Some(rate) => {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "a burst's rate must be a positive number of requests per second"
            );
            open_loop(burst, clients, keys, rate).await
        }
    }
}

/// Sends one request and reads its answer: the status, or the transport
/// error as one line.
async fn send_one(client: &reqwest::Client, url: &str, key: &str) -> Result<u16, String> {
    match client.get(url).header("x-api-key", key).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the body so the connection is reused.
            let _ = response.bytes().await;
            Ok(status)
        }
        Err(err) => Err(describe(&err)),
    }
}

/// What one connection's task counted.
struct Tally {
    latencies: Histogram<u64>,
    ok: u64,
    failed: u64,
    last_failure: Option<String>,
    late: u64,
    /// Of those, the ones the pacer itself handed over late.
    late_pacing: u64,
    max_late: Duration,
}

impl Tally {
    fn new() -> Self {
        Self {
            latencies: latency_histogram(),
            ok: 0,
            failed: 0,
            last_failure: None,
            late: 0,
            late_pacing: 0,
            max_late: Duration::ZERO,
        }
    }

    fn record(&mut self, latency: Duration, status: Result<u16, String>) {
        let us = latency.as_micros().max(1) as u64;
        let _ = self.latencies.record(us.min(self.latencies.high()));
        match status {
            Ok(200) => self.ok += 1,
            Ok(other) => {
                self.failed += 1;
                self.last_failure = Some(format!("HTTP {other}"));
            }
            Err(err) => {
                self.failed += 1;
                self.last_failure = Some(err);
            }
        }
    }

    /// The connections' tallies as one report.
    async fn merge(
        mut tasks: tokio::task::JoinSet<Tally>,
        started: Instant,
        keys_used: usize,
    ) -> Result<BurstReport> {
        let mut all = Tally::new();
        while let Some(joined) = tasks.join_next().await {
            let t = joined.context("a load generator task panicked")?;
            all.latencies
                .add(&t.latencies)
                .context("merging latency histograms")?;
            all.ok += t.ok;
            all.failed += t.failed;
            if t.last_failure.is_some() {
                all.last_failure = t.last_failure;
            }
            all.late += t.late;
            all.late_pacing += t.late_pacing;
            all.max_late = all.max_late.max(t.max_late);
        }
        Ok(BurstReport {
            ok: all.ok,
            failed: all.failed,
            elapsed_us: started.elapsed().as_micros() as u64,
            last_failure: all.last_failure,
            latency_counts: BurstReport::counts_of(&all.latencies),
            keys_used,
            late: all.late,
            late_pacing: all.late_pacing,
            max_late_us: all.max_late.as_micros() as u64,
        })
    }
}

/// Closed loop: each connection sends its next request when the last one
/// is answered, until the count or the window is spent; a latency is from
/// send to answer.
async fn closed_loop(
    burst: &BurstSpec,
    clients: &[reqwest::Client],
    keys: Arc<Vec<String>>,
) -> Result<BurstReport> {
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
            let mut tally = Tally::new();
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
                let status = send_one(&client, &url, key).await;
                tally.record(sent.elapsed(), status);
            }
            tally
        });
    }
    // `merge` waits for every task, so `next` is final after it.
    let report = Tally::merge(tasks, started, 0).await?;
    let keys_used = if fresh {
        next.load(Ordering::Relaxed).min(keys.len())
    } else {
        0
    };
    Ok(BurstReport {
        keys_used,
        ..report
    })
}

/// How far past its window an open-loop burst may run to send what was
/// due within it, at least: requests due but not sent by then are failures.
const MIN_OVERRUN: Duration = Duration::from_secs(1);

/// Open loop at `rate` requests per second: request `i` is due at
/// `t0 + i / rate`. A pacing thread (a plain thread's sleep wakes within
/// tens of microseconds; tokio's timer has a millisecond's granularity,
/// which would add up to 1 ms to every latency) hands each index over
/// when it is due; the first free connection takes it, so when every
/// connection is busy it waits in the queue, and its latency, from when
/// it was due, includes that wait. Requests still unsent a window (at
/// least [`MIN_OVERRUN`]) after the window are counted failed, unsent.
async fn open_loop(
    burst: &BurstSpec,
    clients: &[reqwest::Client],
    keys: Arc<Vec<String>>,
    rate: f64,
) -> Result<BurstReport> {
    let fresh = matches!(burst.keys, KeySpec::Fresh(_));
    let window = burst.max_time();
    // Those due within the window: i / rate < window.
    let mut due = ((window.as_secs_f64() * rate).ceil() as u64).min(burst.max_requests);
    if fresh {
        due = due.min(keys.len() as u64);
    }
    let started = Instant::now();
    let t0 = started;
    let due_at = move |i: u64| t0 + Duration::from_secs_f64(i as f64 / rate);
    let cutoff = t0 + window + window.max(MIN_OVERRUN);
    // Each due request's index, and when the pacer handed it over.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            for i in 0..due {
                let at = due_at(i);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                // The burst is gone (its request was dropped): stop.
                if tx.send((i, Instant::now())).is_err() {
                    break;
                }
            }
        })
        .context("starting the load generator's pacing thread")?;
    let queue = Arc::new(Mutex::new(rx));
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (client, url, keys, queue) = (
            client.clone(),
            burst.url.clone(),
            keys.clone(),
            queue.clone(),
        );
        tasks.spawn(async move {
            let mut tally = Tally::new();
            let mut unsent = 0u64;
            loop {
                // The lock is held while waiting: free connections queue
                // for it in turn (tokio's Mutex is fair), a busy one not.
                let Some((i, handed)) = queue.lock().await.recv().await else {
                    break;
                };
                let due = due_at(i);
                let now = Instant::now();
                if now > cutoff {
                    unsent += 1;
                    continue;
                }
                let behind = now.saturating_duration_since(due);
                if behind > LATE_AFTER {
                    tally.late += 1;
                    if handed.saturating_duration_since(due) > LATE_AFTER {
                        tally.late_pacing += 1;
                    }
                }
                tally.max_late = tally.max_late.max(behind);
                let key = &keys[i as usize % keys.len()];
                let status = send_one(&client, &url, key).await;
                tally.record(due.elapsed(), status);
            }
            if unsent > 0 {
                tally.failed += unsent;
                tally.last_failure = Some(format!(
                    "{unsent} requests due within the window not sent: the burst fell too far behind its schedule"
                ));
            }
            tally
        });
    }
    Tally::merge(tasks, started, if fresh { due as usize } else { 0 }).await
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
