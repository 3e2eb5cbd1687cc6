//! keygate as a process against a real OpenBao over https: `bao server -dev
//! -dev-tls` (the `DevTlsVault` component) and the keygate binary (the
//! `Keygate` component), both under a `Supervisor`.
//!
//! Here rather than in keygate's own tests so that keygate never depends on
//! the harness, not even for its tests (the layering test checks it): the
//! harness is what starts processes. The keygate binary is the one cargo
//! builds into `target/debug/` (`cargo test --workspace` and `cargo xtask
//! test` build it before any test runs) or `$KEYRIG_KEYGATE`.
//!
//! These tests need the pinned bao. Missing is a failure, not a skip (as in
//! crates/manifests' tests): `cargo xtask test` installs the tools first,
//! and a check that silently does not run proves nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apikey::{ApiKey, KeyRecord};
use rig::base::run::RunDir;
use rig::process::components::Keygate;
use rig::process::dev_tls_vault::DevTlsVault;
use rig::process::supervisor::{Component, Readiness, Supervisor};

const KV_MOUNT: &str = "api-portal-keys";
const GROUP: &str = "billing-api";

const BILLING: &str = "\
openapi: 3.0.1
groupId: billing-api
servers:
  - url: /billing
paths:
  /invoices: {}
  /invoices/{invoiceId}: {}
";

fn bao() -> PathBuf {
    rig::process::tools::pinned_for_tests("bao")
}

/// The keygate binary the `Keygate` component runs by default; missing is
/// a failure that says how to build it.
fn keygate_binary() -> PathBuf {
    let binary = Keygate::default_binary();
    Keygate::check_binary(&binary).unwrap();
    binary
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A dev-tls OpenBao with keygate's AppRole and a key record written the
/// documented way (`<kv_mount>/<groupId>/<selector>`, field `key` = SHA-256
/// hex of the verifier), in a run directory of its own. Everything started
/// stops when the supervisor drops.
struct Bao {
    vault: DevTlsVault,
    secret_id: String,
    key: ApiKey,
    run: RunDir,
    supervisor: Supervisor,
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
        // Also `nope/data/*`, where no mount is, and the KV v1 mount `kv1`
        // (`kv_mount_tests`): a wrong vault.kv_mount the policy allows.
        root.put_policy(
            "keygate-read",
            &format!(
                "path \"{KV_MOUNT}/data/*\" {{ capabilities = [\"read\"] }}\n\
                 path \"nope/data/*\" {{ capabilities = [\"read\"] }}\n\
                 path \"kv1/*\" {{ capabilities = [\"read\"] }}\n"
            ),
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
        rig::base::redact::register_in_run(run.path(), &secret_id).unwrap();
        run.write_secret("role-id", &role_id).unwrap();
        run.write_secret("secret-id", &secret_id).unwrap();
        std::fs::write(run.path().join("billing.yaml"), BILLING).unwrap();
        let key = ApiKey::generate();
        let record = serde_json::to_value(KeyRecord::for_key(&key, "user-tls")).unwrap();
        root.kv2_put(KV_MOUNT, &format!("{GROUP}/{}", key.selector()), &record)
            .await
            .unwrap();
        Self {
            vault,
            secret_id,
            key,
            run,
            supervisor,
            _dir: dir,
        }
    }

    /// keygate's config for this server, trusting `ca` (None: no
    /// `ca_cert_file`, the system's store), written as `<name>.yaml`.
    fn config(&self, name: &str, ca: Option<&Path>, http: SocketAddr) -> PathBuf {
        self.config_with(name, ca, http, &self.vault.addr, "")
    }

    /// [`Self::config`] with another `vault.address` and more lines in
    /// `vault:` (each indented two spaces).
    fn config_with(
        &self,
        name: &str,
        ca: Option<&Path>,
        http: SocketAddr,
        address: &str,
        vault_lines: &str,
    ) -> PathBuf {
        let ca_line = ca
            .map(|ca| format!("  ca_cert_file: {}\n", ca.display()))
            .unwrap_or_default()
            + vault_lines;
        let text = format!(
            "\
listen:
  grpc: {grpc}
  http: {http}
vault:
  address: {address}
  timeout: 1s
{ca_line}  auth:
    approle:
      role_id_file: {secrets}/role-id
      secret_id_file: {secrets}/secret-id
apis:
  - {apis}/billing.yaml
cache:
  positive_ttl: 0s
  negative_ttl: 0s
",
            grpc = loopback(rig::base::ports::free_port().unwrap()),
            secrets = self.run.secrets_dir().display(),
            apis = self.run.path().display(),
        );
        let file = self.run.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        file
    }

    /// keygate's log so far (its stderr, captured by the supervisor).
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.run.logs_dir().join(format!("{name}.log"))).unwrap()
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

    /// Starts keygate as component `name` on `config`, ready once
    /// `/healthz` answers (it is up, whether or not it reached Vault).
    async fn start_unready_keygate(&mut self, name: &str, config: &Path, http: SocketAddr) {
        self.supervisor
            .start(
                Component::new(name, keygate_binary())
                    .arg("--config")
                    .arg(config)
                    .env("RUST_LOG", "keygate=debug")
                    .current_dir(self.run.path()),
                Readiness::http(format!("http://{http}/healthz"), 200),
            )
            .await
            .unwrap();
    }
}

async fn forward_auth(keygate: &str, uri: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{keygate}/auth"))
        .header("x-forwarded-uri", uri)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_over_https_with_the_ca_file_and_validates_a_key() {
    let mut bao = Bao::start().await;
    let http = loopback(rig::base::ports::free_port().unwrap());
    let config = bao.config("keygate", Some(&bao.vault.ca_file.clone()), http);
    // Ready (the Keygate component's probe) means /readyz = 200: logged in.
    let keygate = Keygate::default()
        .with_binary(keygate_binary())
        .with_config(&config, http)
        .start(&bao.run, &mut bao.supervisor)
        .await
        .unwrap();

    let ready: serde_json::Value = reqwest::get(format!("{keygate}/readyz"))
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

    let allowed = forward_auth(&keygate, "/billing/invoices/7", bao.key.expose()).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-keyrig-owner"], "user-tls");
    let unknown = forward_auth(&keygate, "/billing/invoices", ApiKey::generate().expose()).await;
    assert_eq!(unknown.status(), 401);

    let log = bao.log("keygate");
    assert!(log.contains("logged in to Vault"), "keygate's log:\n{log}");
    assert!(
        !log.contains("vault.allow_plain_http"),
        "keygate's log:\n{log}"
    );
    bao.assert_no_secret_in(&log, "keygate's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_wrong_ca_it_is_not_ready_and_says_why() {
    let mut bao = Bao::start().await;
    // The server's own leaf certificate did not sign itself: a wrong CA.
    let wrong = bao.vault.ca_file.with_file_name("vault-cert.pem");
    let http = loopback(rig::base::ports::free_port().unwrap());
    let config = bao.config("keygate-wrong-ca", Some(&wrong), http);
    bao.start_unready_keygate("keygate-wrong-ca", &config, http)
        .await;
    let keygate = format!("http://{http}");

    // Not ready, and it keeps saying so: poll until its log names the cause.
    let expected = format!(
        "cannot reach Vault at {}: the AppRole login failed: certificate verify failed against the CA in {} (invalid peer certificate: ",
        bao.vault.addr,
        wrong.display()
    );
    let log = wait_for_log(&bao, "keygate-wrong-ca", &expected).await;
    let response = reqwest::get(format!("{keygate}/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let denied = forward_auth(&keygate, "/billing/invoices", bao.key.expose()).await;
    assert_eq!(denied.status(), 503);
    assert!(
        log.contains("set vault.ca_cert_file to the CA that signed Vault's certificate"),
        "keygate's log:\n{log}"
    );
    bao.assert_no_secret_in(&log, "keygate's log");

    // Without ca_cert_file the system's store is used, and says so.
    let http = loopback(rig::base::ports::free_port().unwrap());
    let config = bao.config("keygate-system-store", None, http);
    bao.start_unready_keygate("keygate-system-store", &config, http)
        .await;
    wait_for_log(
        &bao,
        "keygate-system-store",
        "certificate verify failed against the system's trust store",
    )
    .await;
    assert_eq!(
        reqwest::get(format!("http://{http}/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );
}

/// keygate's log once it holds `expected` (it retries its login, so the
/// line comes within a few seconds); the log it last saw if not.
async fn wait_for_log(bao: &Bao, name: &str, expected: &str) -> String {
    rig::base::wait::wait_until(
        &format!("{name}'s log to say {expected:?}"),
        Duration::from_secs(30),
        async || {
            let log = bao.log(name);
            anyhow::Ok(if log.contains(expected) {
                rig::base::wait::Probe::Ready(log)
            } else {
                rig::base::wait::Probe::seen(format!("log:\n{log}"))
            })
        },
    )
    .await
    .unwrap()
}

/// A vault.kv_mount with no mount behind it, which keygate's policy allows
/// (`nope/data/*`): OpenBao answers a read there 404 with "no handler for
/// route", where a key it lacks is 404 with no error. Every valid key was
/// 401 `unknown`, /readyz 200 and nothing logged; now 503
/// `vault-misconfigured`, a warning naming vault.kv_mount and the config
/// file, and /readyz not ready once a read has shown it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_mount_vault_lacks_is_vault_misconfigured_not_unknown() {
    let mut bao = Bao::start().await;
    let http = loopback(rig::base::ports::free_port().unwrap());
    let ca = bao.vault.ca_file.clone();
    let config = bao.config_with(
        "keygate-nope",
        Some(&ca),
        http,
        &bao.vault.addr,
        "  kv_mount: nope\n",
    );
    bao.start_unready_keygate("keygate-nope", &config, http)
        .await;
    let keygate = format!("http://{http}");
    // Logged in: Vault does not say a mount does not exist to a token
    // (403 alike for none and one it may not use), so only a read shows it.
    common_wait_ready(&keygate).await;

    for key in [bao.key.expose(), ApiKey::generate().expose()] {
        let denied = forward_auth(&keygate, "/billing/invoices", key).await;
        assert_eq!(denied.status(), 503);
        assert_eq!(denied.headers()["x-keyrig-reason"], "vault-misconfigured");
    }
    let expected = format!(
        "vault.kv_mount in {} is `nope`, but Vault has no mount there (it answered a key read with 404: \
         no handler for route \"nope/data/billing-api/",
        config.display()
    );
    let log = wait_for_log(&bao, "keygate-nope", &expected).await;
    assert_eq!(
        log.matches("denying with 503 vault-misconfigured").count(),
        1,
        "one line per 10 s:\n{log}"
    );
    let ready = reqwest::get(format!("{keygate}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(body.to_string().contains("vault.kv_mount in "), "{body}");
    bao.assert_no_secret_in(&log, "keygate's log");
}

/// A vault.kv_mount that is a KV version 1 mount: a key it lacks gets the
/// same 404 as from KV v2, so every key was 401 `unknown`. Vault's mount
/// description, readable to keygate's token, says so: not ready from the
/// start, and 503 `vault-misconfigured`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_version_1_mount_is_not_ready_and_vault_misconfigured() {
    let mut bao = Bao::start().await;
    bao.vault
        .root
        .call(
            reqwest::Method::POST,
            "sys/mounts/kv1",
            Some(&serde_json::json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await
        .unwrap();
    let http = loopback(rig::base::ports::free_port().unwrap());
    let ca = bao.vault.ca_file.clone();
    let config = bao.config_with(
        "keygate-kv1",
        Some(&ca),
        http,
        &bao.vault.addr,
        "  kv_mount: kv1\n",
    );
    bao.start_unready_keygate("keygate-kv1", &config, http)
        .await;
    let keygate = format!("http://{http}");
    let expected = format!(
        "vault.kv_mount in {} is `kv1`, but Vault says it is a KV version 1 mount",
        config.display()
    );
    let log = wait_for_log(&bao, "keygate-kv1", &expected).await;
    assert!(log.contains("logged in to Vault"), "{log}");
    let ready = reqwest::get(format!("{keygate}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(body.to_string().contains(&expected), "{body}");
    let denied = forward_auth(&keygate, "/billing/invoices", ApiKey::generate().expose()).await;
    assert_eq!(denied.status(), 503);
    assert_eq!(denied.headers()["x-keyrig-reason"], "vault-misconfigured");
}

/// vault.address with a path after host and port: OpenBao answers every
/// such request 404 `{"errors":[]}`, and keygate took the login's 404 for
/// an outage. It says the address may not point at Vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_after_vaults_address_is_named() {
    let mut bao = Bao::start().await;
    let http = loopback(rig::base::ports::free_port().unwrap());
    let ca = bao.vault.ca_file.clone();
    let address = format!("{}/foo", bao.vault.addr);
    let config = bao.config_with("keygate-prefix", Some(&ca), http, &address, "");
    bao.start_unready_keygate("keygate-prefix", &config, http)
        .await;
    let expected = format!(
        "the AppRole login (auth/approle/login) was answered 404: vault.address `{address}` in {} \
         may not point at Vault",
        config.display()
    );
    wait_for_log(&bao, "keygate-prefix", &expected).await;
    let ready = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
}

/// Polls keygate's /readyz until it answers 200.
async fn common_wait_ready(keygate: &str) {
    rig::base::wait::wait_until(
        &format!("{keygate}/readyz to answer 200"),
        Duration::from_secs(30),
        async || {
            let status = reqwest::get(format!("{keygate}/readyz")).await?.status();
            anyhow::Ok(if status == 200 {
                rig::base::wait::Probe::Ready(())
            } else {
                rig::base::wait::Probe::seen(format!("status {status}"))
            })
        },
    )
    .await
    .unwrap()
}
