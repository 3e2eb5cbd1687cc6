//! Workload identity like Kubernetes auth, with the JWT auth method:
//! `scenarios/vault/workload-identity.yaml` names service accounts and the
//! policies their roles grant. rig generates an ECDSA P-256 key per run,
//! configures `auth/<mount>` with its public key (`jwt_validation_pubkeys`)
//! and writes the private key (PKCS#8 PEM) to a 0600 file that env.json
//! names, so tests can sign service-account-shaped tokens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use reqwest::Method;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::run::RunDir;
use crate::vault::VaultClient;

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

    /// Generates the run's signing key, configures the JWT auth method and
    /// writes the roles.
    pub async fn apply(mut self, root: &VaultClient, run: &RunDir) -> Result<Self> {
        let (private_pem, public_pem) = generate_signing_key()?;
        self.signing_key_file = run.write_secret("jwt-signing-key.pem", &private_pem)?;
        root.enable_auth("jwt", &self.mount).await?;
        root.call(
            Method::POST,
            &format!("auth/{}/config", self.mount),
            Some(&json!({
                "jwt_validation_pubkeys": [public_pem],
                "bound_issuer": self.issuer,
            })),
        )
        .await
        .context("configuring the JWT auth method")?;
        for role in &self.roles {
            let mut body = json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": [self.audience],
                "token_policies": role.policies,
                // Exactly the role's policies, so "gets only its policy" is checkable.
                "token_no_default_policy": true,
                "token_ttl": role.token_ttl.as_secs(),
            });
            match role.bind {
                Binding::Subject => body["bound_subject"] = json!(role.subject()),
                Binding::Claims => {
                    body["bound_claims"] = json!({
                        "/kubernetes.io/namespace": role.namespace,
                        "/kubernetes.io/serviceaccount/name": role.service_account,
                    })
                }
            }
            root.call(
                Method::POST,
                &format!("auth/{}/role/{}", self.mount, role.name),
                Some(&body),
            )
            .await
            .with_context(|| format!("writing JWT role {}", role.name))?;
        }
        crate::say!(
            "vault: JWT auth at auth/{} with a per-run ES256 key; {} service-account role(s)",
            self.mount,
            self.roles.len()
        );
        Ok(self)
    }
}

/// An ECDSA P-256 key: (PKCS#8 private key PEM, SubjectPublicKeyInfo PEM).
pub fn generate_signing_key() -> Result<(String, String)> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generating an ECDSA P-256 key failed"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("reading back the generated key failed"))?;
    // SubjectPublicKeyInfo for id-ecPublicKey / prime256v1, then the
    // uncompressed point ring returns (65 bytes).
    const SPKI_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut spki = SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    Ok((pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki)))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_scenario_loads() {
        let file = crate::paths::scenarios_dir().join("vault/workload-identity.yaml");
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

    #[test]
    fn generated_key_is_pem() {
        let (private, public) = generate_signing_key().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let body: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(der.len(), 91);
    }
}
