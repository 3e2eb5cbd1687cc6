//! The Kubernetes profiles: `kind` (a kind cluster the harness creates or
//! reuses) and `cluster` (the current kubeconfig context, with an existing
//! Vault). scenarios/k8s/README.md lists, in order, what `up` does; each
//! step lives in the module named for its job.
//!
//! None of this has run on the machines keyrig is developed on (no Docker
//! engine there): it compiles, its pure parts have unit tests, and
//! `preflight` is what those machines exercise.

pub mod client;
pub mod commands;
pub mod credentials;
pub mod preflight;
pub mod profile;
pub mod state;
pub mod vault_auth;
pub mod waits;

use std::fmt;

/// Which Kubernetes profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeProfile {
    Kind,
    Cluster,
}

impl KubeProfile {
    pub fn name(self) -> &'static str {
        match self {
            KubeProfile::Kind => "kind",
            KubeProfile::Cluster => "cluster",
        }
    }
}

impl fmt::Display for KubeProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How keygate gets its Vault credentials: one overlay of scenarios/k8s each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A Secret generated from literals in git (dev only).
    Inline,
    /// A Secret created beforehand, with custom key names.
    ExistingSecret,
    /// External Secrets Operator syncs the Secret from Vault.
    ExternalSecret,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Inline, Mode::ExistingSecret, Mode::ExternalSecret];

    /// Also the overlay's directory under scenarios/k8s.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Inline => "inline",
            Mode::ExistingSecret => "existing-secret",
            Mode::ExternalSecret => "external-secret",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names the manifests in scenarios/k8s give their objects. The harness
/// names them too (waits, port-forwards, env.json); crates/manifests' tests
/// check the overlays still use them.
pub mod names {
    pub const NAMESPACE: &str = "keyrig";
    pub const KEYGATE: &str = "keygate";
    pub const GATEWAY: &str = "gateway";
    pub const UPSTREAM: &str = "upstream";
    pub const CREDENTIALS_SECRET: &str = "keyrig-gateway-credentials";
    pub const EXTERNAL_SECRET: &str = "gateway-credentials";
    pub const CHECK_JOB: &str = "gateway-credentials-check";
    pub const APIS_CONFIGMAP: &str = "keygate-apis";
    /// Service ports (scenarios/k8s/base).
    pub const GATEWAY_PORT: u16 = 10000;
    pub const KEYGATE_HTTP_PORT: u16 = 9002;
    pub const UPSTREAM_PORT: u16 = 8080;
    pub const VAULT_PORT: u16 = 8200;
    /// The ESO CRDs the external-secret overlay uses.
    pub const ESO_CRDS: [&str; 3] = [
        "externalsecrets.external-secrets.io",
        "secretstores.external-secrets.io",
        "clustersecretstores.external-secrets.io",
    ];
    /// The ESO chart's Deployments (release `external-secrets`).
    pub const ESO_DEPLOYMENTS: [&str; 3] = [
        "external-secrets",
        "external-secrets-webhook",
        "external-secrets-cert-controller",
    ];
}
