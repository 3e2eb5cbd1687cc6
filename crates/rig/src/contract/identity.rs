//! Workload identity as a scenario and as env.json records it:
//! `scenarios/vault/workload-identity.yaml` names service accounts and the
//! policies their roles grant. `vault::identity` applies it to a Vault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    mount: String,
    issuer: String,
    audience: String,
    roles: Vec<RawRole>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    namespace: String,
    service_account: String,
    policies: Vec<String>,
    token_ttl: String,
    bind: String,
}

/// How a role recognises its service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    /// `bound_subject: system:serviceaccount:<ns>:<name>`.
    Subject,
    /// `bound_claims` on `/kubernetes.io/namespace` and
    /// `/kubernetes.io/serviceaccount/name`.
    Claims,
}

/// One role of the scenario, as tests see it in env.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRole {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub policies: Vec<String>,
    pub bind: Binding,
    #[serde(skip)]
    pub token_ttl: Duration,
}

impl IdentityRole {
    pub fn subject(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// The scenario, validated; also the `workload_identity` section of env.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadIdentity {
    pub mount: String,
    pub issuer: String,
    pub audience: String,
    pub roles: Vec<IdentityRole>,
    /// 0600 PKCS#8 PEM of this run's signing key (ES256). Empty until applied.
    #[serde(default)]
    pub signing_key_file: PathBuf,
}

impl WorkloadIdentity {
    /// Loads and checks the scenario file; every error names file and field.
    pub fn load(file: &Path, known_policies: &[String]) -> Result<Self> {
        let name = file.display();
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {name}"))?;
        let raw: RawIdentity = serde_yaml::from_str(&text).with_context(|| format!("{name}"))?;
        for (field, value) in [
            ("mount", &raw.mount),
            ("issuer", &raw.issuer),
            ("audience", &raw.audience),
        ] {
            if value.trim().is_empty() {
                bail!("{name}: {field} is empty: set it (see the comments in the file)");
            }
        }
        let mut roles = Vec::new();
        for (i, role) in raw.roles.into_iter().enumerate() {
            let at = format!("{name}: roles[{i}] ({})", role.name);
            let bind = match role.bind.as_str() {
                "subject" => Binding::Subject,
                "claims" => Binding::Claims,
                other => bail!("{at}.bind is `{other}`: write `subject` or `claims`"),
            };
            for policy in &role.policies {
                if !known_policies.contains(policy) {
                    bail!(
                        "{at}.policies names {policy:?}, which scenarios/vault/setup.yaml does not define: use one of {known_policies:?}"
                    );
                }
            }
            if role.namespace.is_empty() || role.service_account.is_empty() {
                bail!("{at}: namespace and service_account must both be set");
            }
            let token_ttl = humantime::parse_duration(&role.token_ttl).with_context(|| {
                format!(
                    "{at}.token_ttl: {:?} is not a duration like 24h",
                    role.token_ttl
                )
            })?;
            roles.push(IdentityRole {
                name: role.name,
                namespace: role.namespace,
                service_account: role.service_account,
                policies: role.policies,
                bind,
                token_ttl,
            });
        }
        Ok(Self {
            mount: raw.mount,
            issuer: raw.issuer,
            audience: raw.audience,
            roles,
            signing_key_file: PathBuf::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_scenario_loads() {
        let file = crate::base::paths::scenarios_dir().join("vault/workload-identity.yaml");
        let policies = vec![
            "gateway-policy".to_string(),
            "api-portal-policy".to_string(),
        ];
        let identity = WorkloadIdentity::load(&file, &policies).unwrap();
        assert_eq!(identity.issuer, "kubernetes/serviceaccount");
        assert_eq!(
            identity.roles[0].subject(),
            "system:serviceaccount:keyrig:keygate"
        );
        assert_eq!(identity.roles[1].bind, Binding::Claims);
        assert_eq!(identity.roles[0].token_ttl, Duration::from_secs(24 * 3600));

        let err = WorkloadIdentity::load(&file, &["other".to_string()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("roles[0] (keygate-sa).policies names \"gateway-policy\""),
            "{err}"
        );
    }
}
