//! The validation algorithm: one [`Outcome`] per request, whatever the
//! protocol. `grpc` and `http` only translate requests in and outcomes out.

use std::sync::Arc;

use apikey::{ApiKey, Decision, Selector, storage_path};
use time::OffsetDateTime;
use tracing::{debug, warn};

use crate::cache::RecordCache;
use crate::metrics::Metrics;
use crate::outcome::{Outcome, Reason};
use crate::protocol::Protocol;
use crate::routes::Routes;

/// The `x-api-key` header as the request carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    Missing,
    One(&'a str),
    /// More than one header: a gateway and an upstream might each pick a
    /// different one, so this is refused as malformed.
    Many,
}

pub struct Validator {
    routes: Routes,
    records: RecordCache,
    metrics: Arc<Metrics>,
    kv_mount: String,
    upstream_headers: Option<Arc<crate::refs::UpstreamHeaders>>,
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
            Err(err) if matches!(*err, crate::vault::VaultError::Forbidden { .. }) => {
                warn!(group, %selector, error = %err, "Vault refuses keygate the key record; denying");
                return Outcome::Deny(Reason::VaultForbidden);
            }
            Err(err) => {
                warn!(group, %selector, error = %err, "cannot read the key record from Vault; denying");
                return Outcome::Deny(Reason::VaultUnavailable);
            }
        };
        let Some(record) = record else {
            return Outcome::Deny(if self.valid_elsewhere(group, key, selector).await {
                Reason::WrongGroup
            } else {
                Reason::Unknown
            });
        };
        match record.check(key, OffsetDateTime::now_utc()) {
            // The owner is passed upstream in a header, where control
            // characters could split or forge headers.
            Decision::Valid if record.owner.chars().any(char::is_control) => {
                warn!(
                    path = %storage_path(&self.kv_mount, group, selector),
                    "the key record in Vault is corrupt (its `owner` holds control characters); fix it"
                );
                Outcome::Deny(Reason::CorruptRecord)
            }
            Decision::Valid => Outcome::Allow {
                owner: record.owner,
                group: group.to_owned(),
            },
            Decision::Mismatch => Outcome::Deny(Reason::Mismatch),
            Decision::Expired => Outcome::Deny(Reason::Expired),
            Decision::CorruptRecord => {
                warn!(
                    path = %storage_path(&self.kv_mount, group, selector),
                    "the key record in Vault is corrupt (no `key`, or not a SHA-256 in hex); fix or delete it"
                );
                Outcome::Deny(Reason::CorruptRecord)
            }
        }
    }

    /// Whether the key is a real key of another configured group, so the
    /// caller can be told `wrong-group` instead of `unknown`. This only
    /// refines a denial; if Vault fails here, the answer stays `unknown`.
    async fn valid_elsewhere(&self, group: &str, key: &ApiKey, selector: &Selector) -> bool {
        for other in self.routes.groups().iter().filter(|g| *g != group) {
            match self.records.get(other, selector).await {
                Ok(Some(record)) if record.hash().is_ok_and(|hash| key.verify(&hash)) => {
                    return true;
                }
                Ok(_) => {}
                Err(err) => {
                    debug!(group = %other, %selector, error = %err, "wrong-group check failed")
                }
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
                group: "animals".into()
            }
        );
        assert_eq!(f.source.reads.load(Ordering::SeqCst), 1);
    }
}
