//! The harness's own Envoy 1.40 with the ext_authz filter (the keys-file
//! gateway, the TLS gateway, the bench's baselines and the kind profile's
//! parity check): the template the Envoy gateways of the catalog render
//! too (`env/envoy/envoy.yaml.j2`, named by their `gateway.toml`), so every
//! Envoy keyrig runs has the same listener (path normalization above all).

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::contract::gateways::Contract;
use crate::local::gateway::context::{GatewayContext, Launch, TemplateValues};
use crate::process::supervisor::Component;

/// The shared template, under `env/`.
pub const TEMPLATE: &str = "envoy/envoy.yaml.j2";

#[derive(Serialize)]
struct Values<'a> {
    #[serde(flatten)]
    common: TemplateValues<'a>,
    /// The ext_authz filter's service: keygate's gRPC Check or HTTP /auth.
    contract: Contract,
    /// The listener serves TLS with a certificate from SDS (rig::local::tls).
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a TlsListener>,
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
pub fn render(ctx: &GatewayContext, contract: Contract) -> Result<String> {
    render_with(ctx, contract, None)
}

/// The same config with a TLS listener (`tls`) instead of a plain one.
pub fn render_with(
    ctx: &GatewayContext,
    contract: Contract,
    tls: Option<&TlsListener>,
) -> Result<String> {
    crate::base::templates::render(
        &ctx.env_dir.join(TEMPLATE),
        Values {
            common: ctx.template_values(),
            contract,
            tls,
        },
    )
}

/// The one Envoy command line the harness's own Envoys run (the Envoy
/// gateways' manifests spell the same): `config`, no hot restart (it needs
/// shared memory keyed by a base id, which two Envoys on one machine, two
/// gateways or two runs, would fight over), one worker thread, and logs at
/// `log_level` on stderr, which is the component's log.
pub fn command(name: &str, binary: &Path, config: &Path, log_level: &str) -> Component {
    Component::new(name, binary)
        .arg("-c")
        .arg(config)
        .args(["--disable-hot-restart", "--concurrency", "1"])
        .args(["--log-level", log_level])
}

/// The harness's Envoy over gRPC ext_authz in front of the context's
/// keygate, as component `name` (the keys-file gateway).
pub fn plan(ctx: &GatewayContext, binary: &Path, name: &str) -> Result<Launch> {
    let config = ctx.dir.join("envoy.yaml");
    let component = command(name, binary, &config, "info").current_dir(&ctx.dir);
    Ok(Launch {
        files: vec![(config, render(ctx, Contract::Grpc)?)],
        component,
        readiness: crate::local::gateway::context::readiness(ctx),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::local::gateway::context::tests::context;

    /// The keygate cluster of an HTTP-contract Envoy: HTTP/1.1 to keygate's
    /// HTTP port, whose idle connections Envoy closes before keygate's idle
    /// timeout would, so no request goes out on a connection keygate is
    /// closing.
    pub(crate) fn assert_http1_closing_idle_first(cluster: &serde_yaml::Value) {
        assert_eq!(cluster["name"].as_str(), Some("keygate"));
        let options = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(options["explicit_http_config"]["http2_protocol_options"].is_null());
        assert!(!options["explicit_http_config"]["http_protocol_options"].is_null());
        let idle = options["common_http_protocol_options"]["idle_timeout"]
            .as_str()
            .and_then(|t| humantime::parse_duration(t).ok())
            .expect("an idle timeout on the keygate cluster");
        assert!(
            idle < keygate::limits::Limits::default().idle_timeout,
            "{idle:?}"
        );
    }

    fn doc(contract: Contract) -> serde_yaml::Value {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let text = render(&context("envoy", &groups), contract).unwrap();
        serde_yaml::from_str(&text).unwrap()
    }

    fn hcm(doc: &serde_yaml::Value) -> &serde_yaml::Value {
        &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    #[test]
    fn routes_every_group_then_the_rest() {
        let doc = doc(Contract::Grpc);
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
        let ctx = context("envoy", &groups);
        let plain: serde_yaml::Value =
            serde_yaml::from_str(&render(&ctx, Contract::Grpc).unwrap()).unwrap();
        let chain = &plain["static_resources"]["listeners"][0]["filter_chains"][0];
        assert!(chain["transport_socket"].is_null());
        let tls = TlsListener {
            secret_name: "gateway-serving".into(),
            sds_file: "/run/sds/gateway-serving.yaml".into(),
            sds_dir: "/run/sds".into(),
        };
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&render_with(&ctx, Contract::Grpc, Some(&tls)).unwrap()).unwrap();
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
        let doc = doc(Contract::Http);
        let filter = &hcm(&doc)["http_filters"][0]["typed_config"];
        assert!(filter["grpc_service"].is_null());
        let service = &filter["http_service"];
        assert_eq!(service["path_prefix"].as_str(), Some("/auth"));
        assert_eq!(
            service["authorization_request"]["allowed_headers"]["patterns"][0]["exact"].as_str(),
            Some("x-api-key")
        );
        let keygate = &doc["static_resources"]["clusters"][0];
        assert_http1_closing_idle_first(keygate);
        assert_eq!(
            keygate["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"]
                .as_u64(),
            Some(9002)
        );
    }
}
