//! Scale: many keys in Vault, all of them in keygate's cache. Per size:
//! how long the concurrent writes took, keygate's resident memory with the
//! cache full (`VmRSS` of /proc/<pid>/status), bytes per cached key over
//! the empty-cache baseline, and warm-cache throughput through Envoy with
//! requests spread round robin over every cached key.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::load::{Burst, Keys, LoadGenerator};
use rig::vault::client::VaultClient;

#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub keys: usize,
    /// Keys written in this step (the sizes are cumulative) and how long.
    pub written: usize,
    pub write_ms: u64,
    pub write_per_s: f64,
    /// How long requesting each new key once (a Vault read each) took.
    pub fill_ms: u64,
    pub rss_kib: u64,
    pub baseline_rss_kib: u64,
    pub bytes_per_key: f64,
    pub warm_rps: f64,
    pub warm: super::stats::Latency,
    /// Requests of the warm burst that did not get 200.
    pub failed: u64,
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).with_context(|| format!("{path} has no VmRSS line"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub struct ScaleSetup<'a> {
    pub root: &'a VaultClient,
    pub mount: &'a str,
    pub group: &'a str,
    /// keygate's forward-auth URL for the group's path (`.../auth/<path>`):
    /// filling the cache straight through keygate is quicker than via Envoy.
    pub fill_url: &'a str,
    /// The gateway URL of the group's path (Envoy + keygate gRPC).
    pub gateway_url: &'a str,
    pub keygate_pid: i32,
    pub generator: &'a LoadGenerator,
    pub connections: usize,
    pub window: Duration,
}

/// How long filling the cache with one step's new keys may take.
const FILL_CAP: Duration = Duration::from_secs(600);

pub async fn run(setup: &ScaleSetup<'_>, sizes: &[usize]) -> Result<Vec<ScaleResult>> {
    let baseline = rss_kib(setup.keygate_pid)?;
    let mut all: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for &size in sizes {
        let missing = size.saturating_sub(all.len());
        rig::say!("bench: scale {size} keys: writing {missing} to Vault");
        let (new, took) =
            super::keys::write_keys(setup.root, setup.mount, setup.group, missing).await?;
        rig::say!(
            "bench: scale {size} keys: written in {}; filling keygate's cache",
            rig::base::progress::secs(took)
        );
        let pool = std::sync::Arc::new(new.clone());
        let fill = setup
            .generator
            .run(Burst {
                url: setup.fill_url,
                keys: Keys::Fresh {
                    pool: pool.clone(),
                    next: Default::default(),
                },
                connections: setup.connections,
                max_requests: new.len() as u64,
                max_time: FILL_CAP,
                rate: None,
            })
            .await?;
        // The step measures a cache holding every key: one that does not
        // (a failed fill, or keys the fill's time cap left unsent) would
        // give memory per key and throughput of another size.
        let unsent = new.len().saturating_sub(fill.requests() as usize);
        if fill.failed > 0 || unsent > 0 {
            anyhow::bail!(
                "scale {size} keys: {} of {} cache-filling requests failed (last: {}) and {unsent} keys were not sent within {}: keygate's cache does not hold the {size} keys this step measures",
                fill.failed,
                fill.requests(),
                fill.last_failure.as_deref().unwrap_or("none"),
                rig::base::progress::secs(FILL_CAP)
            );
        }
        all.extend(new);
        let rss = rss_kib(setup.keygate_pid)?;
        let warm = setup
            .generator
            .run(Burst {
                url: setup.gateway_url,
                keys: Keys::Cycle(std::sync::Arc::new(all.clone())),
                connections: setup.connections,
                max_requests: u64::MAX,
                max_time: setup.window,
                rate: None,
            })
            .await?;
        out.push(ScaleResult {
            keys: size,
            written: missing,
            write_ms: took.as_millis() as u64,
            write_per_s: missing as f64 / took.as_secs_f64().max(1e-9),
            fill_ms: fill.elapsed.as_millis() as u64,
            rss_kib: rss,
            baseline_rss_kib: baseline,
            bytes_per_key: (rss.saturating_sub(baseline) * 1024) as f64 / size as f64,
            warm_rps: warm.rps(),
            warm: super::stats::Latency::of(&warm.latencies_us),
            failed: warm.failed,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_vm_rss_in_kib() {
        let status = "Name:\tkeygate\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(super::parse_vm_rss(status), Some(12345));
        assert_eq!(super::parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn our_own_rss_is_readable() {
        assert!(super::rss_kib(std::process::id() as i32).unwrap() > 0);
    }
}
