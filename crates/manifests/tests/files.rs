//! env/k8s.toml, env/kind/cluster.yaml and env/helm/*.yaml: they parse, and
//! they agree with each other and with env/tools.toml.

mod common;

use std::path::Path;

use common::root;
use manifests::files::{K8sPins, KindCluster, NodeRole};
use rstest::rstest;
use serde_json::Value;

fn pins() -> K8sPins {
    K8sPins::load(&root().join("env/k8s.toml")).unwrap_or_else(|err| panic!("{err}"))
}

fn tool_version(name: &str) -> String {
    let tools = rig::process::tools::Tools::load(
        &root().join("env/tools.toml"),
        rig::process::tools::ToolEnv::default(),
    )
    .unwrap();
    tools.spec(name).unwrap().version.clone()
}

fn values(file: &str) -> Value {
    let path = root().join("env/helm").join(file);
    let documents = manifests::read_yaml_file(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(documents.len(), 1, "{}: one document", path.display());
    assert!(
        documents[0].is_object(),
        "{}: Helm values are a mapping",
        path.display()
    );
    documents[0].clone()
}

#[rstest]
fn every_helm_values_file_is_yaml() {
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("env/helm")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            values(&name);
            seen += 1;
        }
    }
    assert_eq!(seen, 3, "openbao, vault and external-secrets values");
}

#[rstest]
#[case::openbao("openbao-values.yaml")]
#[case::vault("vault-values.yaml")]
fn vault_charts_run_a_dev_server_without_the_injector(#[case] file: &str) {
    let values = values(file);
    assert_eq!(
        values.pointer("/server/dev/enabled"),
        Some(&Value::Bool(true)),
        "{file}"
    );
    assert_eq!(
        values.pointer("/injector/enabled"),
        Some(&Value::Bool(false)),
        "{file}"
    );
    assert_eq!(
        values.pointer("/server/authDelegator/enabled"),
        Some(&Value::Bool(true)),
        "{file}: TokenReview"
    );
}

#[rstest]
fn eso_installs_its_crds() {
    assert_eq!(
        values("external-secrets-values.yaml")["installCRDs"],
        Value::Bool(true)
    );
}

#[rstest]
fn every_chart_pin_names_an_existing_values_file() {
    let pins = pins();
    for name in ["openbao", "vault", "external-secrets"] {
        let chart = pins
            .charts
            .get(name)
            .unwrap_or_else(|| panic!("env/k8s.toml has no charts.{name}"));
        let path = root().join(&chart.values);
        assert!(
            path.is_file(),
            "charts.{name}.values: {} does not exist",
            path.display()
        );
        assert!(chart.repo.starts_with("https://"), "charts.{name}.repo");
    }
    // The HashiCorp chart stands in for OpenBao under the same Service name.
    assert_eq!(pins.charts["vault"].release, pins.charts["openbao"].release);
    assert_eq!(
        values("vault-values.yaml")["fullnameOverride"],
        Value::String(pins.charts["openbao"].release.clone())
    );
}

#[rstest]
fn the_kind_config_is_one_pinned_control_plane_without_port_mappings() {
    let pins = pins();
    let path = root().join(&pins.kind.config);
    let cluster = KindCluster::load(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        cluster.name.as_deref(),
        Some(pins.kind.cluster_name.as_str())
    );
    assert_eq!(cluster.nodes.len(), 1);
    let node = &cluster.nodes[0];
    assert_eq!(node.role, NodeRole::ControlPlane);
    assert_eq!(
        node.image.as_deref(),
        Some(pins.kind.node_image.as_str()),
        "cluster.yaml vs env/k8s.toml"
    );
    assert!(
        node.extra_port_mappings.is_none(),
        "the harness port-forwards; no host ports"
    );
}

#[rstest]
fn pins_agree_with_the_local_profile() {
    let pins = pins();
    // OpenBao and Envoy in the cluster are the versions the local profile runs.
    let openbao = pins.charts["openbao"].image.as_deref().unwrap();
    assert_eq!(openbao.rsplit_once(':').unwrap().1, tool_version("bao"));
    assert_eq!(
        values("openbao-values.yaml").pointer("/server/image/tag"),
        Some(&Value::String(tool_version("bao")))
    );
    // The check Job's CLI is the server's image: kind pulls nothing new.
    assert_eq!(pins.images["bao"], openbao);
    assert_eq!(
        pins.images["envoy"].rsplit_once(':').unwrap().1,
        format!("v{}", tool_version("envoy"))
    );
    // kubectl's minor version is the node's.
    let node = pins.kind.node_image.split_once(":v").unwrap().1;
    let minor = |version: &str| version.split('.').take(2).collect::<Vec<_>>().join(".");
    assert_eq!(minor(&tool_version("kubectl")), minor(node));
}

#[rstest]
#[case::api_version(
    "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\nnodes: [{role: control-plane}]\n",
    "apiVersion is \"kind.x-k8s.io/v1alpha3\"; kind reads kind.x-k8s.io/v1alpha4"
)]
#[case::unknown_field(
    "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes: [{role: control-plane, extraPortMapping: []}]\n",
    "nodes[0]: unknown field `extraPortMapping`"
)]
#[case::no_control_plane(
    "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes: [{role: worker}]\n",
    "nodes has no control-plane node"
)]
fn a_bad_kind_config_is_named_with_its_field(#[case] text: &str, #[case] expected: &str) {
    // Removed when dropped, also when an assertion fails.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("cluster-{:x}.yaml", text.len()));
    std::fs::write(&path, text).unwrap();
    let err = KindCluster::load(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: ", path.display())), "{err}");
    assert!(err.contains(expected), "{err}");
}

/// `[helm]` pins an exact Helm 3 release: Helm 4, a `v` prefix or a bare
/// minor version are refused when the pins load.
#[rstest]
#[case::helm4("4.2.4")]
#[case::v_prefix("v3.22.1")]
#[case::minor_only("3.22")]
#[case::latest("latest")]
fn the_helm_pin_is_an_exact_helm_3_release(#[case] bad: &str) {
    let pins = pins();
    assert_eq!(pins.helm.major(), Some(manifests::files::HelmPin::MAJOR));
    let text = std::fs::read_to_string(root().join("env/k8s.toml")).unwrap();
    let pinned = format!("version = \"{}\"", pins.helm.version);
    assert_eq!(
        text.matches(&pinned).count(),
        1,
        "{pinned} once in env/k8s.toml"
    );
    let path =
        std::env::temp_dir().join(format!("keyrig-k8s-helm-{}-{bad}.toml", std::process::id()));
    std::fs::write(
        &path,
        text.replace(&pinned, &format!("version = \"{bad}\"")),
    )
    .unwrap();
    let err = K8sPins::load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(
        err.contains(&format!(
            "helm.version = \"{bad}\" must be an exact Helm 3.y.z release"
        )),
        "{err}"
    );
}

/// kind spells the JSON 6902 patch fields with an upper-case JSON
/// (`kubeadmConfigPatchesJSON6902`); a config using them loads, with the
/// patches read, and the camelCase misspelling is refused like any unknown
/// field.
#[rstest]
fn kind_json6902_patch_fields_use_kinds_spelling() {
    let patch =
        "{group: kubeadm.k8s.io, version: v1beta4, kind: ClusterConfiguration, patch: '[]'}";
    let config = |field: &str| {
        format!(
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n\
             {field}: [{patch}]\n\
             containerdConfigPatchesJSON6902: ['[]']\n\
             nodes: [{{role: control-plane, {field}: [{patch}]}}]\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let good = dir.join("json6902.yaml");
    std::fs::write(&good, config("kubeadmConfigPatchesJSON6902")).unwrap();
    let cluster = KindCluster::load(&good).unwrap_or_else(|err| panic!("{err}"));
    let patches = cluster.kubeadm_config_patches_json6902.as_ref().unwrap();
    assert_eq!(patches[0]["kind"], "ClusterConfiguration");
    assert_eq!(
        cluster.containerd_config_patches_json6902.as_deref(),
        Some(&["[]".to_owned()][..])
    );
    assert!(cluster.nodes[0].kubeadm_config_patches_json6902.is_some());

    let bad = dir.join("json6902-camel.yaml");
    std::fs::write(&bad, config("kubeadmConfigPatchesJson6902")).unwrap();
    let err = KindCluster::load(&bad).unwrap_err().to_string();
    assert!(
        err.contains("unknown field `kubeadmConfigPatchesJson6902`"),
        "{err}"
    );
}

#[rstest]
fn a_node_image_without_digest_is_refused() {
    let text = std::fs::read_to_string(root().join("env/k8s.toml")).unwrap();
    // The pinned file with node_image's digest cut off.
    let undigested: String = text
        .lines()
        .map(
            |line| match (line.starts_with("node_image"), line.split_once('@')) {
                (true, Some((image, _))) => format!("{image}\"\n"),
                _ => format!("{line}\n"),
            },
        )
        .collect();
    assert_ne!(
        text, undigested,
        "env/k8s.toml pins kind.node_image with a digest"
    );
    let path = std::env::temp_dir().join(format!("keyrig-k8s-{}.toml", std::process::id()));
    std::fs::write(&path, undigested).unwrap();
    let err = K8sPins::load(Path::new(&path)).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(
        err.contains("kind.node_image has no @sha256: digest"),
        "{err}"
    );
}

/// The CI workflow runs one kind job per mode, and the modes are the overlays.
#[rstest]
fn the_workflow_covers_every_mode() {
    let path = root().join(".github/workflows/e2e.yml");
    let documents = manifests::read_yaml_file(&path).unwrap_or_else(|err| panic!("{err}"));
    let workflow = &documents[0];
    let modes: Vec<&str> = workflow
        .pointer("/jobs/kind-e2e/strategy/matrix/mode")
        .and_then(Value::as_array)
        .expect("jobs.kind-e2e.strategy.matrix.mode")
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(modes, manifests::MODES, "{}", path.display());
    for mode in modes {
        assert!(
            root()
                .join("scenarios/k8s")
                .join(mode)
                .join("kustomization.yaml")
                .is_file(),
            "{mode}"
        );
    }
    let steps = workflow
        .pointer("/jobs/test/steps")
        .and_then(Value::as_array)
        .expect("jobs.test.steps");
    assert!(
        steps.iter().any(|s| s["run"] == "cargo xtask test"),
        "the test job runs the README's test command"
    );
}
