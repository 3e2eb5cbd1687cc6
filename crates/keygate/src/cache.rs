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
//! A 403 with a fresh token (the policy was withdrawn) is an answer, not an
//! outage: it is never resurrected.
//!
//! Invalidation (`crate::invalidation`, from Vault's audit stream): every
//! read is stamped from a counter when it starts. Dropping a key records a
//! tombstone stamp for it; losing track of the stream (a reconnect, a dropped
//! line) moves a global "stale before" stamp. A cached answer, positive,
//! negative or resurrectable, counts only if its read started after both, so
//! a read that was in flight while the key was written cannot put the old
//! answer back. Invalidation only ever removes state.
//!
//! Each invalidation is also published on the cache's invalidation feed
//! (`crate::feed`), after keygate's own state is gone, so followers that
//! cache keygate's answers (the Envoy module) drop theirs too, and their next
//! question to keygate is answered from Vault.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apikey::{KeyRecord, Selector};
use moka::Expiry;
use moka::future::Cache;

use crate::boxed_future::BoxFuture;
use crate::config::CacheConfig;
use crate::feed::{Feed, FeedEvent};
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

/// A cached answer and the stamp of the read that produced it.
#[derive(Debug, Clone)]
struct Stamped<T> {
    value: T,
    read_at: u64,
}

struct TtlBySign {
    positive: Duration,
    negative: Duration,
}

impl Expiry<Key, Stamped<Value>> for TtlBySign {
    fn expire_after_create(
        &self,
        _key: &Key,
        entry: &Stamped<Value>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if entry.value.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

/// Bounds memory when someone sprays random selectors: each one leaves a
/// negative entry behind for the negative TTL.
const MAX_ENTRIES: u64 = 100_000;

/// The stamps that decide whether a cached answer still counts.
struct Freshness {
    /// Every read and every invalidation takes the next value.
    clock: AtomicU64,
    /// Answers read before this stamp are stale (the audit stream was lost
    /// or a line dropped: some write may have gone unseen).
    stale_before: AtomicU64,
    /// Per key, the stamp of its last invalidation. Kept as long as any
    /// answer it must outdate can live (positive TTL + resurrect window).
    tombstones: Cache<Key, u64>,
}

impl Freshness {
    fn new(longest_answer: Duration) -> Self {
        Self {
            // 0 is "never": the first read is stamped 1.
            clock: AtomicU64::new(1),
            stale_before: AtomicU64::new(0),
            tombstones: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(longest_answer)
                .build(),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Whether an answer read at `read_at` may still be used for `key`.
    async fn counts(&self, key: &Key, read_at: u64) -> bool {
        read_at > self.stale_before.load(Ordering::SeqCst) && self.not_dropped(key, read_at).await
    }

    /// Whether `key` was not dropped after `read_at` (the resurrect store
    /// ignores `stale_before`: a lost stream must not end resurrection).
    async fn not_dropped(&self, key: &Key, read_at: u64) -> bool {
        self.tombstones
            .get(key)
            .await
            .is_none_or(|dropped| read_at > dropped)
    }
}

pub struct RecordCache {
    source: Arc<dyn RecordSource>,
    /// `None`: every lookup goes to the source (keys files are in memory
    /// already; a cache would only delay a rendered change).
    cache: Option<Cache<Key, Stamped<Value>>>,
    /// Last found record per key, for outages; `None` when resurrection is off.
    last_good: Option<Cache<Key, Stamped<KeyRecord>>>,
    freshness: Arc<Freshness>,
    metrics: Arc<Metrics>,
    /// `None` for an uncached source: there is nothing to follow.
    feed: Option<Feed>,
}

/// A handle that drops cached state, for `crate::invalidation`. It can only
/// remove: nothing it does can make a request allowed.
#[derive(Clone)]
pub struct Invalidator {
    cache: Option<Cache<Key, Stamped<Value>>>,
    last_good: Option<Cache<Key, Stamped<KeyRecord>>>,
    freshness: Arc<Freshness>,
    feed: Option<Feed>,
}

impl Invalidator {
    /// Drops everything held for `(group, selector)`: its positive or
    /// negative entry and its resurrectable record, including any a read in
    /// flight now would store.
    pub async fn drop_key(&self, group: &str, selector: &Selector) {
        let key = (group.to_owned(), selector.clone());
        let stamp = self.freshness.tick();
        self.freshness.tombstones.insert(key.clone(), stamp).await;
        if let Some(cache) = &self.cache {
            cache.invalidate(&key).await;
        }
        if let Some(last_good) = &self.last_good {
            last_good.invalidate(&key).await;
        }
        if let Some(feed) = &self.feed {
            let (group, selector) = key;
            feed.publish(FeedEvent::Drop {
                group,
                selector: selector.as_str().to_owned(),
            });
        }
    }

    /// Treats every answer read until now as stale (positive TTL's backstop
    /// aside, they are read again on their next use); `why` reaches the
    /// feed's followers, for their logs.
    pub fn all_stale(&self, why: &'static str) {
        let stamp = self.freshness.tick();
        self.freshness
            .stale_before
            .fetch_max(stamp, Ordering::SeqCst);
        if let Some(feed) = &self.feed {
            feed.publish(FeedEvent::Stale { why });
        }
    }
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
        let longest = config.positive_ttl.saturating_add(config.resurrect_ttl);
        let last_good = (!config.resurrect_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(longest)
                .build()
        });
        Self {
            source,
            cache: Some(cache),
            last_good,
            freshness: Arc::new(Freshness::new(
                longest.max(config.negative_ttl).max(Duration::from_secs(1)),
            )),
            metrics,
            feed: Some(Feed::new()),
        }
    }

    /// No caching: for sources that are in memory already (keys files).
    pub fn uncached(source: Arc<dyn RecordSource>, metrics: Arc<Metrics>) -> Self {
        Self {
            source,
            cache: None,
            last_good: None,
            freshness: Arc::new(Freshness::new(Duration::from_secs(1))),
            metrics,
            feed: None,
        }
    }

    /// The feed this cache's invalidations are published on (`None` when
    /// uncached: keys files are read fresh, nothing to follow).
    pub fn feed(&self) -> Option<&Feed> {
        self.feed.as_ref()
    }

    /// The handle `crate::invalidation` drops this cache's entries with.
    pub fn invalidator(&self) -> Invalidator {
        Invalidator {
            cache: self.cache.clone(),
            last_good: self.last_good.clone(),
            freshness: self.freshness.clone(),
            feed: self.feed.clone(),
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
        if let Some(entry) = cache.get(&key).await {
            if self.freshness.counts(&key, entry.read_at).await {
                self.metrics.cache_hit();
                return Ok(entry.value);
            }
            cache.invalidate(&key).await;
        }
        self.metrics.cache_miss();
        match self.read_fresh(cache, &key).await {
            Ok(entry) => {
                if let Some(last_good) = &self.last_good {
                    match &entry.value {
                        Some(record) if self.freshness.not_dropped(&key, entry.read_at).await => {
                            let stamped = Stamped {
                                value: record.clone(),
                                read_at: entry.read_at,
                            };
                            last_good.insert(key, stamped).await;
                        }
                        Some(_) => {}
                        None => last_good.invalidate(&key).await,
                    }
                }
                Ok(entry.value)
            }
            // A 403 with a fresh token is Vault's answer, not an outage.
            Err(err) if matches!(*err, VaultError::Forbidden { .. }) => Err(err),
            Err(err) => match self.resurrect(&key).await {
                Some(record) => Ok(Some(record)),
                None => Err(err),
            },
        }
    }

    /// A read that counts: the shared (coalesced) read, and if that one
    /// started before an invalidation of the key, one more; should that be
    /// outdated too (the key is being written right now), a read of our own.
    async fn read_fresh(
        &self,
        cache: &Cache<Key, Stamped<Value>>,
        key: &Key,
    ) -> Result<Stamped<Value>, Arc<VaultError>> {
        for _ in 0..2 {
            let entry = self.read_through(cache, key.clone()).await?;
            if self.freshness.counts(key, entry.read_at).await {
                return Ok(entry);
            }
            cache.invalidate(key).await;
        }
        self.read_stamped(key).await.map_err(Arc::new)
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
                .and_then(|entry| entry.value),
            None => self.source.read(group, selector).await.ok().flatten(),
        }
    }

    /// The last good record of a key whose read just failed, if still in
    /// its window and not dropped since.
    async fn resurrect(&self, key: &Key) -> Option<KeyRecord> {
        let entry = self.last_good.as_ref()?.get(key).await?;
        if !self.freshness.not_dropped(key, entry.read_at).await {
            return None;
        }
        self.metrics.cache_resurrected();
        Some(entry.value)
    }

    async fn read_through(
        &self,
        cache: &Cache<Key, Stamped<Value>>,
        key: Key,
    ) -> Result<Stamped<Value>, Arc<VaultError>> {
        cache
            .try_get_with_by_ref(&key, self.read_stamped(&key))
            .await
    }

    /// One source read, stamped when it starts, counted in the metrics.
    async fn read_stamped(&self, key: &Key) -> Result<Stamped<Value>, VaultError> {
        let read_at = self.freshness.tick();
        let started = Instant::now();
        let result = self.source.read(&key.0, &key.1).await;
        let outcome = match &result {
            Ok(Some(_)) => ReadResult::Found,
            Ok(None) => ReadResult::Absent,
            Err(_) => ReadResult::Error,
        };
        self.metrics.vault_read(outcome, started.elapsed());
        result.map(|value| Stamped { value, read_at })
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
        /// Answer as Vault does to a fresh token without `read` (403).
        pub forbidden: AtomicBool,
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
                if self.forbidden.load(Ordering::SeqCst) {
                    return Err(VaultError::Forbidden {
                        path: format!("fake/{group}/{selector}"),
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

    #[tokio::test]
    async fn a_403_with_a_fresh_token_is_not_resurrected() {
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let cache = cache_resurrecting(source.clone(), 30, 30, 60_000);
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        source.forbidden.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let err = cache.get("g", &key.selector()).await.unwrap_err();
        assert!(matches!(*err, VaultError::Forbidden { .. }), "{err:?}");
        // An outage after that still resurrects (the record was not dropped).
        source.forbidden.store(false, Ordering::SeqCst);
        source.down.store(true, Ordering::SeqCst);
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_dropped_key_is_read_again_and_never_resurrected() {
        let source = Arc::new(FakeSource::default());
        let (key, other) = (ApiKey::generate(), ApiKey::generate());
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        source.put("g", &other, KeyRecord::for_key(&other, "o"));
        let cache = cache_resurrecting(source.clone(), 60_000, 60_000, 60_000);
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &other.selector()).await.unwrap().is_some());

        source
            .records
            .lock()
            .unwrap()
            .remove(&("g".to_owned(), key.selector()));
        cache.invalidator().drop_key("g", &key.selector()).await;
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
        assert_eq!(source.reads.load(Ordering::SeqCst), 3);
        // Vault goes down: the other key is resurrected, the dropped one not.
        source.down.store(true, Ordering::SeqCst);
        cache.invalidator().all_stale("test");
        assert!(cache.get("g", &other.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &key.selector()).await.is_err());
    }

    #[tokio::test]
    async fn a_read_in_flight_during_a_drop_does_not_put_the_old_record_back() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(100),
            ..Default::default()
        });
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let cache = Arc::new(cache_resurrecting(source.clone(), 60_000, 60_000, 60_000));
        let in_flight = {
            let (cache, selector) = (cache.clone(), key.selector());
            tokio::spawn(async move { cache.get("g", &selector).await.map(|r| r.is_some()).ok() })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Revoked while that read was on its way: its answer is outdated.
        source.records.lock().unwrap().clear();
        cache.invalidator().drop_key("g", &key.selector()).await;
        assert_eq!(
            in_flight.await.unwrap(),
            Some(false),
            "the read that raced the revocation allowed the key"
        );
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
        source.down.store(true, Ordering::SeqCst);
        cache.invalidator().all_stale("test");
        assert!(cache.get("g", &key.selector()).await.is_err());
    }

    #[tokio::test]
    async fn all_stale_rereads_every_answer_once() {
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        let cache = cache(source.clone(), 60_000, 60_000);
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        cache.invalidator().all_stale("test");
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    }
}
