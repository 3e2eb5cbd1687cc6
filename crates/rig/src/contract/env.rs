//! `env.json`: what a running environment tells its tests. Written by `up`
//! to `target/rig/<run>/env.json` (and reachable as `target/rig/latest/`);
//! read by the e2e tests. It holds addresses and file paths only: secrets
//! stay in 0600 files that it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Environment variable that points tests at an `env.json`.
pub const ENV_FILE_VAR: &str = "KEYRIG_ENV";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// `local`, `kind` or `cluster`.
    pub profile: String,
    pub run_id: String,
    /// Where clients send API requests: the default gateway (envoy-grpc on
    /// the local profile, else the first gateway that runs).
    pub gateway_url: String,
    /// Every gateway that runs, by name (the catalog's, env/gateways/<name>)
    /// -> its URL.
    #[serde(default)]
    pub gateways: BTreeMap<String, String>,
    /// Every gateway that runs -> how it deviates from the strict
    /// expectations (its manifest's `[deviations]`), which the tests
    /// assert; a gateway absent here is held to the strict ones.
    #[serde(default)]
    pub gateway_deviations: BTreeMap<String, crate::contract::gateways::Deviations>,
    /// Gateways whose manifest lists admin paths for diagnostics
    /// (`[diagnostics] admin`) -> their admin listener and those paths: a
    /// failed case through one gets them in its bundle.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gateway_admin: BTreeMap<String, GatewayAdmin>,
    /// Gateways of this run's selection that do not run, by name -> why
    /// (e.g. their binary is absent); their cases are skipped with that reason.
    #[serde(default)]
    pub skipped_gateways: BTreeMap<String, String>,
    pub vault_addr: String,
    /// KV v2 mount that holds API-key records.
    pub kv_mount: String,
    /// groupId -> route prefix at the gateway, e.g. `"billing-api": "/billing/"`.
    pub groups: BTreeMap<String, String>,
    /// groupId -> a GET path of its OpenAPI document at the gateway
    /// (`"billing-api": "/billing/invoices"`), for tests that need a route
    /// that exists; groups whose document has no parameterless GET are absent.
    #[serde(default)]
    pub api_paths: BTreeMap<String, String>,
    /// 0600 file holding a Vault token with root policy (the dev server's).
    pub root_token_file: PathBuf,
    /// 0600 file holding the key that unseals Vault after a test seals it
    /// (`PUT /v1/sys/unseal`); absent when the profile cannot provide one.
    #[serde(default)]
    pub unseal_key_file: Option<PathBuf>,
    pub logs_dir: PathBuf,
    /// keygate's HTTP listener: /healthz, /readyz, /metrics, /auth.
    pub keygate_url: String,
    /// keygate's gRPC listener (`host:port`, Envoy ext_authz
    /// `Authorization/Check`), for a gateway configured by hand; absent
    /// where the harness cannot reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keygate_grpc: Option<String>,
    /// The upstream behind the gateway (echoes request headers as JSON).
    pub upstream_url: String,
    /// keygate's cache settings, so tests know how long a change may take to land.
    pub cache: CacheSettings,
    /// Envoy's admin interface (`/stats`, `/clusters`, `/ready`), for
    /// failure diagnostics; absent when the profile has no Envoy admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_admin_url: Option<String>,
    /// How the gateway's credentials are delivered: `inline`,
    /// `existing-secret` or `external-secret` (absent: files rig wrote directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Where the delivered Secret is and what it holds (names, never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryInfo>,
    /// The Kubernetes side of the `kind` and `cluster` profiles; absent on
    /// the local profile, which is how the k8s tests know to skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeEnvironment>,
    /// How the keygate behind `gateway_url` gets key records: `vault` (reads
    /// each key from Vault) or `file` (keys files rendered by a Vault Agent);
    /// `external` when no keygate runs (`cargo xtask up --no-keygate`): the
    /// gateways under test ask a validator the user runs, which reads this
    /// Vault itself.
    #[serde(default = "default_key_source")]
    pub key_source: String,
    /// With `key_source: external`: what that validator does, as the
    /// tests need to know it (`[validator]` of an expectations file, else
    /// the strict defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<ValidatorTraits>,
    /// With `key_source: external`: a 0600 file holding a Vault token with
    /// the read-only policy of the gateway's role, for the user's
    /// validator (the delivered Secret holds that role's AppRole
    /// credentials too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator_token_file: Option<PathBuf>,
    /// Set in the view `e2e --gateway-url` writes: the gateways are ones
    /// the user runs. Cases the harness runs elsewhere for its own
    /// gateways (the hostile requests, in `faults`) run through these here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_gateways: bool,
    /// The keys-file gateway of the same environment, when the profile runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<KeysFileSettings>,
    /// JWT auth with service-account-shaped tokens (Kubernetes-auth-like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<crate::contract::identity::WorkloadIdentity>,
    /// Per-environment paths, policies and roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<crate::contract::environments::Environments>,
    /// keygate's Kong-style secret references (upstream headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<crate::contract::references::ReferenceSettings>,
    /// The gateway's TLS listener with a Vault-issued, rotating serving
    /// certificate (`rig::local::tls`); absent when the profile serves no TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsEnvironment>,
}

pub const KEY_SOURCE_VAULT: &str = "vault";
pub const KEY_SOURCE_FILE: &str = "file";
pub const KEY_SOURCE_EXTERNAL: &str = "external";

/// What a validator the user runs (not keygate) does where validators
/// may reasonably differ; everything else (statuses, `x-keyrig-reason`,
/// the storage format) is the contract and is held strictly. The
/// defaults are the strict expectations with a generous propagation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ValidatorTraits {
    /// The longest a change in Vault (a new key, a deleted one) may take
    /// to reach the validator's answers: its cache TTL, or its render
    /// interval plus poll for a keys-file validator.
    #[serde(default = "ValidatorTraits::default_propagation_ms")]
    pub propagation_ms: u64,
    /// The upstream gets the key's owner (the record's `owner`) in
    /// `x-keyrig-owner`; `false`: it is empty or absent (a keys file holds
    /// no owner).
    #[serde(default = "yes")]
    pub forwards_owner: bool,
    /// A key whose `expires_at` has passed is refused (401 `expired`);
    /// `false`: it passes until it is deleted (a keys file holds no expiry).
    #[serde(default = "yes")]
    pub enforces_expiry: bool,
}

fn yes() -> bool {
    true
}

impl ValidatorTraits {
    fn default_propagation_ms() -> u64 {
        10_000
    }
}

impl Default for ValidatorTraits {
    fn default() -> Self {
        Self {
            propagation_ms: Self::default_propagation_ms(),
            forwards_owner: true,
            enforces_expiry: true,
        }
    }
}

fn default_key_source() -> String {
    KEY_SOURCE_VAULT.into()
}

/// The second gateway: Envoy -> keygate validating from keys files that
/// `bao agent` renders every `render_interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysFileSettings {
    /// The gateway it runs a second instance of (the catalog's default):
    /// the keys-file pass records its cases under this name.
    pub gateway: String,
    pub gateway_url: String,
    pub keygate_url: String,
    /// The agent's `static_secret_render_interval`.
    pub render_interval_ms: u64,
    /// How often keygate checks the files for a change.
    pub poll_interval_ms: u64,
    /// Where the rendered files are (one per group; 0600).
    pub keys_dir: PathBuf,
}

/// The TLS listener: an Envoy in front of keygate whose serving certificate
/// Vault's pki engine issues, `bao agent` renders and SDS loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsEnvironment {
    /// `https://127.0.0.1:<port>`: the same routes as the plain gateway.
    pub url: String,
    /// The name the certificate is issued for and a client verifies
    /// (an IP SAN, `127.0.0.1`).
    pub server_name: String,
    /// The pki root CA certificate (PEM; public, not a secret): trust it.
    pub ca_cert_file: PathBuf,
    /// The TLS Envoy's admin interface (`/server_info`, `/stats`).
    pub admin_url: String,
    /// The pki mount and role that issue the certificate (`LIST <mount>/certs`
    /// lists every serial issued).
    pub pki_mount: String,
    pub pki_role: String,
    /// The TTL the agent asks for; it re-issues at 85-95% of it.
    pub cert_ttl_ms: u64,
    /// The directory the agent publishes `tls.crt`, `tls.key` (0600),
    /// `ca.crt` into (kubelet-style `..data` swap), which Envoy watches.
    pub cert_dir: PathBuf,
}

/// A gateway's admin listener and the paths a diagnostics bundle saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayAdmin {
    pub url: String,
    pub paths: Vec<String>,
}

/// The delivery of keygate's credentials in this run (`rig::contract::modes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryInfo {
    pub mode: String,
    /// The values file the run was configured from.
    pub values_file: PathBuf,
    /// The Secret's name, and its directory as a pod sees it
    /// (`rig::local::secret_dir`: key files through the `..data` symlink).
    pub secret_name: String,
    pub secret_dir: PathBuf,
    /// Key names in the Secret.
    pub keys: crate::contract::modes::SecretKeys,
    /// The gateway group value delivered (keygate's /readyz reports it).
    pub group: String,
    /// The AppRole role keygate logs in as (`apiKey.vault.role`).
    pub approle_role: String,
    /// How often keygate checks its credential files for a rotation.
    pub watch_interval_ms: u64,
    /// external-secret only: where in Vault the credentials live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDelivery>,
    /// What the run report should flag, e.g. "plaintext credentials in values file".
    #[serde(default)]
    pub findings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalDelivery {
    /// KV v2 mount and path below it holding the secret-id.
    pub kv_mount: String,
    pub secret_id_path: String,
    pub secret_id_property: String,
    /// `bao agent`'s static_secret_render_interval.
    pub refresh_interval_ms: u64,
}

/// Where the tests find the cluster and the objects the profile deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeEnvironment {
    /// The credentials mode: `inline`, `existing-secret` or `external-secret`.
    pub mode: String,
    /// 0600 kubeconfig for the cluster (kind); `None`: the default
    /// kubeconfig (`$KUBECONFIG` or `~/.kube/config`, the cluster profile).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; `None`: its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Where keygate, the gateway and the credentials Secret live.
    pub namespace: String,
    /// keygate's Deployment and ServiceAccount.
    pub keygate: String,
    /// The Secret keygate reads its Vault credentials from.
    pub credentials_secret: String,
    /// The ExternalSecret that makes it (mode `external-secret` only).
    #[serde(default)]
    pub external_secret: Option<String>,
    /// Vault's Kubernetes auth mount and the role keygate's ServiceAccount is bound to.
    pub kubernetes_auth_mount: String,
    pub gateway_role: String,
    /// KV v2 mount and path of the ExternalSecret's source in Vault.
    pub credentials_kv_mount: String,
    pub credentials_kv_path: String,
    /// The AppRole keygate logs in with (its secret-id is what rotation rotates).
    pub keygate_approle: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSettings {
    pub positive_ttl_ms: u64,
    pub negative_ttl_ms: u64,
    /// keygate's `cache.resurrect_ttl`: how long a found record keeps being
    /// served after `positive_ttl` while Vault cannot be read (0: older env.json).
    #[serde(default)]
    pub resurrect_ttl_ms: u64,
    /// keygate's `invalidation.listen`, where Vault's socket audit device
    /// streams to it (revocation lands in milliseconds while connected);
    /// absent when keygate runs without one (revocation waits for the TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidation_addr: Option<std::net::SocketAddr>,
}

impl Environment {
    /// The environment named by `$KEYRIG_ENV`, else `target/rig/latest/env.json`
    /// under the workspace root.
    pub fn discover() -> Result<Self> {
        let path = match std::env::var_os(ENV_FILE_VAR) {
            Some(path) => PathBuf::from(path),
            None => crate::base::paths::workspace_root().join("target/rig/latest/env.json"),
        };
        Self::load(&path)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "no keyrig environment at {}: start one with `cargo xtask up`, or run the tests through `cargo xtask e2e`",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a keyrig env.json", path.display()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The root token, read from its 0600 file. Never print it.
    pub fn root_token(&self) -> Result<String> {
        let token = std::fs::read_to_string(&self.root_token_file).with_context(|| {
            format!(
                "reading the root token file {}",
                self.root_token_file.display()
            )
        })?;
        Ok(token.trim().to_owned())
    }

    /// The same environment seen through its keys-file gateway: gateway and
    /// keygate URLs swapped, `key_source: file`. `None` without one.
    pub fn as_keys_file(&self) -> Option<Self> {
        let side = self.keys_file.as_ref()?;
        // The keys-file pair has one gateway, an Envoy over gRPC; the other
        // gateways' cases of this pass are recorded as skipped, with why.
        let own = &side.gateway;
        let gateways = [(own.clone(), side.gateway_url.clone())].into();
        let skipped_gateways = self
            .gateways
            .keys()
            .chain(self.skipped_gateways.keys())
            .filter(|name| *name != own)
            .map(|name| {
                (
                    name.clone(),
                    format!(
                        "the keys-file pass runs through its own {own} only; {name} is tested in the main pass"
                    ),
                )
            })
            .collect();
        let gateway_deviations = self
            .gateway_deviations
            .get(own)
            .map(|d| [(own.clone(), d.clone())].into())
            .unwrap_or_default();
        Some(Self {
            gateway_url: side.gateway_url.clone(),
            keygate_url: side.keygate_url.clone(),
            key_source: KEY_SOURCE_FILE.into(),
            gateways,
            skipped_gateways,
            gateway_deviations,
            ..self.clone()
        })
    }

    /// The keys-file view's env.json, next to env.json.
    pub fn keys_file_env_path(env_file: &Path) -> PathBuf {
        env_file.with_file_name("env-keys-file.json")
    }

    /// The route prefix of a group, or an error naming the known groups.
    pub fn route(&self, group: &str) -> Result<&str> {
        self.groups.get(group).map(String::as_str).with_context(|| {
            format!(
                "no API group {group:?} in this environment (it has {:?})",
                self.groups.keys().collect::<Vec<_>>()
            )
        })
    }
}

/// env.json's `groups`: groupId -> route prefix.
pub fn group_routes(groups: &[crate::contract::scenario::ApiGroup]) -> BTreeMap<String, String> {
    groups
        .iter()
        .map(|g| (g.group_id.clone(), g.route_prefix.clone()))
        .collect()
}

/// env.json's `api_paths`: groupId -> a GET path its document declares.
pub fn group_api_paths(groups: &[crate::contract::scenario::ApiGroup]) -> BTreeMap<String, String> {
    groups
        .iter()
        .filter_map(|g| Some((g.group_id.clone(), g.sample_get_path.clone()?)))
        .collect()
}
