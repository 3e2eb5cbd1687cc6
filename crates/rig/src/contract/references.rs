//! Kong-style secret references in keygate's config, used for something
//! real: an upstream credential. keygate adds `x-keyrig-upstream-token`,
//! read through `{vault://keyrig/keygate/upstream/token}` (KV v2 at
//! `secret/keygate/upstream`, re-read every `ttl`), and `x-keyrig-gateway`
//! from `{vault://env/keyrig-gateway-name}` (the env var
//! `KEYRIG_GATEWAY_NAME` rig sets per keygate) to every allowed request.
//! The e2e test rotates the token in Vault and watches it land upstream.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often keygate re-reads the referenced token.
pub const TTL: Duration = Duration::from_secs(2);
pub const NEG_TTL: Duration = Duration::from_secs(1);
pub const RESURRECT_TTL: Duration = Duration::from_secs(30);
pub const GATEWAY_NAME_VAR: &str = "KEYRIG_GATEWAY_NAME";

/// The `references` section of env.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceSettings {
    pub kv_mount: String,
    /// KV v2 path of the referenced secret, below the mount.
    pub path: String,
    pub key: String,
    /// The upstream header that carries the referenced value.
    pub header: String,
    /// The upstream header that carries the env-referenced gateway name.
    pub env_header: String,
    pub ttl_ms: u64,
}

impl Default for ReferenceSettings {
    fn default() -> Self {
        Self {
            kv_mount: "secret".into(),
            path: "keygate/upstream".into(),
            key: "token".into(),
            header: "x-keyrig-upstream-token".into(),
            env_header: "x-keyrig-gateway".into(),
            ttl_ms: TTL.as_millis() as u64,
        }
    }
}

impl ReferenceSettings {
    /// The `vaults:` and `upstream_headers:` sections appended to keygate's config.
    pub fn keygate_yaml(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
        format!(
            "vaults:\n  keyrig:\n    kv_mount: {}\n    ttl: {}\n    neg_ttl: {}\n    resurrect_ttl: {}\n\
             upstream_headers:\n  {}: {}\n  {}: {}\n",
            q(&self.kv_mount),
            q(&humantime::format_duration(TTL).to_string()),
            q(&humantime::format_duration(NEG_TTL).to_string()),
            q(&humantime::format_duration(RESURRECT_TTL).to_string()),
            self.header,
            q(&format!("{{vault://keyrig/{}/{}}}", self.path, self.key)),
            self.env_header,
            q("{vault://env/keyrig-gateway-name}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygate_sections_are_yaml_with_the_reference() {
        let text = ReferenceSettings::default().keygate_yaml();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            doc["upstream_headers"]["x-keyrig-upstream-token"].as_str(),
            Some("{vault://keyrig/keygate/upstream/token}")
        );
        assert_eq!(doc["vaults"]["keyrig"]["ttl"].as_str(), Some("2s"));
    }
}
