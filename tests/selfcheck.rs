//! The harness checking itself, not an assertion about gateways: a case that fails on purpose.
//!
//! It is `#[ignore]`d, so ordinary runs skip it. `cargo xtask test` runs it
//! with `cargo xtask e2e --filter selfcheck_ --include-ignored` and then
//! checks what the harness made of the failure: junit.xml with the failure,
//! a diagnostics bundle (component log tails, Vault audit entries, Envoy and
//! keygate state), a message naming what was expected and what was last
//! seen, with the API key it shows redacted, and a clean secret scan.

use std::time::Duration;

use keyrig_e2e::*;
use rig::base::wait::{Probe, wait_until};

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "selfcheck";

const API_GROUP: &str = "animal-rescue-api";

#[tokio::test]
#[ignore = "fails on purpose: only the harness self-check in `cargo xtask test` runs it"]
async fn selfcheck_wrong_expected_value() {
    let _case = case(ASSERTION_GROUP, "selfcheck_wrong_expected_value");
    let key = issue_key(API_GROUP, |r| r).await.unwrap();
    // A valid key gets 200; expecting 418 makes a real wait time out. The
    // observation names the key, which registration must redact.
    wait_until(
        "a valid key gets 418 at the gateway (deliberately wrong)",
        Duration::from_secs(2),
        async || {
            let reply = gateway_get(&api_path(API_GROUP), Some(key.expose())).await?;
            anyhow::Ok(if reply.status == 418 {
                Probe::Ready(())
            } else {
                Probe::seen(format!("{} for key {}", reply.status, key.expose()))
            })
        },
    )
    .await
    .unwrap();
}
