//! What the bench sends the load generator (`POST /burst`, JSON) and what
//! it answers. The API keys travel in the request body over loopback,
//! never on a command line; nothing here derives `Debug`, so no key can
//! reach a log through a `{:?}`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies in microseconds, 3 significant digits, up to 60 s.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One bounded burst of load.
#[derive(Serialize, Deserialize)]
pub struct BurstSpec {
    pub url: String,
    pub keys: KeySpec,
    /// Connections (one request in flight on each).
    pub connections: usize,
    /// Stops after this many requests ...
    pub max_requests: u64,
    /// ... or this long, whichever comes first.
    pub max_time_ms: u64,
    /// Open loop: requests per second, whatever the answers. Request `i`
    /// is due at the burst's start + `i / rate` (those due within
    /// `max_time_ms`, at most `max_requests`), taken by the first free
    /// connection (it waits for one when all are busy), and its latency is
    /// measured from when it was due, not from when it went out: a stall
    /// of the gateway delays every request due behind it, and those waits
    /// are in the tail ([`BurstReport::late`] counts the requests that went
    /// out late). Absent: closed loop, every connection as fast as it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
}

impl BurstSpec {
    pub fn max_time(&self) -> Duration {
        Duration::from_millis(self.max_time_ms)
    }
}

/// A request of an open-loop burst that goes out later than this after
/// it was due counts as late ([`BurstReport::late`]).
pub const LATE_AFTER: Duration = Duration::from_millis(1);

/// Which API key each request carries.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySpec {
    /// The same key on every request (a warm cache).
    One(String),
    /// Each request the next unused key of these (a cold cache: each a
    /// first sight for the validator); the burst ends early when they run
    /// out. [`BurstReport::keys_used`] says how many it took.
    Fresh(Vec<String>),
    /// The keys round robin (a cache that holds them all).
    Cycle(Vec<String>),
}

/// What a burst measured.
#[derive(Serialize, Deserialize)]
pub struct BurstReport {
    /// 200 answers.
    pub ok: u64,
    /// Answers other than 200, and transport errors.
    pub failed: u64,
    pub elapsed_us: u64,
    /// The last failure seen (status or error).
    pub last_failure: Option<String>,
    /// The latency histogram as (value µs, count) pairs of its recorded
    /// buckets: [`BurstReport::latencies`] rebuilds it.
    pub latency_counts: Vec<(u64, u64)>,
    /// How many keys of a [`KeySpec::Fresh`] list the burst took.
    pub keys_used: usize,
    /// Open loop only: the requests that went out more than
    /// [`LATE_AFTER`] after they were due (every connection busy, or the
    /// generator itself behind). Many of them: the rate was not held, and
    /// the latencies include that wait.
    #[serde(default)]
    pub late: u64,
    /// Of [`BurstReport::late`], those the generator's pacing thread
    /// itself handed over late (the machine did not run it in time), as
    /// against those that waited for a free connection.
    #[serde(default)]
    pub late_pacing: u64,
    /// Open loop only: the latest a request went out after it was due, µs.
    #[serde(default)]
    pub max_late_us: u64,
}

impl BurstReport {
    pub fn latencies(&self) -> anyhow::Result<Histogram<u64>> {
        let mut h = latency_histogram();
        for &(value, count) in &self.latency_counts {
            h.record_n(value, count)?;
        }
        Ok(h)
    }

    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.elapsed_us)
    }

    /// The pairs [`BurstReport::latency_counts`] holds for `h`.
    pub fn counts_of(h: &Histogram<u64>) -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_survives_the_trip() {
        let mut h = latency_histogram();
        for us in [1, 90, 90, 1_234, 56_789, 3_000_000] {
            h.record(us).unwrap();
        }
        let report = BurstReport {
            ok: 6,
            failed: 0,
            elapsed_us: 10,
            last_failure: None,
            latency_counts: BurstReport::counts_of(&h),
            keys_used: 0,
            late: 2,
            late_pacing: 1,
            max_late_us: 1_500,
        };
        let text = serde_json::to_string(&report).unwrap();
        let back: BurstReport = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (back.late, back.late_pacing, back.max_late_us),
            (2, 1, 1_500)
        );
        let rebuilt = back.latencies().unwrap();
        assert_eq!(rebuilt.len(), h.len());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                rebuilt.value_at_quantile(q),
                h.value_at_quantile(q),
                "q {q}"
            );
        }
    }

    #[test]
    fn a_spec_without_a_rate_is_closed_loop() {
        let text = r#"{"url":"http://x/","keys":{"one":"k"},"connections":1,"max_requests":1,"max_time_ms":1}"#;
        let spec: BurstSpec = serde_json::from_str(text).unwrap();
        assert!(spec.rate_per_s.is_none());
        // And none is written for one without.
        assert!(!serde_json::to_string(&spec).unwrap().contains("rate"));
        let text = r#"{"url":"http://x/","keys":{"one":"k"},"connections":1,"max_requests":1,"max_time_ms":1,"rate_per_s":250.0}"#;
        let spec: BurstSpec = serde_json::from_str(text).unwrap();
        assert_eq!(spec.rate_per_s, Some(250.0));
    }
}
