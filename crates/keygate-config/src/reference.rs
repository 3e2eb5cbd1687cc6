//! The syntax of keygate's secret references, Kong style (what
//! `crate::config` accepts; keygate's `refs` resolves them):
//!
//! - `{vault://env/my-secret}` reads the environment variable `MY_SECRET`
//!   (upper-cased, `-` becomes `_`);
//! - `{vault://<vault>/<path>/<key>}` reads field `<key>` of the KV v2 secret
//!   `<path>` in the mount of the vault named `<vault>` under `vaults:`.

use std::time::Duration;

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The environment variable's name, already upper-cased.
    Env { var: String },
    Vault {
        vault: String,
        path: String,
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error(
        "`{0}` is not a reference: write it as {{vault://env/NAME}} or {{vault://<vault>/<path>/<key>}}"
    )]
    NotAReference(String),
    #[error("`{0}`: {1}")]
    Malformed(String, &'static str),
}

/// Whether `text` is meant as a reference (so plain values pass through).
pub fn is_reference(text: &str) -> bool {
    text.trim().starts_with("{vault://")
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, RefError> {
        let trimmed = text.trim();
        let inner = trimmed
            .strip_prefix("{vault://")
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| RefError::NotAReference(text.to_owned()))?;
        if inner.contains(['?', '#']) {
            return Err(RefError::Malformed(
                text.to_owned(),
                "queries and #versions are not supported: reference the latest version",
            ));
        }
        let segments: Vec<&str> = inner.split('/').collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Err(RefError::Malformed(
                text.to_owned(),
                "empty, `.` or `..` segment: write {vault://<vault>/<path>/<key>}",
            ));
        }
        match segments.as_slice() {
            ["env", name] => Ok(Reference::Env {
                var: name.to_ascii_uppercase().replace('-', "_"),
            }),
            ["env", ..] => Err(RefError::Malformed(
                text.to_owned(),
                "an env reference names one variable: {vault://env/my-secret} reads MY_SECRET",
            )),
            [vault, path @ .., key] if !path.is_empty() => Ok(Reference::Vault {
                vault: (*vault).to_owned(),
                path: path.join("/"),
                key: (*key).to_owned(),
            }),
            _ => Err(RefError::Malformed(
                text.to_owned(),
                "a vault reference needs a vault name, a path and a key: {vault://<vault>/<path>/<key>}",
            )),
        }
    }
}

/// Kong's TTLs for a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a value is used before it is read again; 0 = never again.
    pub ttl: Duration,
    /// How long a miss (no such secret or key) is remembered.
    pub neg_ttl: Duration,
    /// How long the last value stays in use after its ttl while re-reading fails.
    pub resurrect_ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("{vault://env/my-secret}", Reference::Env { var: "MY_SECRET".into() })]
    #[case("{vault://env/my-secret-postgres-password}", Reference::Env { var: "MY_SECRET_POSTGRES_PASSWORD".into() })]
    #[case(" {vault://keyrig/keygate/upstream/token} ", Reference::Vault { vault: "keyrig".into(), path: "keygate/upstream".into(), key: "token".into() })]
    #[case("{vault://hcv/a/b}", Reference::Vault { vault: "hcv".into(), path: "a".into(), key: "b".into() })]
    fn parses(#[case] text: &str, #[case] expected: Reference) {
        assert_eq!(Reference::parse(text).unwrap(), expected);
    }

    #[rstest]
    #[case("plain", "is not a reference")]
    #[case("{vault://env/a/b}", "names one variable")]
    #[case("{vault://hcv/key}", "needs a vault name, a path and a key")]
    #[case("{vault://hcv//key}", "empty, `.` or `..` segment")]
    #[case("{vault://hcv/a/../b}", "empty, `.` or `..` segment")]
    #[case("{vault://hcv/a/b#2}", "#versions are not supported")]
    #[case("{vault://hcv/a/b", "is not a reference")]
    fn refuses(#[case] text: &str, #[case] expected: &str) {
        let err = Reference::parse(text).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        assert!(is_reference(text) || text == "plain");
    }
}
