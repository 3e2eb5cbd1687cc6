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

/// Writes `count` fresh keys of `group` with `WRITERS` concurrent requests;
/// returns the keys and the wall time of the writes.
pub async fn write_keys(
    root: &VaultClient,
    mount: &str,
    group: &str,
    count: usize,
) -> Result<(Vec<String>, Duration)> {
    let keys: Arc<Vec<ApiKey>> = Arc::new((0..count).map(|_| ApiKey::generate()).collect());
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
