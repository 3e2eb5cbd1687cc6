//! A global cap on Vault record reads in flight, with a bounded queue.
//!
//! The caches absorb repeated keys, but a flood of distinct random keys
//! misses every time; without a cap each one becomes a Vault request at
//! once, and Vault (shared by everything else) takes the load. Here at most
//! `limits.vault_reads` reads run at once; up to `limits.vault_read_queue`
//! more wait for a slot, each at most `vault.timeout`; anything beyond is
//! refused with [`VaultError::Busy`], which the caller answers 503
//! `vault-busy`, never allow. Concurrent lookups of one key share one read
//! before they get here (the cache coalesces them), so the cap counts
//! distinct reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apikey::{KeyRecord, Selector};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::boxed_future::BoxFuture;
use crate::cache::RecordSource;
use crate::metrics::Metrics;
use crate::vault::VaultError;

/// A [`RecordSource`] whose reads go through the cap.
pub struct LimitedSource {
    inner: Arc<dyn RecordSource>,
    slots: Semaphore,
    max_in_flight: usize,
    max_queued: usize,
    queued: AtomicUsize,
    max_wait: Duration,
    metrics: Arc<Metrics>,
}

impl LimitedSource {
    /// `max_wait`: how long a queued read waits for a slot (`vault.timeout`,
    /// so a queued request is answered within about twice a read's timeout).
    pub fn new(
        inner: Arc<dyn RecordSource>,
        max_in_flight: usize,
        max_queued: usize,
        max_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            slots: Semaphore::new(max_in_flight),
            max_in_flight,
            max_queued,
            queued: AtomicUsize::new(0),
            max_wait,
            metrics,
        }
    }

    async fn slot(&self) -> Result<SemaphorePermit<'_>, VaultError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let place = QueuePlace::take(&self.queued);
        let permit = if place.position < self.max_queued {
            tokio::time::timeout(self.max_wait, self.slots.acquire())
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        permit.ok_or_else(|| {
            self.metrics.vault_read_refused();
            VaultError::Busy {
                in_flight: self.max_in_flight - self.slots.available_permits(),
                queued: self.queued.load(Ordering::SeqCst),
            }
        })
    }
}

/// A place in the queue, given back when dropped (served, timed out or
/// refused alike).
struct QueuePlace<'a> {
    queued: &'a AtomicUsize,
    /// How many were queued before this one.
    position: usize,
}

impl<'a> QueuePlace<'a> {
    fn take(queued: &'a AtomicUsize) -> Self {
        let position = queued.fetch_add(1, Ordering::SeqCst);
        Self { queued, position }
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RecordSource for LimitedSource {
    fn read<'a>(
        &'a self,
        group: &'a str,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, VaultError>> {
        Box::pin(async move {
            let _slot = self.slot().await?;
            self.inner.read(group, selector).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use apikey::ApiKey;

    use super::*;
    use crate::cache::tests::FakeSource;

    #[tokio::test]
    async fn over_the_cap_and_the_queue_reads_are_refused_not_sent() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(200),
            ..Default::default()
        });
        let metrics = Arc::new(Metrics::new());
        let limited = Arc::new(LimitedSource::new(
            source.clone(),
            2,
            3,
            Duration::from_secs(30),
            metrics.clone(),
        ));
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (limited, selector) = (limited.clone(), ApiKey::generate().selector());
            reads.spawn(async move {
                limited
                    .read("g", &selector)
                    .await
                    .map_err(|err| matches!(err, VaultError::Busy { .. }))
            });
        }
        let mut results = Vec::new();
        while let Some(result) = reads.join_next().await {
            results.push(result.unwrap());
        }
        // 2 in flight + 3 queued are served; the other 3 are refused at once
        // and never reach the source.
        assert_eq!(results.iter().filter(|r| **r == Ok(None)).count(), 5);
        assert_eq!(results.iter().filter(|r| **r == Err(true)).count(), 3);
        assert_eq!(source.reads.load(Ordering::SeqCst), 5);
        assert_eq!(limited.queued.load(Ordering::SeqCst), 0);
        assert!(
            metrics
                .encode()
                .contains("keygate_vault_reads_refused_total 3")
        );
    }

    #[tokio::test]
    async fn a_queued_read_gives_up_after_its_wait() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(500),
            ..Default::default()
        });
        let limited = Arc::new(LimitedSource::new(
            source.clone(),
            1,
            10,
            Duration::from_millis(20),
            Arc::new(Metrics::new()),
        ));
        let first = {
            let (limited, selector) = (limited.clone(), ApiKey::generate().selector());
            tokio::spawn(async move { limited.read("g", &selector).await.is_ok() })
        };
        // Wait (polling) until the first read holds the only slot.
        while limited.slots.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        let second = limited.read("g", &ApiKey::generate().selector()).await;
        assert!(matches!(second, Err(VaultError::Busy { .. })), "{second:?}");
        assert!(first.await.unwrap());
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
    }

    /// keygate's own read queue full is no outage: anyone can fill it, with
    /// random selectors, while Vault answers. A revoked key's read refused
    /// so is denied, its old record not resurrected by the cache above.
    /// (Here, not in cache's tests: cache never imports this module.)
    #[tokio::test]
    async fn a_read_refused_by_keygates_own_limits_is_not_resurrected() {
        let source = Arc::new(FakeSource {
            delay: Duration::from_millis(200),
            ..Default::default()
        });
        let key = ApiKey::generate();
        source.put("g", &key, apikey::KeyRecord::for_key(&key, "o"));
        let metrics = Arc::new(Metrics::new());
        // One read at a time, none queued.
        let limited = Arc::new(LimitedSource::new(
            source.clone(),
            1,
            0,
            Duration::from_secs(5),
            metrics.clone(),
        ));
        let config = crate::config::CacheConfig {
            positive_ttl: Duration::from_millis(30),
            negative_ttl: Duration::from_millis(30),
            resurrect_ttl: Duration::from_secs(60),
        };
        let cache = Arc::new(crate::cache::RecordCache::new(limited, config, metrics));
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());

        // Revoked (no audit stream); past the positive TTL, a flood of
        // random selectors holds the only read slot.
        source.records.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let flood = {
            let (cache, selector) = (cache.clone(), ApiKey::generate().selector());
            tokio::spawn(async move { cache.get("g", &selector).await.is_ok() })
        };
        while source.reads.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        match cache.get("g", &key.selector()).await {
            Err(err) => assert!(matches!(*err, VaultError::Busy { .. }), "{err:?}"),
            Ok(found) => panic!("a revoked key's refused read answered {found:?}"),
        }
        assert!(flood.await.unwrap());
        // Once the slot is free the read finds the record gone.
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
    }
}
