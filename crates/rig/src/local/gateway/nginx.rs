//! nginx (from Debian) with `auth_request`: `env/nginx/nginx.conf.j2` and the
//! per-location `env/nginx/keygate.conf.j2`. It runs unprivileged-style:
//! `-p <run>/gateways/nginx/`, its own pid file and temp paths, `daemon off`
//! so the supervisor holds the master, errors on stderr (the log).

use std::path::Path;

use anyhow::Result;

use crate::local::gateway::context::{GatewayContext, Launch};
use crate::process::supervisor::Component;

pub fn plan(ctx: &GatewayContext, binary: &Path) -> Result<Launch> {
    let config = ctx.dir.join("nginx.conf");
    // -e: the error log before the config is read (else /var/log/nginx).
    let component = Component::new(ctx.kind.name(), binary)
        .arg("-p")
        .arg(&ctx.dir)
        .arg("-c")
        .arg(&config)
        .args(["-e", "stderr"])
        .current_dir(&ctx.dir);
    Ok(Launch {
        files: vec![
            (
                config,
                crate::local::gateway::context::render(ctx, "nginx/nginx.conf.j2")?,
            ),
            (
                ctx.dir.join("keygate.conf"),
                crate::local::gateway::context::render(ctx, "nginx/keygate.conf.j2")?,
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
    fn every_route_includes_the_auth_request_and_state_stays_in_the_run() {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let ctx = context(GatewayKind::Nginx, &groups);
        let text = crate::local::gateway::context::render(&ctx, "nginx/nginx.conf.j2").unwrap();
        for location in ["\"/animal-rescue/\"", "\"/billing/\"", "/"] {
            assert!(text.contains(&format!("location {location} {{")), "{text}");
        }
        assert_eq!(
            text.matches("include \"/tmp/run/gateways/nginx/keygate.conf\";")
                .count(),
            3
        );
        assert!(text.contains("pid \"/tmp/run/gateways/nginx/nginx.pid\";"));
        assert!(text.contains("proxy_set_header X-Original-URI $request_uri;"));
        let include =
            crate::local::gateway::context::render(&ctx, "nginx/keygate.conf.j2").unwrap();
        assert!(include.contains("proxy_set_header x-keyrig-owner $keyrig_owner;"));
        assert!(include.contains("add_header x-keyrig-reason $keyrig_reason always;"));
    }
}
