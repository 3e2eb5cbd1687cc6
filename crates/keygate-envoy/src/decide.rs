//! The decision for one request, without Envoy: `filter` reads the request
//! and carries out what this returns.
//!
//! 1. [`first`]: from the request alone and the table. A missing,
//!    repeated or malformed key is denied as keygate denies it; a key the
//!    table holds fresh is allowed when its verifier hashes to the
//!    approved hash (constant time) and denied as `mismatch` when not;
//!    anything else is a question for keygate.
//! 2. [`answered`]: keygate's answer, cached when it is a 200 for the
//!    route's own group; keygate unreachable (or Vault down behind it):
//!    the entry's resurrect window, else 503. Never 200 for a key keygate
//!    has not approved.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apikey::ApiKey;

use crate::callout::Answer;
use crate::table::{Approved, Lookup, Table};

/// The `x-api-key` header as the request carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    Missing,
    One(&'a [u8]),
    /// More than one: the upstream might read another one than we did.
    Many,
}

/// A denial: keygate's status and reason code (`x-keyrig-reason`, and the
/// body `{"reason":"<code>"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub status: u16,
    pub reason: String,
}

impl Deny {
    pub fn new(status: u16, reason: &str) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
        }
    }

    /// keygate's body for a denial.
    pub fn body(&self) -> String {
        serde_json::json!({ "reason": self.reason }).to_string()
    }
}

/// Reasons of the module's own (keygate's are passed on as they come).
pub mod reason {
    /// keygate's: no record for the group and selector.
    pub const UNKNOWN: &str = "unknown";
    /// keygate could not be reached and nothing approved is left to use.
    pub const KEYGATE_UNAVAILABLE: &str = "keygate-unavailable";
    /// The module failed (a caught panic, a callout it could not start).
    pub const MODULE_ERROR: &str = "module-error";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through as `owner`'s: `x-keyrig-owner` is the
    /// owner, `x-keyrig-group` the route's group (an answer keygate gave
    /// for another group is refused, so the two never differ).
    Allow {
        owner: Arc<str>,
    },
    Deny(Deny),
}

/// What to do first.
#[derive(Debug)]
pub enum First {
    Done(Verdict),
    /// Ask keygate about this key.
    Ask(ApiKey),
}

/// `table`: the table of keygate's answers, or `None` on a route that
/// does not use it (every key asks keygate).
pub fn first(table: Option<&Table>, group: &str, presented: Presented<'_>, now: Instant) -> First {
    let text = match presented {
        Presented::Missing => return First::Done(Verdict::Deny(Deny::new(401, "missing"))),
        Presented::Many => return First::Done(Verdict::Deny(Deny::new(401, "malformed"))),
        Presented::One(bytes) => bytes,
    };
    // Not visible ASCII cannot be a key: malformed, as keygate says.
    let Ok(key) = std::str::from_utf8(text)
        .map_err(drop)
        .and_then(|text| ApiKey::parse(text).map_err(drop))
    else {
        return First::Done(Verdict::Deny(Deny::new(401, "malformed")));
    };
    let Some(table) = table else {
        return First::Ask(key);
    };
    // Borrowed, not allocated: this runs on every request.
    match table.lookup(group, key.selector_str(), now) {
        Lookup::Fresh(approved) if key.verify(&approved.hash) => First::Done(Verdict::Allow {
            owner: approved.owner,
        }),
        // keygate approved another verifier for this selector: this key is
        // wrong, as keygate would say from its own cache.
        Lookup::Fresh(_) => First::Done(Verdict::Deny(Deny::new(401, "mismatch"))),
        // keygate found no record for this selector a moment ago.
        Lookup::Absent => First::Done(Verdict::Deny(Deny::new(401, reason::UNKNOWN))),
        Lookup::Ask => First::Ask(key),
    }
}

/// keygate's `answer` to a callout stamped `read_at` for `key` on a route
/// of `group`. The second value is a warning for the log, if any. `keep`:
/// the route uses the table, so the answer is kept there (and an outage
/// may be answered from it); on a route that does not, keygate's answer is
/// the whole answer and an outage a 503.
#[allow(clippy::too_many_arguments)]
pub fn answered(
    table: &Table,
    keep: bool,
    group: &str,
    key: &ApiKey,
    read_at: u64,
    answer: &Answer,
    now: Instant,
    wall_now: SystemTime,
) -> (Verdict, Option<String>) {
    let selector = key.selector_str();
    // A route without the table keeps, forgets and resurrects nothing.
    let forget = || {
        if keep {
            table.forget(group, selector);
        }
    };
    let resurrect = || keep.then(|| resurrected(table, group, key, now)).flatten();
    match answer {
        Answer::Allow {
            owner,
            group: keygate_group,
            expires,
        } => {
            if keygate_group != group {
                // keygate routes this path to another group than Envoy's
                // route says: the two configs disagree, and neither answer
                // can be trusted for this route.
                forget();
                return (
                    Verdict::Deny(Deny::new(403, "no-route")),
                    Some(format!(
                        "keygate answered for API group {keygate_group:?} on a route of group {group:?}: \
                         render Envoy's routes and keygate's apis from the same OpenAPI documents"
                    )),
                );
            }
            if owner.chars().any(char::is_control) {
                forget();
                return (Verdict::Deny(Deny::new(401, "corrupt-record")), None);
            }
            let owner: Arc<str> = owner.as_str().into();
            let lasts = expires.map(|at| remaining(at, wall_now));
            if keep && lasts != Some(Duration::ZERO) {
                let approved = Approved {
                    hash: key.verifier_hash(),
                    owner: owner.clone(),
                };
                table.insert(group, selector, approved, read_at, now, lasts);
            }
            (Verdict::Allow { owner }, None)
        }
        Answer::Unreachable(why) => (
            resurrect().unwrap_or(Verdict::Deny(Deny::new(503, reason::KEYGATE_UNAVAILABLE))),
            Some(why.clone()),
        ),
        // Vault unreachable or busy behind keygate: keygate could not tell.
        Answer::Deny { status, reason } if answer.is_outage() => (
            resurrect().unwrap_or(Verdict::Deny(Deny {
                status: *status,
                reason: reason.clone(),
            })),
            None,
        ),
        Answer::Deny { status, reason } => {
            forget();
            // No record, whatever the verifier: kept for the negative TTL.
            if keep && *status == 401 && reason == reason::UNKNOWN {
                table.insert_absent(group, selector, read_at, now);
            }
            (
                Verdict::Deny(Deny {
                    status: *status,
                    reason: reason.clone(),
                }),
                None,
            )
        }
    }
}

/// keygate cannot be reached: the approved entry if it is still in its
/// resurrect window and this key's verifier matches it.
pub fn resurrected(table: &Table, group: &str, key: &ApiKey, now: Instant) -> Option<Verdict> {
    let approved = table.resurrect(group, key.selector_str(), now)?;
    key.verify(&approved.hash).then_some(Verdict::Allow {
        owner: approved.owner,
    })
}

/// How long until Unix second `at` (zero once passed).
fn remaining(at: i64, wall_now: SystemTime) -> Duration {
    let now = wall_now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    Duration::from_secs_f64((at as f64 - now).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Ttls;

    const MIN: Duration = Duration::from_secs(60);
    const NEGATIVE: Duration = Duration::from_secs(1);

    fn table() -> Table {
        Table::new(
            Ttls {
                positive: MIN,
                negative: NEGATIVE,
                resurrect: MIN,
            },
            Duration::from_secs(3),
        )
    }

    fn allow(owner: &str, group: &str) -> Answer {
        Answer::Allow {
            owner: owner.into(),
            group: group.into(),
            expires: None,
        }
    }

    fn deny(status: u16, reason: &str) -> Verdict {
        Verdict::Deny(Deny::new(status, reason))
    }

    fn ask(table: &Table, group: &str, key: &str, now: Instant) -> ApiKey {
        match first(Some(table), group, Presented::One(key.as_bytes()), now) {
            First::Ask(key) => key,
            First::Done(verdict) => panic!("decided without keygate: {verdict:?}"),
        }
    }

    fn done(table: &Table, group: &str, presented: Presented<'_>, now: Instant) -> Verdict {
        match first(Some(table), group, presented, now) {
            First::Done(verdict) => verdict,
            First::Ask(key) => panic!("asked keygate about {key:?}"),
        }
    }

    #[test]
    fn keys_that_cannot_exist_are_denied_without_asking() {
        let table = table();
        let now = Instant::now();
        assert_eq!(
            done(&table, "g", Presented::Missing, now),
            deny(401, "missing")
        );
        assert_eq!(
            done(&table, "g", Presented::Many, now),
            deny(401, "malformed")
        );
        for bad in [&b""[..], b"short", &[0xff; 64], "A".repeat(64).as_bytes()] {
            assert_eq!(
                done(&table, "g", Presented::One(bad), now),
                deny(401, "malformed")
            );
        }
    }

    /// A route without the table (the part of a group's prefix no
    /// operation declares): a key the table holds still asks keygate,
    /// keygate's answer is given as is and not kept, and an outage is a
    /// 503, never the held answer.
    #[test]
    fn a_route_without_the_table_asks_keygate_and_keeps_nothing() {
        let table = table();
        let now = Instant::now();
        let key = ApiKey::generate();
        let asked = ask(&table, "g", key.expose(), now);
        let wall = SystemTime::now();
        answered(
            &table,
            true,
            "g",
            &asked,
            table.stamp(),
            &allow("u", "g"),
            now,
            wall,
        );
        assert!(matches!(
            done(&table, "g", Presented::One(key.expose().as_bytes()), now),
            Verdict::Allow { .. }
        ));

        let First::Ask(asked) = first(None, "g", Presented::One(key.expose().as_bytes()), now)
        else {
            panic!("a route without the table decided without keygate");
        };
        let (verdict, _) = answered(
            &table,
            false,
            "g",
            &asked,
            table.stamp(),
            &Answer::Deny {
                status: 403,
                reason: "no-route".into(),
            },
            now,
            wall,
        );
        assert_eq!(verdict, deny(403, "no-route"));
        let (verdict, _) = answered(
            &table,
            false,
            "g",
            &asked,
            table.stamp(),
            &Answer::Unreachable("down".into()),
            now,
            wall,
        );
        assert_eq!(verdict, deny(503, reason::KEYGATE_UNAVAILABLE));
        // Nothing forgotten either: the group's declared routes still hold it.
        assert!(matches!(
            done(&table, "g", Presented::One(key.expose().as_bytes()), now),
            Verdict::Allow { .. }
        ));

        let other = ApiKey::generate();
        let (verdict, _) = answered(
            &table,
            false,
            "g",
            &other,
            table.stamp(),
            &allow("v", "g"),
            now,
            wall,
        );
        assert!(matches!(verdict, Verdict::Allow { .. }));
        assert!(
            matches!(
                first(
                    Some(&table),
                    "g",
                    Presented::One(other.expose().as_bytes()),
                    now
                ),
                First::Ask(_)
            ),
            "kept an answer of a route without the table"
        );
    }

    #[test]
    fn an_approved_key_is_cached_and_then_decided_locally() {
        let table = table();
        let now = Instant::now();
        let key = ApiKey::generate();
        let asked = ask(&table, "g", key.expose(), now);
        let stamp = table.stamp();
        let (verdict, warning) = answered(
            &table,
            true,
            "g",
            &asked,
            stamp,
            &allow("user-1", "g"),
            now,
            SystemTime::now(),
        );
        assert_eq!(warning, None);
        let allowed = Verdict::Allow {
            owner: "user-1".into(),
        };
        assert_eq!(verdict, allowed);
        assert_eq!(
            done(&table, "g", Presented::One(key.expose().as_bytes()), now),
            allowed
        );
        // Same selector, another verifier: the approved hash does not match.
        let forged = format!("{}{}", key.selector(), "0".repeat(32));
        assert_eq!(
            done(&table, "g", Presented::One(forged.as_bytes()), now),
            deny(401, "mismatch")
        );
        // Another group's route: not in the table for that group.
        ask(&table, "other", key.expose(), now);
    }

    #[test]
    fn keygates_denials_pass_through_and_remove_the_entry() {
        let table = table();
        let now = Instant::now();
        let key = ApiKey::generate();
        let stamp = table.stamp();
        answered(
            &table,
            true,
            "g",
            &key,
            stamp,
            &allow("u", "g"),
            now,
            SystemTime::now(),
        );
        let later = now + MIN + Duration::from_secs(1);
        let asked = ask(&table, "g", key.expose(), later);
        let denial = Answer::Deny {
            status: 401,
            reason: "unknown".into(),
        };
        let (verdict, _) = answered(
            &table,
            true,
            "g",
            &asked,
            table.stamp(),
            &denial,
            later,
            SystemTime::now(),
        );
        assert_eq!(verdict, deny(401, "unknown"));
        // Gone: keygate unreachable now resurrects nothing.
        let (verdict, warning) = answered(
            &table,
            true,
            "g",
            &asked,
            table.stamp(),
            &Answer::Unreachable("reset".into()),
            later,
            SystemTime::now(),
        );
        assert_eq!(verdict, deny(503, reason::KEYGATE_UNAVAILABLE));
        assert_eq!(warning.as_deref(), Some("reset"));
    }

    #[test]
    fn unknown_is_answered_locally_for_the_negative_ttl_on_table_routes_only() {
        let table = table();
        let now = Instant::now();
        let key = ApiKey::generate();
        let unknown = Answer::Deny {
            status: 401,
            reason: "unknown".into(),
        };
        // A route without the table keeps no absence either.
        let asked = ask(&table, "g", key.expose(), now);
        answered(
            &table,
            false,
            "g",
            &asked,
            table.stamp(),
            &unknown,
            now,
            SystemTime::now(),
        );
        ask(&table, "g", key.expose(), now);
        let (verdict, _) = answered(
            &table,
            true,
            "g",
            &asked,
            table.stamp(),
            &unknown,
            now,
            SystemTime::now(),
        );
        assert_eq!(verdict, deny(401, "unknown"));
        // Any verifier for that selector: the same answer, without keygate.
        let other = ApiKey::parse(&format!("{}{}", key.selector(), "0".repeat(32))).unwrap();
        for presented in [key.expose(), other.expose()] {
            assert_eq!(
                done(&table, "g", Presented::One(presented.as_bytes()), now),
                deny(401, "unknown")
            );
        }
        // Only in its group, and only for the negative TTL.
        ask(&table, "h", key.expose(), now);
        ask(&table, "g", key.expose(), now + NEGATIVE);
        // Other denials depend on the verifier or the path: never kept.
        for (status, reason) in [(401, "mismatch"), (401, "expired"), (403, "wrong-group")] {
            let fresh = ApiKey::generate();
            let asked = ask(&table, "g", fresh.expose(), now);
            let denial = Answer::Deny {
                status,
                reason: reason.into(),
            };
            answered(
                &table,
                true,
                "g",
                &asked,
                table.stamp(),
                &denial,
                now,
                SystemTime::now(),
            );
            ask(&table, "g", fresh.expose(), now);
        }
    }

    #[test]
    fn keygate_unreachable_resurrects_only_approved_matching_keys() {
        let table = table();
        let now = Instant::now();
        let key = ApiKey::generate();
        answered(
            &table,
            true,
            "g",
            &key,
            table.stamp(),
            &allow("u", "g"),
            now,
            SystemTime::now(),
        );
        table.all_stale();
        let asked = ask(&table, "g", key.expose(), now);
        let outage = Answer::Deny {
            status: 503,
            reason: "vault-unavailable".into(),
        };
        let (verdict, _) = answered(
            &table,
            true,
            "g",
            &asked,
            table.stamp(),
            &outage,
            now,
            SystemTime::now(),
        );
        assert!(matches!(verdict, Verdict::Allow { .. }), "{verdict:?}");
        let stranger = ApiKey::generate();
        let (verdict, _) = answered(
            &table,
            true,
            "g",
            &stranger,
            table.stamp(),
            &outage,
            now,
            SystemTime::now(),
        );
        assert_eq!(verdict, deny(503, "vault-unavailable"));
        let forbidden = Answer::Deny {
            status: 503,
            reason: "vault-forbidden".into(),
        };
        let (verdict, _) = answered(
            &table,
            true,
            "g",
            &asked,
            table.stamp(),
            &forbidden,
            now,
            SystemTime::now(),
        );
        assert_eq!(verdict, deny(503, "vault-forbidden"));
    }

    #[test]
    fn an_answer_for_another_group_is_refused() {
        let table = table();
        let now = Instant::now();
        let key = ApiKey::generate();
        let (verdict, warning) = answered(
            &table,
            true,
            "g",
            &key,
            table.stamp(),
            &allow("u", "other"),
            now,
            SystemTime::now(),
        );
        assert_eq!(verdict, deny(403, "no-route"));
        assert!(warning.unwrap().contains("\"other\""));
        ask(&table, "g", key.expose(), now);
    }

    #[test]
    fn an_expired_or_expiring_approval_is_allowed_once_but_not_kept_past_its_expiry() {
        let table = table();
        let now = Instant::now();
        let wall = SystemTime::now();
        let unix = wall.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let key = ApiKey::generate();
        let soon = Answer::Allow {
            owner: "u".into(),
            group: "g".into(),
            expires: Some(unix + 5),
        };
        let (verdict, _) = answered(&table, true, "g", &key, table.stamp(), &soon, now, wall);
        assert!(matches!(verdict, Verdict::Allow { .. }));
        assert!(matches!(
            first(
                Some(&table),
                "g",
                Presented::One(key.expose().as_bytes()),
                now
            ),
            First::Done(Verdict::Allow { .. })
        ));
        ask(&table, "g", key.expose(), now + Duration::from_secs(6));
        let gone = ApiKey::generate();
        let past = Answer::Allow {
            owner: "u".into(),
            group: "g".into(),
            expires: Some(unix - 1),
        };
        answered(&table, true, "g", &gone, table.stamp(), &past, now, wall);
        ask(&table, "g", gone.expose(), now);
    }

    #[test]
    fn the_body_is_keygates() {
        assert_eq!(
            Deny::new(403, "wrong-group").body(),
            r#"{"reason":"wrong-group"}"#
        );
    }
}
