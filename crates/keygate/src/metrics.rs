//! Prometheus metrics, served as text on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::outcome::Reason;
use crate::protocol::Protocol;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    result: &'static str,
}

/// What a Vault KV read found, for `keygate_vault_reads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadResult {
    Found,
    Absent,
    Error,
}

/// How a Vault login went, for `keygate_vault_logins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Ok,
    /// Vault refused the credentials (or the token is a root token).
    Rejected,
    /// Vault could not be reached, or a secret file could not be read.
    Error,
}

impl LoginResult {
    const ALL: [LoginResult; 3] = [LoginResult::Ok, LoginResult::Rejected, LoginResult::Error];

    fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Rejected => "rejected",
            LoginResult::Error => "error",
        }
    }
}

impl ReadResult {
    fn label(self) -> &'static str {
        match self {
            ReadResult::Found => "found",
            ReadResult::Absent => "absent",
            ReadResult::Error => "error",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    vault_read_seconds: Histogram,
    vault_reads: Family<ReadLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_resurrected: Counter,
    invalidations: Counter,
    invalidation_connections: Gauge,
    invalidation_lines_dropped: Counter,
    invalidation_stale_marks: Counter,
    invalidation_feed_followers: Gauge,
    vault_reads_refused: Counter,
    vault_logins: Family<ReadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        // 1 ms .. ~4 s: a local Vault answers in milliseconds, the timeout
        // is seconds.
        let vault_read_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        let vault_reads = Family::<ReadLabels, Counter>::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let cache_resurrected = Counter::default();
        let invalidations = Counter::default();
        let invalidation_connections = Gauge::default();
        let invalidation_lines_dropped = Counter::default();
        let invalidation_stale_marks = Counter::default();
        let invalidation_feed_followers = Gauge::default();
        let vault_reads_refused = Counter::default();
        let vault_logins = Family::<ReadLabels, Counter>::default();
        // Counters get `_total` appended by the encoder.
        registry.register(
            "keygate_decisions",
            "Validation decisions by outcome and protocol",
            decisions.clone(),
        );
        registry.register(
            "keygate_vault_read_seconds",
            "Time taken by Vault KV reads, including re-login on 403",
            vault_read_seconds.clone(),
        );
        registry.register(
            "keygate_vault_reads",
            "Vault KV reads by result",
            vault_reads.clone(),
        );
        registry.register(
            "keygate_cache_hits",
            "Record lookups answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "keygate_cache_misses",
            "Record lookups that went to Vault",
            cache_misses.clone(),
        );
        registry.register(
            "keygate_cache_resurrected",
            "Record lookups answered with the last good record because Vault could not be read",
            cache_resurrected.clone(),
        );
        registry.register(
            "keygate_invalidations",
            "Keys dropped from the cache because Vault's audit stream showed a write to one of their paths",
            invalidations.clone(),
        );
        registry.register(
            "keygate_invalidation_stream_connected",
            "Audit stream connections open now (Vault's socket audit device); 0: revocation waits for the positive TTL",
            invalidation_connections.clone(),
        );
        registry.register(
            "keygate_invalidation_lines_dropped",
            "Audit lines dropped unread because they came faster than keygate parsed them (or were too long); each drop marks the cache stale",
            invalidation_lines_dropped.clone(),
        );
        registry.register(
            "keygate_invalidation_stale_marks",
            "Times every cached answer was marked stale: an audit stream (re)connected or ended, or a line was dropped",
            invalidation_stale_marks.clone(),
        );
        registry.register(
            "keygate_invalidation_feed_followers",
            "Followers of GET /v1/invalidations connected now (Envoy dynamic modules caching keygate's answers)",
            invalidation_feed_followers.clone(),
        );
        registry.register(
            "keygate_vault_reads_refused",
            "Record reads not sent to Vault because limits.vault_reads were in flight and \
             limits.vault_read_queue waiting (answered 503 vault-busy; also counted as result=error reads)",
            vault_reads_refused.clone(),
        );
        registry.register(
            "keygate_vault_logins",
            "Vault logins (AppRole, or adopting the token file) by result: at start, at two thirds \
             of the token's TTL, after a 403, and when a credential file changes (failures retried \
             with a backoff of up to a minute)",
            vault_logins.clone(),
        );

        // Every series exists from the start, so a rate() over a fresh
        // process sees 0 rather than nothing.
        for protocol in [Protocol::Grpc, Protocol::Http] {
            for outcome in std::iter::once("allow").chain(Reason::ALL.iter().map(|r| r.code())) {
                let _ = decisions.get_or_create(&DecisionLabels {
                    outcome,
                    protocol: protocol.label(),
                });
            }
        }
        for result in [ReadResult::Found, ReadResult::Absent, ReadResult::Error] {
            let _ = vault_reads.get_or_create(&ReadLabels {
                result: result.label(),
            });
        }
        for result in LoginResult::ALL {
            let _ = vault_logins.get_or_create(&ReadLabels {
                result: result.label(),
            });
        }

        Self {
            registry,
            decisions,
            vault_read_seconds,
            vault_reads,
            cache_hits,
            cache_misses,
            cache_resurrected,
            invalidations,
            invalidation_connections,
            invalidation_lines_dropped,
            invalidation_stale_marks,
            invalidation_feed_followers,
            vault_reads_refused,
            vault_logins,
        }
    }

    /// `outcome` is `allow` or a deny reason's code.
    pub fn decision(&self, protocol: Protocol, outcome: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome,
                protocol: protocol.label(),
            })
            .inc();
    }

    pub fn vault_read(&self, result: ReadResult, took: Duration) {
        self.vault_reads
            .get_or_create(&ReadLabels {
                result: result.label(),
            })
            .inc();
        self.vault_read_seconds.observe(took.as_secs_f64());
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn cache_resurrected(&self) {
        self.cache_resurrected.inc();
    }

    pub fn invalidated(&self) {
        self.invalidations.inc();
    }

    /// An audit stream connection opened (`true`) or ended.
    pub fn invalidation_stream(&self, connected: bool) {
        if connected {
            self.invalidation_connections.inc();
        } else {
            self.invalidation_connections.dec();
        }
    }

    pub fn invalidation_line_dropped(&self) {
        self.invalidation_lines_dropped.inc();
    }

    pub fn invalidation_stale_mark(&self) {
        self.invalidation_stale_marks.inc();
    }

    /// A follower of the invalidation feed connected (`true`) or left.
    pub fn invalidation_feed_follower(&self, connected: bool) {
        if connected {
            self.invalidation_feed_followers.inc();
        } else {
            self.invalidation_feed_followers.dec();
        }
    }

    pub fn vault_read_refused(&self) {
        self.vault_reads_refused.inc();
    }

    pub fn vault_login(&self, result: LoginResult) {
        self.vault_logins
            .get_or_create(&ReadLabels {
                result: result.label(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition, which Prometheus scrapes natively.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing metrics to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_series() {
        let metrics = Metrics::new();
        metrics.decision(Protocol::Http, "allow");
        metrics.vault_read(ReadResult::Found, Duration::from_millis(3));
        metrics.cache_hit();
        metrics.cache_miss();
        let text = metrics.encode();
        for line in [
            "keygate_decisions_total{outcome=\"allow\",protocol=\"http\"} 1",
            "keygate_decisions_total{outcome=\"wrong-group\",protocol=\"grpc\"} 0",
            "keygate_decisions_total{outcome=\"vault-unavailable\",protocol=\"http\"} 0",
            "keygate_vault_reads_total{result=\"found\"} 1",
            "keygate_vault_reads_total{result=\"error\"} 0",
            "keygate_vault_read_seconds_count 1",
            "keygate_cache_hits_total 1",
            "keygate_cache_misses_total 1",
            "keygate_invalidations_total 0",
            "keygate_invalidation_stream_connected 0",
            "keygate_invalidation_lines_dropped_total 0",
            "keygate_invalidation_feed_followers 0",
            "keygate_vault_reads_refused_total 0",
            "keygate_vault_logins_total{result=\"ok\"} 0",
            "keygate_vault_logins_total{result=\"rejected\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
