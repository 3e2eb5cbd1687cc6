//! Envoy 1.40 with the ext_authz filter, over gRPC (keygate's
//! `Authorization/Check`) or HTTP (keygate's `/auth` forward-auth). One
//! template, `env/envoy/envoy.yaml.j2`, for both.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::{GatewayContext, Launch, TemplateValues};
use crate::process::Component;

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
}

/// Envoy's config (exposed for `envoy --mode validate` and the tests).
pub fn render(ctx: &GatewayContext, ext_authz: ExtAuthz) -> Result<String> {
    crate::local::render(
        &ctx.env_dir.join("envoy/envoy.yaml.j2"),
        Values {
            common: ctx.template_values(),
            ext_authz,
        },
    )
}

pub fn plan(ctx: &GatewayContext, binary: &Path, ext_authz: ExtAuthz) -> Result<Launch> {
    let config = ctx.dir.join("envoy.yaml");
    // No hot restart: it needs shared memory keyed by a base id, which two
    // Envoys on one machine (two gateways, two runs) would fight over. Logs
    // go to stderr, which is logs/<gateway>.log.
    let component = Component::new(ctx.kind.name(), binary)
        .arg("-c")
        .arg(&config)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "info",
        ])
        .current_dir(&ctx.dir);
    Ok(Launch {
        files: vec![(config, render(ctx, ext_authz)?)],
        component,
        readiness: super::readiness(ctx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::GatewayKind;
    use crate::gateway::tests::context;

    fn doc(kind: GatewayKind, ext_authz: ExtAuthz) -> serde_yaml::Value {
        let groups = crate::scenario::load_default_apis().unwrap();
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
}
