//! The gateway in front of keygate, as a pluggable part: each implementation
//! renders its config from the scenario's API groups (templates under
//! `env/<gateway>/`), is started under the [`Supervisor`] with one readiness
//! probe, and is stopped with everything else on teardown.
//!
//! Every gateway sends each request to keygate first (gRPC or HTTP
//! forward-auth) and only a 200 reaches the upstream, with keygate's
//! `x-keyrig-owner` and `x-keyrig-group` headers.

pub mod caddy;
pub mod envoy;
pub mod nginx;
pub mod traefik;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::contract::gateways::GatewayKind;
use crate::contract::scenario::ApiGroup;
use crate::process::supervisor::{Component, Readiness, Supervisor};

/// A path no API group serves: keygate answers 403 `no-route` for it, so a
/// 403 there shows the gateway listens, routes and asks keygate.
pub const READINESS_PATH: &str = "/keyrig-readiness-probe";

/// The config files and the process for this gateway.
pub fn plan(ctx: &GatewayContext, binary: &Path) -> Result<Launch> {
    match ctx.kind {
        GatewayKind::EnvoyGrpc => envoy::plan(ctx, binary, envoy::ExtAuthz::Grpc),
        GatewayKind::EnvoyHttp => envoy::plan(ctx, binary, envoy::ExtAuthz::Http),
        GatewayKind::Traefik => traefik::plan(ctx, binary),
        GatewayKind::Nginx => nginx::plan(ctx, binary),
        GatewayKind::Caddy => caddy::plan(ctx, binary),
    }
}

/// Everything a gateway's config is rendered from.
#[derive(Debug, Clone)]
pub struct GatewayContext<'a> {
    pub kind: GatewayKind,
    pub groups: &'a [ApiGroup],
    /// Where clients connect.
    pub listen: SocketAddr,
    /// A second port for the gateway's own use (Envoy's admin listener).
    pub admin: SocketAddr,
    pub keygate_grpc: SocketAddr,
    pub keygate_http: SocketAddr,
    pub upstream: SocketAddr,
    /// `target/rig/<run>/gateways/<name>/`: config files and the gateway's state.
    pub dir: PathBuf,
    /// Holds the templates (`env/<gateway>/...`).
    pub env_dir: &'a Path,
}

impl GatewayContext<'_> {
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// What every template sees: addresses, the run's directory for this
    /// gateway, and the groups longest route prefix first, so a nested group
    /// wins over its parent in gateways that match in order.
    pub fn template_values(&self) -> TemplateValues<'_> {
        let mut groups: Vec<&ApiGroup> = self.groups.iter().collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.route_prefix.len()));
        TemplateValues {
            gateway: self.kind.name(),
            listen: self.listen.to_string(),
            listen_port: self.listen.port(),
            admin: self.admin.to_string(),
            admin_port: self.admin.port(),
            keygate_grpc: self.keygate_grpc.to_string(),
            keygate_grpc_port: self.keygate_grpc.port(),
            keygate_http: self.keygate_http.to_string(),
            keygate_http_port: self.keygate_http.port(),
            upstream: self.upstream.to_string(),
            upstream_port: self.upstream.port(),
            dir: self.dir.clone(),
            root_group: self.groups.iter().any(|g| g.route_prefix == "/"),
            groups,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TemplateValues<'a> {
    pub gateway: &'static str,
    pub listen: String,
    pub listen_port: u16,
    pub admin: String,
    pub admin_port: u16,
    pub keygate_grpc: String,
    pub keygate_grpc_port: u16,
    pub keygate_http: String,
    pub keygate_http_port: u16,
    pub upstream: String,
    pub upstream_port: u16,
    pub dir: PathBuf,
    /// A group served at `/` replaces the catch-all route.
    pub root_group: bool,
    pub groups: Vec<&'a ApiGroup>,
}

/// A gateway ready to start: files to write first, then the process.
#[derive(Debug)]
pub struct Launch {
    /// (path, contents); paths are under the context's `dir`.
    pub files: Vec<(PathBuf, String)>,
    pub component: Component,
    pub readiness: Readiness,
}

/// The probe every gateway shares: keygate's 403 for [`READINESS_PATH`]
/// through the gateway's listener.
pub fn readiness(ctx: &GatewayContext) -> Readiness {
    Readiness::http(format!("{}{READINESS_PATH}", ctx.url()), 403)
}

/// Renders `env/<template>` with the context's values.
pub fn render(ctx: &GatewayContext, template: &str) -> Result<String> {
    crate::base::templates::render(&ctx.env_dir.join(template), ctx.template_values())
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

    /// A context with fixed ports for the render tests of each gateway.
    pub(crate) fn context(kind: GatewayKind, groups: &[ApiGroup]) -> GatewayContext<'_> {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        GatewayContext {
            kind,
            groups,
            listen: addr(10000),
            admin: addr(10001),
            keygate_grpc: addr(9001),
            keygate_http: addr(9002),
            upstream: addr(9003),
            dir: PathBuf::from("/tmp/run/gateways").join(kind.name()),
            env_dir: Box::leak(Box::new(crate::base::paths::env_dir())),
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for kind in GatewayKind::ALL {
            assert_eq!(GatewayKind::parse(kind.name()).unwrap(), kind);
        }
        let err = GatewayKind::parse("haproxy").unwrap_err().to_string();
        assert_eq!(
            err,
            "no gateway called \"haproxy\": choose one of envoy-grpc, envoy-http, traefik, nginx, caddy"
        );
    }
}
