//! The kind Envoy (scenarios/k8s/base/config/envoy.yaml, a static file) and
//! the local one (env/envoy/envoy.yaml.j2, rendered by rig) must make the
//! same security decisions: the same path normalization before keygate
//! sees the path, the same fail-closed ext_authz, and an admin interface
//! nobody else can reach. A setting added to one and not the other fails here.

#![cfg(test)]

use serde::Deserialize as _;
use serde_yaml::Value;

use rig::contract::gateways::Contract;
use rig::local::envoy::render;
use rig::local::gateway::context::GatewayContext;

/// What the HTTP connection manager of the API listener decides on paths
/// and on header names with underscores, and what ext_authz does when
/// keygate fails.
const HCM_KEYS: [&str; 4] = [
    "normalize_path",
    "merge_slashes",
    "path_with_escaped_slashes_action",
    "common_http_protocol_options",
];
const EXT_AUTHZ_KEYS: [&str; 2] = ["failure_mode_allow", "status_on_error"];

fn local_envoy() -> Value {
    let groups = rig::contract::scenario::load_default_apis().unwrap();
    let env_dir = rig::base::paths::env_dir();
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ctx = GatewayContext {
        name: "envoy",
        groups: &groups,
        listen: addr(10000),
        admin: addr(9901),
        keygate_grpc: addr(9001),
        keygate_http: addr(9002),
        upstream: addr(8080),
        dir: std::env::temp_dir(),
        env_dir: &env_dir,
        envoy_module: None,
    };
    serde_yaml::from_str(&render(&ctx, Contract::Grpc).unwrap()).unwrap()
}

fn kind_envoy() -> Value {
    let file = rig::base::paths::scenarios_dir().join("k8s/base/config/envoy.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// The listener named `gateway` (the API listener in both files).
fn api_listener(config: &Value) -> &Value {
    config["static_resources"]["listeners"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "gateway")
        .expect("a listener named gateway")
}

fn hcm(config: &Value) -> &Value {
    &api_listener(config)["filter_chains"][0]["filters"][0]["typed_config"]
}

fn ext_authz(config: &Value) -> &Value {
    hcm(config)["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .map(|f| &f["typed_config"])
        .expect("an ext_authz filter")
}

#[test]
fn kind_envoy_handles_paths_and_failures_like_the_local_one() {
    let (local, kind) = (local_envoy(), kind_envoy());
    for key in HCM_KEYS {
        assert!(
            !hcm(&local)[key].is_null(),
            "env/envoy/envoy.yaml.j2 lost {key}"
        );
        assert_eq!(
            hcm(&kind)[key],
            hcm(&local)[key],
            "{key}: scenarios/k8s/base/config/envoy.yaml differs from env/envoy/envoy.yaml.j2"
        );
    }
    for key in EXT_AUTHZ_KEYS {
        assert_eq!(
            ext_authz(&kind)[key],
            ext_authz(&local)[key],
            "ext_authz {key}: scenarios/k8s differs from env/envoy"
        );
    }
    assert_eq!(ext_authz(&kind)["failure_mode_allow"], false);
}

#[test]
fn envoy_admin_is_on_loopback_and_not_published() {
    for (file, config) in [
        ("env/envoy", local_envoy()),
        ("scenarios/k8s", kind_envoy()),
    ] {
        let address = config["admin"]["address"]["socket_address"]["address"]
            .as_str()
            .unwrap_or("");
        assert_eq!(
            address, "127.0.0.1",
            "{file}: Envoy's admin listens on {address}"
        );
    }
    let admin_port = kind_envoy()["admin"]["address"]["socket_address"]["port_value"].clone();
    let gateway = rig::base::paths::scenarios_dir().join("k8s/base/gateway.yaml");
    let text = std::fs::read_to_string(&gateway).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let object = Value::deserialize(doc).unwrap();
        let ports: Vec<&Value> = match object["kind"].as_str() {
            Some("Service") => object["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|p| [&p["port"], &p["targetPort"]])
                .collect(),
            Some("Deployment") => object["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|c| c["ports"].as_sequence().into_iter().flatten())
                .map(|p| &p["containerPort"])
                .collect(),
            _ => continue,
        };
        assert!(
            !ports.contains(&&admin_port),
            "{}: {} publishes Envoy's admin port {admin_port:?}",
            gateway.display(),
            object["kind"].as_str().unwrap_or("?")
        );
    }
}
