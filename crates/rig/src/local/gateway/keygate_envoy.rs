//! What a gateway that `loads = ["keygate-envoy"]` gets: keygate's Envoy
//! module made loadable (its version checked against the gateway's Envoy,
//! `process::envoy_module`) and the `module` template values, the module's
//! filter and per-route configs as the JSON strings Envoy hands it
//! (`keygate_envoy::config`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::local::gateway::context::{EnvoyModuleSettings, GatewayContext};
use crate::process::supervisor::Component;

/// The `module` values of the templates.
#[derive(Debug, Serialize)]
pub struct ModuleValues {
    /// `dynamic_module_config.name`: Envoy loads `lib<name>.so`.
    name: &'static str,
    filter_config: String,
    /// API group -> its route's per-route config.
    route_configs: BTreeMap<String, String>,
}

/// How long the module waits for keygate's answer: as Envoy's ext_authz
/// timeout, above keygate's own 2 s Vault timeout, so a slow Vault read is
/// keygate's answer (status and reason), not a `keygate-unavailable`.
pub const MODULE_CALLOUT_TIMEOUT: Duration = Duration::from_secs(3);

impl ModuleValues {
    pub fn new(ctx: &GatewayContext, settings: &EnvoyModuleSettings) -> Result<Self> {
        let filter_config = serde_json::json!({
            "cluster": "keygate",
            // keygate's HTTP port serves the feed; the module's own thread
            // connects there (it cannot use Envoy's clusters).
            "invalidations": ctx.keygate_http.to_string(),
            "positive_ttl_ms": settings.positive_ttl.as_millis() as u64,
            "resurrect_ttl_ms": settings.resurrect_ttl.as_millis() as u64,
            "callout_timeout_ms": MODULE_CALLOUT_TIMEOUT.as_millis() as u64,
        });
        let route_configs = ctx
            .groups
            .iter()
            .map(|g| {
                let config = serde_json::json!({ "group": g.group_id });
                (g.group_id.clone(), config.to_string())
            })
            .collect();
        Ok(Self {
            name: crate::process::envoy_module::MODULE_NAME,
            filter_config: serde_json::to_string(&filter_config)?,
            route_configs,
        })
    }
}

/// The gateway's process with the module loadable (refused, naming both
/// versions, when the module was built for another Envoy series).
pub fn loadable(component: Component, envoy: &Path, library: &Path) -> Result<Component> {
    crate::process::envoy_module::loadable(component, envoy, library)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::contract::gateways::{Catalog, Extension};
    use crate::local::gateway::context::tests::context;

    fn hcm(doc: &serde_yaml::Value) -> &serde_yaml::Value {
        &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    /// The shipped gateway that loads the module: each group's route names
    /// its group, the filter follows keygate's cache, and the listener is
    /// the ext_authz gateways'.
    #[test]
    fn module_routes_name_their_group_and_the_filter_follows_keygates_cache() {
        let catalog = Catalog::load(&crate::base::paths::env_dir().join("gateways")).unwrap();
        let manifest = catalog
            .iter()
            .find(|g| g.loads(Extension::KeygateEnvoy))
            .unwrap();
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let ctx = context(&manifest.name, &groups);
        // Planning also checks the module file's build marker; rendering
        // alone needs no module file.
        let files = crate::local::gateway::config_files(&ctx, manifest).unwrap();
        let text = &files[0].1;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let hcm = hcm(&doc);
        let filter = &hcm["http_filters"][0];
        assert_eq!(filter["name"].as_str(), Some("keygate"));
        let typed = &filter["typed_config"];
        assert_eq!(
            typed["dynamic_module_config"]["name"].as_str(),
            Some("keygate_envoy")
        );
        let config: serde_json::Value =
            serde_json::from_str(typed["filter_config"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(
            config,
            serde_json::json!({
                "cluster": "keygate",
                "invalidations": "127.0.0.1:9002",
                "positive_ttl_ms": 5000,
                "resurrect_ttl_ms": 30000,
                "callout_timeout_ms": 3000,
            })
        );
        assert!(
            !serde_yaml::to_string(hcm).unwrap().contains("ext_authz"),
            "the module replaces ext_authz"
        );
        // One route per group, each naming its group; the catch-all none.
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_sequence()
            .unwrap();
        let named: Vec<(&str, Option<String>)> = routes
            .iter()
            .map(|r| {
                let value = r["typed_per_filter_config"]["keygate"]["filter_config"]["value"]
                    .as_str()
                    .map(|v| {
                        let v: serde_json::Value = serde_json::from_str(v).unwrap();
                        v["group"].as_str().unwrap().to_owned()
                    });
                (r["match"]["prefix"].as_str().unwrap(), value)
            })
            .collect();
        assert_eq!(
            named,
            [
                ("/animal-rescue/", Some("animal-rescue-api".to_owned())),
                ("/billing/", Some("billing-api".to_owned())),
                ("/", None),
            ]
        );
        // The callouts' cluster: keygate's HTTP port, HTTP/1.1.
        let keygate = &doc["static_resources"]["clusters"][0];
        assert_eq!(keygate["name"].as_str(), Some("keygate"));
        assert!(keygate["typed_extension_protocol_options"].is_null());
        // The listener's path handling is the ext_authz gateways'.
        let grpc: serde_yaml::Value = serde_yaml::from_str(
            &crate::local::envoy::render(&ctx, crate::contract::gateways::Contract::Grpc).unwrap(),
        )
        .unwrap();
        for option in [
            "normalize_path",
            "merge_slashes",
            "path_with_escaped_slashes_action",
        ] {
            assert_eq!(hcm[option], self::hcm(&grpc)[option], "{option}");
        }
    }

    #[test]
    fn a_module_for_another_envoy_is_refused_before_envoy_starts() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("libkeygate_envoy.so");
        std::fs::write(&module, b"no marker").unwrap();
        let err = super::loadable(
            crate::process::supervisor::Component::new("e", "/bin/envoy"),
            Path::new("/bin/envoy"),
            &module,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("carries no keygate-envoy build marker"),
            "{err}"
        );
    }
}
