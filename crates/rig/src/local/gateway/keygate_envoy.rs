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
