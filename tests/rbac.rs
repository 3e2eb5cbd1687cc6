//! Vault RBAC: the policies and AppRole roles from scenarios/vault/, checked
//! by calling Vault's HTTP API with each role's own token.

use keyrig_e2e::*;
use rstest::rstest;
use serde_json::{Value, json};

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "rbac";

const API_GROUP: &str = "animal-rescue-api";
const OTHER_API_GROUP: &str = "billing-api";

fn record() -> Option<Value> {
    Some(json!({"data": {"key": "0".repeat(64), "owner": "rbac"}}))
}

/// A fresh selector-shaped name, so cases never touch each other's records.
fn selector() -> String {
    apikey::ApiKey::generate().selector().to_string()
}

#[tokio::test]
async fn api_portal_role_manages_keys() {
    let _case = case(ASSERTION_GROUP, "api_portal_role_manages_keys");
    let portal = login_as("api-portal").await.unwrap();
    let sel = selector();

    let create = vault("POST", &kv_path("data", API_GROUP, &sel), &portal, record())
        .await
        .unwrap();
    let read = vault("GET", &kv_path("data", API_GROUP, &sel), &portal, None)
        .await
        .unwrap();
    let list = vault(
        "LIST",
        &format!("{}/metadata/{API_GROUP}", env().kv_mount),
        &portal,
        None,
    )
    .await
    .unwrap();
    let delete = vault(
        "DELETE",
        &kv_path("metadata", API_GROUP, &sel),
        &portal,
        None,
    )
    .await
    .unwrap();
    let gone = vault("GET", &kv_path("data", API_GROUP, &sel), &portal, None)
        .await
        .unwrap();

    assert_eq!(create.status, 200, "create: {:?}", create.body);
    assert_eq!(read.body["data"]["data"]["owner"], "rbac");
    assert_eq!(list.status, 200);
    assert!(
        list.body["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == &json!(sel))
    );
    assert_eq!(delete.status, 204);
    assert_eq!(gone.status, 404);
}

#[rstest]
#[case::create("create", "POST", "data")]
#[case::update("update", "PUT", "data")]
#[case::delete_latest("delete_latest", "DELETE", "data")]
#[case::delete_all_versions("delete_all_versions", "DELETE", "metadata")]
#[tokio::test]
async fn gateway_role_cannot_change_keys(
    #[case] name: &str,
    #[case] method: &str,
    #[case] kind: &str,
) {
    let _case = case(ASSERTION_GROUP, &format!("gateway_role_cannot_{name}"));
    let portal = portal_token().await.unwrap();
    let gateway = login_as("gateway").await.unwrap();
    let sel = selector();
    vault("POST", &kv_path("data", API_GROUP, &sel), &portal, record())
        .await
        .unwrap();

    let body = if method == "DELETE" { None } else { record() };
    let reply = vault(method, &kv_path(kind, API_GROUP, &sel), &gateway, body)
        .await
        .unwrap();

    assert_eq!(
        reply.status, 403,
        "the gateway role could {method} {kind}: {:?}",
        reply.body
    );
}

#[tokio::test]
async fn gateway_role_reads_and_lists_every_group() {
    let _case = case(ASSERTION_GROUP, "gateway_role_reads_and_lists_every_group");
    let portal = portal_token().await.unwrap();
    let gateway = login_as("gateway").await.unwrap();
    for group in [API_GROUP, OTHER_API_GROUP] {
        let sel = selector();
        vault("POST", &kv_path("data", group, &sel), &portal, record())
            .await
            .unwrap();

        let read = vault("GET", &kv_path("data", group, &sel), &gateway, None)
            .await
            .unwrap();
        let list = vault(
            "LIST",
            &format!("{}/metadata/{group}", env().kv_mount),
            &gateway,
            None,
        )
        .await
        .unwrap();

        assert_eq!((read.status, list.status), (200, 200), "group {group}");
    }
}

#[tokio::test]
async fn group_scoped_gateway_role_reads_only_its_group() {
    let _case = case(
        ASSERTION_GROUP,
        "group_scoped_gateway_role_reads_only_its_group",
    );
    let portal = portal_token().await.unwrap();
    let scoped = login_as(&format!("gateway-{API_GROUP}")).await.unwrap();
    let (own, other) = (selector(), selector());
    vault("POST", &kv_path("data", API_GROUP, &own), &portal, record())
        .await
        .unwrap();
    vault(
        "POST",
        &kv_path("data", OTHER_API_GROUP, &other),
        &portal,
        record(),
    )
    .await
    .unwrap();

    let own_read = vault("GET", &kv_path("data", API_GROUP, &own), &scoped, None)
        .await
        .unwrap();
    let own_list = vault(
        "LIST",
        &format!("{}/metadata/{API_GROUP}", env().kv_mount),
        &scoped,
        None,
    )
    .await
    .unwrap();
    let other_read = vault(
        "GET",
        &kv_path("data", OTHER_API_GROUP, &other),
        &scoped,
        None,
    )
    .await
    .unwrap();
    let other_list = vault(
        "LIST",
        &format!("{}/metadata/{OTHER_API_GROUP}", env().kv_mount),
        &scoped,
        None,
    )
    .await
    .unwrap();

    assert_eq!((own_read.status, own_list.status), (200, 200));
    assert_eq!((other_read.status, other_list.status), (403, 403));
}

#[tokio::test]
async fn keygate_token_carries_only_the_gateway_policy() {
    let _case = case(
        ASSERTION_GROUP,
        "keygate_token_carries_only_the_gateway_policy",
    );
    // Another group of the same environment may rotate keygate's secret-id
    // meanwhile (rotation, external-secret mode); keygate then logs in again
    // and revokes its previous token, so an accessor read before that
    // lookup is "invalid accessor". The secret-id's retirement can also
    // end keygate's token before keygate notices and reports its next one.
    // Look up the accessor keygate reports, until Vault answers for it.
    let lookup = rig::base::wait::wait_until(
        "Vault's answer for the token keygate's /readyz reports",
        std::time::Duration::from_secs(10),
        async || {
            let ready = keygate_readyz().await?;
            let accessor = ready["vault_token_accessor"]
                .as_str()
                .expect("keygate's /readyz names its token accessor")
                .to_owned();
            let lookup = vault(
                "POST",
                "auth/token/lookup-accessor",
                &root_token(),
                Some(json!({"accessor": accessor})),
            )
            .await?;
            let now = keygate_readyz().await?;
            Ok(if lookup.status == 200 {
                rig::base::wait::Probe::Ready(lookup)
            } else {
                rig::base::wait::Probe::Pending(format!(
                    "Vault answered {} {:?} for accessor {accessor} (keygate reports {} now)",
                    lookup.status, lookup.body["errors"], now["vault_token_accessor"]
                ))
            })
        },
    )
    .await
    .unwrap();

    assert_eq!(lookup.status, 200, "{:?}", lookup.body["errors"]);
    let mut policies: Vec<&str> = lookup.body["data"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    policies.sort();
    // keygate-references: read-only on the one secret its config references
    // (the upstream credential, scenarios/vault/policies/keygate-references.hcl).
    assert_eq!(
        policies,
        ["default", "gateway-policy", "keygate-references"]
    );
}
