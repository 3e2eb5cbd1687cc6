//! env.json of the kind and cluster profiles, built by a pure function from
//! what `up` found and started, so the contract the tests read is unit-tested
//! without a cluster:
//! - the gateway the overlays deploy (Envoy with gRPC ext_authz) is listed
//!   under its matrix name, and every other gateway of the matrix is listed
//!   as skipped with the reason, so no gateway case records nothing;
//! - keygate's cache settings are what keygate's own config parser reads
//!   from the ConfigMap the overlay renders, not a second reading of the YAML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use super::{KubeProfile, Mode, names};
use rig::contract::env::{CacheSettings, Environment, KubeEnvironment};
use rig::contract::gateways::Catalog;

/// Where keygate's config file is mounted in its pod (base/keygate.yaml);
/// relative paths in it resolve against this file's directory.
pub const KEYGATE_CONFIG_PATH: &str = "/etc/keygate/keygate.yaml";
/// The key of `keygate.yaml` in the `keygate-config` ConfigMap.
const KEYGATE_CONFIG_KEY: &str = "keygate.yaml";
const KEYGATE_CONFIGMAP: &str = "keygate-config";

/// keygate's config as the overlay renders it into its ConfigMap, parsed
/// and validated by keygate itself (`keygate::config::Config::parse`).
pub fn keygate_config(rendered: &[Value], overlay: &Path) -> Result<keygate::config::Config> {
    let configmap = manifests::find(rendered, "ConfigMap", KEYGATE_CONFIGMAP).ok_or_else(|| {
        anyhow!(
            "{} renders no ConfigMap {KEYGATE_CONFIGMAP} (base/kustomization.yaml's configMapGenerator makes it)",
            overlay.display()
        )
    })?;
    let text = configmap["data"][KEYGATE_CONFIG_KEY]
        .as_str()
        .with_context(|| {
            format!(
                "{}: ConfigMap {KEYGATE_CONFIGMAP} has no data.{KEYGATE_CONFIG_KEY}",
                overlay.display()
            )
        })?;
    keygate::config::Config::parse(Path::new(KEYGATE_CONFIG_PATH), text).map_err(|err| {
        anyhow!(
            "keygate would refuse the config {} renders (scenarios/k8s/base/config/keygate.yaml): {err}",
            overlay.display()
        )
    })
}

/// env.json's `cache`, from keygate's parsed config: every field.
pub fn cache_settings(config: &keygate::config::Config) -> CacheSettings {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    CacheSettings {
        positive_ttl_ms: ms(config.cache.positive_ttl),
        negative_ttl_ms: ms(config.cache.negative_ttl),
        resurrect_ttl_ms: ms(config.cache.resurrect_ttl),
        // The k8s profiles' Vault declares no socket audit device.
        invalidation_addr: None,
    }
}

/// The gateway matrix of a Kubernetes run: the deployed gateway -> its
/// forwarded URL; every other gateway of the catalog -> why it does not run
/// here. Every overlay of scenarios/k8s deploys the catalog's default
/// gateway (base/gateway.yaml: its Envoy config, which `parity` checks
/// against the default gateway's rendered one).
pub fn gateway_matrix(
    catalog: &Catalog,
    profile: KubeProfile,
    gateway_url: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let deployed = &catalog.default_gateway().name;
    let running = BTreeMap::from([(deployed.clone(), gateway_url.to_owned())]);
    let skipped = catalog.all_but(deployed, |name| {
        format!(
            "the {profile} profile deploys {deployed} only (scenarios/k8s/base/gateway.yaml); {name} runs on the local profile"
        )
    });
    (running, skipped)
}

/// Addresses of what `up` port-forwarded (or, for Vault, was given).
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub gateway_url: String,
    pub keygate_url: String,
    pub upstream_url: String,
    pub vault_addr: String,
}

/// Everything env.json of a Kubernetes run is made of.
pub struct KubeEnvInputs<'a> {
    pub profile: KubeProfile,
    pub mode: Mode,
    pub run_id: &'a str,
    pub logs_dir: PathBuf,
    pub root_token_file: PathBuf,
    pub forwarded: Forwarded,
    pub kv_mount: &'a str,
    pub groups: &'a [rig::contract::scenario::ApiGroup],
    pub keygate: &'a keygate::config::Config,
    pub kubernetes_auth_mount: &'a str,
    pub credentials_kv_mount: &'a str,
    pub credentials_kv_path: &'a str,
    pub keygate_approle: &'a str,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The gateway catalog (env/gateways): the matrix's names.
    pub catalog: &'a Catalog,
}

/// env.json of a Kubernetes run.
pub fn kube_environment(inputs: KubeEnvInputs<'_>) -> Environment {
    let (gateways, skipped_gateways) = gateway_matrix(
        inputs.catalog,
        inputs.profile,
        &inputs.forwarded.gateway_url,
    );
    Environment {
        profile: inputs.profile.name().into(),
        run_id: inputs.run_id.to_owned(),
        gateway_url: inputs.forwarded.gateway_url,
        gateway_deviations: BTreeMap::from([(
            inputs.catalog.default_gateway().name.clone(),
            inputs.catalog.default_gateway().deviations.clone(),
        )]),
        // Envoy's admin is not reachable from outside its pod (below).
        gateway_admin: BTreeMap::new(),
        gateways,
        skipped_gateways,
        vault_addr: inputs.forwarded.vault_addr,
        kv_mount: inputs.kv_mount.to_owned(),
        groups: rig::contract::env::group_routes(inputs.groups),
        api_paths: rig::contract::env::group_api_paths(inputs.groups),
        root_token_file: inputs.root_token_file,
        unseal_key_file: None,
        logs_dir: inputs.logs_dir,
        keygate_url: inputs.forwarded.keygate_url,
        keygate_grpc: None,
        upstream_url: inputs.forwarded.upstream_url,
        cache: cache_settings(inputs.keygate),
        // Envoy's admin listens on 127.0.0.1 in its pod and is not in the
        // Service (it can stop the server): not reachable from the harness.
        envoy_admin_url: None,
        mode: Some(inputs.mode.as_str().into()),
        delivery: None,
        // The cluster profiles run the Vault-direct keygate only; the
        // tests of the local-only pieces skip on `None`.
        key_source: rig::contract::env::KEY_SOURCE_VAULT.into(),
        validator: None,
        validator_token_file: None,
        user_gateways: false,
        keys_file: None,
        workload_identity: None,
        environments: None,
        references: None,
        kube: Some(KubeEnvironment {
            mode: inputs.mode.as_str().into(),
            kubeconfig: inputs.kubeconfig,
            context: inputs.context,
            namespace: names::NAMESPACE.into(),
            keygate: names::KEYGATE.into(),
            credentials_secret: names::CREDENTIALS_SECRET.into(),
            external_secret: (inputs.mode == Mode::ExternalSecret)
                .then(|| names::EXTERNAL_SECRET.to_owned()),
            kubernetes_auth_mount: inputs.kubernetes_auth_mount.to_owned(),
            gateway_role: names::GATEWAY_VAULT_ROLE.into(),
            credentials_kv_mount: inputs.credentials_kv_mount.to_owned(),
            credentials_kv_path: inputs.credentials_kv_path.to_owned(),
            keygate_approle: inputs.keygate_approle.to_owned(),
        }),
        tls: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        groups: &'a [rig::contract::scenario::ApiGroup],
        config: &'a keygate::config::Config,
        mode: Mode,
    ) -> KubeEnvInputs<'a> {
        KubeEnvInputs {
            profile: KubeProfile::Kind,
            mode,
            run_id: "run-1",
            logs_dir: "/tmp/logs".into(),
            root_token_file: "/tmp/secrets/root-token".into(),
            forwarded: Forwarded {
                gateway_url: "http://127.0.0.1:41000".into(),
                keygate_url: "http://127.0.0.1:41001".into(),
                upstream_url: "http://127.0.0.1:41002".into(),
                vault_addr: "http://127.0.0.1:41003".into(),
            },
            kv_mount: "api-portal-keys",
            groups,
            keygate: config,
            kubernetes_auth_mount: "keyrig-kubernetes",
            credentials_kv_mount: "secret",
            credentials_kv_path: "keyrig/gateway",
            keygate_approle: "gateway",
            kubeconfig: None,
            context: None,
            catalog: Box::leak(Box::new(Catalog::load_default().unwrap())),
        }
    }

    /// Every overlay, rendered with the pinned kubectl: keygate accepts the
    /// config it renders, env.json lists the deployed gateway, skips the
    /// others with a reason, and carries keygate's cache settings.
    #[test]
    fn env_json_of_every_overlay_lists_its_gateway_and_keygates_cache() {
        let kubectl = super::super::pinned_tool("kubectl");
        let groups = rig::contract::scenario::load_default_apis().unwrap();
        for mode in Mode::ALL {
            let overlay = rig::base::paths::scenarios_dir()
                .join("k8s")
                .join(mode.as_str());
            let rendered = manifests::render_overlay(&kubectl, &overlay).unwrap();
            let config = keygate_config(&rendered, &overlay).unwrap();
            let env = kube_environment(inputs(&groups, &config, mode));
            assert_eq!(
                env.gateways,
                BTreeMap::from([("envoy-grpc".to_owned(), env.gateway_url.clone())]),
                "{mode}"
            );
            let mut all: Vec<&str> = env
                .gateways
                .keys()
                .chain(env.skipped_gateways.keys())
                .map(String::as_str)
                .collect();
            all.sort_unstable();
            let catalog = Catalog::load_default().unwrap();
            let mut expected: Vec<&str> = catalog.names();
            expected.sort_unstable();
            assert_eq!(
                all, expected,
                "every gateway of the matrix is accounted for"
            );
            assert!(
                env.skipped_gateways
                    .values()
                    .all(|why| why.contains("kind"))
            );
            assert_eq!(
                env.cache,
                CacheSettings {
                    positive_ttl_ms: config.cache.positive_ttl.as_millis() as u64,
                    negative_ttl_ms: config.cache.negative_ttl.as_millis() as u64,
                    resurrect_ttl_ms: config.cache.resurrect_ttl.as_millis() as u64,
                    invalidation_addr: None,
                },
                "{mode}"
            );
            // The in-cluster config sets no resurrect window: keygate's
            // default applies, and env.json must say so (it said 0).
            assert_eq!(
                env.cache.resurrect_ttl_ms,
                keygate::config::DEFAULT_RESURRECT_TTL.as_millis() as u64
            );
            assert_eq!(
                config.gateway_group_file.as_deref(),
                Some(Path::new("/etc/keygate/secrets/gateway-group")),
                "keygate reads the Secret's gateway-group key ({mode})"
            );
            assert_eq!(
                env.kube.as_ref().unwrap().external_secret.is_some(),
                mode == Mode::ExternalSecret
            );
        }
    }

    #[test]
    fn a_config_keygate_refuses_is_an_error_naming_the_overlay() {
        let rendered = vec![serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "keygate-config"},
            "data": {"keygate.yaml": "listen:\n  grpc: 0.0.0.0:9001\n  http: 0.0.0.0:9001\n"},
        })];
        let err = keygate_config(&rendered, Path::new("scenarios/k8s/inline"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scenarios/k8s/inline"), "{err}");
        assert!(err.contains("listen.grpc and listen.http"), "{err}");
        let err = keygate_config(&[], Path::new("scenarios/k8s/inline"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("renders no ConfigMap keygate-config"), "{err}");
    }
}
