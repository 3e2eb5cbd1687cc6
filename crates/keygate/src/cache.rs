//! (group, selector) -> record, in front of Vault.
//!
//! Found records live for the positive TTL, absences for the (shorter)
//! negative TTL, so a newly issued key works within a second while a burst
//! of bad keys costs one Vault read per selector. Errors are not cached: the
//! next request tries Vault again. Only records are cached, never the
//! presented key.
//!
//! Resurrection (Kong's `resurrect_ttl`): a found record is also kept as the
//! last good answer for `positive_ttl + resurrect_ttl`. When a read fails
//! (Vault down or sealed), that record answers instead of the error, so keys
//! in use keep working through a short outage; once it lapses the caller
//! gets the error (503). Only found records are resurrected, and a read that
//! finds the record gone drops it, so a revoked key is never brought back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apikey::{KeyRecord, Selector};
use moka::Expiry;
use moka::future::Cache;

use crate::boxed_future::BoxFuture;
use crate::config::CacheConfig;
use crate::metrics::{Metrics, ReadResult};
use crate::vault::{Vault, VaultError};

/// Where records come from: Vault in production, a map in tests.
pub trait RecordSource: Send + Sync + 'static {
    fn read<'a>(
        &'a self,
        group: &'a str,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, VaultError>>;
}

impl RecordSource for Vault {
    fn read<'a>(
        &'a self,
        group: &'a str,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, VaultError>> {
        Box::pin(self.read_record(group, selector))
    }
}

type Key = (String, Selector);
type Value = Option<KeyRecord>;

struct TtlBySign {
    positive: Duration,
    negative: Duration,
}

impl Expiry<Key, Value> for TtlBySign {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Value,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

/// Bounds memory when someone sprays random selectors: each one leaves a
/// negative entry behind for the negative TTL.
const MAX_ENTRIES: u64 = 100_000;

pub struct RecordCache {
    source: Arc<dyn RecordSource>,
    /// `None`: every lookup goes to the source (keys files are in memory
    /// already; a cache would only delay a rendered change).
    cache: Option<Cache<Key, Value>>,
    /// Last found record per key, for outages; `None` when resurrection is off.
    last_good: Option<Cache<Key, KeyRecord>>,
    metrics: Arc<Metrics>,
}

impl RecordCache {
    pub fn new(source: Arc<dyn RecordSource>, config: CacheConfig, metrics: Arc<Metrics>) -> Self {
        let cache = Cache::builder()
            .max_capacity(MAX_ENTRIES)
            .expire_after(TtlBySign {
                positive: config.positive_ttl,
                negative: config.negative_ttl,
            })
            .build();
        let last_good = (!config.resurrect_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(config.positive_ttl.saturating_add(config.resurrect_ttl))
                .build()
        });
        Self {
            source,
            cache: Some(cache),
            last_good,
            metrics,
        }
    }

    /// No caching: for sources that are in memory already (keys files).
    pub fn uncached(source: Arc<dyn RecordSource>, metrics: Arc<Metrics>) -> Self {
        Self {
            source,
            cache: None,
            last_good: None,
            metrics,
        }
    }

    /// The record for `(group, selector)`, from the cache or Vault, or,
    /// when Vault cannot be read, the last good record within the resurrect
    /// window. Concurrent callers for one key share a single Vault read.
    pub async fn get(&self, group: &str, selector: &Selector) -> Result<Value, Arc<VaultError>> {
        let Some(cache) = &self.cache else {
            return self.source.read(group, selector).await.map_err(Arc::new);
        };
        let key = (group.to_owned(), selector.clone());
        if let Some(value) = cache.get(&key).await {
            self.metrics.cache_hit();
            return Ok(value);
        }
        self.metrics.cache_miss();
        match self.read_through(cache, key.clone(), group, selector).await {
            Ok(value) => {
                if let Some(last_good) = &self.last_good {
                    match &value {
                        Some(record) => last_good.insert(key, record.clone()).await,
                        None => last_good.invalidate(&key).await,
                    }
                }
                Ok(value)
            }
            Err(err) => match self.resurrect(&key).await {
                Some(record) => Ok(Some(record)),
                None => Err(err),
            },
        }
    }

    /// The record held for `(group, selector)` now, without reading Vault
    /// (`None` for nothing held or a cached absence): for answers that must
    /// not cost a read, such as telling `wrong-group` from `unknown`. An
    /// uncached source is in memory already (keys files), so it is asked.
    pub async fn cached(&self, group: &str, selector: &Selector) -> Option<KeyRecord> {
        match &self.cache {
            Some(cache) => cache
                .get(&(group.to_owned(), selector.clone()))
                .await
                .flatten(),
            None => self.source.read(group, selector).await.ok().flatten(),
        }
    }

    /// The last good record of a key whose read just failed, if still in
    /// its window.
    async fn resurrect(&self, key: &Key) -> Option<KeyRecord> {
        let record = self.last_good.as_ref()?.get(key).await?;
        self.metrics.cache_resurrected();
        Some(record)
    }

    async fn read_through(
        &self,
        cache: &Cache<Key, Value>,
        key: Key,
        group: &str,
        selector: &Selector,
    ) -> Result<Value, Arc<VaultError>> {
        cache
            .try_get_with(key, async {
                let started = Instant::now();
                let result = self.source.read(group, selector).await;
                let outcome = match &result {
                    Ok(Some(_)) => ReadResult::Found,
                    Ok(None) => ReadResult::Absent,
                    Err(_) => ReadResult::Error,
                };
                self.metrics.vault_read(outcome, started.elapsed());
                result
            })
            .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use apikey::ApiKey;

    /// An in-memory record source that counts reads and can fail on demand.
    #[derive(Default)]
    pub(crate) struct FakeSource {
        pub records: Mutex<HashMap<(String, Selector), KeyRecord>>,
        pub reads: AtomicUsize,
        pub down: AtomicBool,
        pub delay: Duration,
    }

    impl FakeSource {
        pub fn put(&self, group: &str, key: &ApiKey, record: KeyRecord) {
            self.records
                .lock()
                .unwrap()
                .insert((group.to_owned(), key.selector()), record);
        }
    }

    impl RecordSource for FakeSource {
        fn read<'a>(
            &'a self,
            group: &'a str,
            selector: &'a Selector,
        ) -> BoxFuture<'a, Result<Option<KeyRecord>, VaultError>> {
            Box::pin(async move {
                self.reads.fetch_add(1, Ordering::SeqCst);
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                if self.down.load(Ordering::SeqCst) {
                    return Err(VaultError::Unreachable {
                        address: "fake".into(),
                        reason: "down".into(),
                    });
                }
                Ok(self
                    .records
                    .lock()
                    .unwrap()
                    .get(&(group.to_owned(), selector.clone()))
                    .cloned())
            })
        }
    }

    fn cache(source: Arc<FakeSource>, positive: u64, negative: u64) -> RecordCache {
        cache_resurrecting(source, positive, negative, 0)
    }

    fn cache_resurrecting(
        source: Arc<FakeSource>,
        positive: u64,
        negative: u64,
        resurrect: u64,
    ) -> RecordCache {
        let config = CacheConfig {
            positive_ttl: Duration::from_millis(positive),
            negative_ttl: Duration::from_millis(negative),
            resurrect_ttl: Duration::from_millis(resurrect),
        };
        RecordCache::new(source, config, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn found_and_absent_records_are_cached_for_their_ttls() {
        let source = Arc::new(FakeSource::default());
        let known = ApiKey::generate();
        let unknown = ApiKey::generate();
        source.put("g", &known, KeyRecord::for_key(&known, "o"));
        let cache = cache(source.clone(), 60_000, 50);

        assert!(cache.get("g", &known.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &known.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &unknown.selector()).await.unwrap().is_none());
        assert!(cache.get("g", &unknown.selector()).await.unwrap().is_none());
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);

        // The negative entry expires quickly, so a new key is seen soon.
        source.put("g", &unknown, KeyRecord::for_key(&unknown, "o"));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(cache.get("g", &unknown.selector()).await.unwrap().is_some());
        assert_eq!(source.reads.load(Ordering::SeqCst), 3);
        let text = cache.metrics.encode();
        assert!(text.contains("keygate_cache_hits_total 2"), "{text}");
        assert!(text.contains("keygate_cache_misses_total 3"), "{text}");
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let source = Arc::new(FakeSource::default());
        source.down.store(true, Ordering::SeqCst);
        let key = ApiKey::generate();
        let cache = cache(source.clone(), 60_000, 60_000);
        assert!(cache.get("g", &key.selector()).await.is_err());
        source.down.store(false, Ordering::SeqCst);
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_read() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(50),
            ..Default::default()
        });
        let key = ApiKey::generate();
        let cache = Arc::new(cache(source.clone(), 60_000, 60_000));
        let mut lookups = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (cache, selector) = (cache.clone(), key.selector());
            lookups
                .spawn(async move { cache.get("g", &selector).await.map_err(|e| e.to_string()) });
        }
        while let Some(result) = lookups.join_next().await {
            assert_eq!(result.unwrap(), Ok(None));
        }
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn found_records_are_resurrected_during_an_outage_then_lapse() {
        let source = Arc::new(FakeSource::default());
        let (known, unknown) = (ApiKey::generate(), ApiKey::generate());
        source.put("g", &known, KeyRecord::for_key(&known, "o"));
        let cache = cache_resurrecting(source.clone(), 50, 50, 300);
        assert!(cache.get("g", &known.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &unknown.selector()).await.unwrap().is_none());

        source.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Past the positive TTL, within the resurrect window: still served.
        assert!(cache.get("g", &known.selector()).await.unwrap().is_some());
        // An absence is never resurrected: the caller learns of the outage.
        assert!(cache.get("g", &unknown.selector()).await.is_err());
        assert!(
            cache
                .metrics
                .encode()
                .contains("keygate_cache_resurrected_total 1")
        );

        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(cache.get("g", &known.selector()).await.is_err());
    }

    #[tokio::test]
    async fn a_record_found_gone_is_not_resurrected() {
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let cache = cache_resurrecting(source.clone(), 30, 30, 60_000);
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());

        // Revoked, seen as gone, then Vault goes down.
        source.records.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
        source.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get("g", &key.selector()).await.is_err());
    }
}
