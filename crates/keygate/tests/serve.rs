//! keygate as a process against a fake Vault: both protocols, readiness,
//! metrics, re-login on 403, refusal of root tokens, and fail-closed when
//! Vault is unreachable. The real-Vault checks live in the e2e crate.

mod common;

use std::time::Duration;

use apikey::{ApiKey, KeyRecord};
use common::{FakeVault, Fixture, wait_for_status};
use keygate::ext_authz::attribute_context::{HttpRequest, Request};
use keygate::ext_authz::check_response::HttpResponse;
use keygate::ext_authz::{AttributeContext, AuthorizationClient, CheckRequest, CheckResponse};

async fn forward_auth(fixture: &Fixture, uri: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(fixture.url("/auth"))
        .header("x-forwarded-uri", uri)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

async fn grpc_check(fixture: &Fixture, path: &str, key: &str) -> CheckResponse {
    let mut client = AuthorizationClient::connect(format!("http://{}", fixture.grpc))
        .await
        .unwrap();
    let http = HttpRequest {
        path: path.into(),
        method: "GET".into(),
        headers: [("x-api-key".to_owned(), key.to_owned())].into(),
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http) }),
        }),
    };
    client.check(request).await.unwrap().into_inner()
}

fn record(key: &ApiKey, owner: &str) -> serde_json::Value {
    serde_json::to_value(KeyRecord::for_key(key, owner)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validates_over_http_and_grpc_against_vault() {
    let vault = FakeVault::start().await;
    let key = ApiKey::generate();
    vault.put(
        "billing-api",
        key.selector().as_str(),
        record(&key, "user-1"),
    );
    let fixture = Fixture::new(&vault.address);
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/readyz"), 200).await;

    let ready: serde_json::Value = reqwest::get(fixture.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["vault_token_accessor"], "accessor-1");
    assert_eq!(
        ready["policies"],
        serde_json::json!(["default", "gateway-policy"])
    );

    // HTTP forward-auth.
    let allowed = forward_auth(&fixture, "/billing/invoices/7", key.expose()).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-keyrig-owner"], "user-1");
    assert_eq!(allowed.headers()["x-keyrig-group"], "billing-api");
    // `wrong-group` comes only from records keygate holds (no extra Vault
    // reads), and this fixture's positive_ttl of 0s holds none: a key of
    // another group is then just unknown here.
    let other_group = forward_auth(&fixture, "/animal-rescue/animals", key.expose()).await;
    assert_eq!(other_group.status(), 401);
    assert_eq!(other_group.headers()["x-keyrig-reason"], "unknown");
    let unknown = forward_auth(&fixture, "/billing/invoices", ApiKey::generate().expose()).await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(unknown.text().await.unwrap(), r#"{"reason":"unknown"}"#);

    // Envoy ext_authz over gRPC.
    let ok = grpc_check(&fixture, "/billing/invoices?page=1", key.expose()).await;
    assert_eq!(ok.status.unwrap().code, tonic::Code::Ok as i32);
    let Some(HttpResponse::OkResponse(ok)) = ok.http_response else {
        panic!("expected an OK response")
    };
    let headers: Vec<(String, String)> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref().map(|h| (h.key.clone(), h.value.clone())))
        .collect();
    assert!(
        headers.contains(&("x-keyrig-owner".into(), "user-1".into())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("x-keyrig-group".into(), "billing-api".into())),
        "{headers:?}"
    );

    let denied = grpc_check(&fixture, "/billing/invoices", &"f".repeat(63)).await;
    assert_eq!(
        denied.status.unwrap().code,
        tonic::Code::Unauthenticated as i32
    );
    let Some(HttpResponse::DeniedResponse(denied)) = denied.http_response else {
        panic!("expected a denial")
    };
    assert_eq!(denied.status.unwrap().code, 401);
    assert_eq!(denied.body, r#"{"reason":"malformed"}"#);

    let no_route = grpc_check(&fixture, "/billing/../animal-rescue/animals", key.expose()).await;
    assert_eq!(
        no_route.status.unwrap().code,
        tonic::Code::PermissionDenied as i32
    );

    // Token revoked behind keygate's back: it logs in again on the 403.
    // Re-login is rate-limited to once per 5 s after a login, so wait that out.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    vault.revoke_all();
    let after_revoke = forward_auth(&fixture, "/billing/invoices", key.expose()).await;
    assert_eq!(after_revoke.status(), 200);
    assert_eq!(vault.state.lock().unwrap().logins, 2);

    let metrics = reqwest::get(fixture.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "keygate_decisions_total{outcome=\"allow\",protocol=\"http\"} 2",
        "keygate_decisions_total{outcome=\"allow\",protocol=\"grpc\"} 1",
        "keygate_decisions_total{outcome=\"malformed\",protocol=\"grpc\"} 1",
        "keygate_decisions_total{outcome=\"unknown\",protocol=\"http\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }

    let log = keygate.stop();
    assert!(
        !log.contains(key.verifier()),
        "the log shows a verifier:\n{log}"
    );
    assert!(
        log.contains(key.selector().as_str()),
        "the log should name the selector:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_vault_means_503_never_allow() {
    let fixture = Fixture::new(&format!("http://{}", common::free_port()));
    let _keygate = fixture.start();
    wait_for_status(&fixture.url("/healthz"), 200).await;

    let response = reqwest::get(fixture.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], false);

    let denied = forward_auth(&fixture, "/billing/invoices", ApiKey::generate().expose()).await;
    assert_eq!(denied.status(), 503);
    assert_eq!(denied.headers()["x-keyrig-reason"], "vault-unavailable");
    let denied = grpc_check(&fixture, "/billing/invoices", ApiKey::generate().expose()).await;
    assert_eq!(denied.status.unwrap().code, tonic::Code::Unavailable as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_with_a_root_token() {
    let vault = FakeVault::start().await;
    vault.state.lock().unwrap().root_policy = true;
    let fixture = Fixture::new(&vault.address);
    let (code, stderr) =
        tokio::task::spawn_blocking(move || fixture.start().wait(Duration::from_secs(20)))
            .await
            .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("keygate refuses to run with a root token"),
        "{stderr}"
    );
}

/// A rejected secret-id at startup: keygate stays up but unready (exiting
/// would have the pod restarted with the same credentials, each restart a
/// rejected login towards Vault's user lockout), never sends that pair
/// again while its retry loops run, and logs in as soon as the file is
/// fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_login_at_startup_stays_unready_and_is_not_sent_again() {
    let vault = FakeVault::start().await;
    let fixture = Fixture::new(&vault.address);
    std::fs::write(
        fixture.path("secrets/secret-id"),
        "not-the-secret-id-7f3a\n",
    )
    .unwrap();
    let secret_id_file = fixture.path("secrets/secret-id").display().to_string();
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/readyz"), 503).await;
    let denied = forward_auth(&fixture, "/billing/invoices", ApiKey::generate().expose()).await;
    assert_eq!(denied.status(), 503);
    // keygate listens before it logs in, so /readyz can say 503 before the
    // first login: the window below starts at the rejection itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while vault.state.lock().unwrap().rejected_logins == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "keygate sent no login within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // keygate's login retries (about 1, 2 and 4 s after a failure) would
    // have sent the pair two or three times more by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(vault.state.lock().unwrap().rejected_logins, 1);

    std::fs::write(
        fixture.path("secrets/secret-id"),
        format!("{}\n", common::SECRET_ID),
    )
    .unwrap();
    wait_for_status(&fixture.url("/readyz"), 200).await;
    assert_eq!(vault.state.lock().unwrap().rejected_logins, 1);
    let stderr = keygate.stop();
    assert!(
        stderr.contains("Vault rejected keygate's login: invalid role or secret ID"),
        "{stderr}"
    );
    assert!(stderr.contains(&secret_id_file), "{stderr}");
    assert!(
        !stderr.contains("not-the-secret-id-7f3a"),
        "the secret-id leaked into the log: {stderr}"
    );
}

/// A listener keygate cannot bind stops it before it logs in (an AppRole
/// login mints a token that would stay live until its TTL, one per failed
/// start), with a message by the error's kind naming the field and the
/// config file.
#[rstest::rstest]
#[case::address_not_here(
    "  grpc: 127.0.0.1:",
    "  grpc: 192.0.2.1:",
    "",
    "cannot listen on 192.0.2.1:",
    "(listen.grpc in {file}): ",
    "no network interface of this machine has that address: change listen.grpc"
)]
#[case::socket_directory_missing(
    "",
    "",
    "invalidation:\n  listen: unix:/nonexistent-keygate-dir/audit.sock\n",
    "cannot listen on unix:/nonexistent-keygate-dir/audit.sock ",
    "(invalidation.listen in {file}): ",
    "its directory does not exist: create the directory, or change invalidation.listen"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_stops_keygate_before_it_logs_in(
    #[case] from: &str,
    #[case] to: &str,
    #[case] extra: &str,
    #[case] what: &str,
    #[case] field: &str,
    #[case] why: &str,
) {
    let vault = FakeVault::start().await;
    let fixture = Fixture::new(&vault.address);
    let text = fixture.config_text(&vault.address).replacen(from, to, 1) + extra;
    fixture.write_config(&text);
    let file = fixture.config().display().to_string();
    let (code, stderr) =
        tokio::task::spawn_blocking(move || fixture.start().wait(Duration::from_secs(20)))
            .await
            .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(what), "{stderr}");
    assert!(stderr.contains(&field.replace("{file}", &file)), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
    assert_eq!(
        vault.state.lock().unwrap().logins,
        0,
        "keygate logged in before it could listen: {stderr}"
    );
}

/// vault.address with a path after host and port that Vault does not serve
/// (or another server there): every login gets a 404, which looked like an
/// outage; /readyz and the log say the address may not be Vault's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_to_the_login_says_vault_address_may_not_be_vault() {
    let vault = FakeVault::start().await;
    let address = format!("{}/foo", vault.address);
    let fixture = Fixture::new(&address);
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/healthz"), 200).await;
    let expected = format!(
        "the AppRole login (auth/approle/login) was answered 404: vault.address `{address}` in {} \
         may not point at Vault (another server, or a path after host and port that Vault does not \
         serve), or vault.auth.approle.mount `approle` is not an AppRole mount",
        fixture.config().display()
    );
    let response = reqwest::get(fixture.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let denied = forward_auth(&fixture, "/billing/invoices", ApiKey::generate().expose()).await;
    assert_eq!(denied.status(), 503);
    let log = keygate.stop();
    assert!(log.contains(&expected), "{log}");
}

/// A secret reference whose value holds a line break: the header is left
/// out of allowed answers (over both protocols, where Envoy refused the
/// whole gRPC answer as "invalid header value"), and a warning names the
/// reference, never the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referenced_value_that_cannot_be_a_header_is_left_out_and_named() {
    let vault = FakeVault::start().await;
    let key = ApiKey::generate();
    vault.put(
        "billing-api",
        key.selector().as_str(),
        record(&key, "user-1"),
    );
    let fixture = Fixture::new(&vault.address);
    let text = fixture.config_text(&vault.address)
        + "upstream_headers:\n  x-upstream-token: '{vault://env/keygate-test-upstream-token}'\n  x-plain: fine\n";
    fixture.write_config(&text);
    let keygate =
        fixture.start_with_env(&[("KEYGATE_TEST_UPSTREAM_TOKEN", "tok-0c4e\r\nx-evil: 1")]);
    wait_for_status(&fixture.url("/readyz"), 200).await;

    let allowed = forward_auth(&fixture, "/billing/invoices", key.expose()).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-plain"], "fine");
    assert!(allowed.headers().get("x-upstream-token").is_none());
    assert!(allowed.headers().get("x-evil").is_none());
    let ok = grpc_check(&fixture, "/billing/invoices", key.expose()).await;
    assert_eq!(ok.status.unwrap().code, tonic::Code::Ok as i32);
    let Some(HttpResponse::OkResponse(ok)) = ok.http_response else {
        panic!("expected an OK response")
    };
    let names: Vec<String> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref().map(|h| h.key.clone()))
        .collect();
    assert!(names.contains(&"x-plain".to_owned()), "{names:?}");
    assert!(!names.contains(&"x-upstream-token".to_owned()), "{names:?}");

    let log = keygate.stop();
    assert!(
        log.contains(
            "the value of this secret reference holds a line break or another control character"
        ) && log.contains("{vault://env/keygate-test-upstream-token}"),
        "{log}"
    );
    assert!(
        !log.contains("0c4e"),
        "the value leaked into the log: {log}"
    );
}
