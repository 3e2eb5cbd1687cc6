//! What every gateway's config is rendered from and what its plan is made
//! of: the context (ports, groups, directories), the launch (files, process,
//! readiness) and the readiness probe they share. Its own module so the
//! gateways and the code that starts them both import it, and neither the
//! other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::contract::scenario::ApiGroup;
use crate::process::supervisor::{Component, Readiness};

pub use crate::contract::gateways::READINESS_PATH;

/// Everything a gateway's config is rendered from.
#[derive(Debug, Clone)]
pub struct GatewayContext<'a> {
    /// The gateway's name (its catalog directory's), or the harness
    /// component's (`envoy-tls`).
    pub name: &'a str,
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
    /// `env/`: the harness's own templates (`envoy/envoy.yaml.j2`).
    pub env_dir: &'a Path,
    /// What the `envoy-module` gateway needs besides Envoy; `None` where
    /// no such gateway is planned (the keys-file and TLS Envoys).
    pub envoy_module: Option<&'a EnvoyModuleSettings>,
}

/// The `envoy-module` gateway's own inputs: keygate's dynamic module and
/// the cache settings of the run's keygate, which the module's table
/// follows (an entry lives as long as keygate's cache would keep it).
#[derive(Debug, Clone)]
pub struct EnvoyModuleSettings {
    /// `libkeygate_envoy.so` (built beside keygate).
    pub library: PathBuf,
    /// keygate's `cache.positive_ttl`.
    pub positive_ttl: Duration,
    /// keygate's `cache.negative_ttl`.
    pub negative_ttl: Duration,
    /// keygate's `cache.resurrect_ttl`.
    pub resurrect_ttl: Duration,
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
            gateway: self.name,
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
    pub gateway: &'a str,
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

/// The probe every gateway shares by default: keygate's 403 for
/// [`READINESS_PATH`] through the gateway's listener.
pub fn readiness(ctx: &GatewayContext) -> Readiness {
    Readiness::http(format!("{}{READINESS_PATH}", ctx.url()), 403)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A context with fixed ports for the render tests of each gateway.
    pub(crate) fn context<'a>(name: &'a str, groups: &'a [ApiGroup]) -> GatewayContext<'a> {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        GatewayContext {
            name,
            groups,
            listen: addr(10000),
            admin: addr(10001),
            keygate_grpc: addr(9001),
            keygate_http: addr(9002),
            upstream: addr(9003),
            dir: PathBuf::from("/tmp/run/gateways").join(name),
            env_dir: Box::leak(Box::new(crate::base::paths::env_dir())),
            envoy_module: Some(Box::leak(Box::new(EnvoyModuleSettings {
                library: PathBuf::from("/w/target/debug/libkeygate_envoy.so"),
                positive_ttl: Duration::from_secs(5),
                negative_ttl: Duration::from_secs(1),
                resurrect_ttl: Duration::from_secs(30),
            }))),
        }
    }
}
