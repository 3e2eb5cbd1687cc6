//! keygate's record cache at scale, in-process: fills a `RecordCache` with
//! N found records (the bench's scale step's shape: one group, owner
//! "bench", positive TTL 1 h so nothing expires, the default resurrect
//! window so each record is also kept as the last good answer) and prints
//! the process's `VmRSS` growth per cached key.
//!
//! `cargo run --release -p keygate --example cache_memory [-- <keys>]`
//! (default 100 000). A quick check of the cache's own footprint; the
//! whole-system figure (keygate reading the keys from a real Vault over
//! HTTP, behind Envoy) is `cargo xtask bench`'s scale section.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apikey::{ApiKey, KeyRecord, Selector};
use keygate::boxed_future::BoxFuture;
use keygate::cache::{RecordCache, RecordSource};
use keygate::config::CacheConfig;
use keygate::metrics::Metrics;
use keygate::vault::VaultError;

/// Answers every selector with a fresh record, as Vault's JSON would
/// deserialize into one (new Strings each time).
struct EveryKeyExists {
    reads: AtomicUsize,
}

impl RecordSource for EveryKeyExists {
    fn read<'a>(
        &'a self,
        _group: &'a str,
        _selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, VaultError>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(Some(KeyRecord::for_key(&ApiKey::generate(), "bench"))) })
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("reading /proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/self/status has a VmRSS line")
}

fn main() {
    let keys: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("the argument is a number of keys"))
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let source = Arc::new(EveryKeyExists {
            reads: AtomicUsize::new(0),
        });
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(1),
            resurrect_ttl: Duration::from_secs(30),
        };
        let cache = RecordCache::new(source.clone(), config, Arc::new(Metrics::new()));
        // The selectors exist before the baseline, as the requests that
        // bring them do not stay in keygate.
        let selectors: Vec<Selector> = (0..keys).map(|_| ApiKey::generate().selector()).collect();
        let baseline = rss_kib();
        for selector in &selectors {
            let found = cache.get("animal-rescue-api", selector).await.unwrap();
            assert!(found.is_some());
        }
        // Every key answers from the cache now (no new read).
        for selector in selectors.iter().take(1000) {
            cache.get("animal-rescue-api", selector).await.unwrap();
        }
        assert_eq!(source.reads.load(Ordering::Relaxed), keys);
        let rss = rss_kib();
        println!(
            "{keys} cached keys: VmRSS {:.1} MiB ({:.1} MiB before filling), {:.0} bytes per cached key",
            rss as f64 / 1024.0,
            baseline as f64 / 1024.0,
            (rss.saturating_sub(baseline) * 1024) as f64 / keys as f64
        );
    });
}
