//! rig's Vault client over https against a real `bao server -dev -dev-tls`
//! (started as the `DevTlsVault` component): trusted with its CA, and the
//! errors without it or with the wrong one. An integration test because it
//! starts a process, which the `vault` layer itself never does.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::json;

use rig::process::dev_tls_vault::DevTlsVault;
use rig::vault::client::{Secret, VaultClient, VaultError};

/// The pinned bao, resolved as the harness does. Missing is a failure,
/// not a skip (as in crates/manifests' tests): `cargo xtask test`
/// installs the tools first, and a check that silently does not run
/// proves nothing.
fn bao() -> PathBuf {
    rig::process::tools::pinned_for_tests("bao")
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_dev_tls_server_with_its_ca_and_a_clear_error_without() {
    let dir = tempfile::tempdir().unwrap();
    let run = rig::base::run::RunDir::create_in(dir.path()).unwrap();
    let mut supervisor = rig::process::supervisor::Supervisor::new(&run);
    let vault = DevTlsVault::start(&mut supervisor, &run, &bao(), "bao")
        .await
        .unwrap();
    assert!(
        vault.addr.starts_with("https://127.0.0.1:"),
        "{}",
        vault.addr
    );
    let health = vault.root.health().await.unwrap();
    assert!(!health.sealed && health.initialized, "{health:?}");
    vault.root.enable_kv2("tls-kv").await.unwrap();
    vault
        .root
        .kv2_put("tls-kv", "a/b", &json!({"field": "value"}))
        .await
        .unwrap();
    assert_eq!(
        vault.root.kv2_get("tls-kv", "a/b").await.unwrap(),
        Some(json!({"field": "value"}))
    );
    let token = vault.root.token().unwrap().expose().to_owned();

    // No CA given (and `new` never reads VAULT_CACERT): the system's
    // store does not know bao's generated CA.
    let untrusting = VaultClient::new(&vault.addr)
        .unwrap()
        .with_token(Secret::new(token.clone()));
    let err = untrusting.kv2_get("tls-kv", "a/b").await.unwrap_err();
    assert!(matches!(err, VaultError::Certificate { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "Vault at {}: certificate verify failed against the system's trust store, set VAULT_CACERT to the CA that signed Vault's certificate (invalid peer certificate: ",
            vault.addr
        )),
        "{message}"
    );
    assert!(!message.contains(&token));

    // The wrong CA (the server's own leaf certificate is no issuer).
    let wrong = vault.ca_file.with_file_name("vault-cert.pem");
    let err = VaultClient::new(&vault.addr)
        .unwrap()
        .with_ca_cert_file(&wrong)
        .unwrap()
        .health()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "Vault at {}: certificate verify failed against the CA in {}, set VAULT_CACERT",
            vault.addr,
            wrong.display()
        )),
        "{err}"
    );

    // Plain HTTP to the TLS listener is no certificate problem.
    let plain = vault.addr.replace("https://", "http://");
    let (status, _) = VaultClient::new(&plain)
        .unwrap()
        .request(Method::GET, "sys/health", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    supervisor.stop_all();
}
