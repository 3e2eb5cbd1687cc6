//! `limits:`: how much keygate lets clients and a flood of keys make it do.
//! Every limit has a default, so a config without the section is bounded.
//!
//! ```yaml
//! limits:
//!   vault_reads: 64             # Vault record reads in flight at once
//!   vault_read_queue: 1024      # reads waiting for one (each at most vault.timeout); beyond: 503 vault-busy
//!   http_connections: 1024      # open connections on listen.http; more wait in the kernel's backlog
//!   grpc_connections: 1024      # the same for listen.grpc
//!   header_read_timeout: 10s    # listen.http: a request's headers must arrive within this
//!   idle_timeout: 60s           # listen.http: a connection with no bytes either way this long is closed
//!   invalidation_feed_followers: 64  # followers of GET /v1/invalidations at once; beyond: 503
//! ```

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub vault_reads: usize,
    pub vault_read_queue: usize,
    pub http_connections: usize,
    pub grpc_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Followers of `GET /v1/invalidations` at once: each holds one of
    /// `http_connections` for as long as it follows (pings keep it busy).
    pub invalidation_feed_followers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A Vault read takes about a millisecond locally; 64 at once is
            // thousands of reads a second, well above a keyless flood that
            // the negative cache has not absorbed yet.
            vault_reads: 64,
            vault_read_queue: 1024,
            http_connections: 1024,
            grpc_connections: 1024,
            // Gateways send the whole request at once; 10 s is generous for
            // them and short for a client trickling headers to hold a slot.
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            // The Envoy module follows with one connection per filter
            // config and Envoy process; 64 leaves most of the 1024
            // connections to forward-auth.
            invalidation_feed_followers: 64,
        }
    }
}

/// The largest count accepted for a limit.
const MAX_COUNT: usize = 1_000_000;

/// `limits:` as written in YAML.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    vault_reads: Option<usize>,
    vault_read_queue: Option<usize>,
    http_connections: Option<usize>,
    grpc_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    header_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    invalidation_feed_followers: Option<usize>,
}

impl RawLimits {
    /// Defaults filled in; zero is refused (it would refuse every request or
    /// close every connection at once), naming the field.
    pub fn resolve(self) -> Result<Limits, String> {
        let d = Limits::default();
        let count = |value: Option<usize>, default: usize, field: &str| match value {
            Some(0) => Err(format!(
                "limits.{field} is 0, which would refuse everything: give a positive number or remove it for the default ({default})"
            )),
            // Tokio's semaphores hold at most usize::MAX >> 3 permits.
            Some(huge) if huge > MAX_COUNT => Err(format!(
                "limits.{field} is {huge}, more than {MAX_COUNT}: that is no limit; give a smaller number"
            )),
            value => Ok(value.unwrap_or(default)),
        };
        let time = |value: Option<Duration>, default: Duration, field: &str| match value {
            Some(zero) if zero.is_zero() => Err(format!(
                "limits.{field} is 0s, which would close every connection at once: give a duration or remove it for the default ({default:?})"
            )),
            value => Ok(value.unwrap_or(default)),
        };
        Ok(Limits {
            vault_reads: count(self.vault_reads, d.vault_reads, "vault_reads")?,
            // An empty queue is fine: no waiting, refuse at once.
            vault_read_queue: match self.vault_read_queue {
                Some(huge) if huge > MAX_COUNT => {
                    return Err(format!(
                        "limits.vault_read_queue is {huge}, more than {MAX_COUNT}: give a smaller number"
                    ));
                }
                value => value.unwrap_or(d.vault_read_queue),
            },
            http_connections: count(
                self.http_connections,
                d.http_connections,
                "http_connections",
            )?,
            grpc_connections: count(
                self.grpc_connections,
                d.grpc_connections,
                "grpc_connections",
            )?,
            header_read_timeout: time(
                self.header_read_timeout,
                d.header_read_timeout,
                "header_read_timeout",
            )?,
            idle_timeout: time(self.idle_timeout, d.idle_timeout, "idle_timeout")?,
            invalidation_feed_followers: count(
                self.invalidation_feed_followers,
                d.invalidation_feed_followers,
                "invalidation_feed_followers",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(yaml: &str) -> Result<Limits, String> {
        serde_yaml::from_str::<RawLimits>(yaml)
            .map_err(|err| err.to_string())?
            .resolve()
    }

    #[test]
    fn unset_limits_take_the_defaults_and_set_ones_override() {
        assert_eq!(resolve("{}"), Ok(Limits::default()));
        let set = resolve(
            "vault_reads: 8\nvault_read_queue: 0\nheader_read_timeout: 250ms\ninvalidation_feed_followers: 4\n",
        )
        .unwrap();
        assert_eq!(
            set,
            Limits {
                vault_reads: 8,
                vault_read_queue: 0,
                header_read_timeout: Duration::from_millis(250),
                invalidation_feed_followers: 4,
                ..Limits::default()
            }
        );
        assert_eq!(Limits::default().invalidation_feed_followers, 64);
    }

    #[test]
    fn zero_limits_are_refused_naming_the_field() {
        let err = resolve("http_connections: 0\n").unwrap_err();
        assert!(err.starts_with("limits.http_connections is 0"), "{err}");
        let err = resolve("invalidation_feed_followers: 0\n").unwrap_err();
        assert!(
            err.starts_with("limits.invalidation_feed_followers is 0"),
            "{err}"
        );
        let err = resolve("idle_timeout: 0s\n").unwrap_err();
        assert!(err.starts_with("limits.idle_timeout is 0s"), "{err}");
        assert!(
            resolve("vault_reeds: 1\n")
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
