//! The three overlays of scenarios/k8s, rendered with the pinned kubectl and
//! checked without a cluster.

mod common;

use std::collections::BTreeSet;

use common::{containers, render, root, str_at, tool};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::Role;
use manifests::eso::{self, CreationPolicy, SecretStoreKind, VaultKvVersion};
use manifests::files::{K8sPins, KubernetesAuth};
use manifests::{
    CREDENTIALS_SECRET, DEFAULT_KEYS, Kind, Problem, check_all, check_object, find, of_kind,
};
use rstest::rstest;
use serde_json::Value;

const NAMESPACE: &str = "keyrig";

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    items.into_iter().collect()
}

fn pins() -> K8sPins {
    K8sPins::load(&root().join("env/k8s.toml")).unwrap_or_else(|err| panic!("{err}"))
}

fn roles() -> KubernetesAuth {
    KubernetesAuth::load(&root().join("scenarios/k8s/vault/kubernetes-roles.yaml"))
        .unwrap_or_else(|err| panic!("{err}"))
}

/// Every `secretKeyRef` and secret volume of the pod templates, as
/// (what refers, Secret name, key).
fn secret_references(objects: &[Value]) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for (object, container) in containers(objects) {
        let owner = format!(
            "{} {}",
            str_at(object, "/kind"),
            str_at(object, "/metadata/name")
        );
        for env in container
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(reference) = env.pointer("/valueFrom/secretKeyRef") {
                found.push((
                    format!("{owner} env {}", str_at(env, "/name")),
                    str_at(reference, "/name").to_owned(),
                    str_at(reference, "/key").to_owned(),
                ));
            }
        }
    }
    for object in objects {
        let Some(volumes) = object
            .pointer("/spec/template/spec/volumes")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let owner = format!(
            "{} {}",
            str_at(object, "/kind"),
            str_at(object, "/metadata/name")
        );
        for volume in volumes {
            let Some(secret) = volume.get("secret") else {
                continue;
            };
            for item in secret
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                found.push((
                    format!(
                        "{owner} volume {} item {}",
                        str_at(volume, "/name"),
                        str_at(item, "/path")
                    ),
                    str_at(secret, "/secretName").to_owned(),
                    str_at(item, "/key").to_owned(),
                ));
            }
        }
    }
    found
}

/// keygate's config file as the ConfigMap carries it.
fn keygate_config(objects: &[Value]) -> Value {
    let config_map =
        find(objects, "ConfigMap", "keygate-config").expect("the keygate-config ConfigMap");
    serde_yaml::from_str(str_at(config_map, "/data/keygate.yaml")).expect("keygate.yaml is YAML")
}

#[rstest]
fn every_object_round_trips(#[values("inline", "existing-secret", "external-secret")] mode: &str) {
    let objects = render(mode);
    assert!(
        objects.len() >= 10,
        "{mode} renders only {} objects",
        objects.len()
    );
    if let Err(found) = check_all(objects) {
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        panic!(
            "scenarios/k8s/{mode} has fields that would be lost:\n  {}",
            lines.join("\n  ")
        );
    }
}

#[rstest]
fn namespaced_objects_are_in_keyrig_and_no_others_are(
    #[values("inline", "existing-secret", "external-secret")] mode: &str,
) {
    for object in render(mode) {
        let kind = Kind::of(object).expect("round_trips checks kinds");
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        let expected = kind.namespaced().then_some(NAMESPACE);
        assert_eq!(
            namespace,
            expected,
            "{mode}: {} {}",
            kind,
            str_at(object, "/metadata/name")
        );
    }
}

#[rstest]
fn the_role_grants_only_get_and_list_on_secrets(
    #[values("inline", "existing-secret", "external-secret")] mode: &str,
) {
    let objects = render(mode);
    for broad in ["ClusterRole", "ClusterRoleBinding"] {
        assert_eq!(
            of_kind(objects, broad).count(),
            0,
            "{mode} has a {broad}: keyrig needs nothing cluster-wide"
        );
    }
    let roles: Vec<Role> = of_kind(objects, "Role")
        .map(|r| Kind::parse(r).unwrap())
        .collect();
    assert_eq!(roles.len(), 1, "{mode}: one Role, secrets-reader");
    let role = &roles[0];
    assert_eq!(role.metadata.name.as_deref(), Some("secrets-reader"));
    let rules = role.rules.as_deref().unwrap_or_default();
    assert_eq!(
        rules.len(),
        1,
        "{mode}: secrets-reader has one rule: {rules:?}"
    );
    let rule = &rules[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&[String::new()][..]),
        "core API group only"
    );
    assert_eq!(
        rule.resources.as_deref(),
        Some(&[String::from("secrets")][..])
    );
    assert_eq!(
        set(rule.verbs.iter().map(String::as_str)),
        set(["get", "list"]),
        "verbs: nothing but get and list"
    );
    assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());

    let binding = find(objects, "RoleBinding", "keygate-secrets-reader").expect("the RoleBinding");
    assert_eq!(str_at(binding, "/roleRef/kind"), "Role");
    assert_eq!(str_at(binding, "/roleRef/name"), "secrets-reader");
    let subjects = binding["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 1, "only keygate's ServiceAccount");
    assert_eq!(
        (
            str_at(&subjects[0], "/kind"),
            str_at(&subjects[0], "/name"),
            str_at(&subjects[0], "/namespace")
        ),
        ("ServiceAccount", "keygate", NAMESPACE)
    );
    let keygate = find(objects, "Deployment", "keygate").unwrap();
    assert_eq!(
        str_at(keygate, "/spec/template/spec/serviceAccountName"),
        "keygate"
    );
}

#[rstest]
fn the_inline_overlay_generates_the_secret_from_literals() {
    let objects = render("inline");
    let secrets: Vec<&Value> = of_kind(objects, "Secret").collect();
    assert_eq!(
        secrets.len(),
        1,
        "inline: exactly one Secret, the generated one"
    );
    assert_eq!(
        str_at(secrets[0], "/metadata/name"),
        CREDENTIALS_SECRET,
        "no name hash: the Job names it"
    );
    assert_eq!(
        str_at(
            secrets[0],
            "/metadata/labels/keyrig.dev~1credentials-source"
        ),
        "inline"
    );
    let secret: Secret = Kind::parse(secrets[0]).unwrap();
    let data = secret.data.expect("secretGenerator writes data");
    assert_eq!(set(data.keys().map(String::as_str)), set(DEFAULT_KEYS));
    let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    for key in DEFAULT_KEYS {
        assert!(!text(key).is_empty(), "inline: {key} is empty");
    }
    // keygate reads vault.address from its config and VAULT_ADDR from the
    // Secret: they must name the same Vault.
    assert_eq!(
        text("vault-url"),
        str_at(&keygate_config(objects), "/vault/address")
    );
    assert_eq!(of_kind(objects, "ExternalSecret").count(), 0);
}

#[rstest]
fn the_existing_secret_overlay_creates_no_secret_and_uses_the_configured_names() {
    let objects = render("existing-secret");
    assert_eq!(
        of_kind(objects, "Secret").count(),
        0,
        "existing-secret must not create the Secret it expects"
    );
    assert_eq!(of_kind(objects, "ExternalSecret").count(), 0);

    let values =
        find(objects, "ConfigMap", "gateway-credentials-values").expect("the values ConfigMap");
    let existing_secret = str_at(values, "/data/existingSecret");
    let keys: BTreeSet<&str> = ["vaultUrl", "roleId", "secretId", "group"]
        .iter()
        .map(|k| str_at(values, &format!("/data/existingSecretKeys.{k}")))
        .collect();
    assert_eq!(keys.len(), 4, "four distinct key names: {keys:?}");
    assert!(
        keys.is_disjoint(&set(DEFAULT_KEYS)),
        "the overlay exists to test custom key names: {keys:?}"
    );

    let references = secret_references(objects);
    assert!(references.len() >= 10, "{references:#?}");
    for (what, name, key) in &references {
        assert_eq!(name, existing_secret, "{what} names another Secret");
        assert!(
            keys.contains(key.as_str()),
            "{what} reads key {key:?}, not one of existingSecretKeys {keys:?}"
        );
    }
    // Every configured key is read by both keygate and the check Job.
    for key in &keys {
        for owner in ["Deployment keygate", "Job gateway-credentials-check"] {
            assert!(
                references
                    .iter()
                    .any(|(what, _, k)| what.starts_with(owner) && k == key),
                "{owner} does not read key {key}"
            );
        }
    }
    let job = find(objects, "Job", "gateway-credentials-check").unwrap();
    let env = job
        .pointer("/spec/template/spec/containers/0/env")
        .unwrap()
        .as_array()
        .unwrap();
    let plain = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap()
    };
    assert_eq!(
        plain("SECRET_NAME"),
        existing_secret,
        "the Job's messages name the configured Secret"
    );
    assert_eq!(
        set([
            "KEY_VAULT_URL",
            "KEY_ROLE_ID",
            "KEY_SECRET_ID",
            "KEY_GATEWAY_GROUP"
        ]
        .map(plain)),
        keys
    );

    // The Secret created "manually" beforehand carries exactly those keys.
    let precreate = root().join("scenarios/k8s/existing-secret/precreate/secret.yaml");
    let documents = manifests::read_yaml_file(&precreate).unwrap();
    assert_eq!(documents.len(), 1, "{}", precreate.display());
    check_object(&documents[0]).unwrap_or_else(|found| panic!("{found:#?}"));
    let secret: Secret = Kind::parse(&documents[0]).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some(existing_secret));
    assert_eq!(secret.metadata.namespace.as_deref(), Some(NAMESPACE));
    let string_data = secret.string_data.expect("stringData");
    assert_eq!(set(string_data.keys().map(String::as_str)), keys);
}

#[rstest]
fn the_external_secret_maps_exactly_the_four_keys_and_owns_its_target() {
    let objects = render("external-secret");
    assert_eq!(
        of_kind(objects, "Secret").count(),
        0,
        "ESO makes the Secret, not the overlay"
    );
    let external: Vec<&Value> = of_kind(objects, "ExternalSecret").collect();
    assert_eq!(external.len(), 1);
    assert_eq!(
        str_at(external[0], "/apiVersion"),
        "external-secrets.io/v1",
        "the version ESO serves"
    );
    let external: eso::v1::ExternalSecret = Kind::parse(external[0]).unwrap();
    assert_eq!(
        external.metadata.name.as_deref(),
        Some("gateway-credentials")
    );
    let spec = &external.spec;
    // Each refresh is a login into Vault, kept up after the run: ESO's
    // default hour, not seconds (the e2e rotation force-syncs instead).
    assert_eq!(spec.refresh_interval.as_deref(), Some("1h"));
    let store = spec.secret_store_ref.as_ref().unwrap();
    assert_eq!(
        (store.name.as_deref(), store.kind),
        (Some("vault-backend"), Some(SecretStoreKind::SecretStore))
    );
    let target = spec.target.as_ref().unwrap();
    assert_eq!(target.name.as_deref(), Some(CREDENTIALS_SECRET));
    assert_eq!(target.creation_policy, Some(CreationPolicy::Owner));

    let data = spec.data.as_deref().unwrap();
    assert_eq!(data.len(), 4, "exactly four keys: {data:#?}");
    assert_eq!(
        set(data.iter().map(|d| d.secret_key.as_str())),
        set(DEFAULT_KEYS)
    );
    let source = roles().gateway_credentials;
    for entry in data {
        assert_eq!(entry.remote_ref.key, source.path, "{}", entry.secret_key);
    }
    let properties: BTreeSet<&str> = data
        .iter()
        .filter_map(|d| d.remote_ref.property.as_deref())
        .collect();
    assert_eq!(
        properties,
        set(source.properties.iter().map(String::as_str)),
        "what the harness writes to Vault"
    );
    assert!(spec.data_from.is_none());

    // The store it reads from: Vault's KV v2 `secret`, Kubernetes auth as eso-reader.
    let store: eso::v1::SecretStore =
        Kind::parse(find(objects, "SecretStore", "vault-backend").unwrap()).unwrap();
    let vault = store
        .spec
        .provider
        .vault
        .as_ref()
        .expect("a vault provider");
    assert_eq!(vault.server, "http://openbao.openbao.svc:8200");
    assert_eq!(
        (vault.path.as_deref(), vault.version),
        (Some(source.mount.as_str()), Some(VaultKvVersion::V2))
    );
    let kubernetes = vault
        .auth
        .as_ref()
        .and_then(|a| a.kubernetes.as_ref())
        .expect("kubernetes auth");
    assert_eq!(
        kubernetes.mount_path.as_deref(),
        Some(roles().auth_mount.as_str())
    );
    assert_eq!(kubernetes.role, "eso");
    assert_eq!(
        kubernetes
            .service_account_ref
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("eso-reader")
    );
    assert!(find(objects, "ServiceAccount", "eso-reader").is_some());

    // The one store: ESO validates every (Cluster)SecretStore against Vault
    // every few minutes, read or not, so none is applied that nothing reads.
    let stores: Vec<&str> = objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("SecretStore" | "ClusterSecretStore")
            )
        })
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(stores, ["vault-backend"]);
}

#[rstest]
fn default_modes_reference_the_default_secret_and_keys(
    #[values("inline", "external-secret")] mode: &str,
) {
    for (what, name, key) in secret_references(render(mode)) {
        assert_eq!(name, CREDENTIALS_SECRET, "{mode}: {what}");
        assert!(
            DEFAULT_KEYS.contains(&key.as_str()),
            "{mode}: {what} reads {key:?}"
        );
    }
}

#[rstest]
fn images_are_the_pinned_ones(
    #[values("inline", "existing-secret", "external-secret")] mode: &str,
) {
    let pinned = pins().images;
    let used: BTreeSet<&str> = containers(render(mode))
        .into_iter()
        .map(|(_, c)| str_at(c, "/image"))
        .collect();
    let expected: BTreeSet<&str> = pinned.values().map(String::as_str).collect();
    assert_eq!(
        used, expected,
        "{mode}: images in the manifests vs env/k8s.toml [images]"
    );
}

#[rstest]
fn keygate_config_lists_every_scenario_api() {
    let config = keygate_config(render("inline"));
    let listed: BTreeSet<String> = config["apis"]
        .as_array()
        .expect("apis is a list")
        .iter()
        .map(|p| {
            p.as_str()
                .unwrap()
                .strip_prefix("/etc/keygate/apis/")
                .expect("mounted from keygate-apis")
                .to_owned()
        })
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("scenarios/apis"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    assert_eq!(
        listed, on_disk,
        "base/config/keygate.yaml apis vs scenarios/apis/ (the keygate-apis ConfigMap)"
    );
    let secrets = "/etc/keygate/secrets/";
    let approle = &config["vault"]["auth"]["approle"];
    assert_eq!(
        str_at(approle, "/role_id_file"),
        format!("{secrets}role-id")
    );
    assert_eq!(
        str_at(approle, "/secret_id_file"),
        format!("{secrets}secret-id")
    );
}

#[rstest]
fn vault_kubernetes_roles_bind_accounts_the_overlays_create() {
    let auth = roles();
    let setup: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("scenarios/vault/setup.yaml")).unwrap(),
    )
    .expect("scenarios/vault/setup.yaml is YAML");
    let known_policies: BTreeSet<&str> = setup["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| str_at(p, "/name"))
        .chain(auth.policies.iter().map(|p| p.name.as_str()))
        .collect();
    let accounts: BTreeSet<&str> = ["inline", "external-secret"]
        .iter()
        .flat_map(|mode| of_kind(render(mode), "ServiceAccount"))
        .map(|sa| str_at(sa, "/metadata/name"))
        .collect();
    assert_eq!(
        set(auth.roles.iter().map(|r| r.name.as_str())),
        set(["api-portal", "gateway", "eso"])
    );
    for role in &auth.roles {
        assert_eq!(role.token_ttl, "24h", "roles[{}]", role.name);
        assert_eq!(
            role.bound_service_account_namespaces,
            [NAMESPACE],
            "roles[{}]",
            role.name
        );
        for account in &role.bound_service_account_names {
            assert!(
                accounts.contains(account.as_str()),
                "roles[{}] binds {account}, which no overlay creates",
                role.name
            );
        }
        for policy in &role.token_policies {
            assert!(
                known_policies.contains(policy.as_str()),
                "roles[{}]: policy {policy} is defined nowhere",
                role.name
            );
        }
    }
    let eso_policy = auth.policy_text(
        &root().join("scenarios/k8s/vault/kubernetes-roles.yaml"),
        "eso-gateway-credentials",
    );
    let expected = format!(
        "\"{}/data/{}\"",
        auth.gateway_credentials.mount, auth.gateway_credentials.path
    );
    assert!(
        eso_policy.unwrap().contains(&expected),
        "the eso policy reads {expected}"
    );
}

/// A misspelt ExternalSecret field is reported by its path, with the schema
/// it is not part of; a misspelt enum value is reported where it is.
#[rstest]
#[case::field(
    "creationPolicyy: Owner",
    "spec.target.creationPolicyy",
    "ExternalSecret keyrig/gateway-credentials: field spec.target.creationPolicyy is not part of external-secrets.io/v1 ExternalSecret"
)]
#[case::value(
    "creationPolicy: Ownr",
    "spec.target.creationPolicy",
    "ExternalSecret keyrig/gateway-credentials: field spec.target.creationPolicy does not fit external-secrets.io/v1 ExternalSecret: unknown variant `Ownr`"
)]
fn a_misspelt_external_secret_is_reported_with_its_path(
    #[case] line: &str,
    #[case] path: &str,
    #[case] message: &str,
) {
    let yaml = format!(
        "apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: gateway-credentials
  namespace: keyrig
spec:
  refreshInterval: 10s
  secretStoreRef: {{ name: vault-backend, kind: SecretStore }}
  target:
    name: keyrig-gateway-credentials
    {line}
  data:
    - secretKey: role-id
      remoteRef: {{ key: keyrig/gateway, property: role_id }}
"
    );
    let objects = manifests::parse_documents(&yaml, "test").unwrap();
    let found = check_object(&objects[0]).unwrap_err();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, path);
    assert!(found[0].to_string().starts_with(message), "{}", found[0]);
}

/// ESO v1 fields added after the first typed version: `CreateOrMerge` and
/// `nullBytePolicy` (on `remoteRef`, `extract` and `find`) round-trip, and a
/// value outside ESO's enum is reported where it is.
#[rstest]
fn create_or_merge_and_null_byte_policy_round_trip() {
    let yaml = |policy: &str| {
        format!(
            "apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{ name: gateway-credentials, namespace: keyrig }}
spec:
  secretStoreRef: {{ name: vault-backend, kind: SecretStore }}
  target: {{ name: keyrig-gateway-credentials, creationPolicy: CreateOrMerge }}
  data:
    - secretKey: role-id
      remoteRef: {{ key: keyrig/gateway, property: role_id, nullBytePolicy: {policy} }}
  dataFrom:
    - extract: {{ key: keyrig/other, nullBytePolicy: Ignore }}
    - find: {{ path: keyrig, nullBytePolicy: Fail }}
"
        )
    };
    let objects = manifests::parse_documents(&yaml("Fail"), "test").unwrap();
    check_object(&objects[0]).unwrap_or_else(|found| panic!("{found:#?}"));
    let es: eso::v1::ExternalSecret = Kind::parse(&objects[0]).unwrap();
    let target = es.spec.target.as_ref().unwrap();
    assert_eq!(target.creation_policy, Some(CreationPolicy::CreateOrMerge));
    let data = es.spec.data.as_ref().unwrap();
    assert_eq!(
        data[0].remote_ref.null_byte_policy,
        Some(eso::NullBytePolicy::Fail)
    );
    let from = es.spec.data_from.as_ref().unwrap();
    assert_eq!(
        from[0].extract.as_ref().unwrap().null_byte_policy,
        Some(eso::NullBytePolicy::Ignore)
    );
    assert_eq!(
        from[1].find.as_ref().unwrap().null_byte_policy,
        Some(eso::NullBytePolicy::Fail)
    );

    let objects = manifests::parse_documents(&yaml("Strip"), "test").unwrap();
    let found = check_object(&objects[0]).unwrap_err();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "spec.data[0].remoteRef.nullBytePolicy");
    assert!(
        found[0].to_string().contains("unknown variant `Strip`"),
        "{}",
        found[0]
    );
}

/// The API7 chart's examples use external-secrets.io/v1beta1: they are
/// checked against the same fields, and flagged as no longer served.
#[rstest]
fn v1beta1_objects_are_checked_and_flagged() {
    let yaml = "apiVersion: external-secrets.io/v1beta1
kind: SecretStore
metadata: { name: vault-backend, namespace: api7ee }
spec:
  provider:
    vault:
      server: https://vault.example.com
      path: secret
      version: v2
      auth:
        kubernetes:
          mountPath: kubernetes
          role: api7-role
          serviceAccountRef: { name: api7ee-demo-api7ee-demo-k8s }
---
apiVersion: external-secrets.io/v1beta1
kind: ExternalSecret
metadata: { name: api7-credentials-external, namespace: api7ee }
spec:
  refreshInterval: 1h
  secretStoreRef: { name: vault-backend, kind: SecretStore }
  target: { name: api7-credentials, creationPolicy: Owner }
  data:
    - secretKey: admin-url
      remoteRef: { key: api7/gateway, property: admin_url }
";
    let objects = manifests::parse_documents(yaml, "API7 example").unwrap();
    check_all(&objects).unwrap_or_else(|found| panic!("{found:#?}"));
    for object in &objects {
        let kind = Kind::of(object).unwrap();
        assert!(
            kind.deprecation()
                .unwrap()
                .contains("external-secrets.io/v1"),
            "{kind}"
        );
    }
    let mut wrong = objects[1].clone();
    wrong["spec"]["target"]["creationPolicyy"] = wrong["spec"]["target"]["creationPolicy"].take();
    let found = check_object(&wrong).unwrap_err();
    assert_eq!(found[0].problem, Problem::NotInSchema);
    assert!(
        found[0]
            .to_string()
            .ends_with("is not part of external-secrets.io/v1beta1 ExternalSecret"),
        "{}",
        found[0]
    );
}

/// Envoy's config as the gateway Deployment mounts it, validated by the
/// Envoy version the cluster runs (the local profile's pin).
#[rstest]
fn the_gateway_envoy_config_is_valid() {
    let config_map =
        find(render("inline"), "ConfigMap", "gateway-envoy").expect("the gateway-envoy ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, str_at(config_map, "/data/envoy.yaml")).unwrap();
    let output = std::process::Command::new(tool("envoy"))
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("envoy runs");
    assert!(
        output.status.success(),
        "envoy rejects scenarios/k8s/base/config/envoy.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every upstream of the gateway's Envoy is a Service of the overlay, by
/// `<name>.<namespace>.svc` and one of its ports: the pod's DNS search list
/// completes the name, so a cluster whose domain is not `cluster.local`
/// works too (a name ending in the domain would fail there).
#[rstest]
fn the_gateway_envoy_names_services_of_the_overlay_without_the_cluster_domain(
    #[values("inline", "existing-secret", "external-secret")] mode: &str,
) {
    let objects = render(mode);
    let config_map =
        find(objects, "ConfigMap", "gateway-envoy").expect("the gateway-envoy ConfigMap");
    let config: Value = serde_yaml::from_str(str_at(config_map, "/data/envoy.yaml")).unwrap();
    let clusters = config
        .pointer("/static_resources/clusters")
        .and_then(Value::as_array)
        .expect("static clusters");
    let mut named = Vec::new();
    for cluster in clusters {
        for endpoint in cluster
            .pointer("/load_assignment/endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|e| e["lb_endpoints"].as_array().into_iter().flatten())
        {
            let address = endpoint
                .pointer("/endpoint/address/socket_address")
                .expect("a socket address");
            let host = str_at(address, "/address");
            let port = address["port_value"].as_u64().expect("a port");
            let parts: Vec<&str> = host.split('.').collect();
            let [service, namespace, "svc"] = parts[..] else {
                panic!(
                    "{mode}: cluster {} names {host}: write <service>.<namespace>.svc",
                    cluster["name"]
                );
            };
            let object = find(objects, "Service", service)
                .unwrap_or_else(|| panic!("{mode}: {host}: the overlay has no Service {service}"));
            assert_eq!(str_at(object, "/metadata/namespace"), namespace, "{host}");
            let ports: Vec<u64> = object["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            assert!(
                ports.contains(&port),
                "{mode}: {host}:{port}: Service ports {ports:?}"
            );
            named.push(service);
        }
    }
    assert_eq!(set(named), set(["keygate", "upstream"]), "{mode}");
}

/// Only the gateway's pods reach keygate, on keygate's two ports; the
/// policy selects keygate's pods by the labels its Deployment gives them.
#[rstest]
fn only_the_gateway_reaches_keygate(
    #[values("inline", "existing-secret", "external-secret")] mode: &str,
) {
    let objects = render(mode);
    let policy = find(objects, "NetworkPolicy", "keygate-from-gateway-only")
        .unwrap_or_else(|| panic!("{mode}: no NetworkPolicy for keygate"));
    let keygate = find(objects, "Deployment", "keygate").expect("keygate's Deployment");
    let gateway = find(objects, "Deployment", "gateway").expect("the gateway's Deployment");
    let labels = |d: &Value| d.pointer("/spec/template/metadata/labels").cloned();
    assert_eq!(
        policy.pointer("/spec/podSelector/matchLabels").cloned(),
        labels(keygate),
        "{mode}: the policy selects keygate's pods"
    );
    assert_eq!(
        policy.pointer("/spec/policyTypes"),
        Some(&serde_json::json!(["Ingress"]))
    );
    let ingress = policy
        .pointer("/spec/ingress")
        .and_then(Value::as_array)
        .unwrap();
    assert_eq!(ingress.len(), 1, "{mode}: one ingress rule");
    assert_eq!(
        ingress[0].pointer("/from"),
        Some(&serde_json::json!([{"podSelector": {"matchLabels": labels(gateway).unwrap()}}])),
        "{mode}: only the gateway's pods, from its own namespace"
    );
    let ports: Vec<u64> = ingress[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(ports, [9001, 9002], "{mode}: keygate's gRPC and HTTP ports");
}
