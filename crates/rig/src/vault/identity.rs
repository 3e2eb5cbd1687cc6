//! Workload identity like Kubernetes auth, with the JWT auth method: rig
//! generates an ECDSA P-256 key per run, configures `auth/<mount>` with its
//! public key (`jwt_validation_pubkeys`) and writes the private key (PKCS#8
//! PEM) to a 0600 file that env.json names, so tests can sign
//! service-account-shaped tokens. The scenario itself is
//! `contract::identity`.

use anyhow::{Context, Result};
use base64::Engine;
use reqwest::Method;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

use crate::base::run::RunDir;
use crate::contract::identity::{Binding, WorkloadIdentity};
use crate::vault::client::VaultClient;

/// Generates the run's signing key, configures the JWT auth method and
/// writes the roles.
pub async fn apply(
    mut identity: WorkloadIdentity,
    root: &VaultClient,
    run: &RunDir,
) -> Result<WorkloadIdentity> {
    let (private_pem, public_pem) = generate_signing_key()?;
    // Anyone holding it signs tokens Vault accepts for the roles below: a
    // secret of the run, whole and each line of its body (a log or an
    // excerpt holds one line at a time), as the TLS agent's keys are.
    crate::base::redact::register_in_run(run.path(), &private_pem)?;
    for line in private_pem.lines().map(str::trim) {
        if !line.starts_with("-----") {
            crate::base::redact::register_in_run(run.path(), line)?;
        }
    }
    identity.signing_key_file = run.write_secret("jwt-signing-key.pem", &private_pem)?;
    root.enable_auth("jwt", &identity.mount).await?;
    root.call(
        Method::POST,
        &format!("auth/{}/config", identity.mount),
        Some(&json!({
            "jwt_validation_pubkeys": [public_pem],
            "bound_issuer": identity.issuer,
        })),
    )
    .await
    .context("configuring the JWT auth method")?;
    for role in &identity.roles {
        let mut body = json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": [identity.audience],
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
            &format!("auth/{}/role/{}", identity.mount, role.name),
            Some(&body),
        )
        .await
        .with_context(|| format!("writing JWT role {}", role.name))?;
    }
    crate::say!(
        "vault: JWT auth at auth/{} with a per-run ES256 key; {} service-account role(s)",
        identity.mount,
        identity.roles.len()
    );
    Ok(identity)
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
