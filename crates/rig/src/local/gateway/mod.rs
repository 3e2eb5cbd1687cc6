//! The gateway in front of keygate, as a pluggable part: each implementation
//! renders its config from the scenario's API groups (templates under
//! `env/<gateway>/`), is started under the [`Supervisor`] with one readiness
//! probe, and is stopped with everything else on teardown.
//!
//! Every gateway sends each request to keygate first (gRPC or HTTP
//! forward-auth) and only a 200 reaches the upstream, with keygate's
//! `x-keyrig-owner` and `x-keyrig-group` headers.

pub mod caddy;
pub mod context;
pub mod envoy;
pub mod nginx;
pub mod traefik;

use std::path::Path;

use anyhow::{Context, Result};

use crate::contract::gateways::GatewayKind;
use crate::local::gateway::context::{GatewayContext, Launch};
use crate::process::supervisor::Supervisor;

/// The config files and the process for this gateway.
pub fn plan(ctx: &GatewayContext, binary: &Path) -> Result<Launch> {
    match ctx.kind {
        GatewayKind::EnvoyGrpc => envoy::plan(ctx, binary, envoy::ExtAuthz::Grpc),
        GatewayKind::EnvoyHttp => envoy::plan(ctx, binary, envoy::ExtAuthz::Http),
        GatewayKind::EnvoyModule => envoy::plan_module(ctx, binary),
        GatewayKind::Traefik => traefik::plan(ctx, binary),
        GatewayKind::Nginx => nginx::plan(ctx, binary),
        GatewayKind::Caddy => caddy::plan(ctx, binary),
    }
}

/// Writes the config and starts the gateway; returns its URL once the
/// readiness probe holds. Stopping is the supervisor's (teardown, Ctrl-C,
/// panic), like every other component.
pub async fn start(
    ctx: &GatewayContext<'_>,
    binary: &Path,
    supervisor: &mut Supervisor,
) -> Result<String> {
    let launch = plan(ctx, binary)?;
    std::fs::create_dir_all(&ctx.dir).with_context(|| format!("creating {}", ctx.dir.display()))?;
    for (path, text) in &launch.files {
        std::fs::write(path, text)
            .with_context(|| format!("writing {}'s config {}", ctx.kind, path.display()))?;
    }
    supervisor
        .start(launch.component, launch.readiness)
        .await
        .with_context(|| format!("the {} gateway did not start", ctx.kind))?;
    Ok(ctx.url())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for kind in GatewayKind::ALL {
            assert_eq!(GatewayKind::parse(kind.name()).unwrap(), kind);
        }
        let err = GatewayKind::parse("haproxy").unwrap_err().to_string();
        assert_eq!(
            err,
            "no gateway called \"haproxy\": choose one of envoy-grpc, envoy-http, envoy-module, traefik, nginx, caddy"
        );
    }
}
