//! (group, selector) -> what keygate approved: the SHA-256 of the verifier
//! of the key keygate answered 200 for, and its owner. Shared by every
//! worker thread (the filter config owns it) and by the invalidation
//! thread, so behind locks; lookups take a read lock only.
//!
//! Never Vault's record: the module caches keygate's answers, and an entry
//! exists only because keygate answered 200 for a key whose verifier hashes
//! to it. A request is allowed from the table only after its own verifier
//! hashes to the same value (compared in constant time, `ApiKey::verify`).
//!
//! Freshness mirrors keygate's cache (`keygate::cache`): every callout is
//! stamped from a counter when it starts; an invalidation of a key records a
//! tombstone stamp, a `stale` line moves a global "stale before" stamp, and
//! an answer is stored only if its callout started after both, so a callout
//! in flight while the key was revoked cannot put the old answer back.
//! Entries live for the positive TTL (and never past the key's `expires`),
//! stale or not; after it, within the resurrect window, they answer only
//! when keygate cannot be reached. Invalidations only ever remove state.
//!
//! Absences: keygate's `unknown` (no record for the group and selector,
//! whatever the verifier) is kept for the negative TTL under the same rules
//! (stamped, outdated by a drop or a `stale` line), so a client retrying a
//! key that does not exist costs one callout per TTL, not one per request.
//! Issuing the key is a write keygate's feed reports, which drops the
//! absence at once; without the feed it lapses with the negative TTL, as
//! in keygate's own cache. Absences are never resurrected.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use apikey::VerifierHash;

pub use crate::config::Ttls;

/// Bounds memory: each approved key is one entry. Past this, answers are
/// still given but not kept until expired entries make room.
pub const MAX_ENTRIES: usize = 100_000;
/// Bounds the absences: a flood of made-up selectors fills it, and then
/// costs callouts (as without the table), never memory.
pub const MAX_ABSENT: usize = 10_000;
/// At most this many tombstones are kept (those no callout can race any
/// more go first, oldest first); a burst of drops beyond it (a bulk
/// import of keys) moves the global stale stamp instead, which outdates
/// every callout in flight at once, and starts over.
const MAX_TOMBSTONES: usize = 16_384;
/// A full map is swept of expired values at most this often: a sweep
/// walks the whole map under its write lock, on an Envoy worker, so a
/// flood of made-up selectors keeping the absences full must not buy one
/// per request.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

type Key = (String, String);

/// Entries by group, then selector: a lookup borrows the request's `&str`s
/// (`Box<str>: Borrow<str>`), so the hot path allocates nothing; a map keyed
/// by `(String, String)` would need both copied to build the probe key.
struct Entries<V> {
    by_group: HashMap<Box<str>, HashMap<Box<str>, V>>,
    len: usize,
    /// When the map, full, was last swept of expired values.
    swept_at: Option<Instant>,
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Self {
            by_group: HashMap::new(),
            len: 0,
            swept_at: None,
        }
    }
}

impl<V> Entries<V> {
    fn get(&self, group: &str, selector: &str) -> Option<&V> {
        self.by_group.get(group)?.get(selector)
    }

    fn contains(&self, group: &str, selector: &str) -> bool {
        self.get(group, selector).is_some()
    }

    fn insert(&mut self, group: &str, selector: &str, entry: V) {
        let selectors = match self.by_group.get_mut(group) {
            Some(selectors) => selectors,
            None => self.by_group.entry(group.into()).or_default(),
        };
        if selectors.insert(selector.into(), entry).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, group: &str, selector: &str) {
        let Some(selectors) = self.by_group.get_mut(group) else {
            return;
        };
        if selectors.remove(selector).is_some() {
            self.len -= 1;
        }
        if selectors.is_empty() {
            self.by_group.remove(group);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        for selectors in self.by_group.values_mut() {
            selectors.retain(|_, entry| keep(entry));
        }
        self.by_group.retain(|_, selectors| !selectors.is_empty());
        self.len = self.by_group.values().map(HashMap::len).sum();
    }
}

#[derive(Debug, Clone)]
struct Entry {
    hash: VerifierHash,
    owner: Arc<str>,
    /// The stamp of the callout that produced it.
    read_at: u64,
    /// Used without asking keygate until then.
    fresh_until: Instant,
    /// Used when keygate cannot be reached until then.
    resurrect_until: Instant,
}

/// keygate answered `unknown` for a (group, selector).
#[derive(Debug, Clone, Copy)]
struct Absent {
    /// The stamp of the callout that produced it.
    read_at: u64,
    /// Answered without asking keygate until then.
    until: Instant,
}

/// What a key's approved verifier hash and owner are, as the table holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub hash: VerifierHash,
    pub owner: Arc<str>,
}

/// A lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Within its positive TTL and not stale: usable without keygate.
    Fresh(Approved),
    /// keygate said no record exists, within the negative TTL and not
    /// stale: `unknown` without asking.
    Absent,
    /// Nothing usable: ask keygate.
    Ask,
}

pub struct Table {
    entries: RwLock<Entries<Entry>>,
    absent: RwLock<Entries<Absent>>,
    /// Every callout and every invalidation takes the next value; 0 is
    /// "never", so the first callout is stamped 1.
    clock: AtomicU64,
    stale_before: AtomicU64,
    /// Per key, the stamp and time of its last invalidation.
    tombstones: Mutex<Tombstones>,
    positive_ttl: Duration,
    negative_ttl: Duration,
    resurrect_ttl: Duration,
    /// How long a tombstone must be kept: longer than any callout can take.
    tombstone_life: Duration,
}

impl Table {
    pub fn new(ttls: Ttls, callout_timeout: Duration) -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            absent: RwLock::new(Entries::default()),
            clock: AtomicU64::new(1),
            stale_before: AtomicU64::new(0),
            tombstones: Mutex::new(Tombstones::default()),
            positive_ttl: ttls.positive,
            negative_ttl: ttls.negative,
            resurrect_ttl: ttls.resurrect,
            tombstone_life: callout_timeout + Duration::from_secs(1),
        }
    }

    /// The stamp for a callout that starts now.
    pub fn stamp(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    pub fn lookup(&self, group: &str, selector: &str, now: Instant) -> Lookup {
        let stale_before = self.stale_before.load(Ordering::SeqCst);
        if let Some(entry) = read(&self.entries).get(group, selector) {
            return if now < entry.fresh_until && entry.read_at > stale_before {
                Lookup::Fresh(Approved {
                    hash: entry.hash.clone(),
                    owner: entry.owner.clone(),
                })
            } else {
                Lookup::Ask
            };
        }
        match read(&self.absent).get(group, selector) {
            Some(absent) if now < absent.until && absent.read_at > stale_before => Lookup::Absent,
            _ => Lookup::Ask,
        }
    }

    /// The approved answer for a key when keygate cannot be reached: any
    /// entry still within its resurrect window, stale or not (a lost feed
    /// must not end resurrection), unless invalidated, which removed it.
    pub fn resurrect(&self, group: &str, selector: &str, now: Instant) -> Option<Approved> {
        let entries = read(&self.entries);
        let entry = entries.get(group, selector)?;
        (now < entry.resurrect_until).then(|| Approved {
            hash: entry.hash.clone(),
            owner: entry.owner.clone(),
        })
    }

    /// Stores what keygate approved for a callout stamped `read_at`, unless
    /// an invalidation came after that stamp. `lasts` caps the entry's life
    /// (the key's `expires`, from now); `None`: the TTLs alone.
    pub fn insert(
        &self,
        group: &str,
        selector: &str,
        approved: Approved,
        read_at: u64,
        now: Instant,
        lasts: Option<Duration>,
    ) -> bool {
        if read_at <= self.stale_before.load(Ordering::SeqCst) {
            return false;
        }
        let cap = |at: Instant| match lasts {
            Some(lasts) => at.min(now + lasts),
            None => at,
        };
        let entry = Entry {
            hash: approved.hash,
            owner: approved.owner,
            read_at,
            fresh_until: cap(now + self.positive_ttl),
            resurrect_until: cap(now + self.positive_ttl + self.resurrect_ttl),
        };
        let stored = self.store_unless_dropped(
            &self.entries,
            MAX_ENTRIES,
            (group, selector),
            read_at,
            entry,
            now,
            |e| now < e.resurrect_until,
        );
        if stored {
            write(&self.absent).remove(group, selector);
        }
        stored
    }

    /// Keeps keygate's `unknown` for a callout stamped `read_at` for the
    /// negative TTL, unless an invalidation came after that stamp (the key
    /// may have been issued meanwhile) or the negative TTL is zero.
    pub fn insert_absent(&self, group: &str, selector: &str, read_at: u64, now: Instant) -> bool {
        if self.negative_ttl.is_zero() || read_at <= self.stale_before.load(Ordering::SeqCst) {
            return false;
        }
        let absent = Absent {
            read_at,
            until: now + self.negative_ttl,
        };
        self.store_unless_dropped(
            &self.absent,
            MAX_ABSENT,
            (group, selector),
            read_at,
            absent,
            now,
            |a| now < a.until,
        )
    }

    /// Stores `value` for a key in `map` unless the key was dropped at or
    /// after `read_at`. The tombstone check and the insert under one lock
    /// order (tombstones, then the map), the one `drop_key` takes, so a drop
    /// cannot slip between them. A full map is first swept of what `live`
    /// says is over (at most once per `SWEEP_EVERY`); still full, nothing
    /// is stored.
    #[allow(clippy::too_many_arguments)]
    fn store_unless_dropped<V>(
        &self,
        map: &RwLock<Entries<V>>,
        capacity: usize,
        (group, selector): (&str, &str),
        read_at: u64,
        value: V,
        now: Instant,
        live: impl FnMut(&V) -> bool,
    ) -> bool {
        let tombstones = lock(&self.tombstones);
        // Again under the lock: a burst of drops moves the stale stamp
        // instead of leaving tombstones (`drop_key`).
        if read_at <= self.stale_before.load(Ordering::SeqCst)
            || tombstones
                .by_key
                .get(&(group.to_owned(), selector.to_owned()))
                .is_some_and(|(dropped, _)| read_at <= *dropped)
        {
            return false;
        }
        let mut entries = write(map);
        if entries.len >= capacity && !entries.contains(group, selector) {
            let due = entries
                .swept_at
                .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
            if due {
                entries.retain(live);
                entries.swept_at = Some(now);
            }
            if entries.len >= capacity {
                return false;
            }
        }
        entries.insert(group, selector, value);
        true
    }

    /// keygate dropped this key (revoked, rewritten): forget it, and refuse
    /// any answer from a callout that started before now.
    pub fn drop_key(&self, group: &str, selector: &str) {
        self.drop_key_at(group, selector, Instant::now());
    }

    fn drop_key_at(&self, group: &str, selector: &str, now: Instant) {
        let key = (group.to_owned(), selector.to_owned());
        let mut tombstones = lock(&self.tombstones);
        let stamp = self.stamp();
        tombstones.prune(now, self.tombstone_life);
        if tombstones.by_key.len() >= MAX_TOMBSTONES {
            // Under the lock `store_unless_dropped` checks it under.
            self.stale_before.fetch_max(stamp, Ordering::SeqCst);
            *tombstones = Tombstones::default();
        } else {
            tombstones.by_key.insert(key.clone(), (stamp, now));
            tombstones.order.push_back((now, key));
        }
        write(&self.entries).remove(group, selector);
        write(&self.absent).remove(group, selector);
    }

    /// keygate denied this key: forget the entry (no tombstone: keygate's
    /// answer is the newest there is).
    pub fn forget(&self, group: &str, selector: &str) {
        write(&self.entries).remove(group, selector);
    }

    /// Every entry held now must be confirmed by keygate before it is used
    /// again (it may still be resurrected while keygate is unreachable).
    pub fn all_stale(&self) {
        let stamp = self.stamp();
        self.stale_before.fetch_max(stamp, Ordering::SeqCst);
    }

    pub fn len(&self) -> usize {
        read(&self.entries).len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many absences are held (expired ones included until swept).
    pub fn absent_len(&self) -> usize {
        read(&self.absent).len
    }
}

// A panic while a lock is held (which `filter` catches) poisons it; the
// data behind these locks is valid after any partial operation (single
// inserts and removes), so the table keeps working instead of denying
// every request from then on.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The keys dropped lately, by key and in the order dropped, so the ones
/// no callout can race any more are let go from the front, one at a time.
#[derive(Default)]
struct Tombstones {
    by_key: HashMap<Key, (u64, Instant)>,
    order: VecDeque<(Instant, Key)>,
}

impl Tombstones {
    fn prune(&mut self, now: Instant, life: Duration) {
        while let Some((at, _)) = self.order.front()
            && now.saturating_duration_since(*at) >= life
        {
            let (at, key) = self.order.pop_front().expect("a front");
            // A later drop of the same key keeps its own, newer one.
            if self.by_key.get(&key).is_some_and(|(_, when)| *when == at) {
                self.by_key.remove(&key);
            }
        }
    }
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apikey::ApiKey;

    const MIN: Duration = Duration::from_secs(60);
    const NEGATIVE: Duration = Duration::from_secs(1);

    fn ttls(positive: Duration, resurrect: Duration) -> Ttls {
        Ttls {
            positive,
            negative: NEGATIVE,
            resurrect,
        }
    }

    fn approved(key: &ApiKey) -> Approved {
        Approved {
            hash: key.verifier_hash(),
            owner: "owner-1".into(),
        }
    }

    fn fresh(key: &ApiKey) -> Lookup {
        Lookup::Fresh(approved(key))
    }

    #[test]
    fn an_approved_key_is_fresh_for_the_positive_ttl_then_resurrectable_then_gone() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let key = ApiKey::generate();
        let sel = key.selector();
        let now = Instant::now();
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Ask);
        let stamp = table.stamp();
        assert!(table.insert("g", sel.as_str(), approved(&key), stamp, now, None));
        assert_eq!(table.lookup("g", sel.as_str(), now), fresh(&key));
        assert_eq!(table.lookup("other", sel.as_str(), now), Lookup::Ask);
        let later = now + MIN + Duration::from_secs(1);
        assert_eq!(table.lookup("g", sel.as_str(), later), Lookup::Ask);
        assert_eq!(
            table.resurrect("g", sel.as_str(), later),
            Some(approved(&key))
        );
        assert_eq!(table.resurrect("g", sel.as_str(), later + MIN), None);
    }

    #[test]
    fn an_expiry_caps_both_windows() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let key = ApiKey::generate();
        let sel = key.selector();
        let now = Instant::now();
        let stamp = table.stamp();
        let lasts = Some(Duration::from_secs(5));
        assert!(table.insert("g", sel.as_str(), approved(&key), stamp, now, lasts));
        let after = now + Duration::from_secs(6);
        assert_eq!(table.lookup("g", sel.as_str(), after), Lookup::Ask);
        assert_eq!(table.resurrect("g", sel.as_str(), after), None);
    }

    #[test]
    fn a_drop_removes_the_key_and_outdates_callouts_started_before_it() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let key = ApiKey::generate();
        let sel = key.selector();
        let now = Instant::now();
        let before = table.stamp();
        assert!(table.insert("g", sel.as_str(), approved(&key), before, now, None));
        let in_flight = table.stamp();
        table.drop_key("g", sel.as_str());
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Ask);
        assert_eq!(table.resurrect("g", sel.as_str(), now), None);
        // The callout that raced the revocation cannot bring it back...
        assert!(!table.insert("g", sel.as_str(), approved(&key), in_flight, now, None));
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Ask);
        // ...one that started after it can (keygate read Vault again).
        let after = table.stamp();
        assert!(table.insert("g", sel.as_str(), approved(&key), after, now, None));
        assert_eq!(table.lookup("g", sel.as_str(), now), fresh(&key));
    }

    /// Tombstones no callout can race any more go, oldest first, as later
    /// drops come; a key dropped again keeps its newer one.
    #[test]
    fn tombstones_past_any_callout_are_let_go_oldest_first() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let life = table.tombstone_life;
        let now = Instant::now();
        let (a, b) = (ApiKey::generate(), ApiKey::generate());
        let a_in_flight = table.stamp();
        table.drop_key_at("g", a.selector().as_str(), now);
        table.drop_key_at("g", b.selector().as_str(), now);
        // `a` dropped again later: its tombstone is the new one.
        table.drop_key_at("g", a.selector().as_str(), now + life / 2);
        table.drop_key_at("g", "c".repeat(32).as_str(), now + life);
        let tombstones = lock(&table.tombstones);
        assert!(
            tombstones
                .by_key
                .contains_key(&("g".into(), a.selector().as_str().into()))
        );
        assert!(
            !tombstones
                .by_key
                .contains_key(&("g".into(), b.selector().as_str().into()))
        );
        assert_eq!(tombstones.by_key.len(), 2);
        assert_eq!(tombstones.order.len(), 2);
        drop(tombstones);
        assert!(!table.insert(
            "g",
            a.selector().as_str(),
            approved(&a),
            a_in_flight,
            now,
            None
        ));
    }

    /// A burst of drops beyond [`MAX_TOMBSTONES`] within a tombstone's life
    /// (a bulk import) keeps the map bounded and still refuses every answer
    /// of a callout that started before the burst; walking the map on every
    /// drop, as before, made such a burst quadratic under the lock the
    /// workers' inserts take.
    #[test]
    fn a_burst_of_drops_stays_bounded_and_outdates_every_callout_in_flight() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let now = Instant::now();
        let early = ApiKey::generate();
        let in_flight = table.stamp();
        table.drop_key_at("g", early.selector().as_str(), now);
        for _ in 0..MAX_TOMBSTONES + 10 {
            table.drop_key_at("g", ApiKey::generate().selector().as_str(), now);
        }
        assert!(lock(&table.tombstones).by_key.len() <= MAX_TOMBSTONES);
        assert!(lock(&table.tombstones).order.len() <= MAX_TOMBSTONES);
        assert!(!table.insert(
            "g",
            early.selector().as_str(),
            approved(&early),
            in_flight,
            now,
            None
        ));
        let after = table.stamp();
        assert!(table.insert(
            "g",
            early.selector().as_str(),
            approved(&early),
            after,
            now,
            None
        ));
    }

    #[test]
    fn stale_entries_are_asked_again_but_still_resurrectable() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let key = ApiKey::generate();
        let sel = key.selector();
        let now = Instant::now();
        let before = table.stamp();
        assert!(table.insert("g", sel.as_str(), approved(&key), before, now, None));
        let in_flight = table.stamp();
        table.all_stale();
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Ask);
        assert_eq!(
            table.resurrect("g", sel.as_str(), now),
            Some(approved(&key))
        );
        assert!(!table.insert("g", sel.as_str(), approved(&key), in_flight, now, None));
        let after = table.stamp();
        assert!(table.insert("g", sel.as_str(), approved(&key), after, now, None));
        assert_eq!(table.lookup("g", sel.as_str(), now), fresh(&key));
    }

    #[test]
    fn forgetting_removes_without_outdating() {
        let table = Table::new(ttls(MIN, Duration::ZERO), Duration::from_secs(3));
        let key = ApiKey::generate();
        let sel = key.selector();
        let now = Instant::now();
        let stamp = table.stamp();
        assert!(table.insert("g", sel.as_str(), approved(&key), stamp, now, None));
        table.forget("g", sel.as_str());
        assert_eq!(table.len(), 0);
        assert!(table.insert("g", sel.as_str(), approved(&key), stamp, now, None));
    }

    #[test]
    fn entries_are_counted_per_group_and_selector() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let key = ApiKey::generate();
        let sel = key.selector();
        let now = Instant::now();
        let stamp = table.stamp();
        assert!(table.insert("g", sel.as_str(), approved(&key), stamp, now, None));
        assert!(table.insert("g", sel.as_str(), approved(&key), stamp, now, None));
        assert_eq!(
            table.len(),
            1,
            "a second answer for a key replaces the first"
        );
        assert!(table.insert("h", sel.as_str(), approved(&key), stamp, now, None));
        assert_eq!(
            table.len(),
            2,
            "the same selector in another group is another key"
        );
        table.drop_key("g", sel.as_str());
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Ask);
        assert_eq!(table.lookup("h", sel.as_str(), now), fresh(&key));
        table.forget("h", sel.as_str());
        assert!(table.is_empty());
    }

    #[test]
    fn an_absence_answers_for_the_negative_ttl_only() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let key = ApiKey::generate();
        let sel = key.selector();
        let now = Instant::now();
        let stamp = table.stamp();
        assert!(table.insert_absent("g", sel.as_str(), stamp, now));
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Absent);
        assert_eq!(table.lookup("h", sel.as_str(), now), Lookup::Ask);
        assert_eq!(table.lookup("g", sel.as_str(), now + NEGATIVE), Lookup::Ask);
        // Never resurrected, and not an approved entry.
        assert_eq!(table.resurrect("g", sel.as_str(), now), None);
        assert_eq!((table.len(), table.absent_len()), (0, 1));
    }

    #[test]
    fn issuing_the_key_ends_its_absence_at_once() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let key = ApiKey::generate();
        let sel = key.selector();
        let now = Instant::now();
        let asked = table.stamp();
        // The key is written while keygate's `unknown` is on its way back:
        // the feed's drop outdates the answer.
        let racing = table.stamp();
        table.drop_key("g", sel.as_str());
        assert!(!table.insert_absent("g", sel.as_str(), racing, now));
        assert!(!table.insert_absent("g", sel.as_str(), asked, now));
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Ask);
        // Held, then the feed reports the write.
        let later = table.stamp();
        assert!(table.insert_absent("g", sel.as_str(), later, now));
        table.drop_key("g", sel.as_str());
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Ask);
        // Held, then keygate approves it (no feed): the approval replaces it.
        let again = table.stamp();
        assert!(table.insert_absent("g", sel.as_str(), again, now));
        let approved_at = table.stamp();
        assert!(table.insert("g", sel.as_str(), approved(&key), approved_at, now, None));
        assert_eq!(table.lookup("g", sel.as_str(), now), fresh(&key));
        assert_eq!(table.absent_len(), 0);
    }

    #[test]
    fn a_stale_line_ends_absences_too() {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let sel = ApiKey::generate().selector();
        let now = Instant::now();
        let stamp = table.stamp();
        assert!(table.insert_absent("g", sel.as_str(), stamp, now));
        table.all_stale();
        assert_eq!(table.lookup("g", sel.as_str(), now), Lookup::Ask);
        assert!(!table.insert_absent("g", sel.as_str(), stamp, now));
    }

    #[test]
    fn a_zero_negative_ttl_keeps_no_absence() {
        let table = Table::new(
            Ttls {
                positive: MIN,
                negative: Duration::ZERO,
                resurrect: MIN,
            },
            Duration::from_secs(3),
        );
        let sel = ApiKey::generate().selector();
        let stamp = table.stamp();
        assert!(!table.insert_absent("g", sel.as_str(), stamp, Instant::now()));
        assert_eq!(table.absent_len(), 0);
    }

    /// A table holding `MAX_ABSENT` absences, all kept at the returned
    /// time under the returned stamp.
    fn full_of_absences() -> (Table, u64, Instant) {
        let table = Table::new(ttls(MIN, MIN), Duration::from_secs(3));
        let now = Instant::now();
        let stamp = table.stamp();
        for n in 0..MAX_ABSENT {
            assert!(table.insert_absent("g", &format!("{n:032x}"), stamp, now));
        }
        (table, stamp, now)
    }

    #[test]
    fn absences_are_bounded_and_expired_ones_make_room() {
        let (table, stamp, now) = full_of_absences();
        let one_more = format!("{:032x}", MAX_ABSENT);
        assert!(!table.insert_absent("g", &one_more, stamp, now));
        assert_eq!(table.lookup("g", &one_more, now), Lookup::Ask);
        // Once they expired, the next insert sweeps them.
        assert!(table.insert_absent("g", &one_more, stamp, now + NEGATIVE));
        assert_eq!(table.absent_len(), 1);
    }

    #[test]
    fn a_full_map_is_swept_at_most_once_per_interval() {
        let (table, stamp, now) = full_of_absences();
        let extra = |n: usize| format!("{:032x}", MAX_ABSENT + n);
        // Just before they expire: a sweep, which frees nothing.
        let swept = now + NEGATIVE - Duration::from_millis(1);
        assert!(!table.insert_absent("g", &extra(1), stamp, swept));
        // Expired now, but the last sweep was a moment ago: none yet, so
        // a flood of new selectors does not walk the map per request.
        assert!(!table.insert_absent("g", &extra(2), stamp, now + NEGATIVE));
        assert_eq!(table.absent_len(), MAX_ABSENT);
        // One interval after the last sweep: the next one frees them.
        assert!(table.insert_absent("g", &extra(3), stamp, swept + SWEEP_EVERY));
        assert_eq!(table.absent_len(), 1);
    }
}
