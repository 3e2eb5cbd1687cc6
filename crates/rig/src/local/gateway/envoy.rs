//! Envoy 1.40 with the ext_authz filter, over gRPC (keygate's
//! `Authorization/Check`) or HTTP (keygate's `/auth` forward-auth), or with
//! keygate inside it (the `keygate-envoy` dynamic module, gateway
//! `envoy-module`). One template, `env/envoy/envoy.yaml.j2`, for all three,
//! so their listeners (path normalization above all) cannot drift apart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::local::gateway::context::{EnvoyModuleSettings, GatewayContext, Launch, TemplateValues};
use crate::process::supervisor::Component;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtAuthz {
    Grpc,
    Http,
}

#[derive(Serialize)]
struct Values<'a> {
    #[serde(flatten)]
    common: TemplateValues<'a>,
    ext_authz: ExtAuthz,
    /// The listener serves TLS with a certificate from SDS (rig::local::tls).
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a TlsListener>,
    /// keygate's dynamic module instead of the ext_authz filter; the
    /// `keygate` cluster is then the HTTP one (`ext_authz` Http), which the
    /// module's callouts use.
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<ModuleValues>,
}

/// The module's two configs as the JSON strings Envoy hands it
/// (`keygate_envoy::config`).
#[derive(Debug, Serialize)]
struct ModuleValues {
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
    fn new(ctx: &GatewayContext, settings: &EnvoyModuleSettings) -> Result<Self> {
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

/// A TLS listener's certificate source: an SDS file (path_config_source)
/// in a directory Envoy watches for the atomic `..data` swap.
#[derive(Debug, Clone, Serialize)]
pub struct TlsListener {
    /// The SDS secret's name (`resources[0].name` in the file).
    pub secret_name: String,
    pub sds_file: std::path::PathBuf,
    pub sds_dir: std::path::PathBuf,
}

/// Envoy's config (exposed for `envoy --mode validate` and the tests).
pub fn render(ctx: &GatewayContext, ext_authz: ExtAuthz) -> Result<String> {
    render_with(ctx, ext_authz, None)
}

/// The same config with a TLS listener (`tls`) instead of a plain one.
pub fn render_with(
    ctx: &GatewayContext,
    ext_authz: ExtAuthz,
    tls: Option<&TlsListener>,
) -> Result<String> {
    crate::base::templates::render(
        &ctx.env_dir.join("envoy/envoy.yaml.j2"),
        Values {
            common: ctx.template_values(),
            ext_authz,
            tls,
            module: None,
        },
    )
}

/// Envoy's config for the `envoy-module` gateway: keygate's dynamic module
/// with the run's cache settings, each group's route naming its group.
pub fn render_module(ctx: &GatewayContext, settings: &EnvoyModuleSettings) -> Result<String> {
    crate::base::templates::render(
        &ctx.env_dir.join("envoy/envoy.yaml.j2"),
        Values {
            common: ctx.template_values(),
            ext_authz: ExtAuthz::Http,
            tls: None,
            module: Some(ModuleValues::new(ctx, settings)?),
        },
    )
}

/// The one Envoy command line keyrig runs (gateways, the TLS gateway, the
/// bench's baselines): `config`, no hot restart (it needs shared memory
/// keyed by a base id, which two Envoys on one machine, two gateways or
/// two runs, would fight over), one worker thread, and logs at `log_level`
/// on stderr, which is the component's log.
pub fn command(name: &str, binary: &Path, config: &Path, log_level: &str) -> Component {
    Component::new(name, binary)
        .arg("-c")
        .arg(config)
        .args(["--disable-hot-restart", "--concurrency", "1"])
        .args(["--log-level", log_level])
}

pub fn plan(ctx: &GatewayContext, binary: &Path, ext_authz: ExtAuthz) -> Result<Launch> {
    let config = ctx.dir.join("envoy.yaml");
    let component = command(ctx.kind.name(), binary, &config, "info").current_dir(&ctx.dir);
    Ok(Launch {
        files: vec![(config, render(ctx, ext_authz)?)],
        component,
        readiness: crate::local::gateway::context::readiness(ctx),
    })
}

/// The `envoy-module` gateway: Envoy started with the module loadable,
/// after the check of the module's build marker against this Envoy's
/// version (`rig::process::envoy_module::command`: a module for another
/// release series is refused there, naming both, before Envoy runs).
pub fn plan_module(ctx: &GatewayContext, binary: &Path) -> Result<Launch> {
    let settings = ctx.envoy_module.with_context(|| {
        format!(
            "the {} gateway needs keygate's Envoy module (GatewayContext::envoy_module)",
            ctx.kind
        )
    })?;
    let config = ctx.dir.join("envoy.yaml");
    let component = crate::process::envoy_module::command(
        ctx.kind.name(),
        binary,
        &config,
        &settings.library,
        "info",
    )?
    .current_dir(&ctx.dir);
    Ok(Launch {
        files: vec![(config, render_module(ctx, settings)?)],
        component,
        readiness: crate::local::gateway::context::readiness(ctx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::gateways::GatewayKind;
    use crate::local::gateway::context::tests::context;

    fn doc(kind: GatewayKind, ext_authz: ExtAuthz) -> serde_yaml::Value {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let text = render(&context(kind, &groups), ext_authz).unwrap();
        serde_yaml::from_str(&text).unwrap()
    }

    fn hcm(doc: &serde_yaml::Value) -> &serde_yaml::Value {
        &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    #[test]
    fn routes_every_group_then_the_rest() {
        let doc = doc(GatewayKind::EnvoyGrpc, ExtAuthz::Grpc);
        let routes = &hcm(&doc)["route_config"]["virtual_hosts"][0]["routes"];
        let prefixes: Vec<_> = routes
            .as_sequence()
            .unwrap()
            .iter()
            .map(|r| r["match"]["prefix"].as_str().unwrap())
            .collect();
        assert_eq!(prefixes, ["/animal-rescue/", "/billing/", "/"]);
        assert_eq!(
            doc["admin"]["address"]["socket_address"]["port_value"].as_u64(),
            Some(10001)
        );
    }

    #[test]
    fn a_tls_listener_takes_its_certificate_from_a_watched_sds_file() {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let ctx = context(GatewayKind::EnvoyGrpc, &groups);
        let plain: serde_yaml::Value =
            serde_yaml::from_str(&render(&ctx, ExtAuthz::Grpc).unwrap()).unwrap();
        let chain = &plain["static_resources"]["listeners"][0]["filter_chains"][0];
        assert!(chain["transport_socket"].is_null());
        let tls = TlsListener {
            secret_name: "gateway-serving".into(),
            sds_file: "/run/sds/gateway-serving.yaml".into(),
            sds_dir: "/run/sds".into(),
        };
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&render_with(&ctx, ExtAuthz::Grpc, Some(&tls)).unwrap()).unwrap();
        let chain = &doc["static_resources"]["listeners"][0]["filter_chains"][0];
        let sds = &chain["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"]
            [0];
        assert_eq!(sds["name"].as_str(), Some("gateway-serving"));
        let source = &sds["sds_config"]["path_config_source"];
        assert_eq!(
            source["path"].as_str(),
            Some("/run/sds/gateway-serving.yaml")
        );
        assert_eq!(
            source["watched_directory"]["path"].as_str(),
            Some("/run/sds")
        );
        // Routes and ext_authz are the plain listener's.
        assert_eq!(
            chain["filters"],
            plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        );
    }

    #[test]
    fn http_mode_asks_keygate_at_auth_with_the_api_key() {
        let doc = doc(GatewayKind::EnvoyHttp, ExtAuthz::Http);
        let filter = &hcm(&doc)["http_filters"][0]["typed_config"];
        assert!(filter["grpc_service"].is_null());
        let service = &filter["http_service"];
        assert_eq!(service["path_prefix"].as_str(), Some("/auth"));
        assert_eq!(
            service["authorization_request"]["allowed_headers"]["patterns"][0]["exact"].as_str(),
            Some("x-api-key")
        );
        let keygate = &doc["static_resources"]["clusters"][0];
        assert!(keygate["typed_extension_protocol_options"].is_null());
        assert_eq!(
            keygate["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"]
                .as_u64(),
            Some(9002)
        );
    }

    #[test]
    fn module_mode_names_each_group_on_its_route_and_follows_keygates_cache() {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let ctx = context(GatewayKind::EnvoyModule, &groups);
        let settings = ctx.envoy_module.unwrap();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&render_module(&ctx, settings).unwrap()).unwrap();
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
        assert_eq!(
            keygate["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"]
                .as_u64(),
            Some(9002)
        );
        // The listener's path handling is the ext_authz gateways'.
        let grpc = self::doc(GatewayKind::EnvoyGrpc, ExtAuthz::Grpc);
        for option in [
            "normalize_path",
            "merge_slashes",
            "path_with_escaped_slashes_action",
        ] {
            assert_eq!(hcm[option], self::hcm(&grpc)[option], "{option}");
        }
    }

    #[test]
    fn the_module_gateway_is_not_planned_without_its_module() {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let mut ctx = context(GatewayKind::EnvoyModule, &groups);
        ctx.envoy_module = None;
        let err = plan_module(&ctx, Path::new("/bin/envoy"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs keygate's Envoy module"), "{err}");
    }
}
