//! The load generator over its real HTTP interface: a burst as large as the
//! bench's scale step sends (100 000 keys), aimed at the generator's own
//! `/healthz`, and the report that comes back.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bench_peer::protocol::{BurstReport, BurstSpec, KeySpec};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_the_scale_steps_size_is_run_and_reported() {
    let addr = free_addr();
    tokio::spawn(bench_peer::load::serve(addr));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = format!("http://{addr}/healthz");
    let mut ready = false;
    for _ in 0..100 {
        if client
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the load generator did not answer {health}");

    let keys: Vec<String> = (0..100_000).map(|n| format!("{n:064x}")).collect();
    let spec = BurstSpec {
        url: health.clone(),
        keys: KeySpec::Fresh(keys),
        connections: 4,
        max_requests: 40,
        max_time_ms: 10_000,
        rate_per_s: None,
    };
    let response = client
        .post(format!("http://{addr}/burst"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let report: BurstReport = response.json().await.unwrap();
    assert_eq!((report.ok, report.failed), (40, 0));
    assert_eq!(report.keys_used, 40, "one fresh key per request");
    assert_eq!(report.latencies().unwrap().len(), 40);

    // A burst against nothing reports its failures, not an error.
    let spec = BurstSpec {
        url: format!("http://{}/", free_addr()),
        keys: KeySpec::One("k".repeat(64)),
        connections: 1,
        max_requests: 3,
        max_time_ms: 5_000,
        rate_per_s: None,
    };
    let report: BurstReport = client
        .post(format!("http://{addr}/burst"))
        .json(&spec)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((report.ok, report.failed), (0, 3));
    assert!(report.last_failure.is_some());
}
