//! Secret references in keygate's config, Kong style:
//!
//! - `{vault://env/my-secret}` reads the environment variable `MY_SECRET`
//!   (upper-cased, `-` becomes `_`);
//! - `{vault://<vault>/<path>/<key>}` reads field `<key>` of the KV v2 secret
//!   `<path>` in the mount of the vault named `<vault>` under `vaults:`.
//!
//! Each resolved value lives by Kong's three TTLs (see [`Policy`]); the state
//! machine is [`Slot`], driven by an explicit `now` so tests need no sleeps.

use std::time::Instant;

// The syntax (what a reference looks like, a vault's TTLs) lives with the
// config that holds it, in keygate-config; the state machine and the reads
// are here.
use keygate_config::config::is_header_value;
pub use keygate_config::reference::{Policy, RefError, Reference, is_reference};

/// What one read of the source gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Value(String),
    /// The secret or its key does not exist.
    Missing,
    /// The source could not answer (Vault down, denied after a re-login).
    Failed,
}

/// What a reference resolves to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Value(String),
    /// The last value, past its ttl, kept because refreshing fails.
    Resurrected(String),
    Missing,
    Unavailable,
}

/// One reference's state.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// The last value read and when.
    last: Option<(String, Instant)>,
    /// Until when a miss is remembered (no value was ever read).
    miss_until: Option<Instant>,
}

impl Slot {
    /// Whether the source must be read before answering.
    pub fn needs_fetch(&self, now: Instant, policy: Policy) -> bool {
        match (&self.last, self.miss_until) {
            (Some((_, at)), _) => !policy.ttl.is_zero() && now >= *at + policy.ttl,
            (None, Some(until)) => now >= until,
            (None, None) => true,
        }
    }

    /// Takes in a read of the source.
    pub fn record(&mut self, fetched: Fetched, now: Instant, policy: Policy) {
        match fetched {
            Fetched::Value(value) => {
                self.last = Some((value, now));
                self.miss_until = None;
            }
            // A secret that disappears after it had a value is a failed
            // refresh (Kong keeps the old value for resurrect_ttl).
            Fetched::Missing if self.last.is_some() => {}
            Fetched::Missing => self.miss_until = Some(now + policy.neg_ttl),
            Fetched::Failed => {}
        }
    }

    pub fn current(&self, now: Instant, policy: Policy) -> Resolved {
        match (&self.last, self.miss_until) {
            (Some((value, at)), _) => {
                let fresh_until = *at + policy.ttl;
                if policy.ttl.is_zero() || now < fresh_until {
                    Resolved::Value(value.clone())
                } else if now < fresh_until + policy.resurrect_ttl {
                    Resolved::Resurrected(value.clone())
                } else {
                    Resolved::Unavailable
                }
            }
            (None, Some(until)) if now < until => Resolved::Missing,
            (None, _) => Resolved::Unavailable,
        }
    }
}

/// `MY_SECRET`'s value, the way `{vault://env/my-secret}` reads it.
pub fn read_env(var: &str) -> Fetched {
    match std::env::var(var) {
        Ok(value) => Fetched::Value(value),
        Err(_) => Fetched::Missing,
    }
}

/// Where a reference's value is read: the environment or a Vault KV v2
/// field, through keygate's own Vault session (which logs in again and
/// re-reads once when Vault answers 403 for its token).
pub trait RefSource: Send + Sync + 'static {
    fn fetch<'a>(
        &'a self,
        mount: &'a str,
        path: &'a str,
        key: &'a str,
    ) -> crate::boxed_future::BoxFuture<'a, Fetched>;
}

/// `upstream_headers:` values: plain strings, or references resolved by
/// their vault's TTLs.
pub struct UpstreamHeaders {
    headers: Vec<(String, HeaderValue)>,
    source: std::sync::Arc<dyn RefSource>,
    /// Per header: the warning that its reference's value cannot be a
    /// header value, at most once per `WARN_EVERY` (with `neg_ttl: 0` it
    /// would come once per request).
    unusable: Vec<log_throttle::Throttle>,
}

/// At most one line per this long for a reference whose value cannot be a
/// header value.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

// Built once at startup, a few per config: the size difference is irrelevant.
#[allow(clippy::large_enum_variant)]
pub enum HeaderValue {
    Plain(String),
    Ref {
        text: String,
        reference: Reference,
        /// The KV mount of the named vault (unused for env references).
        mount: String,
        policy: Policy,
        slot: tokio::sync::Mutex<Slot>,
    },
}

impl UpstreamHeaders {
    pub fn new(headers: Vec<(String, HeaderValue)>, source: std::sync::Arc<dyn RefSource>) -> Self {
        let unusable = headers
            .iter()
            .map(|_| log_throttle::Throttle::new(WARN_EVERY))
            .collect();
        Self {
            headers,
            source,
            unusable,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The headers to add upstream now. A reference that cannot be resolved
    /// (missing, or failing past resurrect_ttl) leaves its header out and
    /// is logged with the reference text, never a value.
    pub async fn resolve(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.headers.len());
        for ((name, value), unusable) in self.headers.iter().zip(&self.unusable) {
            match value {
                HeaderValue::Plain(text) => out.push((name.clone(), text.clone())),
                HeaderValue::Ref {
                    text,
                    reference,
                    mount,
                    policy,
                    slot,
                } => {
                    let mut slot = slot.lock().await;
                    if slot.needs_fetch(Instant::now(), *policy) {
                        let fetched = match reference {
                            Reference::Env { var } => read_env(var),
                            Reference::Vault { path, key, .. } => {
                                self.source.fetch(mount, path, key).await
                            }
                        };
                        // A value with a line break or another control
                        // character is missing, not sent: forward-auth
                        // answers went without the header, silently, and
                        // Envoy answered every allowed check 503 "invalid
                        // header value". Never shown: it is a secret.
                        let fetched = match fetched {
                            Fetched::Value(value) if !is_header_value(&value) => {
                                if let log_throttle::Admit::Write { left_out } =
                                    unusable.admit(Instant::now())
                                {
                                    tracing::warn!(header = %name, reference = %text, left_out,
                                        "the value of this secret reference holds a line break or another control character, \
                                         which an HTTP header value cannot: the header is left out (as for a missing value) \
                                         until the secret is fixed (at most one line per 10 s, left_out says how many were not written)");
                                }
                                Fetched::Missing
                            }
                            Fetched::Value(value) => Fetched::Value(value),
                            other => {
                                tracing::warn!(header = %name, reference = %text, result = ?other, "resolving a secret reference failed");
                                other
                            }
                        };
                        slot.record(fetched, Instant::now(), *policy);
                    }
                    match slot.current(Instant::now(), *policy) {
                        Resolved::Value(v) | Resolved::Resurrected(v) => {
                            out.push((name.clone(), v))
                        }
                        Resolved::Missing | Resolved::Unavailable => {}
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const POLICY: Policy = Policy {
        ttl: Duration::from_secs(10),
        neg_ttl: Duration::from_secs(2),
        resurrect_ttl: Duration::from_secs(30),
    };

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_value_is_used_for_ttl_then_read_again() {
        let t0 = Instant::now();
        let mut slot = Slot::default();
        assert!(slot.needs_fetch(t0, POLICY));
        slot.record(Fetched::Value("v1".into()), t0, POLICY);
        assert!(!slot.needs_fetch(at(t0, 9), POLICY));
        assert_eq!(
            slot.current(at(t0, 9), POLICY),
            Resolved::Value("v1".into())
        );
        assert!(slot.needs_fetch(at(t0, 10), POLICY));
        slot.record(Fetched::Value("v2".into()), at(t0, 10), POLICY);
        assert_eq!(
            slot.current(at(t0, 11), POLICY),
            Resolved::Value("v2".into())
        );
        assert!(!slot.needs_fetch(at(t0, 19), POLICY));
    }

    #[test]
    fn a_miss_is_remembered_for_neg_ttl() {
        let t0 = Instant::now();
        let mut slot = Slot::default();
        slot.record(Fetched::Missing, t0, POLICY);
        assert_eq!(slot.current(at(t0, 1), POLICY), Resolved::Missing);
        assert!(!slot.needs_fetch(at(t0, 1), POLICY));
        assert!(slot.needs_fetch(at(t0, 2), POLICY));
        slot.record(Fetched::Value("late".into()), at(t0, 2), POLICY);
        assert_eq!(
            slot.current(at(t0, 3), POLICY),
            Resolved::Value("late".into())
        );
    }

    #[test]
    fn the_last_value_is_resurrected_while_refresh_fails_then_given_up() {
        let t0 = Instant::now();
        let mut slot = Slot::default();
        slot.record(Fetched::Value("v1".into()), t0, POLICY);
        // Refresh due at 10 s fails, and keeps failing (also a deleted secret).
        slot.record(Fetched::Failed, at(t0, 10), POLICY);
        slot.record(Fetched::Missing, at(t0, 20), POLICY);
        assert_eq!(
            slot.current(at(t0, 20), POLICY),
            Resolved::Resurrected("v1".into())
        );
        assert_eq!(
            slot.current(at(t0, 39), POLICY),
            Resolved::Resurrected("v1".into())
        );
        assert!(slot.needs_fetch(at(t0, 39), POLICY));
        assert_eq!(slot.current(at(t0, 40), POLICY), Resolved::Unavailable);
        // A successful read revives it at once.
        slot.record(Fetched::Value("v2".into()), at(t0, 41), POLICY);
        assert_eq!(
            slot.current(at(t0, 41), POLICY),
            Resolved::Value("v2".into())
        );
    }

    #[test]
    fn ttl_zero_never_rotates_and_failure_without_a_value_is_unavailable() {
        let t0 = Instant::now();
        let never = Policy {
            ttl: Duration::ZERO,
            ..POLICY
        };
        let mut slot = Slot::default();
        slot.record(Fetched::Failed, t0, never);
        assert_eq!(slot.current(t0, never), Resolved::Unavailable);
        assert!(slot.needs_fetch(t0, never));
        slot.record(Fetched::Value("v".into()), t0, never);
        assert!(!slot.needs_fetch(at(t0, 1_000_000), never));
        assert_eq!(
            slot.current(at(t0, 1_000_000), never),
            Resolved::Value("v".into())
        );
    }

    /// A source answering each read with the next of its values.
    struct Values(std::sync::Mutex<Vec<&'static str>>);

    impl RefSource for Values {
        fn fetch<'a>(
            &'a self,
            _mount: &'a str,
            _path: &'a str,
            _key: &'a str,
        ) -> crate::boxed_future::BoxFuture<'a, Fetched> {
            let value = self.0.lock().unwrap().remove(0);
            Box::pin(async move { Fetched::Value(value.to_owned()) })
        }
    }

    /// A referenced value that cannot be a header value is left out, as a
    /// missing one (and remembered for neg_ttl), never sent: Envoy refuses
    /// a check answer carrying it, and forward-auth dropped it silently.
    #[tokio::test]
    async fn a_value_that_cannot_be_a_header_value_is_missing() {
        let reference = |slot| HeaderValue::Ref {
            text: "{vault://kv/app/token}".into(),
            reference: Reference::Vault {
                vault: "kv".into(),
                path: "app".into(),
                key: "token".into(),
            },
            mount: "secret".into(),
            policy: Policy {
                ttl: Duration::ZERO,
                neg_ttl: Duration::ZERO,
                resurrect_ttl: Duration::ZERO,
            },
            slot,
        };
        let source = std::sync::Arc::new(Values(std::sync::Mutex::new(vec![
            "tok-0c4e\r\nx-evil: 1",
            "tok\u{7f}",
            "tok-0c4e",
        ])));
        let headers = UpstreamHeaders::new(
            vec![("x-token".into(), reference(Default::default()))],
            source,
        );
        assert_eq!(headers.resolve().await, []);
        assert_eq!(headers.resolve().await, []);
        assert_eq!(
            headers.resolve().await,
            [("x-token".to_owned(), "tok-0c4e".to_owned())]
        );
    }

    #[test]
    fn env_references_read_the_variable() {
        // A name no other test or process sets.
        let var = "KEYGATE_REFS_TEST_UNSET_VARIABLE";
        assert_eq!(read_env(var), Fetched::Missing);
        assert_eq!(
            read_env("PATH") == Fetched::Missing,
            std::env::var("PATH").is_err()
        );
    }
}
