//! keyrig's own Kubernetes files, typed: the pins (`env/k8s.toml`), the kind
//! cluster config (`env/kind/cluster.yaml`) and the Vault Kubernetes-auth
//! data (`scenarios/k8s/vault/kubernetes-roles.yaml`).
//!
//! These structs deny unknown fields: keyrig owns the formats, so a field
//! nobody reads is a mistake. (The kind config is kind's format; its struct
//! lists the fields kind documents, and rejects the rest for the same reason:
//! kind itself only warns about them.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::render::Error;

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// serde_yaml's messages already name the field and line
/// (`nodes[0]: unknown field `extraPortMapping`, expected one of ... at line 3`).
fn yaml<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    serde_yaml::from_str(&read(path)?).map_err(|err| invalid(path, err.to_string()))
}

/// `env/k8s.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sPins {
    pub kind: KindPin,
    /// The Helm CLI that installs the charts (preflight and CI check it).
    pub helm: HelmPin,
    /// `openbao`, `vault`, `external-secrets`.
    pub charts: BTreeMap<String, ChartPin>,
    /// `keygate`, `envoy`, `echo`, `bao`: full image references.
    pub images: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindPin {
    pub version: String,
    /// `kindest/node:vX.Y.Z@sha256:...`
    pub node_image: String,
    pub cluster_name: String,
    /// Relative to the workspace root.
    pub config: PathBuf,
}

/// `[helm]`: the Helm release, `X.Y.Z` without the `v`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelmPin {
    pub version: String,
}

impl HelmPin {
    /// The Helm major version the charts and the harness are written for.
    pub const MAJOR: u64 = 3;

    /// The pinned major version (`3` of `3.22.1`).
    pub fn major(&self) -> Option<u64> {
        self.version.split('.').next()?.parse().ok()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartPin {
    pub repo: String,
    pub chart: String,
    pub version: String,
    pub release: String,
    pub namespace: String,
    /// Relative to the workspace root.
    pub values: PathBuf,
    /// The main image the values select, when they pin one.
    pub image: Option<String>,
}

impl K8sPins {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = read(path)?;
        let pins: Self = toml::from_str(&text).map_err(|err| invalid(path, err.to_string()))?;
        if !pins.kind.node_image.contains("@sha256:") {
            return Err(invalid(
                path,
                "kind.node_image has no @sha256: digest: kind's release notes say a node image must be pinned by digest to match the kind release",
            ));
        }
        let exact = pins.helm.version.split('.').count() == 3
            && pins
                .helm
                .version
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
        if !exact || pins.helm.major() != Some(HelmPin::MAJOR) {
            return Err(invalid(
                path,
                format!(
                    "helm.version = {:?} must be an exact Helm {}.y.z release (no `v`, no range): the harness and the charts' values are written for Helm {}",
                    pins.helm.version,
                    HelmPin::MAJOR,
                    HelmPin::MAJOR
                ),
            ));
        }
        for (name, chart) in &pins.charts {
            if chart.version.is_empty() || chart.version == "latest" {
                return Err(invalid(
                    path,
                    format!("charts.{name}.version must be an exact chart version"),
                ));
            }
        }
        for (name, image) in &pins.images {
            let tag = image
                .rsplit_once(':')
                .map(|(_, tag)| tag)
                .filter(|tag| !tag.contains('/'));
            if matches!(tag, None | Some("latest")) {
                return Err(invalid(
                    path,
                    format!("images.{name} = {image:?} needs an exact tag (not latest, not none)"),
                ));
            }
        }
        Ok(pins)
    }
}

/// A kind cluster config (`kind: Cluster`, `kind.x-k8s.io/v1alpha4`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KindCluster {
    pub kind: String,
    pub api_version: String,
    pub name: Option<String>,
    pub nodes: Vec<KindNode>,
    pub networking: Option<Value>,
    pub feature_gates: Option<BTreeMap<String, bool>>,
    pub runtime_config: Option<BTreeMap<String, String>>,
    pub kubeadm_config_patches: Option<Vec<String>>,
    /// kind spells it `kubeadmConfigPatchesJSON6902` (upper-case JSON), which
    /// camelCase would turn into `...Json6902`; so do the others below
    /// (kind's `pkg/apis/config/v1alpha4/types.go`).
    #[serde(rename = "kubeadmConfigPatchesJSON6902")]
    pub kubeadm_config_patches_json6902: Option<Vec<Value>>,
    pub containerd_config_patches: Option<Vec<String>>,
    #[serde(rename = "containerdConfigPatchesJSON6902")]
    pub containerd_config_patches_json6902: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KindNode {
    pub role: NodeRole,
    pub image: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub extra_port_mappings: Option<Vec<Value>>,
    pub extra_mounts: Option<Vec<Value>>,
    pub kubeadm_config_patches: Option<Vec<String>>,
    #[serde(rename = "kubeadmConfigPatchesJSON6902")]
    pub kubeadm_config_patches_json6902: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    ControlPlane,
    Worker,
}

impl KindCluster {
    pub const API_VERSION: &'static str = "kind.x-k8s.io/v1alpha4";

    pub fn load(path: &Path) -> Result<Self, Error> {
        let cluster: Self = yaml(path)?;
        if cluster.kind != "Cluster" {
            return Err(invalid(
                path,
                format!(
                    "kind is {:?}; a kind cluster config says kind: Cluster",
                    cluster.kind
                ),
            ));
        }
        if cluster.api_version != Self::API_VERSION {
            return Err(invalid(
                path,
                format!(
                    "apiVersion is {:?}; kind reads {}",
                    cluster.api_version,
                    Self::API_VERSION
                ),
            ));
        }
        if !cluster
            .nodes
            .iter()
            .any(|n| n.role == NodeRole::ControlPlane)
        {
            return Err(invalid(path, "nodes has no control-plane node"));
        }
        Ok(cluster)
    }
}

/// `scenarios/k8s/vault/kubernetes-roles.yaml`: Vault's Kubernetes auth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesAuth {
    pub auth_mount: String,
    pub config: KubernetesAuthConfig,
    pub policies: Vec<PolicyFile>,
    pub gateway_credentials: KvSecret,
    pub roles: Vec<KubernetesRole>,
}

/// The body of `POST /v1/auth/<mount>/config`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesAuthConfig {
    pub kubernetes_host: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub name: String,
    /// Relative to the roles file.
    pub file: PathBuf,
}

/// Where the ExternalSecret's source lives in Vault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSecret {
    pub mount: String,
    pub path: String,
    pub properties: Vec<String>,
}

/// One role; all but `name` is the body of `POST /v1/auth/<mount>/role/<name>`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRole {
    #[serde(skip_serializing)]
    pub name: String,
    pub bound_service_account_names: Vec<String>,
    pub bound_service_account_namespaces: Vec<String>,
    pub token_policies: Vec<String>,
    /// A Vault duration, e.g. `24h`.
    pub token_ttl: String,
}

impl KubernetesAuth {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let auth: Self = yaml(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for policy in &auth.policies {
            let file = dir.join(&policy.file);
            if !file.is_file() {
                return Err(invalid(
                    path,
                    format!(
                        "policies[{}].file {} does not exist",
                        policy.name,
                        file.display()
                    ),
                ));
            }
        }
        for role in &auth.roles {
            if role.bound_service_account_names.is_empty()
                || role.bound_service_account_namespaces.is_empty()
            {
                return Err(invalid(
                    path,
                    format!(
                        "roles[{}] binds no ServiceAccount: Vault would refuse the role",
                        role.name
                    ),
                ));
            }
        }
        Ok(auth)
    }

    /// A policy's HCL, read from its file.
    pub fn policy_text(&self, roles_file: &Path, name: &str) -> Result<String, Error> {
        let policy = self
            .policies
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| invalid(roles_file, format!("no policy called {name:?} in policies")))?;
        read(
            &roles_file
                .parent()
                .unwrap_or(Path::new("."))
                .join(&policy.file),
        )
    }
}
