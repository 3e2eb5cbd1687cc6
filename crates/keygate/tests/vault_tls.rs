//! keygate's Vault client and what it must not do: use a proxy from the
//! environment, or talk plain HTTP to a remote Vault without saying so.
//! (keygate against a real OpenBao over https, started by the harness, is
//! in crates/rig/tests/keygate_https_vault.rs: keygate's tests never depend
//! on the harness.)

mod common;

use common::{FakeVault, Fixture, wait_for_status};

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
