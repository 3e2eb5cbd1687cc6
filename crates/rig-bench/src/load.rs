//! Load through the bench peer's load generator (`crates/bench-peer`,
//! `keyrig-bench-peer load-generator`): a process of its own, built like the
//! keygate it measures, started under the run's Supervisor. Here: the
//! bench's side of it, bursts described as before (a request count AND a
//! duration, which key each request carries) and posted to it one at a
//! time; what it measured comes back as an HDR histogram.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bench_peer::protocol::{BurstReport, BurstSpec, KeySpec};
use hdrhistogram::Histogram;
use rig::base::run::RunDir;
use rig::process::supervisor::{Component, Readiness, Supervisor};

/// How the client is described in the output.
pub const CLIENT: &str = bench_peer::load::CLIENT;

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
    /// Open loop at this many requests per second (latencies from when
    /// each request was due); `None`: closed loop, as fast as it goes.
    pub rate: Option<f64>,
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
    /// Open loop only: requests that went out more than
    /// `bench_peer::protocol::LATE_AFTER` after they were due.
    pub late: u64,
    /// Of those, the ones the generator's pacing thread handed over late.
    pub late_pacing: u64,
    /// Open loop only: the latest one went out after it was due.
    pub max_late: Duration,
}

impl Outcome {
    pub fn requests(&self) -> u64 {
        self.ok + self.failed
    }

    /// Answers 200 per second over the burst's time. A failed request is
    /// no throughput: a gateway answering a fast 403 to everything would
    /// otherwise look fast. (Every variant expects 200; a burst with
    /// failures is also named in `left_out` and fails the bench.)
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The running load generator.
pub struct LoadGenerator {
    url: String,
    http: reqwest::Client,
}

impl LoadGenerator {
    /// Starts `peer load-generator --listen <listen>` as component `name`
    /// (readiness `GET /healthz`, its log under the run).
    pub async fn start(
        name: &str,
        peer: &Path,
        listen: SocketAddr,
        run: &RunDir,
        supervisor: &mut Supervisor,
    ) -> Result<Self> {
        let url = format!("http://{listen}");
        supervisor
            .start(
                Component::new(name, peer)
                    .args(["load-generator", "--listen", &listen.to_string()])
                    .current_dir(run.path()),
                Readiness::http(format!("{url}/healthz"), 200),
            )
            .await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the client for the load generator")?;
        Ok(Self { url, http })
    }

    /// Runs one burst and waits for what it measured.
    pub async fn run(&self, burst: Burst<'_>) -> Result<Outcome> {
        let (keys, fresh) = match &burst.keys {
            Keys::One(key) => (KeySpec::One(key.to_string()), None),
            Keys::Cycle(pool) => (KeySpec::Cycle(pool.to_vec()), None),
            Keys::Fresh { pool, next } => {
                // No more than the burst can take: the rest stay unused
                // for the rounds after it.
                let from = next.load(Ordering::Relaxed).min(pool.len());
                let to = from
                    .saturating_add(usize::try_from(burst.max_requests).unwrap_or(usize::MAX))
                    .min(pool.len());
                (KeySpec::Fresh(pool[from..to].to_vec()), Some(next))
            }
        };
        let spec = BurstSpec {
            url: burst.url.to_owned(),
            keys,
            connections: burst.connections,
            max_requests: burst.max_requests,
            max_time_ms: burst.max_time.as_millis() as u64,
            rate_per_s: burst.rate,
        };
        if matches!(&spec.keys, KeySpec::Fresh(k) if k.is_empty()) {
            // The pool is spent: nothing to send, as the in-process
            // generator's tasks stopped at once.
            return Ok(Outcome {
                latencies_us: bench_peer::protocol::latency_histogram(),
                ok: 0,
                failed: 0,
                elapsed: Duration::ZERO,
                last_failure: None,
                late: 0,
                late_pacing: 0,
                max_late: Duration::ZERO,
            });
        }
        // An open-loop burst may run up to twice its window (at least a
        // second over) to send what was due within it.
        let response = self
            .http
            .post(format!("{}/burst", self.url))
            .json(&spec)
            .timeout(2 * burst.max_time + Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("posting a burst to the load generator at {}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("the load generator answered {status}: {text}");
        }
        let report: BurstReport = response
            .json()
            .await
            .context("reading the load generator's report")?;
        if let Some(next) = fresh {
            next.fetch_add(report.keys_used, Ordering::Relaxed);
        }
        Ok(Outcome {
            latencies_us: report.latencies()?,
            ok: report.ok,
            failed: report.failed,
            elapsed: report.elapsed(),
            last_failure: report.last_failure,
            late: report.late,
            late_pacing: report.late_pacing,
            max_late: Duration::from_micros(report.max_late_us),
        })
    }
}
