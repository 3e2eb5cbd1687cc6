//! Caddy 2.11 with `forward_auth` (`env/caddy/Caddyfile.j2`), adapted from
//! the Caddyfile at start. Its data and config homes point into the run, so
//! nothing lands in the user's home.

use std::path::Path;

use anyhow::Result;

use crate::local::gateway::context::{GatewayContext, Launch};
use crate::process::supervisor::Component;

pub fn plan(ctx: &GatewayContext, binary: &Path) -> Result<Launch> {
    let config = ctx.dir.join("Caddyfile");
    let component = Component::new(ctx.kind.name(), binary)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        .env("XDG_DATA_HOME", ctx.dir.join("data"))
        .env("XDG_CONFIG_HOME", ctx.dir.join("config"))
        .current_dir(&ctx.dir);
    Ok(Launch {
        files: vec![(
            config,
            crate::local::gateway::context::render(ctx, "caddy/Caddyfile.j2")?,
        )],
        component,
        readiness: crate::local::gateway::context::readiness(ctx),
    })
}

#[cfg(test)]
mod tests {
    use crate::contract::gateways::GatewayKind;
    use crate::local::gateway::context::tests::context;

    #[test]
    fn every_route_imports_forward_auth() {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let ctx = context(GatewayKind::Caddy, &groups);
        let text = crate::local::gateway::context::render(&ctx, "caddy/Caddyfile.j2").unwrap();
        assert!(text.contains("http://127.0.0.1:10000 {"), "{text}");
        assert!(text.contains("handle \"/animal-rescue/*\" {"), "{text}");
        assert!(text.contains("handle \"/billing/*\" {"), "{text}");
        assert_eq!(text.matches("import keygate").count(), 3);
        assert!(text.contains("copy_headers X-Keyrig-Owner X-Keyrig-Group"));
    }
}
