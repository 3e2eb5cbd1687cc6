//! Waiting for eventually-true things (a revoked key starting to get 401, a
//! server getting ready) without fixed sleeps, and failing with what was
//! last seen rather than a bare "timed out".
//!
//! ```no_run
//! # async fn demo(client: reqwest::Client, url: &str) -> anyhow::Result<()> {
//! use std::time::Duration;
//! use rig::base::wait::{wait_until, Probe};
//! wait_until("revoked key gets 401", Duration::from_secs(7), async || {
//!     let status = client.get(url).send().await?.status();
//!     anyhow::Ok(if status == 401 { Probe::Ready(()) } else { Probe::Pending(status.as_u16().to_string()) })
//! })
//! .await?;
//! // on timeout: "revoked key gets 401: still 200 after 7.0 s"
//! # Ok(()) }
//! ```

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

thread_local! {
    /// The last wait that timed out on this thread, so a failing e2e case
    /// can report what it expected and what it last saw.
    static LAST_TIMEOUT: RefCell<Option<Timeout>> = const { RefCell::new(None) };
}

/// Takes the last [`Timeout`] of this thread (`CaseGuard` does, on failure).
pub fn take_last_timeout() -> Option<Timeout> {
    LAST_TIMEOUT.with(|last| last.borrow_mut().take())
}

/// A timeout with registered secrets redacted, remembered for the case.
fn timed_out(what: &str, last_seen: String, waited: Duration) -> anyhow::Error {
    let timeout = Timeout {
        what: crate::base::redact::redact(what),
        last_seen: crate::base::redact::redact(&last_seen),
        waited,
    };
    LAST_TIMEOUT.with(|last| *last.borrow_mut() = Some(timeout.clone()));
    timeout.into()
}

/// One look at the thing being waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<T> {
    /// Done: `wait_until` returns this value.
    Ready(T),
    /// Not yet; the text says what was seen, for the timeout message.
    Pending(String),
}

impl<T> Probe<T> {
    /// `Pending` with anything displayable as the observation.
    pub fn seen(observation: impl fmt::Display) -> Self {
        Probe::Pending(observation.to_string())
    }
}

/// A wait that ran out of time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: still {last_seen} after {}", crate::base::progress::secs(*.waited))]
pub struct Timeout {
    pub what: String,
    /// The last observation the probe reported.
    pub last_seen: String,
    pub waited: Duration,
}

/// Polling interval: quick at first, since most waits end fast, then
/// relaxed so a long wait does not hammer the thing it watches.
fn interval(attempt: u32) -> Duration {
    Duration::from_millis(match attempt {
        0..=4 => 100,
        _ => 250,
    })
}

/// Polls `probe` until it returns [`Probe::Ready`] or `deadline` passes;
/// on timeout the error is a [`Timeout`] (downcast it to inspect) whose
/// texts have every registered secret redacted (see [`crate::base::redact`]).
///
/// An `Err` from the probe ends the wait at once with that error: the probe
/// decides what is transient (report it as `Pending`, e.g. "connection
/// refused" while a server starts) and what is fatal. The probe always runs
/// at least once, and once more right at the deadline if time is left.
pub async fn wait_until<T, F>(what: &str, deadline: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: AsyncFnMut() -> anyhow::Result<Probe<T>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let last_seen = match probe().await? {
            Probe::Ready(value) => return Ok(value),
            Probe::Pending(seen) => seen,
        };
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            return Err(timed_out(what, last_seen, elapsed));
        }
        tokio::time::sleep(interval(attempt).min(deadline - elapsed)).await;
        attempt += 1;
    }
}

/// The blocking twin of [`wait_until`], for code without a runtime.
pub fn wait_until_blocking<T, F>(what: &str, deadline: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> anyhow::Result<Probe<T>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let last_seen = match probe()? {
            Probe::Ready(value) => return Ok(value),
            Probe::Pending(seen) => seen,
        };
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            return Err(timed_out(what, last_seen, elapsed));
        }
        std::thread::sleep(interval(attempt).min(deadline - elapsed));
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[tokio::test]
    async fn timeout_names_the_last_observation() {
        let mut seen = 0;
        let err = wait_until(
            "revoked key gets 401",
            Duration::from_millis(300),
            async || {
                seen += 1;
                anyhow::Ok(Probe::<()>::Pending(if seen == 1 {
                    "503".into()
                } else {
                    "200".into()
                }))
            },
        )
        .await
        .unwrap_err();
        let timeout = err.downcast_ref::<Timeout>().unwrap();
        assert_eq!(timeout.last_seen, "200");
        assert!(seen >= 2);
        // The time in the message is whatever the machine took.
        assert!(
            err.to_string()
                .starts_with("revoked key gets 401: still 200 after "),
            "{err}"
        );
    }

    #[rstest]
    #[tokio::test]
    async fn returns_the_ready_value() {
        let mut n = 0;
        let value = wait_until("counter", Duration::from_secs(5), async || {
            n += 1;
            anyhow::Ok(if n == 3 {
                Probe::Ready(n)
            } else {
                Probe::seen(n)
            })
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[rstest]
    #[tokio::test]
    async fn a_probe_error_ends_the_wait_at_once() {
        let mut probes = 0;
        let err = wait_until::<(), _>("x", Duration::from_secs(30), async || {
            probes += 1;
            Err(anyhow::anyhow!("boom"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        // Not probed again: the error ended the wait (counted, not timed).
        assert_eq!(probes, 1);
    }

    #[rstest]
    #[tokio::test]
    async fn a_plain_closure_returning_an_async_block_works_too() {
        let expected = String::from("ready");
        let value = wait_until("borrowing probe", Duration::from_secs(1), || async {
            let seen: &str = &expected;
            Ok(Probe::Ready(seen.len()))
        })
        .await
        .unwrap();
        assert_eq!(value, 5);
    }

    #[rstest]
    fn blocking_variant_times_out_the_same_way() {
        let err = wait_until_blocking::<(), _>("port 1 opens", Duration::from_millis(150), || {
            Ok(Probe::seen("connection refused"))
        })
        .unwrap_err();
        let timeout = err.downcast_ref::<Timeout>().unwrap();
        assert_eq!(timeout.what, "port 1 opens");
        assert!(
            err.to_string()
                .starts_with("port 1 opens: still connection refused after "),
            "{err}"
        );
    }

    #[rstest]
    fn timeouts_redact_registered_secrets_and_are_remembered() {
        crate::base::redact::register("hvs.wait-redaction-test-token");
        let err = wait_until_blocking::<(), _>("token works", Duration::from_millis(50), || {
            Ok(Probe::seen("403 for hvs.wait-redaction-test-token"))
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("token works: still 403 for <redacted> after"),
            "{err}"
        );
        let remembered = take_last_timeout().unwrap();
        assert_eq!(remembered.last_seen, "403 for <redacted>");
        assert!(take_last_timeout().is_none());
    }
}
