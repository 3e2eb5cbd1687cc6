//! The Kubernetes profiles: `kind` (a kind cluster the harness creates or
//! reuses) and `cluster` (the current kubeconfig context, with an existing
//! Vault). scenarios/k8s/README.md lists, in order, what `up` does; each
//! step lives in the module named for its job.
//!
//! None of this has run against a cluster on the machines keyrig is
//! developed on (no Docker engine there): it compiles, its pure parts have
//! unit tests, its Vault side runs against a real OpenBao
//! (`vault_side_tests`), the check Job's script runs with the pinned `bao`
//! against a real OpenBao (`check_job_tests`), the cluster profile's
//! overlay and the applied one are rendered by the pinned kubectl
//! (`cluster_vault`, `image`), and `preflight` is what those machines
//! exercise.

mod check_job_tests;
pub mod claim;
pub mod client;
pub mod cluster_vault;
pub mod commands;
pub mod credentials;
pub mod environment;
pub mod eso;
pub mod helm;
pub mod image;
mod parity;
pub mod preflight;
pub mod profile;
pub mod prune;
pub mod state;
pub mod vault_auth;
mod vault_side_tests;
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

/// How keygate gets its Vault credentials: the one `Mode` of the harness;
/// each has an overlay of scenarios/k8s named `Mode::as_str`.
pub use rig::contract::modes::Mode;

/// A pinned tool for the offline tests of these profiles (kubectl renders the
/// overlays, bao serves as the cluster profile's Vault). Missing, the test
/// fails saying what to run: `cargo xtask test` installs both first, and a
/// test that skipped itself would read as passed in cargo's output.
#[cfg(test)]
pub(crate) fn pinned_tool(name: &str) -> std::path::PathBuf {
    rig::process::tools::pinned_for_tests(name)
}

/// The dev Vault the kind profile installs (env/k8s.toml `[charts.<chart>]`).
/// Both charts install under the same release and Service name
/// (`openbao.openbao.svc:8200`), so the manifests do not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VaultChart {
    #[default]
    OpenBao,
    HashiCorp,
}

impl VaultChart {
    /// The `[charts.<name>]` table of env/k8s.toml.
    pub fn chart(self) -> &'static str {
        match self {
            VaultChart::OpenBao => "openbao",
            VaultChart::HashiCorp => "vault",
        }
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
    pub const SECRET_STORE: &str = "vault-backend";
    /// The ClusterSecretStore older keyrigs applied (cluster-scoped, so
    /// named for keyrig); no overlay has it now, and `up` deletes one they
    /// left (`super::prune`).
    pub const CLUSTER_SECRET_STORE: &str = "keyrig-vault-backend";
    pub const CHECK_JOB: &str = "gateway-credentials-check";
    pub const APIS_CONFIGMAP: &str = "keygate-apis";
    /// The Vault Kubernetes-auth role keygate's ServiceAccount is bound to
    /// (scenarios/k8s/vault/kubernetes-roles.yaml).
    pub const GATEWAY_VAULT_ROLE: &str = "gateway";
    /// The label on every object only one credentials mode makes; its value
    /// is the mode (`up` of another mode deletes them: `super::prune`).
    pub const MODE_LABEL: &str = "keyrig.dev/mode";
    /// On everything keyrig applies to a cluster (`keyrig`).
    pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
    /// Service ports (scenarios/k8s/base).
    pub const GATEWAY_PORT: u16 = 10000;
    pub const KEYGATE_HTTP_PORT: u16 = 9002;
    pub const UPSTREAM_PORT: u16 = 8080;
    pub const VAULT_PORT: u16 = 8200;
    /// The ESO CRDs the external-secret overlay uses.
    pub const ESO_CRDS: [&str; 2] = [
        "externalsecrets.external-secrets.io",
        "secretstores.external-secrets.io",
    ];
    /// The ESO chart's Deployments (release `external-secrets`).
    pub const ESO_DEPLOYMENTS: [&str; 3] = [
        "external-secrets",
        "external-secrets-webhook",
        "external-secrets-cert-controller",
    ];
}

#[cfg(test)]
mod tests {
    use super::names;

    /// Every object the profile waits on, reads or port-forwards by name is
    /// in the overlay under that name.
    #[test]
    fn the_names_are_the_overlays() {
        let kubectl = super::pinned_tool("kubectl");
        let overlay = rig::base::paths::scenarios_dir()
            .join("k8s")
            .join("external-secret");
        let rendered = manifests::render_overlay(&kubectl, &overlay).unwrap();
        let has = |kind: &str, name: &str| {
            rendered.iter().any(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && (kind == "Namespace" || o["metadata"]["namespace"] == names::NAMESPACE)
            })
        };
        for (kind, name) in [
            ("Namespace", names::NAMESPACE),
            ("Deployment", names::KEYGATE),
            ("Deployment", names::GATEWAY),
            ("Deployment", names::UPSTREAM),
            ("Service", names::KEYGATE),
            ("Service", names::GATEWAY),
            ("Service", names::UPSTREAM),
            ("Job", names::CHECK_JOB),
            ("ExternalSecret", names::EXTERNAL_SECRET),
            ("SecretStore", names::SECRET_STORE),
        ] {
            assert!(has(kind, name), "no {kind} {name} in {}", overlay.display());
        }
        // Nothing reads a ClusterSecretStore, and ESO would log in to Vault
        // for one every few minutes all the same.
        assert!(
            !rendered.iter().any(|o| o["kind"] == "ClusterSecretStore"),
            "{} applies a ClusterSecretStore",
            overlay.display()
        );
    }
}
