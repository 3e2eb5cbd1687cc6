//! The auth paths compared, and the three baseline Envoys the local profile
//! does not start (no auth; Envoy's native `api_key_auth` filter; the
//! pass-through dynamic module, `crates/bench-module`). They run
//! under the run's `Supervisor` like every component: readiness probe, log
//! in `logs/<name>.log`, stopped on teardown, Ctrl-C and panic.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use rig::base::run::RunDir;
use rig::process::supervisor::{Readiness, Supervisor};

/// One auth path through a gateway to the same upstream.
/// Serialized under the names the table prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Variant {
    /// Envoy, no auth filter: the ceiling.
    #[serde(rename = "envoy-no-auth")]
    NoAuth,
    /// Envoy's `envoy.filters.http.api_key_auth`, keys in static config.
    #[serde(rename = "envoy-api-key-auth")]
    Native,
    /// The same filter forwarding the key's client upstream in one header
    /// (`forwarding`): part of what keygate's module does on every allowed
    /// request (it adds owner and group), so the two compare on more
    /// similar work.
    #[serde(rename = "envoy-api-key-auth-forwarding")]
    NativeForwarding,
    /// Envoy with a dynamic module that lets every request through
    /// (`crates/bench-module`): what any module costs before it decides
    /// anything, the floor under keygate's.
    #[serde(rename = "envoy-module-passthrough")]
    ModuleFloor,
    /// Envoy + keygate over gRPC ext_authz, the key cached.
    #[serde(rename = "keygate-grpc-warm")]
    KeygateGrpc,
    /// Envoy + keygate over HTTP ext_authz, the key cached.
    #[serde(rename = "keygate-http-warm")]
    KeygateHttp,
    /// Envoy + keygate over gRPC, a key keygate has never seen on every
    /// request: each one a Vault read.
    #[serde(rename = "keygate-grpc-cold")]
    KeygateCold,
    /// Envoy with keygate's dynamic module, the key in the module's table:
    /// decided inside Envoy, no round trip.
    #[serde(rename = "keygate-envoy-module-warm")]
    ModuleWarm,
    /// Envoy with keygate's module, a key new to the module but in
    /// keygate's cache, as for a second Envoy replica behind one keygate
    /// (or an Envoy just restarted): the module's callout, answered from
    /// keygate's cache without a Vault read.
    #[serde(rename = "keygate-envoy-module-miss")]
    ModuleMiss,
    /// Envoy with keygate's module, a key new to the module (and to
    /// keygate) on every request: the module's callout to keygate, and
    /// keygate's Vault read, as `keygate-grpc-cold` does over ext_authz.
    #[serde(rename = "keygate-envoy-module-cold")]
    ModuleCold,
}

impl Variant {
    pub const ALL: [Variant; 10] = [
        Variant::NoAuth,
        Variant::Native,
        Variant::NativeForwarding,
        Variant::ModuleFloor,
        Variant::KeygateGrpc,
        Variant::KeygateHttp,
        Variant::KeygateCold,
        Variant::ModuleWarm,
        Variant::ModuleMiss,
        Variant::ModuleCold,
    ];

    /// The variants the module's targets compare (the native filter, the
    /// pass-through floor, the module warm): run back to back in every
    /// round (`stats::interleave_paired`), so each round's ratios between
    /// them are taken on the same machine minute.
    pub const PAIRED: [Variant; 4] = [
        Variant::Native,
        Variant::NativeForwarding,
        Variant::ModuleFloor,
        Variant::ModuleWarm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::NoAuth => "envoy-no-auth",
            Variant::Native => "envoy-api-key-auth",
            Variant::NativeForwarding => "envoy-api-key-auth-forwarding",
            Variant::ModuleFloor => "envoy-module-passthrough",
            Variant::KeygateGrpc => "keygate-grpc-warm",
            Variant::KeygateHttp => "keygate-http-warm",
            Variant::KeygateCold => "keygate-grpc-cold",
            Variant::ModuleWarm => "keygate-envoy-module-warm",
            Variant::ModuleMiss => "keygate-envoy-module-miss",
            Variant::ModuleCold => "keygate-envoy-module-cold",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Variant::NoAuth => "Envoy, no auth filter (ceiling)",
            Variant::Native => "Envoy native api_key_auth, keys in static config",
            Variant::NativeForwarding => {
                "Envoy native api_key_auth forwarding the key's client upstream in x-keyrig-owner"
            }
            Variant::ModuleFloor => {
                "Envoy + a dynamic module that lets everything through (the floor under any module)"
            }
            Variant::KeygateGrpc => "Envoy + keygate gRPC ext_authz, warm cache",
            Variant::KeygateHttp => "Envoy + keygate HTTP ext_authz, warm cache",
            Variant::KeygateCold => {
                "Envoy + keygate gRPC ext_authz, cold cache (Vault read per request)"
            }
            Variant::ModuleWarm => "Envoy + keygate's dynamic module, key in the module's table",
            Variant::ModuleMiss => {
                "Envoy + keygate's dynamic module, key new to it but cached by keygate (callout, no Vault read)"
            }
            Variant::ModuleCold => {
                "Envoy + keygate's dynamic module, key new to it (callout to keygate, Vault read per request)"
            }
        }
    }
}

#[derive(Serialize)]
struct Credential<'a> {
    key: &'a str,
    client: String,
}

#[derive(Serialize)]
struct Values<'a> {
    auth: &'a str,
    module_name: &'a str,
    listen_port: u16,
    admin_port: u16,
    upstream_port: u16,
    credentials: Vec<Credential<'a>>,
    /// `api_key_auth` only: forward the client in this header.
    forward_header: Option<&'a str>,
}

/// The auth of a baseline Envoy.
pub enum BaselineAuth<'a> {
    /// No auth filter.
    None,
    /// `api_key_auth` with these keys, forwarding the client upstream in
    /// `forward_header` when set.
    ApiKeyAuth {
        keys: &'a [String],
        forward_header: Option<&'a str>,
    },
    /// The pass-through dynamic module, this `libkeyrig_bench_module.so`.
    PassthroughModule(&'a Path),
}

/// The module's name in Envoy's config, found as `lib<name>.so`.
const PASSTHROUGH_MODULE_NAME: &str = "keyrig_bench_module";

/// Starts a baseline Envoy in front of `upstream`; returns its URL once
/// ready.
#[allow(clippy::too_many_arguments)]
pub async fn start_baseline_envoy(
    name: &str,
    auth: BaselineAuth<'_>,
    upstream: SocketAddr,
    envoy: &Path,
    env_dir: &Path,
    run: &RunDir,
    supervisor: &mut Supervisor,
) -> Result<String> {
    // rig's ports: never the same one twice in this process, outside the
    // ephemeral range the kernel hands out.
    let (listen_port, admin_port) = (
        rig::base::ports::free_port()?,
        rig::base::ports::free_port()?,
    );
    let (auth_name, keys, module, forward_header) = match auth {
        BaselineAuth::None => ("none", &[][..], None, None),
        BaselineAuth::ApiKeyAuth {
            keys,
            forward_header,
        } => ("api_key_auth", keys, None, forward_header),
        BaselineAuth::PassthroughModule(module) => {
            ("module_passthrough", &[][..], Some(module), None)
        }
    };
    let text = rig::base::templates::render(
        &env_dir.join("bench/envoy.yaml.j2"),
        Values {
            auth: auth_name,
            module_name: PASSTHROUGH_MODULE_NAME,
            listen_port,
            admin_port,
            upstream_port: upstream.port(),
            credentials: keys
                .iter()
                .enumerate()
                .map(|(n, key)| Credential {
                    key,
                    client: format!("bench-client-{n}"),
                })
                .collect(),
            forward_header,
        },
    )?;
    // The api_key_auth config holds keys: a 0600 file under secrets/.
    let config =
        rig::base::run::write_secret_file(&run.secrets_dir().join(format!("{name}.yaml")), &text)?;
    let dir = run.path().join("gateways").join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let url = format!("http://127.0.0.1:{listen_port}");
    // No auth and the pass-through: the upstream's 200; api_key_auth: its
    // 401 for a request without a key.
    let ready_status = if auth_name == "api_key_auth" {
        401
    } else {
        200
    };
    // The gateways' log level (env/gateways/*/gateway.toml): the same flags
    // on both sides of every ratio.
    let mut component = rig::local::envoy::command(name, envoy, &config, "info").current_dir(&dir);
    if let Some(module) = module {
        let expected = format!("lib{PASSTHROUGH_MODULE_NAME}.so");
        let dir = module
            .parent()
            .filter(|_| module.file_name().and_then(|n| n.to_str()) == Some(expected.as_str()))
            .with_context(|| {
                format!(
                    "{}: Envoy finds the bench's pass-through module as {expected} in {}; build it with `cargo build -p keyrig-bench-module`",
                    module.display(),
                    rig::process::envoy_module::SEARCH_PATH_VAR
                )
            })?;
        if !module.is_file() {
            anyhow::bail!(
                "{} is missing: build it with `cargo build -p keyrig-bench-module`",
                module.display()
            );
        }
        component = component.env(rig::process::envoy_module::SEARCH_PATH_VAR, dir);
    }
    supervisor
        .start(
            component,
            Readiness::http(format!("{url}/healthz"), ready_status),
        )
        .await
        .with_context(|| format!("the {name} baseline Envoy did not start"))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_are_the_table_names() {
        for v in Variant::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.name());
        }
    }

    /// The native filter's config as rendered for the bench.
    fn native_filter(forward_header: Option<&str>) -> serde_yaml::Value {
        let keys = ["a".repeat(64), "b".repeat(64)];
        let text = rig::base::templates::render(
            &rig::base::paths::env_dir().join("bench/envoy.yaml.j2"),
            Values {
                auth: "api_key_auth",
                module_name: PASSTHROUGH_MODULE_NAME,
                listen_port: 1,
                admin_port: 2,
                upstream_port: 3,
                credentials: keys
                    .iter()
                    .map(|key| Credential {
                        key,
                        client: "c".into(),
                    })
                    .collect(),
                forward_header,
            },
        )
        .unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let filters = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"];
        assert_eq!(
            filters[1]["name"].as_str(),
            Some("envoy.filters.http.router")
        );
        filters[0]["typed_config"].clone()
    }

    #[test]
    fn native_filter_config_lists_every_key_under_the_header() {
        let auth = native_filter(None);
        assert_eq!(auth["key_sources"][0]["header"].as_str(), Some("x-api-key"));
        assert_eq!(auth["credentials"].as_sequence().unwrap().len(), 2);
        assert!(auth.get("forwarding").is_none(), "{auth:?}");
    }

    #[test]
    fn the_forwarding_baseline_forwards_the_client_in_the_owner_header() {
        let auth = native_filter(Some("x-keyrig-owner"));
        assert_eq!(
            auth["forwarding"]["header"].as_str(),
            Some("x-keyrig-owner")
        );
        assert_eq!(auth["credentials"].as_sequence().unwrap().len(), 2);
    }

    #[test]
    fn the_passthrough_baseline_loads_the_bench_module_and_nothing_else() {
        let text = rig::base::templates::render(
            &rig::base::paths::env_dir().join("bench/envoy.yaml.j2"),
            Values {
                auth: "module_passthrough",
                module_name: PASSTHROUGH_MODULE_NAME,
                listen_port: 1,
                admin_port: 2,
                upstream_port: 3,
                credentials: vec![],
                forward_header: None,
            },
        )
        .unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let filters = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"]
            .as_sequence()
            .unwrap();
        assert_eq!(filters.len(), 2);
        let module = &filters[0]["typed_config"];
        assert_eq!(
            module["@type"].as_str(),
            Some(
                "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
            )
        );
        assert_eq!(
            module["dynamic_module_config"]["name"].as_str(),
            Some("keyrig_bench_module")
        );
        // Nothing of keygate's module in the floor.
        assert!(!text.contains("keygate_envoy"), "{text}");
    }
}
