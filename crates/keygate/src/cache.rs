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
//! A 403 with a fresh token (the policy was withdrawn), or a re-login Vault
//! refuses after a 403 (keygate cut off), is an answer, not an outage: it
//! is never resurrected. Nor is a read keygate's own read limit refused
//! (`VaultError::Busy`): a flood of random selectors can keep that queue
//! full while Vault is up, and would otherwise bring a revoked key back.
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
//!
//! Memory: one compact slot per key, about 170 bytes of RSS per cached key
//! with the store's own overhead at 100 000 keys (`examples/cache_memory.rs`;
//! about 1 360 before, and 1 378 in `cargo xtask bench`'s scale step). The hash is kept as its 32 bytes
//! (not the record's hex `key` String), the selector as 16 bytes, group ids
//! and owners as shared `Arc<str>` (one per distinct value, `Interner`);
//! `name`, which keygate never uses, is not kept. The positive answer and
//! the resurrectable record are one slot (a found record stays until
//! `positive_ttl + resurrect_ttl`, served fresh for `positive_ttl`), in a
//! `quick_cache` store: moka, which this used before, costs about 375 bytes
//! per entry on its own (two entries per key, one per store), above the
//! whole budget of 400. quick_cache has no TTLs, so expiry is checked on
//! use and an expired slot waits for the capacity bound to evict it.
//! Reads of one key are coalesced by `InFlight`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use apikey::{ApiKey, Decision, KeyRecord, Selector, VerifierHash};
use moka::future::Cache;
use time::OffsetDateTime;
use tokio::sync::OnceCell;

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

/// A found key record as the cache keeps it: what a decision reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `None`: the stored `key` is not a SHA-256 in hex (a corrupt record,
    /// denied as such).
    hash: Option<VerifierHash>,
    /// Subject id of the key's creator, shared with every record of the
    /// same owner.
    pub owner: Arc<str>,
    pub expires: Option<OffsetDateTime>,
}

impl Record {
    fn new(record: KeyRecord, owners: &Interner) -> Self {
        Self {
            hash: record.hash().ok(),
            owner: owners.intern(&record.owner),
            expires: record.expires,
        }
    }

    /// The stored verifier hash, `None` if the record's is unusable.
    pub fn hash(&self) -> Option<&VerifierHash> {
        self.hash.as_ref()
    }

    /// `KeyRecord::check`: the hashes compared in constant time, then the
    /// expiry.
    pub fn check(&self, key: &ApiKey, now: OffsetDateTime) -> Decision {
        apikey::check_parts(self.hash.as_ref(), self.expires, key, now)
    }
}

/// (group, selector), compactly: the group shared, the selector's 32 hex
/// digits as their 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    group: Arc<str>,
    selector: [u8; 16],
}

fn selector_bytes(selector: &Selector) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // A Selector is 32 lowercase hex digits by construction.
    hex::decode_to_slice(selector.as_str(), &mut bytes).expect("a Selector is 32 hex digits");
    bytes
}

type Value = Option<Record>;

/// One shared copy per distinct string, for values that many entries
/// repeat (group ids: a handful; owners: often far fewer than keys). The
/// copies no entry holds any more are let go whenever the set has doubled
/// since the last sweep, so churning owners cannot grow it without bound.
struct Interner {
    inner: RwLock<Interned>,
}

struct Interned {
    set: HashSet<Arc<str>>,
    sweep_at: usize,
}

/// Below this many strings the set is never swept.
const MIN_SWEEP: usize = 1024;

impl Interner {
    fn new() -> Self {
        Self {
            inner: RwLock::new(Interned {
                set: HashSet::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// The shared copy of `text`, if there is one.
    fn get(&self, text: &str) -> Option<Arc<str>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .get(text)
            .cloned()
    }

    fn intern(&self, text: &str) -> Arc<str> {
        if let Some(shared) = self.get(text) {
            return shared;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = inner.set.get(text) {
            return shared.clone();
        }
        if inner.set.len() >= inner.sweep_at {
            // Held only here: no entry uses it any more.
            inner.set.retain(|s| Arc::strong_count(s) > 1);
            inner.sweep_at = (inner.set.len() * 2).max(MIN_SWEEP);
        }
        let shared: Arc<str> = Arc::from(text);
        inner.set.insert(shared.clone());
        shared
    }
}

/// One key's answer: a found record or an absence, the stamp of the read
/// that produced it, and how long it serves.
#[derive(Debug, Clone)]
struct Slot {
    value: Value,
    read_at: u64,
    /// Served as is until then (`positive_ttl` / `negative_ttl` from the
    /// read's start).
    fresh_until: Instant,
    /// A found record answers for an outage until then (`positive_ttl +
    /// resurrect_ttl`); an absence never does (`fresh_until`).
    keep_until: Instant,
}

type Store = quick_cache::sync::Cache<Key, Slot>;

/// The read of each key in flight, so concurrent lookups of a key share
/// one Vault read and its result, error included (a failed read is not
/// repeated by every waiter in turn). If the task reading is cancelled,
/// a waiter takes the read over (`OnceCell`).
type InFlight = Mutex<HashMap<Key, Arc<ReadCell>>>;

/// One key's read: its answer once it is in, shared by every waiter.
type ReadCell = OnceCell<Result<Slot, Arc<VaultError>>>;

/// One lookup's share of a key's read in flight. The entry leaves
/// `in_flight` when its read is done, and when the last lookup waiting
/// for it is cancelled (a client that hangs up, a gateway's timeout):
/// without that, every cancelled read of a new selector would stay in the
/// map for good.
struct Waiting<'a> {
    in_flight: &'a InFlight,
    key: &'a Key,
    /// Every clone of an entry's cell but the map's own is one of these,
    /// taken and given back under the map's lock, so the count tells
    /// whether anyone else waits.
    cell: Option<Arc<ReadCell>>,
}

impl<'a> Waiting<'a> {
    fn join(in_flight: &'a InFlight, key: &'a Key) -> Self {
        let cell = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        Self {
            in_flight,
            key,
            cell: Some(cell),
        }
    }

    fn cell(&self) -> &ReadCell {
        self.cell.as_ref().expect("held until dropped")
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(cell) = self.cell.take() else {
            return;
        };
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let ours = in_flight
            .get(self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &cell));
        let done = cell.initialized();
        drop(cell);
        // Done: its answer is stored (or it failed), the next lookup reads
        // anew. Not done and nobody else waiting: the read was cancelled
        // with its last lookup, and stored nothing.
        if ours
            && (done
                || in_flight
                    .get(self.key)
                    .is_some_and(|c| Arc::strong_count(c) == 1))
        {
            in_flight.remove(self.key);
        }
    }
}

/// Whether a read of `key` is in flight now (shared by the cache and its
/// invalidator).
fn reading(in_flight: &InFlight, key: &Key) -> bool {
    in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(key)
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
    /// Per key, the stamp of its last invalidation, for keys a read was in
    /// flight for when they were dropped: that read may store its answer
    /// after the drop, and this is what outdates it. Kept as long as such
    /// an answer can live (positive TTL + resurrect window). A key nobody
    /// was reading needs none: its slot is gone and every later read is
    /// stamped after the drop (a write-heavy Vault, such as the bench's
    /// scale step writing 100 000 keys, would otherwise leave one per
    /// write: 69 MiB at 100 000).
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

/// The shared strings of one cache, and what its invalidator needs of them.
struct Shared {
    groups: Interner,
    owners: Interner,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            groups: Interner::new(),
            owners: Interner::new(),
        })
    }
}

pub struct RecordCache {
    source: Arc<dyn RecordSource>,
    /// `None`: every lookup goes to the source (keys files are in memory
    /// already; a cache would only delay a rendered change).
    store: Option<Arc<Store>>,
    config: CacheConfig,
    in_flight: Arc<InFlight>,
    freshness: Arc<Freshness>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// `None` for an uncached source: there is nothing to follow.
    feed: Option<Feed>,
}

/// A handle that drops cached state, for `crate::invalidation`. It can only
/// remove: nothing it does can make a request allowed.
#[derive(Clone)]
pub struct Invalidator {
    store: Option<Arc<Store>>,
    in_flight: Arc<InFlight>,
    freshness: Arc<Freshness>,
    shared: Arc<Shared>,
    feed: Option<Feed>,
}

impl Invalidator {
    /// Drops everything held for `(group, selector)`: its positive or
    /// negative answer and its resurrectable record, including any a read
    /// in flight now would store.
    pub async fn drop_key(&self, group: &str, selector: &Selector) {
        // A group never looked up has nothing cached and no read in flight
        // (a lookup shares the group before its read is stamped), so there
        // is nothing to outdate; not sharing it here keeps audit lines for
        // arbitrary groups from growing the set.
        let Some(interned) = self.shared.groups.get(group) else {
            // Followers are told anyway: removal is all they can do with it.
            self.publish_drop(group, selector);
            return;
        };
        let key = Key {
            group: interned,
            selector: selector_bytes(selector),
        };
        // Stamp first, then look for a read in flight: a read stamped
        // before this drop registered itself in `in_flight` before taking
        // its stamp, so it is seen here unless it has finished, and a
        // finished read stored its answer before leaving `in_flight`, so
        // the removal below takes that answer out.
        let stamp = self.freshness.tick();
        if reading(&self.in_flight, &key) {
            self.freshness.tombstones.insert(key.clone(), stamp).await;
        }
        if let Some(store) = &self.store {
            store.remove(&key);
        }
        self.publish_drop(group, selector);
    }

    /// Tells the feed's followers, after keygate's own state is gone.
    fn publish_drop(&self, group: &str, selector: &Selector) {
        if let Some(feed) = &self.feed {
            feed.publish(FeedEvent::Drop {
                group: group.to_owned(),
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
        let longest = config.positive_ttl.saturating_add(config.resurrect_ttl);
        Self {
            source,
            store: Some(Arc::new(Store::new(MAX_ENTRIES as usize))),
            config,
            in_flight: Arc::default(),
            freshness: Arc::new(Freshness::new(
                longest.max(config.negative_ttl).max(Duration::from_secs(1)),
            )),
            shared: Shared::new(),
            metrics,
            feed: Some(Feed::new()),
        }
    }

    /// No caching: for sources that are in memory already (keys files).
    pub fn uncached(source: Arc<dyn RecordSource>, metrics: Arc<Metrics>) -> Self {
        Self {
            source,
            store: None,
            config: CacheConfig {
                positive_ttl: Duration::ZERO,
                negative_ttl: Duration::ZERO,
                resurrect_ttl: Duration::ZERO,
            },
            in_flight: Arc::default(),
            freshness: Arc::new(Freshness::new(Duration::from_secs(1))),
            shared: Shared::new(),
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
            store: self.store.clone(),
            in_flight: self.in_flight.clone(),
            freshness: self.freshness.clone(),
            shared: self.shared.clone(),
            feed: self.feed.clone(),
        }
    }

    fn key(&self, group: &str, selector: &Selector) -> Key {
        Key {
            group: self.shared.groups.intern(group),
            selector: selector_bytes(selector),
        }
    }

    /// A source's answer in the cache's shape.
    fn compact(&self, found: Option<KeyRecord>) -> Value {
        found.map(|record| Record::new(record, &self.shared.owners))
    }

    /// The record for `(group, selector)`, from the cache or Vault, or,
    /// when Vault cannot be read, the last good record within the resurrect
    /// window. Concurrent callers for one key share a single Vault read.
    pub async fn get(&self, group: &str, selector: &Selector) -> Result<Value, Arc<VaultError>> {
        let Some(store) = &self.store else {
            return match self.source.read(group, selector).await {
                Ok(found) => Ok(self.compact(found)),
                Err(err) => Err(Arc::new(err)),
            };
        };
        let key = self.key(group, selector);
        if let Some(slot) = store.get(&key)
            && Instant::now() < slot.fresh_until
            && self.freshness.counts(&key, slot.read_at).await
        {
            self.metrics.cache_hit();
            return Ok(slot.value);
        }
        self.metrics.cache_miss();
        let lookup = Lookup {
            key: &key,
            group,
            selector,
        };
        // A stale slot stays while Vault is asked: it is what an outage
        // resurrects, for this caller and for those arriving meanwhile.
        match self.read_fresh(store, &lookup).await {
            Ok(slot) => Ok(slot.value),
            // A 403 with a fresh token, or a refused re-login after one,
            // is Vault's answer, not an outage; so is one showing that
            // vault.kv_mount is not a KV v2 mount (none there: every key
            // in it is gone, a revoked one too). A read keygate's own
            // limits refused (`read_limit`) is no outage either: anyone can
            // fill the queue with random selectors while Vault answers,
            // and the record may have been revoked meanwhile.
            Err(err)
                if err.is_refusal()
                    || err.is_misconfiguration()
                    || matches!(*err, VaultError::Busy { .. }) =>
            {
                Err(err)
            }
            Err(err) => match self.resurrect(store, &key).await {
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
        store: &Store,
        lookup: &Lookup<'_>,
    ) -> Result<Slot, Arc<VaultError>> {
        for _ in 0..2 {
            let slot = self.read_through(store, lookup).await?;
            if self.freshness.counts(lookup.key, slot.read_at).await {
                return Ok(slot);
            }
        }
        self.read_stamped(lookup).await.map_err(Arc::new)
    }

    /// The record held for `(group, selector)` now, without reading Vault
    /// (`None` for nothing held or a cached absence): for answers that must
    /// not cost a read, such as telling `wrong-group` from `unknown`. An
    /// uncached source is in memory already (keys files), so it is asked.
    pub async fn cached(&self, group: &str, selector: &Selector) -> Option<Record> {
        match &self.store {
            Some(store) => {
                let key = Key {
                    group: self.shared.groups.get(group)?,
                    selector: selector_bytes(selector),
                };
                store
                    .get(&key)
                    .filter(|slot| Instant::now() < slot.fresh_until)
                    .and_then(|slot| slot.value)
            }
            None => self.compact(self.source.read(group, selector).await.ok().flatten()),
        }
    }

    /// The last good record of a key whose read just failed, if still in
    /// its window and not dropped since.
    async fn resurrect(&self, store: &Store, key: &Key) -> Option<Record> {
        let slot = store.get(key)?;
        let record = slot.value?;
        if Instant::now() >= slot.keep_until || !self.freshness.not_dropped(key, slot.read_at).await
        {
            return None;
        }
        self.metrics.cache_resurrected();
        Some(record)
    }

    /// The key's shared read: joins the one in flight, or starts it. The
    /// read stores its answer before anyone gets it.
    async fn read_through(
        &self,
        store: &Store,
        lookup: &Lookup<'_>,
    ) -> Result<Slot, Arc<VaultError>> {
        let waiting = Waiting::join(&self.in_flight, lookup.key);
        waiting
            .cell()
            .get_or_init(|| async {
                let slot = self.read_stamped(lookup).await.map_err(Arc::new)?;
                store.insert(lookup.key.clone(), slot.clone());
                Ok(slot)
            })
            .await
            .clone()
    }

    /// One source read, stamped when it starts, counted in the metrics.
    async fn read_stamped(&self, lookup: &Lookup<'_>) -> Result<Slot, VaultError> {
        let read_at = self.freshness.tick();
        let started = Instant::now();
        let result = self.source.read(lookup.group, lookup.selector).await;
        let outcome = match &result {
            Ok(Some(_)) => ReadResult::Found,
            Ok(None) => ReadResult::Absent,
            Err(_) => ReadResult::Error,
        };
        self.metrics.vault_read(outcome, started.elapsed());
        let found = result?;
        let (fresh_for, keep_for) = match &found {
            // resurrect_ttl 0 turns resurrection off altogether, also for
            // a fresh answer outdated by `all_stale`.
            Some(_) if self.config.resurrect_ttl.is_zero() => {
                (self.config.positive_ttl, Duration::ZERO)
            }
            Some(_) => (
                self.config.positive_ttl,
                self.config
                    .positive_ttl
                    .saturating_add(self.config.resurrect_ttl),
            ),
            None => (self.config.negative_ttl, Duration::ZERO),
        };
        // Counted from the read's start, like its stamp: a drop that comes
        // while the read is in flight leaves a tombstone that lives as long
        // as an answer can from the drop on, so the answer this read stores
        // (an old record, maybe) ends before the tombstone does.
        Ok(Slot {
            value: self.compact(found),
            read_at,
            fresh_until: started + fresh_for,
            keep_until: started + keep_for,
        })
    }
}

/// One lookup: the cache's key and the names the source reads by.
struct Lookup<'a> {
    key: &'a Key,
    group: &'a str,
    selector: &'a Selector,
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
        /// Reads from this one on (counted from 1) fail as unreachable;
        /// 0: none.
        pub down_from_read: AtomicUsize,
        /// Answer as `Vault::read_record` does when a 403's re-login is
        /// refused (keygate's token revoked, its secret-id destroyed).
        pub login_rejected: AtomicBool,
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
                let number = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                let down_from = self.down_from_read.load(Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) || (down_from > 0 && number >= down_from) {
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
                if self.login_rejected.load(Ordering::SeqCst) {
                    return Err(VaultError::LoginRejected {
                        detail: ": 400 invalid role or secret ID".into(),
                        hint: "the secret-id".into(),
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

    pub(crate) fn cache(source: Arc<FakeSource>, positive: u64, negative: u64) -> RecordCache {
        cache_resurrecting(source, positive, negative, 0)
    }

    pub(crate) fn cache_resurrecting(
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
        // 1 s: both lookups of the unknown key fall within it on a loaded
        // machine too (50 ms could expire between them).
        let cache = cache(source.clone(), 60_000, 1_000);

        assert!(cache.get("g", &known.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &known.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &unknown.selector()).await.unwrap().is_none());
        assert!(cache.get("g", &unknown.selector()).await.unwrap().is_none());
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);

        // The negative entry expires after its TTL, so a new key is seen then.
        source.put("g", &unknown, KeyRecord::for_key(&unknown, "o"));
        tokio::time::sleep(Duration::from_millis(1_100)).await;
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

    /// keygate cut off (its token revoked, its secret-id destroyed): the
    /// 403's re-login is refused, which is Vault's answer too.
    #[tokio::test]
    async fn a_refused_relogin_after_a_403_is_not_resurrected() {
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let cache = cache_resurrecting(source.clone(), 30, 30, 60_000);
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        source.login_rejected.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let err = cache.get("g", &key.selector()).await.unwrap_err();
        assert!(err.is_refusal(), "{err:?}");
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

#[cfg(test)]
mod compact_tests {
    use std::sync::atomic::Ordering;

    use super::tests::{FakeSource, cache, cache_resurrecting};
    use super::*;

    #[tokio::test]
    async fn records_share_their_owner_and_keep_the_hash_as_bytes() {
        let source = Arc::new(FakeSource::default());
        let (a, b) = (ApiKey::generate(), ApiKey::generate());
        source.put("g", &a, KeyRecord::for_key(&a, "alice"));
        source.put("g", &b, KeyRecord::for_key(&b, "alice").with_name("ci"));
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            resurrect_ttl: Duration::from_secs(60),
        };
        let cache = RecordCache::new(source, config, Arc::new(Metrics::new()));
        let ra = cache.get("g", &a.selector()).await.unwrap().unwrap();
        let rb = cache.get("g", &b.selector()).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&ra.owner, &rb.owner), "one shared owner");
        assert_eq!(&*ra.owner, "alice");
        assert_eq!(ra.hash(), Some(&a.verifier_hash()));
        assert_eq!(ra.check(&a, OffsetDateTime::now_utc()), Decision::Valid);
        assert_eq!(ra.check(&b, OffsetDateTime::now_utc()), Decision::Mismatch);
        assert_eq!(std::mem::size_of::<Key>(), 32);
    }

    #[test]
    fn a_record_whose_hash_is_not_hex_is_corrupt() {
        let key = ApiKey::generate();
        let record = Record::new(
            KeyRecord {
                key: "zz".into(),
                ..KeyRecord::for_key(&key, "o")
            },
            &Interner::new(),
        );
        assert_eq!(record.hash(), None);
        assert_eq!(
            record.check(&key, OffsetDateTime::now_utc()),
            Decision::CorruptRecord
        );
    }

    #[test]
    fn strings_no_entry_holds_are_let_go_as_the_set_grows() {
        let interner = Interner::new();
        let kept = interner.intern("kept");
        assert!(Arc::ptr_eq(&kept, &interner.intern("kept")));
        for n in 0..10 * MIN_SWEEP {
            drop(interner.intern(&format!("owner-{n}")));
        }
        let inner = interner.inner.read().unwrap();
        assert!(
            inner.set.len() <= MIN_SWEEP + 1,
            "{} strings held",
            inner.set.len()
        );
        assert!(inner.set.contains("kept"));
    }

    #[tokio::test]
    async fn only_a_drop_that_races_a_read_leaves_a_tombstone() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(100),
            ..Default::default()
        });
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            resurrect_ttl: Duration::from_secs(60),
        };
        let cache = Arc::new(RecordCache::new(
            source.clone(),
            config,
            Arc::new(Metrics::new()),
        ));
        // Writes to keys nobody is reading (a bulk import, the bench's
        // scale step): nothing to outdate, nothing kept.
        let idle: Vec<ApiKey> = (0..100).map(|_| ApiKey::generate()).collect();
        for key in &idle {
            source.put("g", key, KeyRecord::for_key(key, "o"));
        }
        assert!(cache.get("g", &idle[0].selector()).await.unwrap().is_some());
        for key in &idle {
            cache.invalidator().drop_key("g", &key.selector()).await;
        }
        cache.freshness.tombstones.run_pending_tasks().await;
        assert_eq!(cache.freshness.tombstones.entry_count(), 0);
        // The dropped cached key is read again all the same.
        let reads = source.reads.load(Ordering::SeqCst);
        assert!(cache.get("g", &idle[0].selector()).await.unwrap().is_some());
        assert_eq!(source.reads.load(Ordering::SeqCst), reads + 1);

        // A drop while a read of the key is in flight keeps one.
        let racing = ApiKey::generate();
        source.put("g", &racing, KeyRecord::for_key(&racing, "o"));
        let read = {
            let (cache, selector) = (cache.clone(), racing.selector());
            tokio::spawn(async move { cache.get("g", &selector).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        cache.invalidator().drop_key("g", &racing.selector()).await;
        assert!(read.await.unwrap());
        cache.freshness.tombstones.run_pending_tasks().await;
        assert_eq!(cache.freshness.tombstones.entry_count(), 1);
    }

    #[tokio::test]
    async fn a_drop_for_a_group_never_looked_up_shares_nothing() {
        let source = Arc::new(FakeSource::default());
        let cache = RecordCache::new(
            source,
            CacheConfig {
                positive_ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(60),
                resurrect_ttl: Duration::ZERO,
            },
            Arc::new(Metrics::new()),
        );
        let key = ApiKey::generate();
        cache
            .invalidator()
            .drop_key("nobody-reads-this", &key.selector())
            .await;
        assert!(cache.shared.groups.get("nobody-reads-this").is_none());
    }

    #[tokio::test]
    async fn a_failed_read_is_shared_by_every_lookup_waiting_for_it() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(50),
            ..Default::default()
        });
        source.down.store(true, Ordering::SeqCst);
        let key = ApiKey::generate();
        let cache = Arc::new(RecordCache::new(
            source.clone(),
            CacheConfig {
                positive_ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(60),
                resurrect_ttl: Duration::from_secs(60),
            },
            Arc::new(Metrics::new()),
        ));
        let mut lookups = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (cache, selector) = (cache.clone(), key.selector());
            lookups.spawn(async move { cache.get("g", &selector).await.is_err() });
        }
        while let Some(failed) = lookups.join_next().await {
            assert!(failed.unwrap());
        }
        // One read, not one per waiter in turn (each would wait out
        // Vault's timeout in an outage).
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
        assert!(cache.in_flight.lock().unwrap().is_empty());
    }

    /// A lookup cancelled while its read is on its way (a client that hung
    /// up, a gateway's timeout) leaves nothing in `in_flight`, however many
    /// selectors are sprayed; one of two waiters cancelled leaves the read
    /// to the other.
    #[tokio::test]
    async fn cancelled_lookups_leave_no_read_in_flight_behind() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(200),
            ..Default::default()
        });
        let cache = Arc::new(cache(source.clone(), 60_000, 60_000));
        let mut cancelled = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (cache, selector) = (cache.clone(), ApiKey::generate().selector());
            cancelled.spawn(async move {
                tokio::time::timeout(Duration::from_millis(20), cache.get("g", &selector))
                    .await
                    .is_err()
            });
        }
        while let Some(timed_out) = cancelled.join_next().await {
            assert!(timed_out.unwrap(), "the read should outlast the lookup");
        }
        assert_eq!(source.reads.load(Ordering::SeqCst), 50);
        assert!(
            cache.in_flight.lock().unwrap().is_empty(),
            "{} cancelled reads left in flight",
            cache.in_flight.lock().unwrap().len()
        );

        // Two lookups of one key: the one that started the read goes, the
        // other takes the read over and gets the answer.
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let first = {
            let (cache, selector) = (cache.clone(), key.selector());
            tokio::spawn(async move { cache.get("g", &selector).await.map(|r| r.is_some()).ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = {
            let (cache, selector) = (cache.clone(), key.selector());
            tokio::spawn(async move { cache.get("g", &selector).await.map(|r| r.is_some()).ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        assert_eq!(second.await.unwrap(), Some(true));
        assert!(cache.in_flight.lock().unwrap().is_empty());
    }

    /// A read that started before a revocation and stored the old record
    /// after it, whose caller's read again then failed: the old record's
    /// lifetime is counted from its read's start, so it ends before the
    /// revocation's tombstone does and no later outage brings it back.
    #[tokio::test]
    async fn an_old_record_stored_after_its_drop_dies_before_its_tombstone() {
        // Every read takes 1000 ms; positive 1300 + resurrect 1300 ms, so a
        // tombstone lives 2600 ms. (Sized so the third read below ends, at
        // ~3000 ms, 400 ms past the right lifetime's end and 600 ms before
        // the wrong one's: a stalled machine has room either way.)
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(1000),
            ..Default::default()
        });
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let cache = Arc::new(cache_resurrecting(source.clone(), 1300, 600, 1300));
        // The first read answers with the record; every read after it fails.
        source.down_from_read.store(2, Ordering::SeqCst);
        let in_flight = {
            let (cache, selector) = (cache.clone(), key.selector());
            tokio::spawn(async move { cache.get("g", &selector).await.is_err() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Revoked at ~50 ms, while the first read was on its way: its
        // tombstone lives until ~2650 ms. The read stores the old record at
        // ~1000 ms; its caller's second read fails at ~2000 ms.
        cache.invalidator().drop_key("g", &key.selector()).await;
        assert!(
            in_flight.await.unwrap(),
            "the outdated answer was used, or its caller's second read did not fail"
        );
        // Asked again: this read fails at ~3000 ms and the cache looks for
        // something to resurrect. The tombstone is gone; the old record,
        // read at 0, was kept until 2600 ms (counted from its read's end,
        // it would be kept until ~3600 ms and allowed).
        assert!(
            cache.get("g", &key.selector()).await.is_err(),
            "a revoked key was resurrected after its tombstone expired"
        );
    }

    #[tokio::test]
    async fn with_resurrection_off_a_fresh_answer_made_stale_is_not_resurrected() {
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let cache = RecordCache::new(
            source.clone(),
            CacheConfig {
                positive_ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(60),
                resurrect_ttl: Duration::ZERO,
            },
            Arc::new(Metrics::new()),
        );
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        cache.invalidator().all_stale("test");
        source.down.store(true, Ordering::SeqCst);
        assert!(cache.get("g", &key.selector()).await.is_err());
    }
}
