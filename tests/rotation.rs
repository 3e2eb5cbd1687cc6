//! Rotation, end to end, in the run's delivery mode (env.json `delivery`):
//! a credential changed in Vault reaches the gateway, requests keep passing,
//! and what was retired stops working. Each rotation's propagation time
//! (the change -> the first effect observed through a public endpoint) goes
//! into its case message and into `<run>/rotations/<mode>__<what>.json`.
//!
//! "The change" per mode: external-secret: the new secret-id written to
//! Vault KV (bao agent renders it); existing-secret: the Secret rewritten out
//! of band; inline: the values-derived Secret rewritten, what a
//! `helm upgrade` with new values does. "The effect": keygate's /readyz
//! reports a new Vault token accessor (it logged in with the new secret-id);
//! for API keys, the gateway's answer changes.
//!
//! Rotations change the one keygate everyone uses, so the cases here take a
//! lock and run one at a time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keyrig_e2e::*;
use reqwest::Method;
use rig::base::wait::{Probe, wait_until};
use rig::contract::env::DeliveryInfo;
use rig::contract::rotation::RotationRecord;
use rig::local::secret_dir::SecretDir;
use rig::vault::client::{Secret, VaultClient};
use serde_json::{Value, json};

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "rotation";

const API_GROUP: &str = "animal-rescue-api";
/// Rotations of each kind in the under-load case.
const LOAD_ROTATIONS: u32 = 3;
/// Concurrent request loops in the under-load case.
const LOAD_WORKERS: usize = 4;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn delivery() -> Option<&'static DeliveryInfo> {
    env().delivery.as_ref()
}

fn root() -> VaultClient {
    VaultClient::root(
        &env().vault_addr,
        Secret::new(env().root_token().expect("the root token file of env.json")),
    )
    .expect("a Vault client for env.json's address")
}

/// The accessor of keygate's current Vault token, from /readyz.
async fn keygate_accessor() -> Result<String> {
    let ready = keygate_readyz().await?;
    ready["vault_token_accessor"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("/readyz has no vault_token_accessor: {ready}"))
}

/// How long a delivered credential may take to reach keygate: the agent's
/// render interval (external) plus keygate's file poll, with slack.
fn delivery_deadline(d: &DeliveryInfo) -> Duration {
    let render = d.external.as_ref().map_or(0, |e| e.refresh_interval_ms);
    Duration::from_millis(render + d.watch_interval_ms) + Duration::from_secs(10)
}

/// The secret-id keygate uses now (from where the mode keeps it), and the
/// role-id.
async fn current_credentials(d: &DeliveryInfo) -> Result<(String, Secret)> {
    let dir = SecretDir::new(&d.secret_dir);
    let role_id = dir.read(&d.keys.role_id)?.trim().to_owned();
    let secret_id = match &d.external {
        Some(ext) => {
            let data = root()
                .kv2_get(&ext.kv_mount, &ext.secret_id_path)
                .await?
                .context("the delivery path in Vault is empty")?;
            data[&ext.secret_id_property]
                .as_str()
                .context("the delivery path holds no secret-id property")?
                .to_owned()
        }
        None => dir.read(&d.keys.secret_id)?.trim().to_owned(),
    };
    Ok((role_id, Secret::new(secret_id)))
}

/// Puts a new secret-id where the mode delivers from; the returned instant
/// is the moment of the write.
async fn deliver_secret_id(d: &DeliveryInfo, secret_id: &Secret) -> Result<Instant> {
    rig::local::delivery::deliver_secret_id(&root(), d, secret_id).await
}

/// One KV rotation: mint a secret-id, deliver it, wait until keygate logged
/// in with it, destroy the old one and check it no longer logs in.
async fn rotate_secret_id(d: &DeliveryInfo) -> Result<Duration> {
    let vault = root();
    let before = keygate_accessor().await?;
    let (role_id, old) = current_credentials(d).await?;
    let new = vault.approle_new_secret_id(&d.approle_role).await?;

    let written = deliver_secret_id(d, &new.secret_id).await?;
    wait_until(
        "keygate to log in with the rotated secret-id",
        delivery_deadline(d),
        async || {
            let now = keygate_accessor().await?;
            Ok(if now != before {
                Probe::Ready(())
            } else {
                Probe::seen(format!("the same token accessor {now}"))
            })
        },
    )
    .await?;
    let propagation = written.elapsed();

    // Retire the old credential the AppRole way.
    vault
        .call(
            Method::POST,
            &format!("auth/approle/role/{}/secret-id/destroy", d.approle_role),
            Some(&json!({ "secret_id": old.expose() })),
        )
        .await
        .context("destroying the old secret-id")?;
    match vault.approle_login(&role_id, &old).await {
        Ok(_) => bail!("the destroyed secret-id still logs in"),
        Err(err) if err.status().is_some_and(|s| s.is_client_error()) => {}
        Err(err) => return Err(err).context("logging in with the destroyed secret-id"),
    }
    // And the new one does.
    vault
        .approle_login(&role_id, &new.secret_id)
        .await
        .context("logging in with the delivered secret-id")?;
    Ok(propagation)
}

fn save(mode: &str, what: &str, propagation: Duration, sample: Option<u32>) {
    let record = RotationRecord {
        mode: mode.to_owned(),
        what: what.to_owned(),
        propagation_ms: u64::try_from(propagation.as_millis()).unwrap_or(u64::MAX),
    };
    rig::contract::rotation::record(&record, sample).expect("writing the rotation record");
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_rotation_delivers_a_new_secret_id_and_retires_the_old() {
    let mut case = case(
        ASSERTION_GROUP,
        "kv_rotation_delivers_a_new_secret_id_and_retires_the_old",
    );
    let Some(d) = delivery() else {
        case.skip("env.json has no `delivery`: this environment delivers no Secret to rotate");
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let key = issue_key(API_GROUP, |r| r).await.unwrap();
    let path = api_path(API_GROUP);
    assert_eq!(
        gateway_get(&path, Some(key.expose())).await.unwrap().status,
        200
    );

    let load = Load::start(
        2,
        env().gateway_url.clone(),
        path.clone(),
        key.expose().to_owned(),
    );
    let rotated = rotate_secret_id(d).await;
    let (ok, failed, last) = load.finish().await;
    let propagation = rotated.unwrap();

    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the rotation; the last: {last:?}",
        ok + failed
    );
    assert!(ok > 0, "no request completed during the rotation");
    let ready = keygate_readyz().await.unwrap();
    assert_eq!(
        ready["gateway_group"].as_str(),
        Some(d.group.as_str()),
        "the group keygate reports is not the delivered one: {ready}"
    );
    save(&d.mode, "kv-secret-id", propagation, None);
    case.note(format!(
        "{} mode: secret-id rotation propagated in {} ({ok} requests, 0 failed)",
        d.mode,
        ms(propagation)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_rotation_new_key_accepted_and_revoked_key_refused() {
    let mut case = case(
        ASSERTION_GROUP,
        "api_key_rotation_new_key_accepted_and_revoked_key_refused",
    );
    let mode = env().mode.clone().unwrap_or_else(|| "direct".into());
    let _one = ONE_AT_A_TIME.lock().await;
    let path = api_path(API_GROUP);
    let old = issue_key(API_GROUP, |r| r).await.unwrap();
    let old_cached_at = Instant::now();
    // Cached by keygate now, as a key in use would be.
    assert_eq!(
        gateway_get(&path, Some(old.expose())).await.unwrap().status,
        200
    );

    let (issued, revoked) = rotate_api_key(&path, &old, old_cached_at).await.unwrap();
    save(&mode, "api-key-issue", issued, None);
    save(&mode, "api-key-revoke", revoked, None);
    case.note(format!(
        "{mode} mode, direct validation: new key accepted after {}, revoked key refused after {} (cache TTL {} ms)",
        ms(issued),
        ms(revoked),
        env().cache.positive_ttl_ms
    ));
}

/// Issues a replacement for `old` (first read through the gateway no
/// earlier than `old_cached_at`), waits until the gateway accepts it, then
/// revokes `old` and waits until the gateway refuses it (within
/// `revocation_deadline_since`: with the audit stream, before its cache
/// entry could expire; else the cache's deadline). Returns both
/// propagation times.
async fn rotate_api_key(
    path: &str,
    old: &apikey::ApiKey,
    old_cached_at: Instant,
) -> Result<(Duration, Duration)> {
    let new = apikey::ApiKey::generate();
    let record = apikey::KeyRecord::for_key(&new, "e2e-owner");
    let written = Instant::now();
    store_record(API_GROUP, &new, &record).await?;
    wait_until("the new key to be accepted", cache_deadline(), async || {
        let reply = gateway_get(path, Some(new.expose())).await?;
        Ok(match reply.status {
            200 => Probe::Ready(()),
            other => Probe::seen(format!("{other} {:?}", reply.reason)),
        })
    })
    .await?;
    let issued = written.elapsed();

    let deleted_at = Instant::now();
    revoke_key(API_GROUP, old).await?;
    wait_until(
        "the revoked key to be refused",
        revocation_deadline_since(old_cached_at).0,
        async || {
            let reply = gateway_get(path, Some(old.expose())).await?;
            Ok(match (reply.status, reply.reason.as_deref()) {
                (401, Some("unknown")) => Probe::Ready(()),
                other => Probe::seen(format!("{other:?}")),
            })
        },
    )
    .await?;
    // Bounded by the wait's deadline; the measured
    // time is a result, not an assertion (timings belong to benchmarks).
    let revoked = deleted_at.elapsed();
    Ok((issued, revoked))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_under_load_fail_no_request() {
    let mut case = case(ASSERTION_GROUP, "rotations_under_load_fail_no_request");
    let Some(d) = delivery() else {
        case.skip("env.json has no `delivery`: this environment delivers no Secret to rotate");
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let path = api_path(API_GROUP);
    let steady = issue_key(API_GROUP, |r| r).await.unwrap();
    assert_eq!(
        gateway_get(&path, Some(steady.expose()))
            .await
            .unwrap()
            .status,
        200
    );

    let load = Load::start(
        LOAD_WORKERS,
        env().gateway_url.clone(),
        path.clone(),
        steady.expose().to_owned(),
    );
    let rotations = async {
        let mut kv = Vec::new();
        let mut keys = Vec::new();
        let mut previous = issue_key(API_GROUP, |r| r).await?;
        // Never read through the gateway yet: its first read is the
        // rotation's own, later than this.
        let mut previous_cached_at = Instant::now();
        for n in 1..=LOAD_ROTATIONS {
            let propagation = rotate_secret_id(d).await?;
            save(&d.mode, "kv-secret-id-under-load", propagation, Some(n));
            kv.push(propagation);
            let (issued, revoked) = rotate_api_key(&path, &previous, previous_cached_at).await?;
            save(&d.mode, "api-key-revoke-under-load", revoked, Some(n));
            keys.push((issued, revoked));
            // The next round revokes a key the gateway has accepted.
            let next = issue_key(API_GROUP, |r| r).await?;
            previous_cached_at = Instant::now();
            let reply = gateway_get(&path, Some(next.expose())).await?;
            if reply.status != 200 {
                bail!(
                    "a fresh key was refused: {} {:?}",
                    reply.status,
                    reply.reason
                );
            }
            previous = next;
        }
        anyhow::Ok((kv, keys))
    }
    .await;
    let (ok, failed, last) = load.finish().await;
    let (kv, keys) = rotations.unwrap();

    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during {LOAD_ROTATIONS} rotations of each kind; the last: {last:?}",
        ok + failed
    );
    // Zero failures out of zero requests would say nothing.
    assert!(ok > 0, "no request completed during the rotations");
    let kv_max = kv.iter().max().copied().unwrap_or_default();
    let revoke_max = keys.iter().map(|k| k.1).max().unwrap_or_default();
    case.note(format!(
        "{} mode, {LOAD_WORKERS} loops: {ok} requests, 0 failed over {LOAD_ROTATIONS} secret-id and {LOAD_ROTATIONS} API-key rotations; max propagation {} (secret-id), {} (revoke)",
        d.mode,
        ms(kv_max),
        ms(revoke_max)
    ));
}

#[tokio::test]
async fn delivered_group_reaches_keygate() {
    let mut case = case(ASSERTION_GROUP, "delivered_group_reaches_keygate");
    let Some(d) = delivery() else {
        case.skip("env.json has no `delivery`");
        return;
    };
    let ready = keygate_readyz().await.unwrap();
    assert_eq!(
        ready["gateway_group"].as_str(),
        Some(d.group.as_str()),
        "{ready}"
    );
    assert_eq!(
        ready["policies"].as_array().map(|p| p
            .iter()
            .filter_map(Value::as_str)
            .any(|p| p == "gateway-policy")),
        Some(true),
        "keygate's token lacks the gateway policy: {ready}"
    );
}
