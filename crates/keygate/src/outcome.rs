//! What one request is answered: [`Outcome`], allow or deny with a
//! [`Reason`].
//!
//! Plain data, importing nothing from the crate: `decision` produces outcomes
//! and `metrics` counts them by reason code, and `decision` imports
//! `metrics`, so these types can live in neither without a loop.

/// Why a request is denied. The code is what clients see in
/// `x-keyrig-reason`, the JSON body and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed,
    Unknown,
    Mismatch,
    Expired,
    WrongGroup,
    NoRoute,
    VaultUnavailable,
    /// Too many Vault reads in flight and queued: refused, never allowed.
    VaultBusy,
    CorruptRecord,
    /// Vault answered 403 to a fresh token: keygate's policy no longer
    /// allows reading the key. Not an outage, so nothing is resurrected.
    VaultForbidden,
    /// Vault's answer shows keygate's config does not fit it: no KV
    /// version 2 mount at `vault.kv_mount` (none, or another kind), or
    /// what answered at `vault.address` is not Vault. Not an unknown key,
    /// not an outage: nothing is resurrected.
    VaultMisconfigured,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::Unknown,
        Reason::Mismatch,
        Reason::Expired,
        Reason::WrongGroup,
        Reason::NoRoute,
        Reason::VaultUnavailable,
        Reason::VaultBusy,
        Reason::CorruptRecord,
        Reason::VaultForbidden,
        Reason::VaultMisconfigured,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Unknown => "unknown",
            Reason::Mismatch => "mismatch",
            Reason::Expired => "expired",
            Reason::WrongGroup => "wrong-group",
            Reason::NoRoute => "no-route",
            Reason::VaultUnavailable => "vault-unavailable",
            Reason::VaultBusy => "vault-busy",
            Reason::CorruptRecord => "corrupt-record",
            Reason::VaultForbidden => "vault-forbidden",
            Reason::VaultMisconfigured => "vault-misconfigured",
        }
    }

    /// 401: the credential is the problem. 403: the credential may be fine,
    /// but not for this path. 503: keygate could not tell, so it refuses.
    pub fn http_status(self) -> u16 {
        match self {
            Reason::NoRoute | Reason::WrongGroup => 403,
            Reason::VaultUnavailable
            | Reason::VaultForbidden
            | Reason::VaultBusy
            | Reason::VaultMisconfigured => 503,
            Reason::Missing
            | Reason::Malformed
            | Reason::Unknown
            | Reason::Mismatch
            | Reason::Expired
            | Reason::CorruptRecord => 401,
        }
    }

    /// `{"reason":"<code>"}`.
    pub fn json_body(self) -> String {
        serde_json::json!({ "reason": self.code() }).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow {
        owner: String,
        group: String,
        /// The key record's `expires`, if it has one: a follower caching
        /// this answer (the Envoy module) must not outlive it.
        expires: Option<time::OffsetDateTime>,
    },
    Deny(Reason),
}

impl Outcome {
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::Allow { .. } => "allow",
            Outcome::Deny(reason) => reason.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_statuses_and_bodies() {
        let statuses: Vec<(&str, u16)> = Reason::ALL
            .iter()
            .map(|r| (r.code(), r.http_status()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("missing", 401),
                ("malformed", 401),
                ("unknown", 401),
                ("mismatch", 401),
                ("expired", 401),
                ("wrong-group", 403),
                ("no-route", 403),
                ("vault-unavailable", 503),
                ("vault-busy", 503),
                ("corrupt-record", 401),
                ("vault-forbidden", 503),
                ("vault-misconfigured", 503),
            ]
        );
        assert_eq!(
            Reason::WrongGroup.json_body(),
            r#"{"reason":"wrong-group"}"#
        );
    }
}
