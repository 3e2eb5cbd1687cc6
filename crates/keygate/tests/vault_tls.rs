//! keygate as a process against a real OpenBao over https
//! (`bao server -dev -dev-tls`, started by `rig::process::dev_tls_vault::DevTlsVault`), and
//! what its Vault client must not do: use a proxy from the environment, or
//! talk plain HTTP to a remote Vault without saying so.
//!
//! These tests need the pinned bao. Missing is a failure, not a skip (as in
//! crates/manifests' tests): `cargo xtask test` installs the tools first,
//! and a check that silently does not run proves nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use apikey::{ApiKey, KeyRecord};
use common::{FakeVault, Fixture, wait_for_status};
use rig::base::run::RunDir;
use rig::process::dev_tls_vault::DevTlsVault;
use rig::process::supervisor::Supervisor;

const KV_MOUNT: &str = "api-portal-keys";
const GROUP: &str = "billing-api";

fn bao() -> PathBuf {
    rig::process::tools::pinned_for_tests("bao")
}

/// A dev-tls OpenBao with keygate's AppRole and a key record written the
/// documented way (`<kv_mount>/<groupId>/<selector>`, field `key` = SHA-256
/// hex of the verifier). Stopped when dropped.
struct Bao {
    vault: DevTlsVault,
    role_id: String,
    secret_id: String,
    key: ApiKey,
    _supervisor: Supervisor,
    _dir: tempfile::TempDir,
}

impl Bao {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create_in(dir.path()).unwrap();
        let mut supervisor = Supervisor::new(&run);
        let vault = DevTlsVault::start(&mut supervisor, &run, &bao(), "bao")
            .await
            .unwrap();
        let root = &vault.root;
        root.enable_kv2(KV_MOUNT).await.unwrap();
        root.enable_auth("approle", "approle").await.unwrap();
        root.put_policy(
            "keygate-read",
            &format!(r#"path "{KV_MOUNT}/data/*" {{ capabilities = ["read"] }}"#),
        )
        .await
        .unwrap();
        root.approle_write_role(
            "keygate",
            &["keygate-read".to_owned()],
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        )
        .await
        .unwrap();
        let role_id = root.approle_role_id("keygate").await.unwrap();
        let secret_id = root
            .approle_new_secret_id("keygate")
            .await
            .unwrap()
            .secret_id
            .expose()
            .to_owned();
        let key = ApiKey::generate();
        let record = serde_json::to_value(KeyRecord::for_key(&key, "user-tls")).unwrap();
        root.kv2_put(KV_MOUNT, &format!("{GROUP}/{}", key.selector()), &record)
            .await
            .unwrap();
        Self {
            vault,
            role_id,
            secret_id,
            key,
            _supervisor: supervisor,
            _dir: dir,
        }
    }

    /// A keygate fixture for this server trusting `ca` (None: no
    /// `ca_cert_file`, the system's store).
    fn fixture(&self, ca: Option<&Path>) -> Fixture {
        let fixture = Fixture::new(&self.vault.addr);
        let mut text = fixture.config_text(&self.vault.addr);
        if let Some(ca) = ca {
            text = text.replace(
                "  timeout: 1s\n",
                &format!("  timeout: 1s\n  ca_cert_file: {}\n", ca.display()),
            );
        }
        fixture.write_config(&text);
        std::fs::write(fixture.path("secrets/role-id"), &self.role_id).unwrap();
        std::fs::write(fixture.path("secrets/secret-id"), &self.secret_id).unwrap();
        fixture
    }

    /// No secret of this test in `text`.
    fn assert_no_secret_in(&self, text: &str, what: &str) {
        let token = self.vault.root.token().unwrap().expose();
        for (name, secret) in [
            ("the root token", token),
            ("the secret-id", self.secret_id.as_str()),
            ("the API key", self.key.expose()),
            ("the key's verifier", self.key.verifier()),
        ] {
            assert!(!text.contains(secret), "{what} shows {name}");
        }
    }
}

async fn forward_auth(fixture: &Fixture, uri: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(fixture.url("/auth"))
        .header("x-forwarded-uri", uri)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_over_https_with_the_ca_file_and_validates_a_key() {
    let bao = Bao::start().await;
    let fixture = bao.fixture(Some(&bao.vault.ca_file));
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/readyz"), 200).await;

    let ready: serde_json::Value = reqwest::get(fixture.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(
        ready["policies"],
        serde_json::json!(["default", "keygate-read"])
    );

    let allowed = forward_auth(&fixture, "/billing/invoices/7", bao.key.expose()).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-keyrig-owner"], "user-tls");
    let unknown = forward_auth(&fixture, "/billing/invoices", ApiKey::generate().expose()).await;
    assert_eq!(unknown.status(), 401);

    let log = keygate.stop();
    assert!(log.contains("logged in to Vault"), "keygate's log:\n{log}");
    assert!(
        !log.contains("vault.allow_plain_http"),
        "keygate's log:\n{log}"
    );
    bao.assert_no_secret_in(&log, "keygate's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_wrong_ca_it_is_not_ready_and_says_why() {
    let bao = Bao::start().await;
    // The server's own leaf certificate did not sign itself: a wrong CA.
    let wrong = bao.vault.ca_file.with_file_name("vault-cert.pem");
    let fixture = bao.fixture(Some(&wrong));
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/healthz"), 200).await;

    let response = reqwest::get(fixture.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let denied = forward_auth(&fixture, "/billing/invoices", bao.key.expose()).await;
    assert_eq!(denied.status(), 503);

    let log = keygate.stop();
    let expected = format!(
        "cannot reach Vault at {}: the AppRole login failed: certificate verify failed against the CA in {} (invalid peer certificate: ",
        bao.vault.addr,
        wrong.display()
    );
    assert!(
        log.contains(&expected),
        "no {expected:?} in keygate's log:\n{log}"
    );
    assert!(
        log.contains("set vault.ca_cert_file to the CA that signed Vault's certificate"),
        "keygate's log:\n{log}"
    );
    bao.assert_no_secret_in(&log, "keygate's log");

    // Without ca_cert_file the system's store is used, and says so.
    let fixture = bao.fixture(None);
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/healthz"), 200).await;
    assert_eq!(
        reqwest::get(fixture.url("/readyz")).await.unwrap().status(),
        503
    );
    let log = keygate.stop();
    assert!(
        log.contains("certificate verify failed against the system's trust store"),
        "keygate's log:\n{log}"
    );
}

/// A TCP listener that counts the connections it accepts.
fn trap() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_are_ignored_so_the_token_goes_only_to_vault() {
    let vault = FakeVault::start().await;
    let (proxy, hits) = trap();
    let fixture = Fixture::new(&vault.address);
    let env: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, proxy.as_str()))
    .chain([("NO_PROXY", ""), ("no_proxy", "")])
    .collect();
    let _keygate = fixture.start_with_env(&env);
    wait_for_status(&fixture.url("/readyz"), 200).await;
    assert_eq!(vault.state.lock().unwrap().logins, 1);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "keygate sent a Vault request to the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_plain_http_to_a_remote_vault_is_warned_about() {
    // Plain HTTP to a non-loopback address: refused without the flag...
    let fixture = Fixture::new("http://192.0.2.10:8200");
    let (code, stderr) = tokio::task::spawn_blocking({
        let config = fixture.config();
        move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
                .arg("--config")
                .arg(config)
                .output()
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("or set `vault.allow_plain_http: true` if this is a trusted local link"),
        "{stderr}"
    );

    // ...started with it, and warned about. 192.0.2.0/24 (TEST-NET-1) is
    // never routed, so keygate stays unready.
    let text = fixture.config_text("http://192.0.2.10:8200").replace(
        "  timeout: 1s\n",
        "  timeout: 1s\n  allow_plain_http: true\n",
    );
    fixture.write_config(&text);
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/healthz"), 200).await;
    let log = keygate.stop();
    assert!(
        log.contains("vault.allow_plain_http is set: keygate sends its Vault token"),
        "keygate's log:\n{log}"
    );
    assert!(log.contains("WARN"), "keygate's log:\n{log}");

    // Loopback needs no flag and gets no warning.
    let fixture = Fixture::new("http://127.0.0.1:1");
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/healthz"), 200).await;
    let log = keygate.stop();
    assert!(
        !log.contains("vault.allow_plain_http"),
        "keygate's log:\n{log}"
    );
}
