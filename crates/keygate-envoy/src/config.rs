//! The filter's two configs, JSON strings in Envoy's config (a
//! `google.protobuf.StringValue` as `filter_config`, which Envoy hands to
//! the module as its raw value).
//!
//! The filter config (one per HTTP connection manager, shared by all
//! workers):
//!
//! ```json
//! {"cluster": "keygate_http", "invalidations": "127.0.0.1:9001",
//!  "positive_ttl_ms": 60000, "negative_ttl_ms": 1000, "resurrect_ttl_ms": 0,
//!  "callout_timeout_ms": 3000}
//! ```
//!
//! The per-route config (one per route, naming the route's API group):
//!
//! ```json
//! {"group": "animal-rescue-api"}
//! ```

use std::time::Duration;

use serde::Deserialize;

/// `filter_config` of the `DynamicModuleFilter`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The Envoy cluster of keygate's HTTP port (forward-auth `/auth`).
    pub cluster: String,
    /// The `host` header of the callouts and of the feed request.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// keygate's HTTP port as `host:port`, for `GET /v1/invalidations`
    /// (the module's own thread connects there; it cannot use Envoy's
    /// cluster). Absent: no feed, a revoked key passes until its entry's
    /// positive TTL ends.
    #[serde(default)]
    pub invalidations: Option<String>,
    /// How long an answer keygate approved is used without asking again.
    #[serde(default = "default_positive_ttl_ms")]
    pub positive_ttl_ms: u64,
    /// How long keygate's `unknown` (no such key) is answered without
    /// asking again; 0: never kept. The feed drops it at once when the key
    /// is issued; without the feed a new key may wait this long.
    #[serde(default = "default_negative_ttl_ms")]
    pub negative_ttl_ms: u64,
    /// After the positive TTL, how long an approved answer still counts
    /// when keygate cannot be reached (Kong's `resurrect_ttl`); 0: never.
    #[serde(default)]
    pub resurrect_ttl_ms: u64,
    /// The callout's timeout; past it the request is answered as if keygate
    /// were unreachable (503, or a resurrected answer). At most
    /// [`MAX_CALLOUT_TIMEOUT_MS`].
    #[serde(default = "default_callout_timeout_ms")]
    pub callout_timeout_ms: u64,
}

/// The longest `callout_timeout_ms` taken: a minute. Envoy turns the
/// ABI's `u64` into signed milliseconds (a larger value would wrap), a
/// request waits this long for keygate's answer, and the table keeps a
/// dropped key's tombstone as long as a callout can take.
pub const MAX_CALLOUT_TIMEOUT_MS: u64 = 60_000;

fn default_authority() -> String {
    "keygate".to_owned()
}

fn default_positive_ttl_ms() -> u64 {
    60_000
}

/// keygate's own default (`cache.negative_ttl`).
fn default_negative_ttl_ms() -> u64 {
    1_000
}

fn default_callout_timeout_ms() -> u64 {
    3_000
}

impl FilterConfig {
    /// Parses and checks the filter config; the error names the field and
    /// what to write instead.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let config: Self = serde_json::from_slice(bytes).map_err(|err| {
            format!(
                "keygate-envoy filter_config: {err}: expected a JSON object like \
                 {{\"cluster\": \"keygate_http\", \"invalidations\": \"127.0.0.1:9001\"}}"
            )
        })?;
        if config.cluster.is_empty() {
            return Err(
                "keygate-envoy filter_config.cluster is empty: name the Envoy cluster of keygate's HTTP port"
                    .into(),
            );
        }
        if config.authority.is_empty() {
            return Err("keygate-envoy filter_config.authority is empty: leave it out (\"keygate\") or name keygate's host".into());
        }
        if config.callout_timeout_ms == 0 {
            return Err("keygate-envoy filter_config.callout_timeout_ms is 0: give keygate a timeout in milliseconds (3000 by default)".into());
        }
        if config.callout_timeout_ms > MAX_CALLOUT_TIMEOUT_MS {
            return Err(format!(
                "keygate-envoy filter_config.callout_timeout_ms is {}: at most {MAX_CALLOUT_TIMEOUT_MS} (a minute); a few seconds above keygate's Vault timeout is enough (3000 by default)",
                config.callout_timeout_ms
            ));
        }
        if config.invalidations.as_deref() == Some("") {
            return Err("keygate-envoy filter_config.invalidations is empty: give keygate's HTTP port as host:port, or leave the field out".into());
        }
        Ok(config)
    }

    /// The table's lifetimes.
    pub fn ttls(&self) -> Ttls {
        Ttls {
            positive: Duration::from_millis(self.positive_ttl_ms),
            negative: Duration::from_millis(self.negative_ttl_ms),
            resurrect: Duration::from_millis(self.resurrect_ttl_ms),
        }
    }

    pub fn callout_timeout(&self) -> Duration {
        Duration::from_millis(self.callout_timeout_ms)
    }
}

/// The lifetimes of what the table (`crate::table`) keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// An approved answer, used without asking keygate.
    pub positive: Duration,
    /// keygate's `unknown`, answered without asking; zero: not kept.
    pub negative: Duration,
    /// After `positive`, an approved answer that still counts while
    /// keygate cannot be reached.
    pub resurrect: Duration,
}

/// `filter_config` of a route's `DynamicModuleFilterPerRoute`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's API group (`groupId` of its OpenAPI document): keys are
    /// looked up under it, and keygate must answer for the same group.
    pub group: String,
    /// Whether keys may be answered from the table of keygate's answers on
    /// this route (default). `false`: every request asks keygate and its
    /// answer is not kept, nor resurrected: for the part of a group's
    /// prefix its OpenAPI documents may not declare, where keygate answers
    /// 403 `no-route` whatever the key (the table holds keys, not paths).
    #[serde(default = "yes")]
    pub table: bool,
    /// Fault injection, for tests of the module's panic guard: every
    /// request on this route makes the request-headers hook panic (and so
    /// is refused with 503 `module-error`). Never set it in production.
    #[serde(default)]
    pub fault: Option<Fault>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    Panic,
}

fn yes() -> bool {
    true
}

impl RouteConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let config: Self = serde_json::from_slice(bytes).map_err(|err| {
            format!(
                "keygate-envoy per-route filter_config: {err}: expected {{\"group\": \"<groupId>\"}}"
            )
        })?;
        if !is_group_id(&config.group) {
            return Err(format!(
                "keygate-envoy per-route filter_config.group {:?} is not an API group: give the groupId of the route's OpenAPI document (letters, digits, `-`, `_` and `.`, as keygate requires of a groupId)",
                config.group
            ));
        }
        Ok(config)
    }
}

/// Whether `group` is a `groupId` keygate takes: keygate's own rule
/// (`keygate-config`, `routes::group_id`; the id becomes a Vault path
/// segment): ASCII letters, digits, `-`, `_` and `.`, neither empty nor
/// `.` or `..`. A group keygate refuses can match none of its answers, and
/// the module adds the route's group verbatim as `x-keyrig-group`, so
/// nothing else (a space, CR, LF, NUL, a byte past ASCII) reaches a header.
pub fn is_group_id(group: &str) -> bool {
    !group.is_empty()
        && group != "."
        && group != ".."
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callout_timeout_may_be_a_minute() {
        let config = FilterConfig::parse(br#"{"cluster":"k","callout_timeout_ms":60000}"#).unwrap();
        assert_eq!(config.callout_timeout(), Duration::from_secs(60));
    }

    #[test]
    fn a_minimal_filter_config_takes_the_defaults() {
        let config = FilterConfig::parse(br#"{"cluster":"keygate_http"}"#).unwrap();
        assert_eq!(
            config,
            FilterConfig {
                cluster: "keygate_http".into(),
                authority: "keygate".into(),
                invalidations: None,
                positive_ttl_ms: 60_000,
                negative_ttl_ms: 1_000,
                resurrect_ttl_ms: 0,
                callout_timeout_ms: 3_000,
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (input, expected) in [
            (&br#"{}"#[..], "missing field `cluster`"),
            (br#"{"cluster":""}"#, "filter_config.cluster is empty"),
            (br#"{"cluster":"k","ttl":1}"#, "unknown field `ttl`"),
            (
                br#"{"cluster":"k","callout_timeout_ms":0}"#,
                "callout_timeout_ms is 0",
            ),
            (
                br#"{"cluster":"k","callout_timeout_ms":60001}"#,
                "filter_config.callout_timeout_ms is 60001: at most 60000",
            ),
            // Past i64::MAX: Envoy's signed milliseconds would wrap.
            (
                br#"{"cluster":"k","callout_timeout_ms":18446744073709551615}"#,
                "callout_timeout_ms is 18446744073709551615: at most 60000",
            ),
            (
                br#"{"cluster":"k","invalidations":""}"#,
                "invalidations is empty",
            ),
            (b"not json", "expected a JSON object"),
        ] {
            let err = FilterConfig::parse(input).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        assert_eq!(
            RouteConfig::parse(br#"{"group":"billing-api"}"#).unwrap(),
            RouteConfig {
                group: "billing-api".into(),
                table: true,
                fault: None,
            }
        );
        assert!(
            !RouteConfig::parse(br#"{"group":"g","table":false}"#)
                .unwrap()
                .table
        );
        assert_eq!(
            RouteConfig::parse(br#"{"group":"g","fault":"panic"}"#)
                .unwrap()
                .fault,
            Some(Fault::Panic)
        );
        for input in [
            &br#"{}"#[..],
            br#"{"group":""}"#,
            br#"{"group":"a/b"}"#,
            br#"{"group":"g","fault":"crash"}"#,
        ] {
            let err = RouteConfig::parse(input).unwrap_err();
            assert!(err.contains("filter_config"), "{err}");
        }
    }

    /// The group becomes the `x-keyrig-group` header: only what keygate
    /// takes as a groupId gets there.
    #[test]
    fn a_group_is_a_groupid_keygate_takes() {
        for group in ["billing-api", "g", "Animal_Rescue.v2", "a..b"] {
            let json = serde_json::json!({ "group": group }).to_string();
            assert_eq!(RouteConfig::parse(json.as_bytes()).unwrap().group, group);
        }
        for group in [
            "",
            ".",
            "..",
            "a/b",
            "billing api",
            "billing\r\nx-keyrig-owner: admin",
            "billing\n",
            "billing\0",
            "billing\t",
            "caf\u{e9}",
            "a:b",
            "a,b",
        ] {
            let json = serde_json::json!({ "group": group }).to_string();
            let err = RouteConfig::parse(json.as_bytes()).unwrap_err();
            assert!(
                err.contains("per-route filter_config.group")
                    && err.contains("is not an API group"),
                "{json}: {err}"
            );
        }
    }
}
