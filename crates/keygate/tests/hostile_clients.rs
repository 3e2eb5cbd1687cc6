//! keygate as a process against slow and hostile clients: connections that
//! never finish their headers, and more connections than `limits` allows;
//! and kept-alive connections, which the header timeout leaves open.
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

/// One answer on a kept-alive connection: its head and `Content-Length`
/// bytes of body, leaving the connection open.
async fn read_answer(conn: &mut TcpStream) -> String {
    let read = async {
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await.unwrap() == 0 {
                return String::from_utf8_lossy(&answer).into_owned();
            }
            answer.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |n| n.trim().parse().unwrap());
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).await.unwrap();
        answer.extend_from_slice(&body);
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(GUARD, read)
        .await
        .expect("keygate did not answer a whole request")
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: keygate\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_outlives_the_header_read_timeout() {
    // Gateways keep connections to keygate open between requests, for
    // longer than keygate's header timeout; closing them then races the
    // gateway's next request. Between requests only the idle timeout counts.
    let vault = FakeVault::start().await;
    // 1 s: the first request must be in within it of the accept, which a
    // loaded machine could delay past a shorter one.
    let (fixture, _keygate) =
        started_with_limits(&vault, "  header_read_timeout: 1s\n  idle_timeout: 60s\n").await;

    let mut conn = TcpStream::connect(fixture.http).await.unwrap();
    conn.write_all(HEALTHZ).await.unwrap();
    let first = read_answer(&mut conn).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");

    // Idle between requests for several header timeouts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    conn.write_all(HEALTHZ).await.unwrap();
    let second = read_answer(&mut conn).await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "the kept-alive connection was closed between requests: {second:?}"
    );

    // The header timer still runs for each later request, from its first byte.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\nX-Trickle: a")
        .await
        .unwrap();
    let answer = read_until_closed(&mut conn, "a second request with unfinished headers").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_read_timeout() {
    let vault = FakeVault::start().await;
    let (fixture, _keygate) = started_with_limits(
        &vault,
        "  header_read_timeout: 300ms\n  idle_timeout: 60s\n",
    )
    .await;
    let mut silent = TcpStream::connect(fixture.http).await.unwrap();
    let answer = read_until_closed(&mut silent, "a connection that sent nothing").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
}

/// How long to watch a connection beyond the limit for being served: twenty
/// times what serving one took on this machine just before (`served_in`),
/// and at least 500 ms. A fixed window would let a broken limit pass on a
/// machine too loaded to serve within it; this one scales with the control.
fn waiting_window(served_in: Duration) -> Duration {
    (served_in * 20).max(Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_beyond_the_limit_wait_for_a_free_slot() {
    let vault = FakeVault::start().await;
    let (fixture, _keygate) = started_with_limits(
        &vault,
        "  http_connections: 2\n  header_read_timeout: 60s\n  idle_timeout: 60s\n",
    )
    .await;
    // The control: a whole request on a free slot, and how long it took.
    let started = std::time::Instant::now();
    let mut control = TcpStream::connect(fixture.http).await.unwrap();
    control
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut control, "the control connection").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let window = waiting_window(started.elapsed());
    drop(control);
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
    tokio::time::sleep(window).await;
    assert!(
        !third.is_finished(),
        "a third connection was served within {window:?} while the limit of 2 was taken"
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
    // The control: a check on a free slot, and how long it took (its
    // connection is closed before the holder takes the slot).
    let started = std::time::Instant::now();
    {
        let mut client = AuthorizationClient::connect(format!("http://{}", fixture.grpc))
            .await
            .unwrap();
        client.check(CheckRequest::default()).await.unwrap();
    }
    let window = waiting_window(started.elapsed());
    let holder = TcpStream::connect(fixture.grpc).await.unwrap();

    let check = tokio::spawn({
        let url = format!("http://{}", fixture.grpc);
        async move {
            let mut client = AuthorizationClient::connect(url).await.unwrap();
            // No HTTP attributes: denied no-route, which needs no Vault.
            client.check(CheckRequest::default()).await.is_ok()
        }
    });
    tokio::time::sleep(window).await;
    assert!(
        !check.is_finished(),
        "a second gRPC connection was served within {window:?} while the limit of 1 was taken"
    );

    drop(holder);
    let answered = tokio::time::timeout(GUARD, check)
        .await
        .expect("the gRPC check was not served after the slot freed")
        .unwrap();
    assert!(answered);
}
