use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{ApiKey, Selector, VerifierHash};

/// Where a key's record lives, as a KV v2 *logical* path:
/// `<mount>/<group>/<selector>`. The HTTP API inserts `data/` or `metadata/`
/// after the mount (`/v1/<mount>/data/<group>/<selector>`).
pub fn storage_path(mount: &str, group: &str, selector: &Selector) -> String {
    format!("{}/{}/{}", mount.trim_matches('/'), group, selector)
}

/// The data of the KV v2 secret at [`storage_path`].
///
/// `key` is the field Spring Cloud Gateway reads; `owner`, `name` and
/// `expires` are keyrig's. Unknown fields are ignored so other tools may add
/// their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Lowercase hex SHA-256 of the verifier.
    pub key: String,
    /// Subject id of the key's creator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RFC 3339; absent means the key does not expire.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record's `key` field is not 64 hex digits (a SHA-256)")]
    BadHash,
}

impl KeyRecord {
    /// The record to store for a freshly issued key.
    pub fn for_key(key: &ApiKey, owner: impl Into<String>) -> Self {
        Self {
            key: key.verifier_hash().to_hex(),
            owner: owner.into(),
            name: None,
            expires: None,
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn with_expiry(mut self, expires: OffsetDateTime) -> Self {
        self.expires = Some(expires);
        self
    }

    pub fn hash(&self) -> Result<VerifierHash, RecordError> {
        VerifierHash::from_hex(&self.key).ok_or(RecordError::BadHash)
    }

    /// The validation algorithm's last steps, given the record was found:
    /// compare hashes in constant time, then check expiry.
    pub fn check(&self, key: &ApiKey, now: OffsetDateTime) -> Decision {
        check_parts(self.hash().ok().as_ref(), self.expires, key, now)
    }
}

/// [`KeyRecord::check`] on a record's parts, for holders that keep them in
/// another shape (keygate's cache keeps the hash as bytes): `hash` is
/// `None` when the stored `key` is not a SHA-256 in hex.
pub fn check_parts(
    hash: Option<&VerifierHash>,
    expires: Option<OffsetDateTime>,
    key: &ApiKey,
    now: OffsetDateTime,
) -> Decision {
    match hash {
        None => Decision::CorruptRecord,
        Some(hash) if !key.verify(hash) => Decision::Mismatch,
        Some(_) if expires.is_some_and(|at| at <= now) => Decision::Expired,
        Some(_) => Decision::Valid,
    }
}

/// Outcome of checking a presented key against its stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Valid,
    Mismatch,
    Expired,
    /// The stored record is unusable; treated as a rejection, reported apart
    /// so operators can find the bad writer.
    CorruptRecord,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn storage_path_joins_mount_group_selector() {
        let key = ApiKey::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(
            storage_path("/api-portal-keys/", "animal-rescue-api", &key.selector()),
            format!("api-portal-keys/animal-rescue-api/{}", "ab".repeat(16))
        );
    }

    #[test]
    fn record_json_is_the_documented_format() {
        let key = ApiKey::parse(&"0123456789abcdef".repeat(4)).unwrap();
        let record = KeyRecord::for_key(&key, "user-1")
            .with_name("ci")
            .with_expiry(datetime!(2030-01-02 03:04:05 UTC));
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "key": key.verifier_hash().to_hex(),
                "owner": "user-1",
                "name": "ci",
                "expires": "2030-01-02T03:04:05Z",
            })
        );
        // A record with only `key`, as Spring Cloud Gateway tooling writes it.
        let minimal: KeyRecord =
            serde_json::from_value(serde_json::json!({"key": record.key, "x": 1})).unwrap();
        assert_eq!(minimal.owner, "");
        assert_eq!(
            minimal.check(&key, datetime!(2031-01-01 0:00 UTC)),
            Decision::Valid
        );
    }

    #[test]
    fn check_reports_mismatch_expiry_and_corruption() {
        let key = ApiKey::generate();
        let other = ApiKey::generate();
        let now = datetime!(2026-11-22 12:00 UTC);
        let record = KeyRecord::for_key(&key, "o");
        assert_eq!(record.check(&key, now), Decision::Valid);
        assert_eq!(record.check(&other, now), Decision::Mismatch);
        assert_eq!(
            record.clone().with_expiry(now).check(&key, now),
            Decision::Expired
        );
        let corrupt = KeyRecord {
            key: "zz".into(),
            ..record
        };
        assert_eq!(corrupt.check(&key, now), Decision::CorruptRecord);
    }
}
