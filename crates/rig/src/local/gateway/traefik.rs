//! Traefik 3.7 with the forwardAuth middleware: a static config
//! (`env/traefik/traefik.yml.j2`) and a file-provider config with the routes
//! (`env/traefik/dynamic.yml.j2`).

use std::path::Path;

use anyhow::Result;

use crate::local::gateway::context::{GatewayContext, Launch};
use crate::process::supervisor::Component;

pub fn plan(ctx: &GatewayContext, binary: &Path) -> Result<Launch> {
    let static_config = ctx.dir.join("traefik.yml");
    let dynamic_config = ctx.dir.join("dynamic.yml");
    let component = Component::new(ctx.kind.name(), binary)
        .arg(format!("--configFile={}", static_config.display()))
        .current_dir(&ctx.dir);
    Ok(Launch {
        files: vec![
            (
                static_config,
                crate::local::gateway::context::render(ctx, "traefik/traefik.yml.j2")?,
            ),
            (
                dynamic_config,
                crate::local::gateway::context::render(ctx, "traefik/dynamic.yml.j2")?,
            ),
        ],
        component,
        readiness: crate::local::gateway::context::readiness(ctx),
    })
}

#[cfg(test)]
mod tests {
    use crate::contract::gateways::GatewayKind;
    use crate::local::gateway::context::tests::context;

    #[test]
    fn forward_auth_copies_the_keyrig_headers_and_distrusts_the_client() {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let ctx = context(GatewayKind::Traefik, &groups);
        let text = crate::local::gateway::context::render(&ctx, "traefik/dynamic.yml.j2").unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let auth = &doc["http"]["middlewares"]["keygate"]["forwardAuth"];
        assert_eq!(auth["address"].as_str(), Some("http://127.0.0.1:9002/auth"));
        assert_eq!(auth["trustForwardHeader"].as_bool(), Some(false));
        assert_eq!(
            serde_yaml::to_string(&auth["authResponseHeaders"]).unwrap(),
            "- x-keyrig-owner\n- x-keyrig-group\n"
        );
        let rules: Vec<_> = ["group-1", "group-2", "catch-all"]
            .iter()
            .map(|r| doc["http"]["routers"][r]["rule"].as_str().unwrap())
            .collect();
        assert_eq!(
            rules,
            [
                "PathPrefix(`/animal-rescue/`)",
                "PathPrefix(`/billing/`)",
                "PathPrefix(`/`)"
            ]
        );
        let statics =
            crate::local::gateway::context::render(&ctx, "traefik/traefik.yml.j2").unwrap();
        let statics: serde_yaml::Value = serde_yaml::from_str(&statics).unwrap();
        assert_eq!(
            statics["providers"]["file"]["filename"].as_str(),
            Some("/tmp/run/gateways/traefik/dynamic.yml")
        );
    }
}
