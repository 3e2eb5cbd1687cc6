//! The gateways of the matrix by name: what env.json, the command line and
//! the results table call them. How each is configured and started is
//! `local::gateway`.

use std::fmt;

use anyhow::{Result, bail};

/// The gateways keyrig can put in front of keygate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GatewayKind {
    /// Envoy with the gRPC ext_authz filter (the default gateway).
    EnvoyGrpc,
    /// Envoy with the HTTP ext_authz filter.
    EnvoyHttp,
    /// Envoy with keygate inside it: the `keygate-envoy` dynamic module
    /// (a table of keygate's answers, keygate asked over an HTTP callout on
    /// a miss, its invalidation feed followed).
    EnvoyModule,
    /// Traefik's forwardAuth middleware.
    Traefik,
    /// nginx's auth_request module.
    Nginx,
    /// Caddy's forward_auth directive.
    Caddy,
}

impl GatewayKind {
    pub const ALL: [GatewayKind; 6] = [
        GatewayKind::EnvoyGrpc,
        GatewayKind::EnvoyHttp,
        GatewayKind::EnvoyModule,
        GatewayKind::Traefik,
        GatewayKind::Nginx,
        GatewayKind::Caddy,
    ];

    /// env.json's `skipped_gateways` of an environment that runs `own`
    /// only: every other gateway of the matrix, with `why` it does not run.
    pub fn all_but(
        own: GatewayKind,
        why: impl Fn(GatewayKind) -> String,
    ) -> std::collections::BTreeMap<String, String> {
        Self::ALL
            .into_iter()
            .filter(|kind| *kind != own)
            .map(|kind| (kind.name().to_owned(), why(kind)))
            .collect()
    }

    /// The name in env.json, on the command line and in the results matrix.
    pub fn name(self) -> &'static str {
        match self {
            GatewayKind::EnvoyGrpc => "envoy-grpc",
            GatewayKind::EnvoyHttp => "envoy-http",
            GatewayKind::EnvoyModule => "envoy-module",
            GatewayKind::Traefik => "traefik",
            GatewayKind::Nginx => "nginx",
            GatewayKind::Caddy => "caddy",
        }
    }

    /// The pinned tool (env/tools.toml) that runs it.
    pub fn tool(self) -> &'static str {
        match self {
            GatewayKind::EnvoyGrpc | GatewayKind::EnvoyHttp | GatewayKind::EnvoyModule => "envoy",
            GatewayKind::Traefik => "traefik",
            GatewayKind::Nginx => "nginx",
            GatewayKind::Caddy => "caddy",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match Self::ALL.iter().find(|k| k.name() == name) {
            Some(kind) => Ok(*kind),
            None => bail!(
                "no gateway called {name:?}: choose one of {}",
                Self::ALL.map(GatewayKind::name).join(", ")
            ),
        }
    }
}

impl fmt::Display for GatewayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/gateways.md states, per gateway, what tests/gateways.rs and the
    /// hostile-request case assert: a gateway added here needs its row in
    /// the matrix table and its column in the compatibility table.
    #[test]
    fn the_gateway_docs_have_a_row_and_a_column_per_gateway() {
        let file = crate::base::paths::workspace_root().join("docs/gateways.md");
        let text = std::fs::read_to_string(&file).unwrap();
        for kind in GatewayKind::ALL {
            assert!(
                text.contains(&format!("\n| `{}` |", kind.name())),
                "{}: the gateway matrix table has no row for {kind}",
                file.display()
            );
        }
        let header = text
            .lines()
            .find(|l| l.starts_with("| behaviour |"))
            .expect("docs/gateways.md has the compatibility table");
        let columns: Vec<&str> = header
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .skip(1)
            .collect();
        assert_eq!(columns, GatewayKind::ALL.map(GatewayKind::name));
    }
}
