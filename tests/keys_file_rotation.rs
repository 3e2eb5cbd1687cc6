//! API-key rotation through the keys-file gateway (Envoy -> keygate reading
//! keys files that `bao agent` renders from Vault): a new key is accepted and
//! a revoked key refused within the render deadline (`render_deadline`: the
//! render interval, keygate's poll of the file and 15 s of slack for the
//! agent's Vault reads and a loaded machine), and how long each took
//! is recorded as `{mode: "keys-file", what: "api-key-new" | "api-key-revoked"}`;
//! and the same rotation repeated under a bounded load fails no request.

use std::time::{Duration, Instant};

use keyrig_e2e::*;
use rig::base::wait::Probe;
use rig::contract::rotation::RotationRecord;

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "keys_file_rotation";

const API_GROUP: &str = "animal-rescue-api";

/// Each within `render_deadline`, not the bare render interval: the slack
/// is there so a loaded CI machine does not flake; how long each took is
/// recorded, and `cargo xtask bench` measures propagation.
#[tokio::test]
async fn new_key_lands_and_revoked_key_goes_within_the_render_deadline() {
    let mut case = CaseGuard::start(
        ASSERTION_GROUP,
        "keys_file_new_key_lands_and_revoked_key_goes_within_the_render_deadline",
    );
    let Some(side) = env().keys_file.clone() else {
        case.skip("this environment runs no keys-file gateway (env.json has no keys_file)");
        return;
    };
    let path = api_path(API_GROUP);
    let deadline = render_deadline();

    let key = apikey::ApiKey::generate();
    let written = Instant::now();
    store_record(
        API_GROUP,
        &key,
        &apikey::KeyRecord::for_key(&key, "rotation"),
    )
    .await
    .unwrap();
    rig::base::wait::wait_until(
        "the new key to be accepted at the keys-file gateway",
        deadline,
        async || {
            let reply = gateway_get_at(&side.gateway_url, &path, Some(key.expose())).await?;
            Ok(match reply.status {
                200 => Probe::Ready(()),
                _ => Probe::seen(format!("{} {:?}", reply.status, reply.reason)),
            })
        },
    )
    .await
    .unwrap();
    let new_took = written.elapsed();
    rig::contract::rotation::record(
        &RotationRecord::new("keys-file", "api-key-new", new_took),
        None,
    )
    .unwrap();

    let deleted_at = Instant::now();
    revoke_key(API_GROUP, &key).await.unwrap();
    rig::base::wait::wait_until(
        "the revoked key to be refused at the keys-file gateway",
        deadline,
        async || {
            let reply = gateway_get_at(&side.gateway_url, &path, Some(key.expose())).await?;
            Ok(match (reply.status, reply.reason.as_deref()) {
                (401, Some("unknown")) => Probe::Ready(()),
                other => Probe::seen(format!("{other:?}")),
            })
        },
    )
    .await
    .unwrap();
    let revoked_took = deleted_at.elapsed();
    rig::contract::rotation::record(
        &RotationRecord::new("keys-file", "api-key-revoked", revoked_took),
        None,
    )
    .unwrap();
    eprintln!(
        "keys-file propagation (render interval {} ms): new key {} ms, revocation {} ms",
        side.render_interval_ms,
        new_took.as_millis(),
        revoked_took.as_millis()
    );
}

/// Rotations of each kind in the under-load case, and its request loops.
const LOAD_ROTATIONS: u32 = 3;
const LOAD_WORKERS: usize = 4;

/// Waits until the keys-file gateway answers `key` with `want`; how long it took.
async fn until_keys_file_answers(
    gateway_url: &str,
    path: &str,
    key: &apikey::ApiKey,
    want: u16,
    what: &str,
) -> anyhow::Result<Duration> {
    let since = Instant::now();
    rig::base::wait::wait_until(what, render_deadline(), async || {
        let reply = gateway_get_at(gateway_url, path, Some(key.expose())).await?;
        Ok(if reply.status == want {
            Probe::Ready(())
        } else {
            Probe::seen(format!("{} {:?}", reply.status, reply.reason))
        })
    })
    .await?;
    Ok(since.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_file_rotations_under_load_fail_no_request() {
    let mut case = CaseGuard::start(
        ASSERTION_GROUP,
        "keys_file_rotations_under_load_fail_no_request",
    );
    let Some(side) = env().keys_file.clone() else {
        case.skip("this environment runs no keys-file gateway (env.json has no keys_file)");
        return;
    };
    let path = api_path(API_GROUP);
    let steady = apikey::ApiKey::generate();
    store_record(
        API_GROUP,
        &steady,
        &apikey::KeyRecord::for_key(&steady, "steady"),
    )
    .await
    .unwrap();
    until_keys_file_answers(
        &side.gateway_url,
        &path,
        &steady,
        200,
        "the steady key to land",
    )
    .await
    .unwrap();

    let load = Load::start(
        LOAD_WORKERS,
        side.gateway_url.clone(),
        path.clone(),
        steady.expose().to_owned(),
    );
    let rotations = async {
        let mut took = Vec::new();
        for n in 1..=LOAD_ROTATIONS {
            // A new key lands while the render loop rewrites the file under
            // the load's feet; then it is revoked and must go.
            let key = apikey::ApiKey::generate();
            store_record(
                API_GROUP,
                &key,
                &apikey::KeyRecord::for_key(&key, "rotation"),
            )
            .await?;
            let new =
                until_keys_file_answers(&side.gateway_url, &path, &key, 200, "the new key to land")
                    .await?;
            revoke_key(API_GROUP, &key).await?;
            let revoked = until_keys_file_answers(
                &side.gateway_url,
                &path,
                &key,
                401,
                "the revoked key to go",
            )
            .await?;
            for (what, t) in [
                ("api-key-new-under-load", new),
                ("api-key-revoked-under-load", revoked),
            ] {
                rig::contract::rotation::record(
                    &RotationRecord::new("keys-file", what, t),
                    Some(n),
                )?;
            }
            took.push((new, revoked));
        }
        anyhow::Ok(took)
    }
    .await;
    let (ok, failed, last) = load.finish().await;
    let took = rotations.unwrap();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests through the keys-file gateway failed during {LOAD_ROTATIONS} key rotations; the last: {last:?}",
        ok + failed
    );
    // Zero failures out of zero requests would say nothing.
    assert!(ok > 0, "no request completed during the rotations");
    let max_new = took.iter().map(|t| t.0).max().unwrap_or_default();
    let max_revoked = took.iter().map(|t| t.1).max().unwrap_or_default();
    case.note(format!(
        "keys-file, {LOAD_WORKERS} loops: {ok} requests, 0 failed over {LOAD_ROTATIONS} new + revoked keys; max propagation {} ms (new), {} ms (revoked), render interval {} ms",
        max_new.as_millis(),
        max_revoked.as_millis(),
        side.render_interval_ms
    ));
}
