//! keygate's AppRole credentials against a real OpenBao (`bao server -dev
//! -dev-tls`, the `DevTlsVault` component), delivered as a Kubernetes
//! Secret directory (`rig::local::secret_dir`: key links through `..data`,
//! swapped atomically): a rotation logs in again and revokes the token it
//! replaces; a bad secret-id rotated in is sent to Vault once, not retried
//! into Vault's user lockout, while the old token keeps serving.
//!
//! Here rather than in keygate's tests for the reason given in
//! `keygate_https_vault.rs` (keygate never depends on the harness). The
//! keygate binary is the debug build in the target directory or
//! `$KEYRIG_KEYGATE`; bao is the pinned one, and missing is a failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rig::base::run::RunDir;
use rig::base::wait::{Probe, wait_until};
use rig::local::secret_dir::SecretDir;
use rig::process::components::Keygate;
use rig::process::dev_tls_vault::DevTlsVault;
use rig::process::supervisor::Supervisor;
use rig::vault::client::VaultClient;

const KV_MOUNT: &str = "api-portal-keys";

const BILLING: &str = "\
openapi: 3.0.1
groupId: billing-api
servers:
  - url: /billing
paths:
  /invoices: {}
";

/// An OpenBao with keygate's AppRole, and keygate's credentials in a
/// Secret directory, in a run directory of its own. Everything started
/// stops when the supervisor drops.
struct Fixture {
    vault: DevTlsVault,
    role_id: String,
    /// Every secret-id this test made, to check none reaches a log.
    secret_ids: Vec<String>,
    secret: SecretDir,
    run: RunDir,
    supervisor: Supervisor,
    keygate: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create_in(dir.path()).unwrap();
        let mut supervisor = Supervisor::new(&run);
        let bao = rig::process::tools::pinned_for_tests("bao");
        let vault = DevTlsVault::start(&mut supervisor, &run, &bao, "bao")
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
        // Tokens of an hour: nothing here waits for a TTL.
        root.approle_write_role(
            "keygate",
            &["keygate-read".to_owned()],
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        )
        .await
        .unwrap();
        let role_id = root.approle_role_id("keygate").await.unwrap();
        let mut fixture = Self {
            secret: SecretDir::new(run.path().join("keygate-credentials")),
            vault,
            role_id,
            secret_ids: Vec::new(),
            run,
            supervisor,
            keygate: String::new(),
            _dir: dir,
        };
        let secret_id = fixture.new_secret_id().await;
        fixture.publish(&secret_id);
        std::fs::write(fixture.run.path().join("billing.yaml"), BILLING).unwrap();
        let http = loopback();
        let config = fixture.config(http);
        fixture.keygate = Keygate::default()
            .with_config(&config, http)
            .start(&fixture.run, &mut fixture.supervisor)
            .await
            .unwrap();
        fixture
    }

    async fn new_secret_id(&mut self) -> String {
        let secret_id = self
            .vault
            .root
            .approle_new_secret_id("keygate")
            .await
            .unwrap()
            .secret_id
            .expose()
            .to_owned();
        self.remember(&secret_id);
        secret_id
    }

    fn remember(&mut self, secret_id: &str) {
        rig::base::redact::register_in_run(self.run.path(), secret_id).unwrap();
        self.secret_ids.push(secret_id.to_owned());
    }

    /// A Secret update: both keys in one new payload, `..data` swapped.
    fn publish(&self, secret_id: &str) {
        let data = BTreeMap::from([
            ("role-id".to_owned(), self.role_id.clone()),
            ("secret-id".to_owned(), secret_id.to_owned()),
        ]);
        self.secret.publish(&data).unwrap();
    }

    fn config(&self, http: SocketAddr) -> PathBuf {
        let text = format!(
            "\
listen:
  grpc: {grpc}
  http: {http}
vault:
  address: {address}
  ca_cert_file: {ca}
  timeout: 2s
  auth:
    approle:
      role_id_file: {role_id}
      secret_id_file: {secret_id}
apis:
  - billing.yaml
",
            grpc = loopback(),
            address = self.vault.addr,
            ca = self.vault.ca_file.display(),
            role_id = self.secret.key_path("role-id").display(),
            secret_id = self.secret.key_path("secret-id").display(),
        );
        let file = self.run.path().join("keygate.yaml");
        std::fs::write(&file, text).unwrap();
        file
    }

    /// The accessor of the token keygate uses, from `/readyz`.
    async fn accessor(&self) -> Result<String, String> {
        let response = reqwest::get(format!("{}/readyz", self.keygate))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        match body["vault_token_accessor"].as_str() {
            Some(accessor) if status == 200 => Ok(accessor.to_owned()),
            _ => Err(format!("/readyz {status}: {body}")),
        }
    }

    async fn wait_for_new_accessor(&self, old: &str) -> String {
        wait_until(
            "keygate to log in with the rotated secret-id (a new accessor on /readyz)",
            Duration::from_secs(30),
            async || {
                anyhow::Ok(match self.accessor().await {
                    Ok(accessor) if accessor != old => Probe::Ready(accessor),
                    Ok(same) => Probe::seen(format!("the old accessor {same}")),
                    Err(err) => Probe::seen(err),
                })
            },
        )
        .await
        .unwrap_or_else(|err| panic!("{err}; keygate's log:\n{}", self.log()))
    }

    /// `keygate_vault_logins_total{result="<result>"}` from `/metrics`.
    async fn logins(&self, result: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.keygate))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!("keygate_vault_logins_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.run.logs_dir().join("keygate.log")).unwrap()
    }

    fn assert_no_secret_in_log(&self) {
        let log = self.log();
        let root = self.vault.root.token().unwrap().expose();
        assert!(!log.contains(root), "keygate's log shows the root token");
        for secret_id in &self.secret_ids {
            assert!(
                !log.contains(secret_id.as_str()),
                "keygate's log shows a secret-id"
            );
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], rig::base::ports::free_port().unwrap()))
}

/// Whether Vault still knows a token by its accessor (root's view).
async fn accessor_is_live(root: &VaultClient, accessor: &str) -> Result<bool, String> {
    match root.lookup_accessor(accessor).await {
        Ok(_) => Ok(true),
        // What Vault and OpenBao answer for an accessor whose token is gone.
        Err(err) if matches!(err.status().map(|s| s.as_u16()), Some(400 | 403 | 404)) => Ok(false),
        Err(err) => Err(err.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_id_logs_in_again_and_revokes_the_replaced_token() {
    let mut fixture = Fixture::start().await;
    let old = fixture.accessor().await.unwrap();
    let root = fixture.vault.root.clone();
    assert_eq!(accessor_is_live(&root, &old).await, Ok(true));

    let rotated = fixture.new_secret_id().await;
    fixture.publish(&rotated);
    let new = fixture.wait_for_new_accessor(&old).await;

    // The replaced token is revoked (keygate's revoke-self with it), not
    // left valid for the rest of its hour, and keygate says so (the line is
    // written once Vault answered the revocation, so after Vault shows it:
    // both in one wait).
    wait_until(
        "the replaced token's accessor to be revoked, and keygate to log it",
        Duration::from_secs(10),
        async || {
            anyhow::Ok(match accessor_is_live(&root, &old).await {
                Ok(false) => {
                    let log = fixture.log();
                    if log.contains("revoked the previous Vault token") && log.contains(&old) {
                        Probe::Ready(())
                    } else {
                        Probe::seen("revoked in Vault, no line in keygate's log yet")
                    }
                }
                Ok(true) => Probe::seen("still live"),
                Err(err) => Probe::seen(err),
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(accessor_is_live(&root, &new).await, Ok(true));
    fixture.assert_no_secret_in_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_secret_id_is_sent_once_so_vaults_lockout_never_locks_keygate_out() {
    let mut fixture = Fixture::start().await;
    // Vault's (and OpenBao's) user lockout: by default 5 failed AppRole
    // logins without a 15-minute pause lock the role-id out for 15
    // minutes, the right secret-id included ("permission denied"). Here it
    // locks at the second failure, so the test takes seconds: keygate must
    // send a rejected pair once, not retry it.
    fixture
        .vault
        .root
        .call(
            reqwest::Method::POST,
            "sys/auth/approle/tune",
            Some(&serde_json::json!({"user_lockout_config": {
                "lockout_threshold": "2",
                "lockout_duration": "15m",
                "lockout_counter_reset": "15m",
            }})),
        )
        .await
        .unwrap();
    let old = fixture.accessor().await.unwrap();
    let ok_before = fixture.logins("ok").await;

    // A secret-id Vault never issued (the shape of one, so it is a value
    // keygate could be handed by mistake).
    let bad = "5b0c3a8e-0d55-4e0e-9a62-2f1d3c7b9e41".to_owned();
    fixture.remember(&bad);
    fixture.publish(&bad);
    wait_until(
        "keygate to try the bad secret-id (keygate_vault_logins_total{result=\"rejected\"})",
        Duration::from_secs(30),
        async || {
            let rejected = fixture.logins("rejected").await;
            anyhow::Ok(if rejected > 0 {
                Probe::Ready(rejected)
            } else {
                Probe::seen(format!("{rejected} rejected logins"))
            })
        },
    )
    .await
    .unwrap();
    // The watcher's retries (after 1 s, then 2 s) would have sent it twice
    // more by now, and the second would have locked the role-id out.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        fixture.logins("rejected").await,
        1,
        "keygate's log:\n{}",
        fixture.log()
    );
    // Meanwhile the old token keeps serving.
    assert_eq!(fixture.accessor().await, Ok(old.clone()));
    assert_eq!(fixture.logins("ok").await, ok_before);
    let log = fixture.log();
    assert!(
        log.contains("Vault rejected the changed credential files; keeping the current session"),
        "keygate's log:\n{log}"
    );

    // A fixed secret-id is a new version of the files: tried at once, and
    // the role-id is not locked out.
    let good = fixture.new_secret_id().await;
    fixture.publish(&good);
    fixture.wait_for_new_accessor(&old).await;
    fixture.assert_no_secret_in_log();
}
