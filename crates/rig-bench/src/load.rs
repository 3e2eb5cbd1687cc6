//! The load generator: a fixed number of HTTP/1.1 keep-alive connections
//! (one reqwest client with a one-connection pool per connection, one
//! request in flight on each), bounded by a request count AND a duration,
//! latencies into an HDR histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

/// How the client is described in the output.
// The value bench.json has always recorded (it names the load generator,
// now crate rig-bench, module load); kept so reports stay comparable.
pub const CLIENT: &str = "rig::bench::load (reqwest 0.13 over hyper, HTTP/1.1 keep-alive, one request in flight per connection)";

/// Which API key each request carries.
#[derive(Clone)]
pub enum Keys {
    /// The same key on every request (warm cache).
    One(Arc<str>),
    /// The next unused key of a shared pool on every request (cold cache:
    /// each a first sight for keygate, so a Vault read). The run stops
    /// early when the pool runs out.
    Fresh {
        pool: Arc<Vec<String>>,
        next: Arc<AtomicUsize>,
    },
    /// A key drawn from the pool, round robin (a cache holding the pool).
    Cycle(Arc<Vec<String>>),
}

/// One bounded burst of load.
pub struct Burst<'a> {
    pub url: &'a str,
    pub keys: Keys,
    pub connections: usize,
    pub max_requests: u64,
    pub max_time: Duration,
}

/// What a burst measured.
pub struct Outcome {
    pub latencies_us: Histogram<u64>,
    pub ok: u64,
    /// Answers other than 200, and transport errors.
    pub failed: u64,
    pub elapsed: Duration,
    /// The last failure seen (status or error), for the output.
    pub last_failure: Option<String>,
}

impl Outcome {
    pub fn requests(&self) -> u64 {
        self.ok + self.failed
    }
}

/// One client per connection, so the connection count is exact.
pub fn clients(connections: usize) -> Result<Vec<reqwest::Client>> {
    (0..connections)
        .map(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .http1_only()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()
                .context("building the load generator's HTTP client")
        })
        .collect()
}

pub async fn run(burst: Burst<'_>, clients: &[reqwest::Client]) -> Result<Outcome> {
    let started = Instant::now();
    let deadline = started + burst.max_time;
    let issued = Arc::new(AtomicU64::new(0));
    let cycle = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients.iter().take(burst.connections) {
        let client = client.clone();
        let (url, keys, issued, cycle) = (
            burst.url.to_owned(),
            burst.keys.clone(),
            issued.clone(),
            cycle.clone(),
        );
        let max_requests = burst.max_requests;
        tasks.spawn(async move {
            let mut h = super::stats::latency_histogram();
            let (mut ok, mut failed, mut last_failure) = (0u64, 0u64, None);
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_requests
            {
                let key: &str = match &keys {
                    Keys::One(key) => key,
                    Keys::Fresh { pool, next } => {
                        match pool.get(next.fetch_add(1, Ordering::Relaxed)) {
                            Some(key) => key,
                            None => break,
                        }
                    }
                    Keys::Cycle(pool) => &pool[cycle.fetch_add(1, Ordering::Relaxed) % pool.len()],
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
                    Err(err) => Err(rig::process::supervisor::describe_request_error(&err)),
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
    let mut out = Outcome {
        latencies_us: super::stats::latency_histogram(),
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        last_failure: None,
    };
    while let Some(joined) = tasks.join_next().await {
        let (h, ok, failed, last) = joined.context("a load generator task panicked")?;
        out.latencies_us
            .add(&h)
            .context("merging latency histograms")?;
        out.ok += ok;
        out.failed += failed;
        if last.is_some() {
            out.last_failure = last;
        }
    }
    out.elapsed = started.elapsed();
    Ok(out)
}
