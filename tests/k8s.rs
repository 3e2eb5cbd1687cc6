//! The Kubernetes profiles (kind, cluster), asserted through the Kubernetes
//! API (kube-rs), Vault's HTTP API and the gateway Service's port-forward:
//! ESO's sync, the synced Secret, rotation into the gateway, RBAC by
//! SubjectAccessReview, and Vault's Kubernetes auth.
//!
//! On the local profile (env.json without `kube`) every case is skipped by
//! name with the reason, so the results table says what did not run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use keyrig_e2e::*;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use manifests::eso::v1::ExternalSecret;
use rig::base::wait::{Probe, wait_until};
use rig::contract::env::KubeEnvironment;
use serde_json::json;

const ASSERTION_GROUP: &str = "k8s";
const NEEDS_CLUSTER: &str = "needs the kind or cluster profile (Docker)";
const API_GROUP: &str = "animal-rescue-api";

/// Held by every case that reads or writes the ExternalSecret's source in
/// Vault or the Secret it syncs: cargo runs a binary's tests in parallel,
/// and rotation (which rewrites both) would otherwise race "the Secret
/// matches Vault" into a spurious failure, or a spurious pass.
static CREDENTIALS_SOURCE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster of this run, or `None` with the case marked skipped.
async fn cluster(case: &mut CaseGuard) -> Option<(Client, &'static KubeEnvironment)> {
    let Some(kube) = env().kube.as_ref() else {
        case.skip(NEEDS_CLUSTER);
        return None;
    };
    let client = rig_k8s::client::for_environment(kube)
        .await
        .expect("a Kubernetes client for the cluster env.json names");
    Some((client, kube))
}

/// The ExternalSecret's name, or `None` with the case skipped: only the
/// external-secret mode has one.
fn external_secret_name<'a>(case: &mut CaseGuard, kube: &'a KubeEnvironment) -> Option<&'a str> {
    match kube.external_secret.as_deref() {
        Some(name) => Some(name),
        None => {
            case.skip(format!(
                "mode {} has no ExternalSecret: runs in mode external-secret",
                kube.mode
            ));
            None
        }
    }
}

/// The Vault secret the ExternalSecret reads: property -> value.
async fn vault_source(kube: &KubeEnvironment) -> BTreeMap<String, String> {
    let reply = vault(
        "GET",
        &format!(
            "{}/data/{}",
            kube.credentials_kv_mount, kube.credentials_kv_path
        ),
        &root_token(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        reply.status, 200,
        "reading the ESO source: {:?}",
        reply.body["errors"]
    );
    serde_json::from_value(reply.body["data"]["data"].clone()).unwrap()
}

/// The credentials Secret's data as strings. Values stay in memory only.
async fn secret_data(
    client: &Client,
    kube: &KubeEnvironment,
) -> (Secret, BTreeMap<String, String>) {
    let secret = Api::<Secret>::namespaced(client.clone(), &kube.namespace)
        .get(&kube.credentials_secret)
        .await
        .unwrap();
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    (secret, data)
}

#[tokio::test]
async fn external_secret_is_ready_and_synced() {
    let mut case = case(ASSERTION_GROUP, "external_secret_is_ready_and_synced");
    let Some((client, kube)) = cluster(&mut case).await else {
        return;
    };
    let Some(name) = external_secret_name(&mut case, kube) else {
        return;
    };
    let es = Api::<ExternalSecret>::namespaced(client, &kube.namespace)
        .get(name)
        .await
        .unwrap();
    assert_eq!(
        rig_k8s::waits::external_secret_ready(&es),
        Some(("True".to_owned(), Some("SecretSynced".to_owned()))),
        "status: {:?}",
        es.status
    );
}

#[tokio::test]
async fn synced_secret_has_exactly_the_mapped_keys_and_values() {
    let mut case = case(
        ASSERTION_GROUP,
        "synced_secret_has_exactly_the_mapped_keys_and_values",
    );
    let Some((client, kube)) = cluster(&mut case).await else {
        return;
    };
    let Some(name) = external_secret_name(&mut case, kube) else {
        return;
    };
    let _source = CREDENTIALS_SOURCE.lock().await;
    let es = Api::<ExternalSecret>::namespaced(client.clone(), &kube.namespace)
        .get(name)
        .await
        .unwrap();
    let source = vault_source(kube).await;
    let (_, data) = secret_data(&client, kube).await;
    let mut expected = BTreeMap::new();
    for entry in es.spec.data.iter().flatten() {
        let property = entry
            .remote_ref
            .property
            .clone()
            .expect("every mapping names a property");
        let value = source
            .get(&property)
            .unwrap_or_else(|| panic!("Vault's source has no property {property:?}"));
        expected.insert(entry.secret_key.clone(), value.clone());
    }
    // An ExternalSecret mapping nothing would match an empty Secret.
    assert!(
        !expected.is_empty(),
        "the ExternalSecret maps no property: nothing to compare"
    );
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the Secret's keys differ from the ExternalSecret's mapping"
    );
    // Compared without printing: the values are credentials.
    let differing: Vec<&String> = expected
        .iter()
        .filter(|(k, v)| data.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        differing.is_empty(),
        "keys whose value differs from Vault's: {differing:?}"
    );
}

#[tokio::test]
async fn synced_secret_is_owned_by_the_external_secret() {
    let mut case = case(
        ASSERTION_GROUP,
        "synced_secret_is_owned_by_the_external_secret",
    );
    let Some((client, kube)) = cluster(&mut case).await else {
        return;
    };
    let Some(name) = external_secret_name(&mut case, kube) else {
        return;
    };
    let es = Api::<ExternalSecret>::namespaced(client.clone(), &kube.namespace)
        .get(name)
        .await
        .unwrap();
    let (secret, _) = secret_data(&client, kube).await;
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1, "owners: {owners:?}");
    let owner = &owners[0];
    assert_eq!(owner.kind, "ExternalSecret");
    assert_eq!(owner.api_version, "external-secrets.io/v1");
    assert_eq!(owner.name, name);
    assert_eq!(Some(&owner.uid), es.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
}

/// A new secret-id in Vault reaches the gateway: ESO syncs it into the
/// Secret (forced with the force-sync annotation), the old one is destroyed,
/// keygate restarts and must log in with the new one for keys to pass.
#[tokio::test]
async fn rotated_secret_id_reaches_the_gateway() {
    let mut case = case(ASSERTION_GROUP, "rotated_secret_id_reaches_the_gateway");
    let Some((client, kube)) = cluster(&mut case).await else {
        return;
    };
    let Some(name) = external_secret_name(&mut case, kube) else {
        return;
    };
    let _source = CREDENTIALS_SOURCE.lock().await;
    let root = root_token();
    let role = &kube.keygate_approle;
    let mut source = vault_source(kube).await;
    let old_secret_id = source["secret_id"].clone();
    // Expiring, as every secret_id `up` makes in the cluster profile's
    // Vault: this one stays in use after the run.
    let ttl = rig_k8s::credentials::CLUSTER_SECRET_ID_TTL.as_secs();
    let minted = vault(
        "POST",
        &format!("auth/approle/role/{role}/secret-id"),
        &root,
        Some(json!({"ttl": format!("{ttl}s")})),
    )
    .await
    .unwrap();
    assert_eq!(minted.status, 200, "{:?}", minted.body["errors"]);
    let new_secret_id = minted.body["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let started = Instant::now();
    source.insert("secret_id".into(), new_secret_id.clone());
    let written = vault(
        "POST",
        &format!(
            "{}/data/{}",
            kube.credentials_kv_mount, kube.credentials_kv_path
        ),
        &root,
        Some(json!({ "data": source })),
    )
    .await
    .unwrap();
    assert_eq!(written.status, 200, "{:?}", written.body["errors"]);
    rig_k8s::eso::force_sync(&client, &kube.namespace, name)
        .await
        .unwrap();
    wait_until(
        "the new secret-id in the credentials Secret",
        Duration::from_secs(90),
        async || {
            let (_, data) = secret_data(&client, kube).await;
            anyhow::Ok(if data.get("secret-id") == Some(&new_secret_id) {
                Probe::Ready(())
            } else {
                Probe::seen("the Secret still holds another secret-id")
            })
        },
    )
    .await
    .unwrap();
    let synced_ms = started.elapsed().as_millis() as u64;

    // The old secret-id stops working, so only a keygate that read the new
    // one can log in once it restarts.
    let destroyed = vault(
        "POST",
        &format!("auth/approle/role/{role}/secret-id/destroy"),
        &root,
        Some(json!({"secret_id": old_secret_id})),
    )
    .await
    .unwrap();
    assert_eq!(destroyed.status, 204, "{:?}", destroyed.body["errors"]);
    rig_k8s::profile::restart_deployment(&client, &kube.namespace, &kube.keygate)
        .await
        .unwrap();
    rig_k8s::waits::deployment(
        &client,
        &kube.namespace,
        &kube.keygate,
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    let key = issue_key(API_GROUP, |r| r).await.unwrap();
    wait_until(
        "a valid key through the gateway after the restart",
        Duration::from_secs(60),
        async || {
            let reply = gateway_get(&api_path(API_GROUP), Some(key.expose())).await?;
            anyhow::Ok(if reply.status == 200 {
                Probe::Ready(())
            } else {
                Probe::seen(format!("status {} reason {:?}", reply.status, reply.reason))
            })
        },
    )
    .await
    .unwrap();
    let propagation_ms = started.elapsed().as_millis() as u64;
    record_rotation(kube, synced_ms, propagation_ms);
}

/// `<run>/rotations/<profile>-<mode>__gateway-credentials.json`, and the
/// Secret-synced step as `...__secret-synced.json`.
fn record_rotation(kube: &KubeEnvironment, synced_ms: u64, propagation_ms: u64) {
    let mode = format!("{}-{}", env().profile, kube.mode);
    for (what, ms) in [
        ("secret-synced", synced_ms),
        ("gateway-credentials", propagation_ms),
    ] {
        let record =
            rig::contract::rotation::RotationRecord::new(&mode, what, Duration::from_millis(ms));
        rig::contract::rotation::record(&record, None).expect("writing the rotation record");
    }
}

/// May ServiceAccount `sa` of `sa_namespace` `verb` secrets in `namespace`?
async fn may(client: &Client, sa_namespace: &str, sa: &str, verb: &str, namespace: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{sa_namespace}:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{sa_namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                verb: Some(verb.into()),
                resource: Some("secrets".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.map(|s| s.allowed).unwrap_or(false)
}

#[tokio::test]
async fn keygate_sa_reads_secrets_only_in_its_namespace() {
    let mut case = case(
        ASSERTION_GROUP,
        "keygate_sa_reads_secrets_only_in_its_namespace",
    );
    let Some((client, kube)) = cluster(&mut case).await else {
        return;
    };
    let ns = &kube.namespace;
    let mut seen = Vec::new();
    for (verb, namespace, expected) in [
        ("get", ns.as_str(), true),
        ("list", ns.as_str(), true),
        ("get", "default", false),
        ("list", "default", false),
    ] {
        let allowed = may(&client, ns, &kube.keygate, verb, namespace).await;
        seen.push((verb, namespace.to_owned(), allowed, expected));
    }
    let wrong: Vec<_> = seen.iter().filter(|(_, _, a, e)| a != e).collect();
    assert!(
        wrong.is_empty(),
        "(verb, namespace, allowed, expected): {wrong:?}"
    );
}

#[tokio::test]
async fn keygate_sa_may_not_create_or_delete_secrets() {
    let mut case = case(
        ASSERTION_GROUP,
        "keygate_sa_may_not_create_or_delete_secrets",
    );
    let Some((client, kube)) = cluster(&mut case).await else {
        return;
    };
    let ns = &kube.namespace;
    for verb in ["create", "delete", "update", "patch", "watch"] {
        assert!(
            !may(&client, ns, &kube.keygate, verb, ns).await,
            "keygate's ServiceAccount may {verb} secrets in {ns}"
        );
    }
}

/// A real ServiceAccount token (TokenRequest API), kept in memory only.
async fn sa_token(client: &Client, namespace: &str, sa: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        // A credential of the cluster for 10 minutes: never in a report.
        .inspect(|token| rig::base::redact::register_secret(token))
        .expect("a TokenRequest answers with a token")
}

/// Vault's Kubernetes login: (status, whether a client token came back).
async fn kubernetes_login(kube: &KubeEnvironment, role: &str, jwt: String) -> (u16, bool) {
    let reply = vault(
        "POST",
        &format!("auth/{}/login", kube.kubernetes_auth_mount),
        &root_token(),
        Some(json!({"role": role, "jwt": jwt})),
    )
    .await
    .unwrap();
    (reply.status, reply.body["auth"]["client_token"].is_string())
}

#[tokio::test]
async fn vault_login_with_a_wrong_service_account_is_denied() {
    let mut case = case(
        ASSERTION_GROUP,
        "vault_login_with_a_wrong_service_account_is_denied",
    );
    let Some((client, kube)) = cluster(&mut case).await else {
        return;
    };
    // The control: keygate's own token logs in, so the denial below is the
    // binding's doing, not a broken auth method.
    let own = sa_token(&client, &kube.namespace, &kube.keygate).await;
    assert_eq!(
        kubernetes_login(kube, &kube.gateway_role, own).await,
        (200, true)
    );
    let other = sa_token(&client, &kube.namespace, "api-portal").await;
    let (status, token) = kubernetes_login(kube, &kube.gateway_role, other).await;
    assert!(
        !token,
        "api-portal's token logged in as role {}",
        kube.gateway_role
    );
    assert!(matches!(status, 400 | 403), "status {status}");
}

#[tokio::test]
async fn vault_login_from_a_wrong_namespace_is_denied() {
    let mut case = case(
        ASSERTION_GROUP,
        "vault_login_from_a_wrong_namespace_is_denied",
    );
    let Some((client, kube)) = cluster(&mut case).await else {
        return;
    };
    // A ServiceAccount with keygate's name in another namespace, of
    // keyrig's own: a namespace of that name someone else made (the
    // cluster profile shares the cluster) is neither written nor deleted.
    let elsewhere = format!("{}-elsewhere", kube.namespace);
    let namespaces = Api::<Namespace>::all(client.clone());
    if let Some(theirs) = namespaces.get_opt(&elsewhere).await.unwrap() {
        let labels = theirs.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some("keyrig"),
            "namespace {elsewhere} exists and is not keyrig's (no label app.kubernetes.io/part-of=keyrig): \
             this case creates and deletes a namespace of that name; delete or rename yours"
        );
    }
    let params = PatchParams::apply("keyrig-e2e").force();
    namespaces
        .patch(
            &elsewhere,
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": elsewhere, "labels": {"app.kubernetes.io/part-of": "keyrig"}}})),
        )
        .await
        .unwrap();
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &elsewhere);
    accounts
        .patch(
            &kube.keygate,
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": kube.keygate}})),
        )
        .await
        .unwrap();
    let jwt = wait_until(
        "a token for the ServiceAccount in the other namespace",
        Duration::from_secs(30),
        async || {
            let request = TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(600),
                    ..Default::default()
                }),
                ..Default::default()
            };
            anyhow::Ok(
                match accounts
                    .create_token_request(&kube.keygate, &PostParams::default(), &request)
                    .await
                {
                    Ok(answer) => {
                        // An empty JWT is refused by Vault too (400), which
                        // would pass for the denial this case is after.
                        match answer
                            .status
                            .and_then(|s| s.token)
                            .filter(|t| !t.is_empty())
                        {
                            Some(token) => {
                                rig::base::redact::register_secret(&token);
                                Probe::Ready(token)
                            }
                            None => Probe::seen("a TokenRequest answered without a token"),
                        }
                    }
                    Err(err) => Probe::seen(err),
                },
            )
        },
    )
    .await
    .unwrap();
    let (status, token) = kubernetes_login(kube, &kube.gateway_role, jwt).await;
    let _ = Api::<Namespace>::all(client)
        .delete(&elsewhere, &DeleteParams::default())
        .await;
    assert!(
        !token,
        "keygate's name from namespace {elsewhere} logged in"
    );
    assert!(matches!(status, 400 | 403), "status {status}");
}

/// The check for the race above, on this file's own text: every case that
/// reads or writes the credentials source holds `CREDENTIALS_SOURCE`
/// before it does. Needs no cluster, so it runs on every profile.
#[test]
fn every_case_touching_the_credentials_source_holds_its_lock() {
    // The cases only: this check itself names what it looks for.
    let text = include_str!("k8s.rs")
        .split("/// The check for the race above")
        .next()
        .unwrap();
    let mut checked = 0;
    for case in text.split("#[tokio::test]").skip(1) {
        let name = case
            .split("async fn ")
            .nth(1)
            .and_then(|rest| rest.split('(').next())
            .unwrap_or("?");
        let touches = ["vault_source(", "credentials_kv_path"]
            .iter()
            .filter_map(|needle| case.find(needle))
            .min();
        let Some(first_touch) = touches else {
            continue;
        };
        checked += 1;
        let lock = case.find("CREDENTIALS_SOURCE.lock().await");
        assert!(
            lock.is_some_and(|at| at < first_touch),
            "{name} touches the ExternalSecret's source without holding CREDENTIALS_SOURCE first"
        );
    }
    assert!(checked >= 2, "found {checked} cases touching the source");
}
