//! keygate as a process against slow and hostile clients: connections that
//! never finish their headers, and more connections than `limits` allows.
//! Real TCP connections to the real binary; the deadlines here are guards
//! that turn a hang into a failure, not what is asserted. (Proxy variables
//! and redirects on the Vault side: tests/vault_tls.rs and src/vault.rs.)

mod common;

use std::time::Duration;

use common::{FakeVault, Fixture, wait_for_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Turns a hang into a failure; never the thing asserted.
const GUARD: Duration = Duration::from_secs(20);

async fn started_with_limits(vault: &FakeVault, limits: &str) -> (Fixture, common::Running) {
    let fixture = Fixture::new(&vault.address);
    fixture.write_config(&format!(
        "{}limits:\n{limits}",
        fixture.config_text(&vault.address)
    ));
    let keygate = fixture.start();
    wait_for_status(&fixture.url("/healthz"), 200).await;
    (fixture, keygate)
}

/// Everything the server sends until it closes the connection.
async fn read_until_closed(conn: &mut TcpStream, what: &str) -> String {
    let mut answer = Vec::new();
    match tokio::time::timeout(GUARD, conn.read_to_end(&mut answer)).await {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        Err(_) => panic!("keygate kept {what} open for {GUARD:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let vault = FakeVault::start().await;
    let (fixture, _keygate) = started_with_limits(&vault, "  header_read_timeout: 300ms\n").await;

    let mut slow = TcpStream::connect(fixture.http).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\nX-Trickle: a")
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow, "a connection with unfinished headers").await;
    // hyper answers 408 as it closes, or just closes.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );

    // The port still serves whole requests.
    let mut whole = TcpStream::connect(fixture.http).await.unwrap();
    whole
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut whole, "a finished request").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_beyond_the_limit_wait_for_a_free_slot() {
    let vault = FakeVault::start().await;
    let (fixture, _keygate) = started_with_limits(
        &vault,
        "  http_connections: 2\n  header_read_timeout: 60s\n  idle_timeout: 60s\n",
    )
    .await;
    // Both slots taken by connections that send nothing.
    let first = TcpStream::connect(fixture.http).await.unwrap();
    let _second = TcpStream::connect(fixture.http).await.unwrap();

    let third = tokio::spawn({
        let addr = fixture.http;
        async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            read_until_closed(&mut conn, "the third connection").await
        }
    });
    // Time for a (broken) limit to let the third through; with the limit it
    // waits however long this is.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served while the limit of 2 was taken"
    );

    drop(first);
    let answer = third.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_beyond_the_limit_wait_for_a_free_slot() {
    use keygate::ext_authz::{AuthorizationClient, CheckRequest};

    let vault = FakeVault::start().await;
    let (fixture, _keygate) = started_with_limits(&vault, "  grpc_connections: 1\n").await;
    let holder = TcpStream::connect(fixture.grpc).await.unwrap();

    let check = tokio::spawn({
        let url = format!("http://{}", fixture.grpc);
        async move {
            let mut client = AuthorizationClient::connect(url).await.unwrap();
            // No HTTP attributes: denied no-route, which needs no Vault.
            client.check(CheckRequest::default()).await.is_ok()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !check.is_finished(),
        "a second gRPC connection was served while the limit of 1 was taken"
    );

    drop(holder);
    let answered = tokio::time::timeout(GUARD, check)
        .await
        .expect("the gRPC check was not served after the slot freed")
        .unwrap();
    assert!(answered);
}
