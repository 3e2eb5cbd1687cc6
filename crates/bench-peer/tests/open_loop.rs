//! The load generator's open loop (a burst with `rate_per_s`), over its
//! real HTTP interface, against small upstreams of the test's own that
//! count what reaches them. What is asserted are counts (requests due,
//! sent, late, keys) and where a stall lands in the latencies, never how
//! fast anything was: on a loaded machine a request goes out later, never
//! earlier, and every bound below holds either way.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use bench_peer::protocol::{BurstReport, BurstSpec, KeySpec};

/// What the test upstream saw: each request's arrival and key.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    arrivals: Mutex<Vec<(Instant, String)>>,
    /// The request (by arrival, from 0) answered only after `stall`.
    stall_at: Option<u64>,
    stall: Duration,
}

/// An upstream that answers 200 to everything, the `stall_at`-th request
/// after `stall`.
async fn upstream(seen: Arc<Seen>) -> SocketAddr {
    async fn answer(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> &'static str {
        let n = seen.count.fetch_add(1, Ordering::SeqCst);
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        seen.arrivals.lock().unwrap().push((Instant::now(), key));
        if seen.stall_at == Some(n) {
            tokio::time::sleep(seen.stall).await;
        }
        "{}"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(answer).with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The load generator on a port of its own, once it answers.
async fn generator() -> (reqwest::Client, String) {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    tokio::spawn(bench_peer::load::serve(addr));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}");
    for _ in 0..100 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return (client, base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the load generator did not answer at {base}");
}

async fn burst(client: &reqwest::Client, base: &str, spec: &BurstSpec) -> BurstReport {
    let response = client
        .post(format!("{base}/burst"))
        .json(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_rate_sends_what_is_due_and_no_sooner() {
    let seen = Arc::new(Seen::default());
    let up = upstream(seen.clone()).await;
    let (client, base) = generator().await;
    let spec = BurstSpec {
        url: format!("http://{up}/"),
        keys: KeySpec::One("k".repeat(64)),
        connections: 4,
        // Far more than the rate allows in the window: the rate bounds it.
        max_requests: 1_000_000,
        max_time_ms: 1_000,
        rate_per_s: Some(200.0),
    };
    let before = Instant::now();
    let report = burst(&client, &base, &spec).await;
    // 200 req/s for 1 s: requests 0..200 are due (i / 200 < 1 s), each
    // sent once, however late.
    assert_eq!(
        (report.ok, report.failed),
        (200, 0),
        "{:?}",
        report.last_failure
    );
    assert_eq!(report.latencies().unwrap().len(), 200);
    assert_eq!(seen.count.load(Ordering::SeqCst), 200);
    assert!(report.late <= 200);
    // None goes out before it is due, so no more than the first 100 (due
    // in the first half second after the burst began, which was after
    // `before`) can have arrived by then. A closed loop sends all of them
    // in a few milliseconds.
    let early = seen
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at < before + Duration::from_millis(500))
        .count();
    assert!(
        early <= 100,
        "{early} of 200 arrived in the first half second"
    );

    // The same burst without a rate is the closed loop, bounded by its
    // count as before.
    let closed = BurstSpec {
        max_requests: 300,
        max_time_ms: 10_000,
        rate_per_s: None,
        ..spec
    };
    let report = burst(&client, &base, &closed).await;
    assert_eq!((report.ok, report.failed, report.late), (300, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_is_in_the_tail_measured_from_when_requests_were_due() {
    // The 21st request waits 300 ms; one connection, so every request due
    // meanwhile waits for it, and no more than one is ever in flight.
    let stall = Duration::from_millis(300);
    let seen = Arc::new(Seen {
        stall_at: Some(20),
        stall,
        ..Seen::default()
    });
    let up = upstream(seen.clone()).await;
    let (client, base) = generator().await;
    let spec = BurstSpec {
        url: format!("http://{up}/"),
        keys: KeySpec::One("k".repeat(64)),
        connections: 1,
        max_requests: 1_000_000,
        max_time_ms: 1_000,
        rate_per_s: Some(100.0),
    };
    let report = burst(&client, &base, &spec).await;
    assert_eq!(
        (report.ok, report.failed),
        (100, 0),
        "{:?}",
        report.last_failure
    );
    let latencies = report.latencies().unwrap();
    let stall_us = stall.as_micros() as u64;
    // The stalled request itself.
    assert!(
        latencies.max() >= stall_us,
        "max {} us, the stall was {stall_us} us",
        latencies.max()
    );
    // And the ~30 due at 10 ms intervals behind it, measured from when
    // they were due: p99 of 100 is the 99th, in the stall's shadow. Timed
    // from when each went out, only the one stalled request would be slow
    // and p99 would be the upstream's usual fraction of a millisecond.
    assert!(
        latencies.value_at_quantile(0.99) >= stall_us * 3 / 4,
        "p99 {} us",
        latencies.value_at_quantile(0.99)
    );
    // Those behind it went out late, and the report says so: waiting for
    // the one connection, not for the pacer (which cannot have been behind
    // for all of them: it hands one over every 10 ms).
    assert!(report.late >= 10, "{} late", report.late);
    assert!(
        report.late - report.late_pacing >= 10,
        "{} late, {} of them the pacer's",
        report.late,
        report.late_pacing
    );
    assert!(
        report.max_late_us >= stall_us * 3 / 4,
        "{}",
        report.max_late_us
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_at_a_rate_are_each_sent_once() {
    let seen = Arc::new(Seen::default());
    let up = upstream(seen.clone()).await;
    let (client, base) = generator().await;
    let keys: Vec<String> = (0..50).map(|n| format!("{n:064x}")).collect();
    let spec = BurstSpec {
        url: format!("http://{up}/"),
        keys: KeySpec::Fresh(keys.clone()),
        connections: 3,
        max_requests: 1_000,
        max_time_ms: 1_000,
        rate_per_s: Some(500.0),
    };
    let report = burst(&client, &base, &spec).await;
    // 500 due in the window, but only 50 keys.
    assert_eq!((report.ok, report.failed, report.keys_used), (50, 0, 50));
    let mut sent: Vec<String> = seen
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .map(|(_, key)| key.clone())
        .collect();
    sent.sort();
    assert_eq!(sent, keys);

    // A rate that is no number of requests per second is refused.
    let bad = BurstSpec {
        rate_per_s: Some(0.0),
        ..spec
    };
    let response = client
        .post(format!("{base}/burst"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.text().await.unwrap().contains("rate"));
}
