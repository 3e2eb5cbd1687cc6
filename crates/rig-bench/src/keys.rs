//! API keys for the benchmark, written to Vault the way the portal does
//! (one KV v2 record per key, `apikey::KeyRecord`), many at once over the
//! HTTP API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apikey::{ApiKey, KeyRecord};

use rig::vault::client::VaultClient;

/// Concurrent writers. Vault dev mode on 2 cores saturates well below this.
pub const WRITERS: usize = 32;

/// Whether the `n`th key of a batch is registered as a secret (redacted from
/// every output, searched for by the run's scans): the first 128 (the warm
/// key and the native filter's 100 among them) and one in 64 after. Not all:
/// a pool holds up to 32 000 keys, and redaction checks each registered
/// secret in turn; a leak of bench keys (a gateway logging `x-api-key`)
/// leaks them all alike, so a sample finds it.
fn registered(n: usize) -> bool {
    n < 128 || n.is_multiple_of(64)
}

/// Writes `count` fresh keys of `group` with `WRITERS` concurrent requests;
/// returns the keys and the wall time of the writes.
pub async fn write_keys(
    root: &VaultClient,
    mount: &str,
    group: &str,
    count: usize,
) -> Result<(Vec<String>, Duration)> {
    let keys: Arc<Vec<ApiKey>> = Arc::new((0..count).map(|_| ApiKey::generate()).collect());
    for (n, key) in keys.iter().enumerate() {
        if registered(n) {
            rig::base::redact::register_secret(key.expose());
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS.min(count.max(1)) {
        let (root, keys, next) = (root.clone(), keys.clone(), next.clone());
        let (mount, group) = (mount.to_owned(), group.to_owned());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(n) else {
                    return anyhow::Ok(());
                };
                let record = KeyRecord::for_key(key, "bench");
                root.kv2_put(
                    &mount,
                    &format!("{group}/{}", key.selector().as_str()),
                    &serde_json::to_value(&record)?,
                )
                .await
                .with_context(|| format!("writing the record of {:?}", key.selector()))?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a key writer panicked")??;
    }
    let elapsed = started.elapsed();
    Ok((
        keys.iter().map(|k| k.expose().to_owned()).collect(),
        elapsed,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_keys_and_a_sample_are_registered() {
        let registered: Vec<usize> = (0..400).filter(|n| super::registered(*n)).collect();
        assert_eq!(registered.len(), 128 + 5, "{registered:?}"); // 128, 192, 256, 320, 384
        assert!(registered.contains(&0) && registered.contains(&99));
        assert!(registered.contains(&192) && !registered.contains(&193));
    }
}
