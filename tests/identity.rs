//! Workload identity like Kubernetes auth: Vault's JWT auth method trusts
//! this run's signing key, and roles bind a service account (name +
//! namespace) to a policy. Tokens here are shaped like Kubernetes
//! service-account tokens and signed with the run's key (a 0600 file named by
//! env.json), then presented to `auth/<mount>/login` over HTTP.

use keyrig_e2e::*;
use rig::contract::identity::{IdentityRole, WorkloadIdentity};
use rstest::rstest;
use serde_json::json;

const ASSERTION_GROUP: &str = "identity";

fn identity() -> &'static WorkloadIdentity {
    env()
        .workload_identity
        .as_ref()
        .expect("env.json has no workload_identity section: start the environment with this rig")
}

fn role(name: &str) -> &'static IdentityRole {
    identity()
        .roles
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no role {name} in scenarios/vault/workload-identity.yaml"))
}

/// A service-account token as the kubelet projects it.
fn service_account_token(namespace: &str, name: &str) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "iss": identity().issuer,
        "aud": [identity().audience],
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": format!("uid-{namespace}-{name}")},
        },
    });
    let pem = std::fs::read(&identity().signing_key_file).expect("reading the run's signing key");
    let key =
        jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("the run's signing key is PKCS#8 PEM");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .expect("signing the token")
}

async fn login(role: &str, jwt: &str) -> VaultReply {
    vault(
        "POST",
        &format!("auth/{}/login", identity().mount),
        &Token::none(),
        Some(json!({"role": role, "jwt": jwt})),
    )
    .await
    .unwrap()
}

#[rstest]
#[case::bound_by_subject("keygate-sa")]
#[case::bound_by_claims("api-portal-sa")]
#[tokio::test]
async fn the_right_service_account_gets_exactly_its_policies(#[case] name: &str) {
    let Some(_case) = case_with_section(
        ASSERTION_GROUP,
        &format!("right_service_account_gets_its_policies_{name}"),
        "workload_identity",
        env().workload_identity.is_some(),
    ) else {
        return;
    };
    let role = role(name);
    let jwt = service_account_token(&role.namespace, &role.service_account);

    let reply = login(&role.name, &jwt).await;

    assert_eq!(reply.status, 200, "login denied: {}", reply.body["errors"]);
    let mut policies: Vec<String> =
        serde_json::from_value(reply.body["auth"]["token_policies"].clone()).unwrap();
    policies.sort();
    let mut expected = role.policies.clone();
    expected.sort();
    assert_eq!(
        policies, expected,
        "the token carries other policies than its role's"
    );
}

#[tokio::test]
async fn the_gateway_service_account_reads_keys_but_cannot_write_them() {
    let Some(_case) = case_with_section(
        ASSERTION_GROUP,
        "gateway_service_account_reads_but_cannot_write",
        "workload_identity",
        env().workload_identity.is_some(),
    ) else {
        return;
    };
    let role = role("keygate-sa");
    let reply = login(
        &role.name,
        &service_account_token(&role.namespace, &role.service_account),
    )
    .await;
    assert_eq!(reply.status, 200, "login denied: {}", reply.body["errors"]);
    let token = Token::from_login(&reply.body).unwrap();
    let key = issue_key("animal-rescue-api", |r| r).await.unwrap();
    let path = kv_path("data", "animal-rescue-api", key.selector().as_str());

    let read = vault("GET", &path, &token, None).await.unwrap();
    let write = vault("POST", &path, &token, Some(json!({"data": {"key": "x"}})))
        .await
        .unwrap();

    assert_eq!((read.status, write.status), (200, 403));
}

#[rstest]
#[case::wrong_name("keygate-sa", Mismatch::Name)]
#[case::wrong_namespace("keygate-sa", Mismatch::Namespace)]
#[case::wrong_name_claims("api-portal-sa", Mismatch::Name)]
#[case::wrong_namespace_claims("api-portal-sa", Mismatch::Namespace)]
#[case::another_roles_account("api-portal-sa", Mismatch::OtherRole)]
#[tokio::test]
async fn a_wrong_service_account_is_denied(#[case] name: &str, #[case] mismatch: Mismatch) {
    let Some(_case) = case_with_section(
        ASSERTION_GROUP,
        &format!("wrong_service_account_denied_{name}_{mismatch:?}"),
        "workload_identity",
        env().workload_identity.is_some(),
    ) else {
        return;
    };
    let role = role(name);
    let (namespace, account) = match mismatch {
        Mismatch::Name => (
            role.namespace.clone(),
            format!("{}-impostor", role.service_account),
        ),
        Mismatch::Namespace => (
            format!("{}-other", role.namespace),
            role.service_account.clone(),
        ),
        Mismatch::OtherRole => {
            let other = identity()
                .roles
                .iter()
                .find(|r| r.name != role.name)
                .unwrap();
            (other.namespace.clone(), other.service_account.clone())
        }
    };

    let reply = login(&role.name, &service_account_token(&namespace, &account)).await;

    assert!(
        reply.status == 400 || reply.status == 403,
        "{namespace}/{account} logged in as {}: {} {:?}",
        role.name,
        reply.status,
        reply.body["auth"]["token_policies"]
    );
    assert!(
        reply.body["auth"].is_null(),
        "a denied login must not carry a token"
    );
}

#[derive(Debug, Clone, Copy)]
enum Mismatch {
    Name,
    Namespace,
    OtherRole,
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_denied() {
    let Some(_case) = case_with_section(
        ASSERTION_GROUP,
        "token_signed_by_another_key_denied",
        "workload_identity",
        env().workload_identity.is_some(),
    ) else {
        return;
    };
    let role = role("keygate-sa");
    let (other_key, _) = rig::vault::identity::generate_signing_key().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "iss": identity().issuer, "aud": [identity().audience], "sub": role.subject(),
        "iat": now, "nbf": now, "exp": now + 600,
        "kubernetes.io": {"namespace": role.namespace, "serviceaccount": {"name": role.service_account, "uid": "u"}},
    });
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(other_key.as_bytes()).unwrap(),
    )
    .unwrap();

    let reply = login(&role.name, &jwt).await;

    assert!(
        reply.status == 400 || reply.status == 403,
        "{}",
        reply.status
    );
}
