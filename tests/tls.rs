//! TLS, end to end (group `rotation`): the gateway's TLS listener (env.json
//! `tls`) serves a certificate that Vault's pki engine issued, `bao agent`
//! rendered and Envoy loaded through SDS from a watched directory; when the
//! agent re-issues it (at 85-95% of its TTL), Envoy serves the new serial
//! without a restart and no request fails.
//!
//! Everything goes through public endpoints: TLS handshakes with rustls
//! trusting only the run's pki root CA (so an expired, foreign or wrongly
//! named certificate fails the handshake), the Vault HTTP API (`LIST
//! <mount>/certs`, `GET <mount>/cert/<serial>`), and the TLS Envoy's admin
//! (`/server_info`, `/stats`).
//!
//! Propagation ("tls"/"serving-cert" in report.json) is measured from the
//! moment a new serial first appears in Vault's `LIST <mount>/certs` to the
//! moment it is first served, both sampled every `SAMPLE_EVERY`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keyrig_e2e::*;
use reqwest::Method;
use rig::base::wait::{Probe, wait_until};
use rig::contract::env::TlsEnvironment;
use rig::contract::rotation::RotationRecord;
use rig::local::tls_probe::{ServedCert, TlsProbe, first_certificate_der};
use rig::vault::client::{Secret, VaultClient};
use serde_json::Value;

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "tls";

const API_GROUP: &str = "animal-rescue-api";
/// Certificate rotations the rotation case waits for.
const ROTATIONS: usize = 3;
/// Request loops over TLS during the rotations (each request is a fresh
/// handshake, so each one checks the certificate served at that moment).
const LOAD_WORKERS: usize = 2;
/// How often the sampler lists Vault's serials and reads the served one.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

fn tls() -> Option<&'static TlsEnvironment> {
    env().tls.as_ref()
}

fn root() -> VaultClient {
    VaultClient::root(
        &env().vault_addr,
        Secret::new(env().root_token().expect("the root token file of env.json")),
    )
    .expect("a Vault client for env.json's address")
}

fn probe(tls: &TlsEnvironment) -> TlsProbe {
    TlsProbe::for_env(tls).expect("a TLS client for env.json's tls section")
}

/// Every serial the pki mount issued (and the CA's own).
async fn issued_serials(vault: &VaultClient, mount: &str) -> Result<Vec<String>> {
    let list = Method::from_bytes(b"LIST").expect("LIST is a method name");
    let body = vault.call(list, &format!("{mount}/certs"), None).await?;
    Ok(body["data"]["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

/// The DER of the certificate Vault issued with this serial.
async fn issued_der(vault: &VaultClient, mount: &str, serial: &str) -> Result<Vec<u8>> {
    let body = vault
        .call(Method::GET, &format!("{mount}/cert/{serial}"), None)
        .await
        .with_context(|| format!("Vault has no certificate with serial {serial}"))?;
    let pem = body["data"]["certificate"]
        .as_str()
        .with_context(|| format!("{mount}/cert/{serial} holds no certificate: {body}"))?;
    first_certificate_der(pem)
}

/// Asserts that `served` is byte for byte a certificate Vault issued.
async fn assert_issued_by_vault(vault: &VaultClient, tls: &TlsEnvironment, served: &ServedCert) {
    let serials = issued_serials(vault, &tls.pki_mount).await.unwrap();
    assert!(
        serials.contains(&served.info.serial),
        "the served serial {} is not among the {} serials {}/certs lists",
        served.info.serial,
        serials.len(),
        tls.pki_mount
    );
    let issued = issued_der(vault, &tls.pki_mount, &served.info.serial)
        .await
        .unwrap();
    assert!(
        issued == served.der,
        "the served certificate differs from the one Vault issued as {}",
        served.info.serial
    );
}

/// Envoy's `/server_info`: uptime of this process (`"123s"`) and state.
async fn envoy_uptime(admin: &str) -> Result<u64> {
    let info: Value = reqwest::get(format!("{admin}/server_info"))
        .await?
        .json()
        .await?;
    let uptime = info["uptime_current_epoch"]
        .as_str()
        .and_then(|s| s.trim_end_matches('s').parse::<f64>().ok())
        .with_context(|| format!("/server_info has no uptime_current_epoch: {info}"))?;
    Ok(uptime as u64)
}

/// One counter of Envoy's `/stats` whose name ends with `suffix`.
async fn envoy_counter(admin: &str, suffix: &str) -> Result<u64> {
    let text = reqwest::get(format!("{admin}/stats")).await?.text().await?;
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .find(|(name, _)| name.ends_with(suffix))
        .and_then(|(_, v)| v.trim().parse().ok())
        .with_context(|| format!("Envoy's /stats has no counter *{suffix}"))
}

#[tokio::test]
async fn tls_served_certificate_is_one_vault_issued() {
    let mut case = case(
        ASSERTION_GROUP,
        "tls_served_certificate_is_one_vault_issued",
    );
    let Some(tls) = tls() else {
        case.skip("env.json has no `tls`: this environment serves no TLS listener");
        return;
    };
    if let Some(reason) = rig::contract::once::skip_reason(ASSERTION_GROUP, env().mode.as_deref()) {
        case.skip(reason);
        return;
    }
    let probe = probe(tls);
    // The handshake itself verifies chain (the pki root CA), name and validity.
    let served = probe.served_certificate().await.unwrap();
    let vault = root();
    assert_issued_by_vault(&vault, tls, &served).await;
    let lifetime = served.info.not_after - served.info.not_before;
    assert!(
        u64::try_from(lifetime).unwrap_or(0) * 1000 <= tls.cert_ttl_ms + 60_000,
        "the served certificate lives {lifetime} s, not a short-lived one (ttl {} ms plus Vault's 30 s backdating)",
        tls.cert_ttl_ms
    );

    // Behind TLS the route still goes through keygate.
    let key = issue_key(API_GROUP, |r| r).await.unwrap();
    let path = api_path(API_GROUP);
    let ok = probe
        .get(&path, &[("x-api-key", key.expose())])
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "a valid key over TLS: {ok:?}");
    let missing = probe.get(&path, &[]).await.unwrap();
    assert_eq!(
        (missing.status, missing.header("x-keyrig-reason")),
        (401, Some("missing")),
        "no key over TLS"
    );
    case.note(format!(
        "{} serves serial {} (issued by {}), byte-identical to {}/cert/{}",
        tls.url, served.info.serial, served.info.issuer, tls.pki_mount, served.info.serial
    ));
}

/// Lists Vault's serials and reads the served one every `SAMPLE_EVERY`,
/// remembering when each serial was first seen on either side.
struct Sampler {
    stop: Arc<AtomicBool>,
    /// serial -> first seen in `LIST <mount>/certs`.
    in_vault: Arc<Mutex<HashMap<String, Instant>>>,
    /// Each distinct serial served, in order, with when it was first seen.
    served: Arc<Mutex<Vec<(ServedCert, Instant)>>>,
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(tls: &TlsEnvironment, first: ServedCert) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let in_vault = Arc::new(Mutex::new(HashMap::new()));
        let served = Arc::new(Mutex::new(vec![(first, Instant::now())]));
        let last_error = Arc::new(Mutex::new(None));
        let (s, v, d, e) = (
            stop.clone(),
            in_vault.clone(),
            served.clone(),
            last_error.clone(),
        );
        let (probe, mount) = (probe(tls), tls.pki_mount.clone());
        let task = tokio::spawn(async move {
            let vault = root();
            while !s.load(Ordering::Relaxed) {
                match issued_serials(&vault, &mount).await {
                    Ok(serials) => {
                        let now = Instant::now();
                        let mut map = v.lock().unwrap();
                        for serial in serials {
                            map.entry(serial).or_insert(now);
                        }
                    }
                    Err(err) => *e.lock().unwrap() = Some(format!("LIST: {err:#}")),
                }
                match probe.served_certificate().await {
                    Ok(cert) => {
                        let now = Instant::now();
                        let mut served = d.lock().unwrap();
                        let last = &served.last().expect("starts with one").0;
                        if last.info.serial != cert.info.serial {
                            // Issued between the LIST and this handshake:
                            // first seen in Vault no later than now.
                            v.lock()
                                .unwrap()
                                .entry(cert.info.serial.clone())
                                .or_insert(now);
                            served.push((cert, now));
                        }
                    }
                    Err(err) => *e.lock().unwrap() = Some(format!("handshake: {err:#}")),
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        Self {
            stop,
            in_vault,
            served,
            last_error,
            task,
        }
    }

    fn served(&self, n: usize) -> Option<(ServedCert, Instant)> {
        self.served.lock().unwrap().get(n).cloned()
    }

    fn first_in_vault(&self, serial: &str) -> Option<Instant> {
        self.in_vault.lock().unwrap().get(serial).copied()
    }

    fn last_seen(&self) -> String {
        let served = self.served.lock().unwrap();
        let (cert, _) = served.last().expect("starts with one");
        match self.last_error.lock().unwrap().as_ref() {
            Some(err) => format!("serial {} (last error: {err})", cert.info.serial),
            None => format!("serial {}", cert.info.serial),
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// Valid API-key requests over TLS in loops, each a full handshake, 20 ms
/// apart to leave the two shared cores some air.
fn tls_load(tls: &TlsEnvironment, path: String, key: String) -> Load {
    let probe = probe(tls);
    Load::start_with(LOAD_WORKERS, Duration::from_millis(20), move || {
        let (probe, path, key) = (probe.clone(), path.clone(), key.clone());
        async move {
            let reply = probe.get(&path, &[("x-api-key", &key)]).await?;
            let shown = format!("{} {:?}", reply.status, reply.header("x-keyrig-reason"));
            Ok((reply.status, shown))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rotated_certificates_are_served_without_restart_under_load() {
    let mut case = case(
        ASSERTION_GROUP,
        "tls_rotated_certificates_are_served_without_restart_under_load",
    );
    let Some(tls) = tls() else {
        case.skip("env.json has no `tls`: this environment serves no TLS listener");
        return;
    };
    if let Some(reason) = rig::contract::once::skip_reason(ASSERTION_GROUP, env().mode.as_deref()) {
        case.skip(reason);
        return;
    }
    let vault = root();
    let path = api_path(API_GROUP);
    let key = issue_key(API_GROUP, |r| r).await.unwrap();
    let probe = probe(tls);
    // Read before the first served serial: each rotation after that serial
    // is an SDS update after this reading. (Read after it, a rotation
    // landing in between was counted here and missed below.)
    let sds_updates_before = envoy_counter(&tls.admin_url, "ssl_context_update_by_sds")
        .await
        .unwrap();
    let first = probe.served_certificate().await.unwrap();
    let reply = probe
        .get(&path, &[("x-api-key", key.expose())])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "a valid key over TLS: {reply:?}");

    let uptime_before = envoy_uptime(&tls.admin_url).await.unwrap();
    let watched_from = Instant::now();

    let sampler = Sampler::start(tls, first.clone());
    let load = tls_load(tls, path.clone(), key.expose().to_owned());
    let rotations = async {
        let mut propagation = Vec::new();
        let mut previous = first.clone();
        for n in 1..=ROTATIONS {
            // A new certificate every 85-95% of the TTL: one TTL plus slack.
            let deadline = Duration::from_millis(tls.cert_ttl_ms) + Duration::from_secs(15);
            let (served, seen_at) = wait_until(
                &format!("rotation {n}: a new serial served at {}", tls.url),
                deadline,
                async || {
                    Ok(match sampler.served(n) {
                        Some(found) => Probe::Ready(found),
                        None => Probe::seen(sampler.last_seen()),
                    })
                },
            )
            .await?;
            let issued_at = sampler
                .first_in_vault(&served.info.serial)
                .context("the sampler saw the serial served but never listed")?;
            let took = seen_at.saturating_duration_since(issued_at);
            if served.info.not_after <= previous.info.not_after {
                bail!(
                    "rotation {n}: serial {} expires at {}, not after the previous one's {}",
                    served.info.serial,
                    served.info.not_after,
                    previous.info.not_after
                );
            }
            rig::contract::rotation::record(
                &RotationRecord {
                    mode: "tls".into(),
                    what: "serving-cert".into(),
                    propagation_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                },
                Some(n as u32),
            )?;
            propagation.push((served.clone(), took));
            previous = served;
        }
        anyhow::Ok(propagation)
    }
    .await;
    let (ok, failed, last) = load.finish().await;
    sampler.finish().await;
    let propagation = rotations.unwrap();

    // Every rotated certificate is one Vault issued, byte for byte.
    for (served, _) in &propagation {
        assert_issued_by_vault(&vault, tls, served).await;
    }
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests over TLS failed during {ROTATIONS} certificate rotations; the last: {last:?}",
        ok + failed
    );
    assert!(ok > 0, "no request completed during the rotations");

    // Envoy was not restarted: its process has been up at least as long as
    // this case watched it (whole seconds, so one second of rounding), and
    // it took each new certificate through SDS.
    let watched = watched_from.elapsed().as_secs();
    let uptime_after = envoy_uptime(&tls.admin_url).await.unwrap();
    assert!(
        uptime_after + 1 >= uptime_before + watched,
        "Envoy's uptime went from {uptime_before} s to {uptime_after} s over {watched} s: it was restarted"
    );
    let sds_updates = envoy_counter(&tls.admin_url, "ssl_context_update_by_sds")
        .await
        .unwrap();
    assert!(
        sds_updates >= sds_updates_before + ROTATIONS as u64,
        "Envoy's TLS context was updated by SDS {} times during {ROTATIONS} rotations",
        sds_updates - sds_updates_before
    );
    let failed_rotations = envoy_counter(&tls.admin_url, "key_rotation_failed")
        .await
        .unwrap();
    assert_eq!(
        failed_rotations, 0,
        "Envoy failed to load a rotated key pair"
    );

    case.note(format!(
        "{ROTATIONS} rotations (ttl {} ms): serials {}; Vault issue -> served {}; {ok} requests over TLS in {LOAD_WORKERS} loops, 0 failed; Envoy up {uptime_before} s -> {uptime_after} s, {} SDS updates",
        tls.cert_ttl_ms,
        propagation
            .iter()
            .map(|(s, _)| s.info.serial.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        propagation
            .iter()
            .map(|(_, d)| format!("{} ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", "),
        sds_updates - sds_updates_before
    ));
}
