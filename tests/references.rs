//! Kong-style secret references in keygate's config: keygate forwards an
//! upstream credential read through `{vault://keyrig/<path>/<key>}` and its
//! name through `{vault://env/keyrig-gateway-name}`. Rotating the credential
//! in Vault lands upstream within the vault's `ttl` (measured and recorded as
//! `{mode: "reference", what: "upstream-header"}`).

use std::time::{Duration, Instant};

use keyrig_e2e::*;
use rig::base::wait::Probe;
use rig::contract::rotation::RotationRecord;
use serde_json::json;

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "references";

const API_GROUP: &str = "animal-rescue-api";

/// The gateway the case goes through: the first of this run that passes
/// every header of keygate's answer to the upstream (no
/// `owner-and-group-only` deviation in its manifest; on the shipped catalog
/// envoy-grpc, where Envoy sets every header keygate's gRPC OK answer
/// carries). `tests/gateways.rs` asserts that row per gateway.
fn gateway() -> Result<(String, String), String> {
    let env = env();
    env.gateways
        .iter()
        .find(|(name, _)| {
            env.gateway_deviations
                .get(*name)
                .is_none_or(|d| d.owner_and_group_only.is_none())
        })
        .map(|(name, url)| (name.clone(), url.clone()))
        .ok_or_else(|| {
            format!(
                "keygate's upstream headers reach the upstream only through a gateway without the `owner-and-group-only` deviation, and none of this run's ({}) is one",
                env.gateways.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
}

fn settings() -> &'static rig::contract::references::ReferenceSettings {
    env()
        .references
        .as_ref()
        .expect("env.json has no references section: start the environment with this rig")
}

async fn referenced_value(root: &Token) -> String {
    let s = settings();
    let reply = vault(
        "GET",
        &format!("{}/data/{}", s.kv_mount, s.path),
        root,
        None,
    )
    .await
    .unwrap();
    reply.body["data"]["data"][&s.key]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn referenced_values_reach_the_upstream_and_a_rotation_lands_within_ttl() {
    let Some(mut case) = case_with_section(
        ASSERTION_GROUP,
        "referenced_values_reach_the_upstream_and_a_rotation_lands_within_ttl",
        "references",
        env().references.is_some(),
    ) else {
        return;
    };
    let (name, gateway) = match gateway() {
        Ok(found) => found,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            case.skip(reason);
            return;
        }
    };
    eprintln!("through gateway {name}");
    let gateway = &gateway;
    let s = settings();
    let root = root_token();
    let key = issue_key(API_GROUP, |r| r).await.unwrap();
    let path = api_path(API_GROUP);

    let before = gateway_get_at(gateway, &path, Some(key.expose()))
        .await
        .unwrap();
    assert_eq!(before.status, 200, "{:?}", before.reason);
    // The env reference: KEYRIG_GATEWAY_NAME of this keygate.
    let gateway_name = before
        .upstream_header(&s.env_header)
        .unwrap_or_default()
        .to_owned();
    assert!(
        gateway_name.starts_with("keygate"),
        "{}: {gateway_name:?}",
        s.env_header
    );
    // The Vault reference: equal to what Vault holds (compared, never printed).
    let current = referenced_value(&root).await;
    assert!(
        before.upstream_header(&s.header) == Some(current.as_str()),
        "the upstream did not get the referenced value in {}",
        s.header
    );

    let rotated = apikey::ApiKey::generate().expose().to_owned();
    // Before it is written: from then on keygate may send it on.
    rig::base::redact::register_secret(&rotated);
    let written = Instant::now();
    let reply = vault(
        "POST",
        &format!("{}/data/{}", s.kv_mount, s.path),
        &root,
        Some(json!({"data": {&s.key: rotated}})),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body["errors"]);

    rig::base::wait::wait_until(
        "the rotated referenced value to reach the upstream",
        Duration::from_millis(s.ttl_ms) + Duration::from_secs(5),
        async || {
            let reply = gateway_get_at(gateway, &path, Some(key.expose())).await?;
            Ok(match reply.upstream_header(&s.header) {
                Some(v) if v == rotated => Probe::Ready(()),
                Some(v) if v == current => Probe::seen("the old value"),
                Some(_) => Probe::seen("another value"),
                None => Probe::seen(format!("no header ({} {:?})", reply.status, reply.reason)),
            })
        },
    )
    .await
    .unwrap();
    let took = written.elapsed();
    rig::contract::rotation::record(
        &RotationRecord::new("reference", "upstream-header", took),
        None,
    )
    .unwrap();
    eprintln!(
        "reference propagation (ttl {} ms): {} ms",
        s.ttl_ms,
        took.as_millis()
    );
}
