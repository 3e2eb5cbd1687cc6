//! API-key rotation through the keys-file gateway (Envoy -> keygate reading
//! keys files that `bao agent` renders from Vault): a new key is accepted and
//! a revoked key refused within the render interval, and how long each took
//! is recorded as `{mode: "keys-file", what: "api-key-new" | "api-key-revoked"}`.

use std::time::Instant;

use keyrig_e2e::*;
use rig::wait::Probe;

const GROUP: &str = "animal-rescue-api";

#[tokio::test]
async fn new_key_lands_and_revoked_key_goes_within_the_render_interval() {
    let mut case = CaseGuard::start(
        "rotation",
        "keys_file_new_key_lands_and_revoked_key_goes_within_the_render_interval",
    );
    let Some(side) = env().keys_file.clone() else {
        case.skip("this environment runs no keys-file gateway (env.json has no keys_file)");
        return;
    };
    let path = api_path(GROUP);
    let deadline = render_deadline();

    let key = apikey::ApiKey::generate();
    let written = Instant::now();
    store_record(GROUP, &key, &apikey::KeyRecord::for_key(&key, "rotation"))
        .await
        .unwrap();
    rig::wait::wait_until(
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
    rig::propagation::record("keys-file", "api-key-new", new_took).unwrap();

    let portal = portal_token().await.unwrap();
    let deleted_at = Instant::now();
    let deleted = vault(
        "DELETE",
        &kv_path("metadata", GROUP, key.selector().as_str()),
        &portal,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        deleted.status, 204,
        "deleting the record: {:?}",
        deleted.body
    );
    rig::wait::wait_until(
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
    rig::propagation::record("keys-file", "api-key-revoked", revoked_took).unwrap();
    eprintln!(
        "keys-file propagation (render interval {} ms): new key {} ms, revocation {} ms",
        side.render_interval_ms,
        new_took.as_millis(),
        revoked_took.as_millis()
    );
}
