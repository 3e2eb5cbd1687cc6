//! The validation algorithm: one [`Outcome`] per request, whatever the
//! protocol. `grpc` and `http` only translate requests in and outcomes out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apikey::{ApiKey, Decision, Selector, storage_path};
use log_throttle::{Admit, Throttle};
use time::OffsetDateTime;
use tracing::{debug, warn};

use crate::cache::RecordCache;
use crate::metrics::Metrics;
use crate::outcome::{Outcome, Reason};
use crate::protocol::Protocol;
use crate::routes::Routes;
use crate::vault::VaultError;

pub use keygate_config::forward_auth::Presented;

pub struct Validator {
    routes: Routes,
    records: RecordCache,
    metrics: Arc<Metrics>,
    kv_mount: String,
    upstream_headers: Option<Arc<crate::refs::UpstreamHeaders>>,
    warnings: RequestWarnings,
}

/// At most one line per this long for each warning that can come once per
/// request.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Warnings a request can cause, throttled per kind and API group: during
/// a Vault outage every request that misses the cache fails its read, and
/// a line each would flood the log (and whatever ships it) at the request
/// rate. Per group, so a busy group's warnings never hide another group's.
/// Groups come from the configured routes, so the map stays small. The
/// written line carries `left_out`, the count since the one before;
/// `keygate_decisions_total` counts every outcome.
#[derive(Default)]
struct RequestWarnings {
    throttles: std::sync::Mutex<HashMap<(Warning, String), Arc<Throttle>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Warning {
    VaultForbidden,
    VaultUnavailable,
    VaultMisconfigured,
    CorruptRecord,
}

impl Warning {
    /// What the left-out warnings were, for their closing line.
    fn what(self) -> &'static str {
        match self {
            Warning::VaultForbidden => "Vault refused keygate the key record",
            Warning::VaultUnavailable => "keygate could not read the key record from Vault",
            Warning::VaultMisconfigured => {
                "Vault's answer showed keygate's Vault settings do not fit it"
            }
            Warning::CorruptRecord => "the key record in Vault was corrupt",
        }
    }
}

impl RequestWarnings {
    /// The count of warnings left out before this one, if a warning of
    /// `kind` for `group` gets its line now.
    fn admitted(&self, kind: Warning, group: &str) -> Option<u64> {
        let throttle = self
            .throttles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((kind, group.to_owned()))
            .or_insert_with(|| Arc::new(Throttle::new(WARN_EVERY)))
            .clone();
        match throttle.admit(Instant::now()) {
            Admit::Write { left_out } => Some(left_out),
            Admit::Skip => None,
        }
    }

    /// Each kind and group whose left-out warnings no line has counted
    /// although the last line is `WARN_EVERY` old, with that count.
    fn overdue(&self, now: Instant) -> Vec<(Warning, String, u64)> {
        let throttles: Vec<_> = self
            .throttles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((kind, group), throttle)| (*kind, group.clone(), throttle.clone()))
            .collect();
        throttles
            .into_iter()
            .filter_map(|(kind, group, throttle)| {
                throttle
                    .overdue(now)
                    .map(|left_out| (kind, group, left_out))
            })
            .collect()
    }
}

impl Validator {
    pub fn new(
        routes: Routes,
        records: RecordCache,
        metrics: Arc<Metrics>,
        kv_mount: impl Into<String>,
    ) -> Self {
        Self {
            routes,
            records,
            metrics,
            kv_mount: kv_mount.into(),
            upstream_headers: None,
            warnings: RequestWarnings::default(),
        }
    }

    /// Writes the counts of throttled warnings that no later warning came to
    /// carry (the last seconds of an outage): call every [`WARN_EVERY`].
    pub fn write_overdue_warnings(&self) {
        for (kind, group, left_out) in self.warnings.overdue(Instant::now()) {
            warn!(
                group,
                left_out,
                "{} for {left_out} more request{} since the last such line (at most one line per {} s)",
                kind.what(),
                if left_out == 1 { "" } else { "s" },
                WARN_EVERY.as_secs()
            );
        }
    }

    /// Headers (values or secret references) added to every allowed request.
    pub fn with_upstream_headers(mut self, headers: Arc<crate::refs::UpstreamHeaders>) -> Self {
        self.upstream_headers = Some(headers);
        self
    }

    /// The configured upstream headers, references resolved now.
    pub async fn upstream_headers(&self) -> Vec<(String, String)> {
        match &self.upstream_headers {
            Some(headers) => headers.resolve().await,
            None => Vec::new(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where the record cache publishes its invalidations (`None` in
    /// keys-file mode, which caches nothing).
    pub fn invalidation_feed(&self) -> Option<&crate::feed::Feed> {
        self.records.feed()
    }

    /// Decides one request, counts it and logs it (selector, never the key).
    pub async fn decide(
        &self,
        protocol: Protocol,
        path: &str,
        presented: Presented<'_>,
    ) -> Outcome {
        let (outcome, group, selector) = self.evaluate(path, presented).await;
        self.metrics.decision(protocol, outcome.code());
        debug!(
            protocol = protocol.label(),
            group = group.unwrap_or("-"),
            selector = selector.as_ref().map_or("-", Selector::as_str),
            outcome = outcome.code(),
            "decision"
        );
        outcome
    }

    async fn evaluate<'s>(
        &'s self,
        path: &str,
        presented: Presented<'_>,
    ) -> (Outcome, Option<&'s str>, Option<Selector>) {
        let group = match self.routes.resolve(path) {
            Ok(group) => group,
            Err(why) => {
                debug!(?why, "request path matches no declared route");
                return (Outcome::Deny(Reason::NoRoute), None, None);
            }
        };
        let deny = |reason| (Outcome::Deny(reason), Some(group), None);
        let text = match presented {
            Presented::Missing => return deny(Reason::Missing),
            Presented::Many => return deny(Reason::Malformed),
            Presented::One(text) => text,
        };
        // A malformed key never reaches Vault: it cannot exist there, and
        // garbage should not cost a read.
        let Ok(key) = ApiKey::parse(text) else {
            return deny(Reason::Malformed);
        };
        let selector = key.selector();
        let outcome = self.check(group, &key, &selector).await;
        (outcome, Some(group), Some(selector))
    }

    async fn check(&self, group: &str, key: &ApiKey, selector: &Selector) -> Outcome {
        let record = match self.records.get(group, selector).await {
            Ok(record) => record,
            Err(err) if err.is_misconfiguration() => {
                if let Some(left_out) = self.warnings.admitted(Warning::VaultMisconfigured, group) {
                    warn!(group, %selector, error = %err, left_out,
                        "keygate cannot read key records from Vault as configured; denying with 503 vault-misconfigured, not as unknown keys (at most one line per {} s, left_out says how many were not written)",
                        WARN_EVERY.as_secs());
                }
                return Outcome::Deny(Reason::VaultMisconfigured);
            }
            Err(err) if err.is_refusal() => {
                if let Some(left_out) = self.warnings.admitted(Warning::VaultForbidden, group) {
                    warn!(group, %selector, error = %err, left_out,
                        "Vault refuses keygate the key record; denying (at most one line per {} s, left_out says how many were not written)",
                        WARN_EVERY.as_secs());
                }
                return Outcome::Deny(Reason::VaultForbidden);
            }
            Err(err) if matches!(*err, VaultError::Busy { .. }) => {
                debug!(group, %selector, error = %err, "Vault read refused by limits; denying");
                return Outcome::Deny(Reason::VaultBusy);
            }
            Err(err) => {
                if let Some(left_out) = self.warnings.admitted(Warning::VaultUnavailable, group) {
                    warn!(group, %selector, error = %err, left_out,
                        "cannot read the key record from Vault; denying (at most one line per {} s, left_out says how many were not written)",
                        WARN_EVERY.as_secs());
                }
                return Outcome::Deny(Reason::VaultUnavailable);
            }
        };
        let Some(record) = record else {
            return Outcome::Deny(if self.cached_elsewhere(group, key, selector).await {
                Reason::WrongGroup
            } else {
                Reason::Unknown
            });
        };
        match record.check(key, OffsetDateTime::now_utc()) {
            // The owner is passed upstream in a header, where control
            // characters could split or forge headers.
            Decision::Valid if record.owner.chars().any(char::is_control) => {
                if let Some(left_out) = self.warnings.admitted(Warning::CorruptRecord, group) {
                    warn!(
                        path = %storage_path(&self.kv_mount, group, selector),
                        left_out,
                        "the key record in Vault is corrupt (its `owner` holds control characters); fix it"
                    );
                }
                Outcome::Deny(Reason::CorruptRecord)
            }
            Decision::Valid => Outcome::Allow {
                owner: record.owner.to_string(),
                group: group.to_owned(),
                expires: record.expires,
            },
            Decision::Mismatch => Outcome::Deny(Reason::Mismatch),
            Decision::Expired => Outcome::Deny(Reason::Expired),
            Decision::CorruptRecord => {
                if let Some(left_out) = self.warnings.admitted(Warning::CorruptRecord, group) {
                    warn!(
                        path = %storage_path(&self.kv_mount, group, selector),
                        left_out,
                        "the key record in Vault is corrupt (no `key`, or not a SHA-256 in hex); fix or delete it"
                    );
                }
                Outcome::Deny(Reason::CorruptRecord)
            }
        }
    }

    /// Whether the key is a real key of another configured group, so the
    /// caller can be told `wrong-group` instead of `unknown`. Only records
    /// already held are looked at, never Vault: the request has had its one
    /// read (its own group's), and reading every other group for each
    /// unknown selector would let a keyless flood multiply Vault's load by
    /// the number of groups. So a key is `wrong-group` once it has been
    /// used on its own group within the positive TTL, else `unknown`; both
    /// are denials, so the difference is only in what the caller is told.
    async fn cached_elsewhere(&self, group: &str, key: &ApiKey, selector: &Selector) -> bool {
        for other in self.routes.groups().iter().filter(|g| *g != group) {
            if let Some(record) = self.records.cached(other, selector).await
                && record.hash().is_some_and(|hash| key.verify(hash))
            {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use apikey::KeyRecord;
    use rstest::rstest;
    use time::macros::datetime;

    use super::*;
    use crate::cache::tests::FakeSource;
    use crate::config::CacheConfig;

    const DOCS: [(&str, &str, bool); 2] = [
        (
            "a.yaml",
            "groupId: animals\nservers: [{url: /animals}]\npaths: {'/pets/{id}': {}}\n",
            false,
        ),
        (
            "b.yaml",
            "groupId: billing\nservers: [{url: /billing}]\npaths: {/invoices: {}}\n",
            false,
        ),
    ];

    struct Fixture {
        source: Arc<FakeSource>,
        validator: Validator,
    }

    fn fixture() -> Fixture {
        let source = Arc::new(FakeSource::default());
        let routes = Routes::from_documents(DOCS).unwrap();
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            resurrect_ttl: Duration::ZERO,
        };
        let metrics = Arc::new(Metrics::new());
        let records = RecordCache::new(source.clone(), config, metrics.clone());
        Fixture {
            source,
            validator: Validator::new(routes, records, metrics, "api-portal-keys"),
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Stored {
        Nothing,
        Valid,
        OtherKey,
        Expired,
        Corrupt,
        ControlCharOwner,
        InOtherGroup,
        OtherKeyInOtherGroup,
    }

    #[rstest]
    #[case::allow(Stored::Valid, None)]
    #[case::unknown(Stored::Nothing, Some(Reason::Unknown))]
    #[case::mismatch(Stored::OtherKey, Some(Reason::Mismatch))]
    #[case::expired(Stored::Expired, Some(Reason::Expired))]
    #[case::corrupt(Stored::Corrupt, Some(Reason::CorruptRecord))]
    #[case::owner_with_newline(Stored::ControlCharOwner, Some(Reason::CorruptRecord))]
    #[case::wrong_group(Stored::InOtherGroup, Some(Reason::WrongGroup))]
    #[case::unknown_when_other_group_has_another_key(
        Stored::OtherKeyInOtherGroup,
        Some(Reason::Unknown)
    )]
    #[tokio::test]
    async fn records_map_to_outcomes(#[case] stored: Stored, #[case] expected: Option<Reason>) {
        let f = fixture();
        let key = ApiKey::generate();
        let other = ApiKey::generate();
        let record = KeyRecord::for_key(&key, "user-1");
        // `other`'s hash under `key`'s selector: same selector, wrong verifier.
        let other_hash = KeyRecord {
            key: other.verifier_hash().to_hex(),
            ..record.clone()
        };
        match stored {
            Stored::Nothing => {}
            Stored::Valid => f.source.put("billing", &key, record),
            Stored::OtherKey => f.source.put("billing", &key, other_hash),
            Stored::Expired => f.source.put(
                "billing",
                &key,
                record.with_expiry(datetime!(2020-01-01 0:00 UTC)),
            ),
            Stored::Corrupt => f.source.put(
                "billing",
                &key,
                KeyRecord {
                    key: "nope".into(),
                    ..record
                },
            ),
            Stored::ControlCharOwner => f.source.put(
                "billing",
                &key,
                KeyRecord {
                    owner: "a\r\nx: y".into(),
                    ..record
                },
            ),
            Stored::InOtherGroup => f.source.put("animals", &key, record),
            Stored::OtherKeyInOtherGroup => f.source.put("animals", &key, other_hash),
        }
        if matches!(stored, Stored::InOtherGroup | Stored::OtherKeyInOtherGroup) {
            // `wrong-group` comes from records already held: use the key
            // on its own group first, as its owner would.
            f.validator
                .decide(
                    Protocol::Http,
                    "/animals/pets/1",
                    Presented::One(key.expose()),
                )
                .await;
        }
        let outcome = f
            .validator
            .decide(
                Protocol::Http,
                "/billing/invoices?x=1",
                Presented::One(key.expose()),
            )
            .await;
        let want = match expected {
            None => Outcome::Allow {
                owner: "user-1".into(),
                group: "billing".into(),
                expires: None,
            },
            Some(reason) => Outcome::Deny(reason),
        };
        assert_eq!(outcome, want);
    }

    #[rstest]
    #[case::no_route("/billing/payments", Presented::One(""), Reason::NoRoute)]
    #[case::no_route_wins_over_missing("/nowhere", Presented::Missing, Reason::NoRoute)]
    #[case::missing("/billing/invoices", Presented::Missing, Reason::Missing)]
    #[case::many("/billing/invoices", Presented::Many, Reason::Malformed)]
    #[case::empty("/billing/invoices", Presented::One(""), Reason::Malformed)]
    #[case::upper_case("/billing/invoices", Presented::One(&"AB".repeat(32)), Reason::Malformed)]
    #[case::short("/billing/invoices", Presented::One(&"ab".repeat(31)), Reason::Malformed)]
    fn requests_denied_without_reading_vault(
        #[case] path: &str,
        #[case] presented: Presented<'_>,
        #[case] expected: Reason,
    ) {
        let f = fixture();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = runtime.block_on(f.validator.decide(Protocol::Grpc, path, presented));
        assert_eq!(outcome, Outcome::Deny(expected));
        assert_eq!(f.source.reads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_key_of_another_group_never_used_there_is_unknown_after_one_read() {
        let f = fixture();
        let key = ApiKey::generate();
        f.source.put("animals", &key, KeyRecord::for_key(&key, "o"));
        let outcome = f
            .validator
            .decide(
                Protocol::Http,
                "/billing/invoices",
                Presented::One(key.expose()),
            )
            .await;
        assert_eq!(outcome, Outcome::Deny(Reason::Unknown));
        assert_eq!(f.source.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_keyless_flood_costs_one_read_per_key_whatever_the_number_of_groups() {
        // 20 groups, 10 random keys on each: 200 requests. The old
        // `wrong-group` check read every other group: 200 x 20 reads.
        let docs: Vec<(String, String)> = (0..20)
            .map(|g| {
                (
                    format!("g{g}.yaml"),
                    format!("groupId: g{g}\nservers: [{{url: /g{g}}}]\npaths: {{/things: {{}}}}\n"),
                )
            })
            .collect();
        let routes =
            Routes::from_documents(docs.iter().map(|(n, t)| (n.as_str(), t.as_str(), false)))
                .unwrap();
        let source = Arc::new(FakeSource::default());
        let metrics = Arc::new(Metrics::new());
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            resurrect_ttl: Duration::ZERO,
        };
        let records = RecordCache::new(source.clone(), config, metrics.clone());
        let validator = Validator::new(routes, records, metrics, "api-portal-keys");
        let mut requests = 0;
        for g in 0..20 {
            for _ in 0..10 {
                let key = ApiKey::generate();
                let outcome = validator
                    .decide(
                        Protocol::Http,
                        &format!("/g{g}/things"),
                        Presented::One(key.expose()),
                    )
                    .await;
                assert_eq!(outcome, Outcome::Deny(Reason::Unknown));
                requests += 1;
                assert_eq!(source.reads.load(Ordering::SeqCst), requests);
            }
        }
    }

    #[tokio::test]
    async fn refused_reads_are_vault_busy_and_never_allow() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(300),
            ..Default::default()
        });
        let key = ApiKey::generate();
        source.put("billing", &key, KeyRecord::for_key(&key, "o"));
        let metrics = Arc::new(Metrics::new());
        // One read at a time, no queue.
        let limited = Arc::new(crate::read_limit::LimitedSource::new(
            source.clone(),
            1,
            0,
            Duration::from_secs(5),
            metrics.clone(),
        ));
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            resurrect_ttl: Duration::ZERO,
        };
        let records = RecordCache::new(limited, config, metrics.clone());
        let validator = Arc::new(Validator::new(
            Routes::from_documents(DOCS).unwrap(),
            records,
            metrics,
            "api-portal-keys",
        ));
        // A slow read of another key holds the only slot.
        let holder = {
            let validator = validator.clone();
            let other = ApiKey::generate();
            tokio::spawn(async move {
                validator
                    .decide(
                        Protocol::Http,
                        "/billing/invoices",
                        Presented::One(other.expose()),
                    )
                    .await
            })
        };
        while source.reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let outcome = validator
            .decide(
                Protocol::Grpc,
                "/billing/invoices",
                Presented::One(key.expose()),
            )
            .await;
        assert_eq!(outcome, Outcome::Deny(Reason::VaultBusy));
        assert_eq!(holder.await.unwrap(), Outcome::Deny(Reason::Unknown));
        // Once the slot is free, the same key is read and allowed.
        let outcome = validator
            .decide(
                Protocol::Grpc,
                "/billing/invoices",
                Presented::One(key.expose()),
            )
            .await;
        assert!(matches!(outcome, Outcome::Allow { .. }), "{outcome:?}");
        let text = validator.metrics().encode();
        assert!(
            text.contains("keygate_decisions_total{outcome=\"vault-busy\",protocol=\"grpc\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn vault_down_is_unavailable_and_never_allows() {
        let f = fixture();
        let key = ApiKey::generate();
        f.source.put("billing", &key, KeyRecord::for_key(&key, "o"));
        f.source.down.store(true, Ordering::SeqCst);
        let outcome = f
            .validator
            .decide(
                Protocol::Http,
                "/billing/invoices",
                Presented::One(key.expose()),
            )
            .await;
        assert_eq!(outcome, Outcome::Deny(Reason::VaultUnavailable));
        let text = f.validator.metrics().encode();
        assert!(
            text.contains(
                "keygate_decisions_total{outcome=\"vault-unavailable\",protocol=\"http\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("keygate_vault_reads_total{result=\"error\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn cached_record_survives_an_outage() {
        let f = fixture();
        let key = ApiKey::generate();
        f.source.put("animals", &key, KeyRecord::for_key(&key, "o"));
        let decide = || {
            f.validator.decide(
                Protocol::Grpc,
                "/animals/pets/7",
                Presented::One(key.expose()),
            )
        };
        assert!(matches!(decide().await, Outcome::Allow { .. }));
        f.source.down.store(true, Ordering::SeqCst);
        assert_eq!(
            decide().await,
            Outcome::Allow {
                owner: "o".into(),
                group: "animals".into(),
                expires: None,
            }
        );
        assert_eq!(f.source.reads.load(Ordering::SeqCst), 1);
    }
    #[test]
    fn a_warning_is_throttled_per_kind_and_group() {
        let warnings = RequestWarnings::default();
        assert_eq!(
            warnings.admitted(Warning::VaultUnavailable, "animals"),
            Some(0)
        );
        assert_eq!(
            warnings.admitted(Warning::VaultUnavailable, "animals"),
            None
        );
        assert_eq!(
            warnings.admitted(Warning::VaultUnavailable, "billing"),
            Some(0)
        );
        assert_eq!(
            warnings.admitted(Warning::VaultForbidden, "animals"),
            Some(0)
        );
        assert_eq!(warnings.admitted(Warning::VaultForbidden, "animals"), None);
    }

    #[test]
    fn left_out_warnings_are_counted_in_a_line_of_their_own_once_due() {
        let warnings = RequestWarnings::default();
        // Written, left out, written (the test above asserts which).
        for group in ["animals", "animals", "billing"] {
            warnings.admitted(Warning::VaultUnavailable, group);
        }
        assert!(warnings.overdue(Instant::now()).is_empty());
        let later = Instant::now() + WARN_EVERY;
        assert_eq!(
            warnings.overdue(later),
            vec![(Warning::VaultUnavailable, "animals".to_owned(), 1)]
        );
        assert!(warnings.overdue(later).is_empty());
    }
}
