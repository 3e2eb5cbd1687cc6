//! The cluster profile's Vault side against a real OpenBao (the pinned
//! `bao server -dev`), without a cluster: what `up` does to a Vault that
//! someone else also uses.
//! - an existing `auth/kubernetes` mount and its config stay byte-identical;
//! - keyrig's own mount is created (marked), and reused on a second run;
//! - a mount of that name keyrig did not create is refused and untouched;
//! - a Vault outside the cluster gets the CA and a reviewer JWT;
//! - keyrig's mount configured for one cluster is not taken over by a
//!   keyrig on another;
//! - the committed dev credentials are refused on `cluster`, accepted on
//!   `kind`, and per-run credentials log in;
//! - scenarios/vault/setup.yaml writes only what keyrig made: someone's
//!   KV mount, policy, AppRole role or pki mount of the same name is
//!   refused and untouched;
//! - the external-secret mode's source uses an existing `secret/` as it is
//!   and creates a missing one marked, its secret-id registered.

#![cfg(test)]

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};

use super::KubeProfile;
use super::credentials::{
    DevCredentials, committed_credentials, per_run_credentials, register_dev_credentials,
};
use super::vault_auth::{self, MountOwner, OutsideCluster};
use rig::base::run::RunDir;
use rig::process::components::DevVault;
use rig::process::supervisor::Supervisor;
use rig::vault::client::{Secret, VaultClient};

/// A dev server of the pinned OpenBao (rig's `DevVault` component),
/// stopped when the test ends.
struct TestVault {
    _base: tempfile::TempDir,
    _supervisor: Supervisor,
    root: VaultClient,
}

async fn dev_vault() -> TestVault {
    let bao = super::pinned_tool("bao");
    let base = tempfile::tempdir().unwrap();
    let run = RunDir::create_in(base.path()).unwrap();
    let mut supervisor = Supervisor::new(&run);
    let vault = DevVault::default()
        .start(&bao, &run, &mut supervisor)
        .await
        .unwrap();
    TestVault {
        _base: base,
        _supervisor: supervisor,
        root: vault.root,
    }
}

/// setup.yaml applied, and Kubernetes auth on keyrig's mount told of a
/// cluster outside this Vault (there is none here).
async fn setup_and_outside_cluster_auth(
    root: &VaultClient,
) -> (
    rig::vault::setup::VaultSetup,
    manifests::files::KubernetesAuth,
) {
    let setup =
        rig::vault::setup::load_default(&["animal-rescue-api".into(), "billing-api".into()])
            .unwrap();
    rig::vault::setup::apply(&setup, root).await.unwrap();
    let outside = OutsideCluster {
        kubernetes_host: "https://192.0.2.10:6443".into(),
        kubernetes_ca_cert: some_ca(root).await,
        token_reviewer_jwt: Secret::new("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrZXlyaWcifQ.c2lnbmF0dXJl"),
    };
    let auth = vault_auth::apply(root, &vault_auth::roles_file(), Some(&outside))
        .await
        .unwrap();
    (setup, auth)
}

/// The lifetime Vault gives secret_id `secret_id` of AppRole `role`, in
/// seconds (0: until destroyed).
async fn secret_id_ttl(root: &VaultClient, role: &str, secret_id: &str) -> u64 {
    let answer = root
        .call(
            Method::POST,
            &format!("auth/approle/role/{role}/secret-id/lookup"),
            Some(&json!({"secret_id": secret_id})),
        )
        .await
        .unwrap();
    answer["data"]["secret_id_ttl"]
        .as_u64()
        .expect("secret_id_ttl")
}

async fn get(root: &VaultClient, path: &str) -> Value {
    root.call(Method::GET, path, None).await.unwrap()
}

/// `sys/auth` entry and config of a mount, as Vault returns them.
async fn mount_state(root: &VaultClient, mount: &str) -> (Value, Value) {
    let auths = get(root, "sys/auth").await;
    let entry = auths["data"][format!("{mount}/")].clone();
    // A mount never configured answers 404.
    let (_, config) = root
        .request(Method::GET, &format!("auth/{mount}/config"), None)
        .await
        .unwrap();
    (entry, config["data"].clone())
}

/// A CA certificate Vault accepts as `kubernetes_ca_cert`: issued by a pki
/// mount of the same dev server.
pub(crate) async fn some_ca(root: &VaultClient) -> String {
    root.call(
        Method::POST,
        "sys/mounts/test-pki",
        Some(&json!({"type": "pki"})),
    )
    .await
    .unwrap();
    let answer = root
        .call(
            Method::POST,
            "test-pki/root/generate/internal",
            Some(&json!({"common_name": "cluster-ca.test", "ttl": "1h"})),
        )
        .await
        .unwrap();
    answer["data"]["certificate"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn cluster_vault_side_leaves_other_mounts_alone_and_owns_its_own() {
    let vault = dev_vault().await;
    let root = &vault.root;
    let ca = some_ca(root).await;
    // Someone's existing Kubernetes auth, with a CA, a reviewer JWT and keys.
    root.enable_auth("kubernetes", "kubernetes").await.unwrap();
    root.call(
        Method::POST,
        "auth/kubernetes/config",
        Some(&json!({
            "kubernetes_host": "https://10.1.2.3:6443",
            "kubernetes_ca_cert": ca,
            "token_reviewer_jwt": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXZpZXdlciJ9.c2lnbmF0dXJl",
            "disable_local_ca_jwt": true,
        })),
    )
    .await
    .unwrap();
    let theirs_before = mount_state(root, "kubernetes").await;
    assert_eq!(theirs_before.1["token_reviewer_jwt_set"], true);

    let file = vault_auth::roles_file();
    let mount = manifests::files::KubernetesAuth::load(&file)
        .unwrap()
        .auth_mount;

    // A mount at keyrig's path that keyrig did not create: refused, untouched.
    root.call(
        Method::POST,
        &format!("sys/auth/{mount}"),
        Some(&json!({"type": "kubernetes", "description": "team-x clusters"})),
    )
    .await
    .unwrap();
    let foreign_before = mount_state(root, &mount).await;
    let err = vault_auth::apply(root, &file, None).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("keyrig did not create"), "{message}");
    assert!(message.contains(&format!("auth/{mount}")), "{message}");
    assert_eq!(mount_state(root, &mount).await, foreign_before);
    root.call(Method::DELETE, &format!("sys/auth/{mount}"), None)
        .await
        .unwrap();

    // Absent: created and marked. Without a pod's CA and token to fall back
    // on, this Vault (like any outside the cluster) needs the reviewer
    // settings, and the error says which variable gives them.
    let setup =
        rig::vault::setup::load_default(&["animal-rescue-api".into(), "billing-api".into()])
            .unwrap();
    rig::vault::setup::apply(&setup, root).await.unwrap();
    assert_eq!(
        vault_auth::mount_owner(root, &mount).await.unwrap(),
        MountOwner::Absent
    );
    let err = format!(
        "{:#}",
        vault_auth::apply(root, &file, None).await.unwrap_err()
    );
    assert!(err.contains("KEYRIG_VAULT_KUBERNETES_HOST"), "{err}");
    assert_eq!(
        vault_auth::mount_owner(root, &mount).await.unwrap(),
        MountOwner::Keyrig
    );

    // Vault outside the cluster: host, CA and reviewer JWT on keyrig's
    // mount, which this second run reuses.
    let outside = OutsideCluster {
        kubernetes_host: "https://192.0.2.10:6443".into(),
        kubernetes_ca_cert: ca.clone(),
        token_reviewer_jwt: Secret::new("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrZXlyaWcifQ.c2lnbmF0dXJl"),
    };
    let auth = vault_auth::apply(root, &file, Some(&outside))
        .await
        .unwrap();
    let (_, ours) = mount_state(root, &mount).await;
    assert_eq!(ours["kubernetes_host"], "https://192.0.2.10:6443");
    assert_eq!(ours["kubernetes_ca_cert"].as_str(), Some(ca.as_str()));
    assert_eq!(ours["token_reviewer_jwt_set"], true);
    assert_eq!(ours["disable_local_ca_jwt"], true);
    for role in &auth.roles {
        let answer = get(root, &format!("auth/{mount}/role/{}", role.name)).await;
        assert_eq!(
            answer["data"]["bound_service_account_names"],
            json!(role.bound_service_account_names)
        );
    }

    // Through all of it, the other mount is byte-identical.
    assert_eq!(mount_state(root, "kubernetes").await, theirs_before);
}

/// Two keyrigs on two clusters, one Vault: the second `up` is refused
/// before it writes to keyrig's mount, whose config stays the first
/// cluster's (another API server, or the same address with another CA);
/// the first's next `up` (a new reviewer JWT) goes on.
#[tokio::test]
async fn a_second_cluster_does_not_take_the_mount_from_the_first() {
    let vault = dev_vault().await;
    let root = &vault.root;
    let (_, auth) = setup_and_outside_cluster_auth(root).await;
    let mount = &auth.auth_mount;
    let first = mount_state(root, mount).await;
    let first_host = first.1["kubernetes_host"].as_str().unwrap().to_owned();
    let first_ca = first.1["kubernetes_ca_cert"].as_str().unwrap().to_owned();
    let other_ca = root
        .call(
            Method::POST,
            "test-pki/root/generate/internal",
            Some(&json!({"common_name": "other-cluster-ca.test", "ttl": "1h"})),
        )
        .await
        .unwrap()["data"]["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(other_ca, first_ca);
    let cluster = |host: &str, ca: &str| OutsideCluster {
        kubernetes_host: host.into(),
        kubernetes_ca_cert: ca.into(),
        token_reviewer_jwt: Secret::new("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvdGhlciJ9.c2lnbmF0dXJl"),
    };
    let file = vault_auth::roles_file();
    for (second, names) in [
        (
            cluster("https://198.51.100.7:6443", &other_ca),
            format!("{first_host}; this run would point it at https://198.51.100.7:6443"),
        ),
        (
            cluster(&first_host, &other_ca),
            format!("{first_host} with another CA"),
        ),
    ] {
        let err = format!(
            "{:#}",
            vault_auth::apply(root, &file, Some(&second))
                .await
                .unwrap_err()
        );
        assert!(err.contains(&names), "{err}");
        assert!(err.contains(&format!("bao auth disable {mount}")), "{err}");
        assert_eq!(
            mount_state(root, mount).await,
            first,
            "the config was changed"
        );
    }
    // The first cluster again, with a new reviewer JWT.
    vault_auth::apply(root, &file, Some(&cluster(&first_host, &first_ca)))
        .await
        .unwrap();
}

/// scenarios/vault/setup.yaml (what `up` applies first) against a Vault
/// that already holds a KV mount, a policy, an AppRole role and a pki mount
/// of the names it uses, made by someone else: each is refused with what
/// to do and left as it was. Then, with those gone, everything is created
/// marked, and a second run reuses its own.
#[tokio::test]
async fn cluster_vault_setup_writes_only_what_keyrig_made() {
    let vault = dev_vault().await;
    let root = &vault.root;
    let setup =
        rig::vault::setup::load_default(&["animal-rescue-api".into(), "billing-api".into()])
            .unwrap();
    let refusal = async || {
        format!(
            "{:#}",
            rig::vault::setup::apply(&setup, root).await.unwrap_err()
        )
    };

    // Someone's KV mount of that name.
    let kv = format!("sys/mounts/{}", setup.kv_mount);
    root.call(
        Method::POST,
        &kv,
        Some(&json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await
    .unwrap();
    root.kv2_put(&setup.kv_mount, "prod/key", &json!({"key": "theirs"}))
        .await
        .unwrap();
    let message = refusal().await;
    assert!(
        message.contains(&format!("{}/ is already mounted", setup.kv_mount)),
        "{message}"
    );
    assert!(message.contains("kv_mount in"), "{message}");
    assert_eq!(
        get(root, &format!("{}/data/prod/key", setup.kv_mount)).await["data"]["data"]["key"],
        "theirs"
    );
    root.call(Method::DELETE, &kv, None).await.unwrap();

    // Someone's policy named like keyrig's.
    let theirs = "path \"prod/*\" { capabilities = [\"read\"] }\n";
    root.put_policy("gateway-policy", theirs).await.unwrap();
    let message = refusal().await;
    assert!(
        message.contains("a policy named \"gateway-policy\""),
        "{message}"
    );
    assert!(message.contains("nothing was written"), "{message}");
    // Looked at first, so not even the (absent) KV mount was made.
    assert!(
        get(root, "sys/mounts").await["data"]
            .get(format!("{}/", setup.kv_mount))
            .is_none(),
        "a refused setup wrote a mount"
    );
    assert_eq!(
        get(root, "sys/policies/acl/gateway-policy").await["data"]["policy"],
        theirs
    );
    root.call(Method::DELETE, "sys/policies/acl/gateway-policy", None)
        .await
        .unwrap();

    // Someone's AppRole role named like keyrig's, granting their policy.
    root.enable_auth("approle", "approle").await.unwrap();
    root.call(
        Method::POST,
        &format!("auth/approle/role/{}", setup.keygate_role),
        Some(&json!({"token_policies": ["prod-read"]})),
    )
    .await
    .unwrap();
    let message = refusal().await;
    assert!(
        message.contains(&format!("an AppRole role named {:?}", setup.keygate_role)),
        "{message}"
    );
    assert!(message.contains("prod-read"), "{message}");
    assert_eq!(
        get(root, &format!("auth/approle/role/{}", setup.keygate_role)).await["data"]["token_policies"],
        json!(["prod-read"])
    );
    root.call(
        Method::DELETE,
        &format!("auth/approle/role/{}", setup.keygate_role),
        None,
    )
    .await
    .unwrap();

    // Someone's pki mount with their CA.
    let pki = setup.pki.as_ref().expect("setup.yaml has a pki section");
    root.call(
        Method::POST,
        &format!("sys/mounts/{}", pki.mount),
        Some(&json!({"type": "pki", "description": "the company CA"})),
    )
    .await
    .unwrap();
    let message = refusal().await;
    assert!(
        message.contains(&format!("{}/ is already mounted", pki.mount)),
        "{message}"
    );
    let roles = root
        .request(
            Method::from_bytes(b"LIST").unwrap(),
            &format!("{}/roles", pki.mount),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        roles.0,
        reqwest::StatusCode::NOT_FOUND,
        "no role was written: {roles:?}"
    );
    root.call(Method::DELETE, &format!("sys/mounts/{}", pki.mount), None)
        .await
        .unwrap();

    // Nothing of someone else's left: all created and marked; a second run
    // takes them as keyrig's.
    rig::vault::setup::apply(&setup, root).await.unwrap();
    rig::vault::setup::apply(&setup, root).await.unwrap();
    let policy = get(root, "sys/policies/acl/gateway-policy").await;
    assert!(
        policy["data"]["policy"]
            .as_str()
            .unwrap()
            .trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("# {}", rig::vault::ownership::OWNER_MARK))),
        "{policy}"
    );
    // A role an earlier setup made, granting a policy keyrig wrote that
    // this setup no longer names, is still keyrig's to rewrite.
    rig::vault::ownership::put_managed_policy(
        root,
        "retired-policy",
        "path \"nothing/*\" { capabilities = [\"deny\"] }\n",
        "an older setup.yaml",
    )
    .await
    .unwrap();
    root.approle_write_role(
        &setup.keygate_role,
        &["gateway-policy".to_owned(), "Retired-Policy".to_owned()],
        std::time::Duration::from_secs(600),
        std::time::Duration::from_secs(1200),
    )
    .await
    .unwrap();
    rig::vault::setup::apply(&setup, root).await.unwrap();
    let role = get(root, &format!("auth/approle/role/{}", setup.keygate_role)).await;
    assert!(
        !role["data"]["token_policies"]
            .to_string()
            .contains("retired-policy"),
        "{role}"
    );
    let mounts = get(root, "sys/mounts").await;
    for mount in [&setup.kv_mount, &pki.mount] {
        let description = mounts["data"][format!("{mount}/")]["description"].as_str();
        assert!(
            description.is_some_and(|d| d.contains(rig::vault::ownership::OWNER_MARK)),
            "{mount}: {description:?}"
        );
    }
}

#[tokio::test]
async fn committed_dev_credentials_are_refused_on_cluster_only() {
    let vault = dev_vault().await;
    let root = &vault.root;
    let setup =
        rig::vault::setup::load_default(&["animal-rescue-api".into(), "billing-api".into()])
            .unwrap();
    rig::vault::setup::apply(&setup, root).await.unwrap();
    let role = &setup.keygate_role;
    let committed = committed_credentials(None).unwrap();
    let dev = &committed[0];
    let role_id_before = root.approle_role_id(role).await.unwrap();

    let err = register_dev_credentials(root, role, dev, KubeProfile::Cluster, &committed)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to register the committed dev credentials"),
        "{err}"
    );
    assert!(
        !err.contains(dev.secret_id.expose()),
        "the refusal names no secret"
    );
    assert_eq!(root.approle_role_id(role).await.unwrap(), role_id_before);
    assert!(
        root.approle_login(&dev.role_id, &dev.secret_id)
            .await
            .is_err(),
        "the committed credentials do not log in"
    );
    // Only one of the two committed values is enough to refuse.
    let half = DevCredentials {
        role_id: role_id_before.clone(),
        secret_id: dev.secret_id.clone(),
    };
    assert!(
        register_dev_credentials(root, role, &half, KubeProfile::Cluster, &committed)
            .await
            .is_err()
    );

    // The role's role_id is never changed on a shared Vault: every Secret
    // naming it (another keyrig's) would stop logging in.
    let other_role_id = DevCredentials {
        role_id: "keyrig-run-0123456789ab".into(),
        secret_id: per_run_credentials(role_id_before.clone()).secret_id,
    };
    let err =
        register_dev_credentials(root, role, &other_role_id, KubeProfile::Cluster, &committed)
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("refusing to change AppRole"), "{err}");
    assert_eq!(root.approle_role_id(role).await.unwrap(), role_id_before);

    // Per-run credentials (the role's own role_id, a fresh secret_id):
    // registered, they log in, the role_id is as it was, and Vault expires
    // their secret_id (nothing revokes it after the run).
    let fresh = per_run_credentials(root.approle_role_id(role).await.unwrap());
    register_dev_credentials(root, role, &fresh, KubeProfile::Cluster, &committed)
        .await
        .unwrap();
    root.approle_login(&fresh.role_id, &fresh.secret_id)
        .await
        .unwrap();
    assert_eq!(root.approle_role_id(role).await.unwrap(), role_id_before);
    assert_eq!(
        secret_id_ttl(root, role, fresh.secret_id.expose()).await,
        super::credentials::CLUSTER_SECRET_ID_TTL.as_secs()
    );

    // kind's throwaway dev server takes the committed ones.
    register_dev_credentials(root, role, dev, KubeProfile::Kind, &committed)
        .await
        .unwrap();
    root.approle_login(&dev.role_id, &dev.secret_id)
        .await
        .unwrap();
    assert_eq!(secret_id_ttl(root, role, dev.secret_id.expose()).await, 0);
}

#[test]
fn inline_is_refused_on_cluster_before_anything_is_made() {
    use super::Mode;
    use super::credentials::{CredentialSource, source_for};
    let err = source_for(KubeProfile::Cluster, Mode::Inline)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mode inline is refused on the cluster profile"),
        "{err}"
    );
    assert_eq!(
        source_for(KubeProfile::Cluster, Mode::ExistingSecret).unwrap(),
        CredentialSource::PerRun
    );
    assert_eq!(
        source_for(KubeProfile::Kind, Mode::Inline).unwrap(),
        CredentialSource::Committed
    );
    assert_eq!(
        source_for(KubeProfile::Cluster, Mode::ExternalSecret).unwrap(),
        CredentialSource::FromVault
    );
}

/// e2e deletes only the cluster its own run created: a run that reused
/// `up`'s cluster leaves it (no `kind` is even needed to decide that).
#[tokio::test]
async fn a_run_that_reused_a_cluster_does_not_delete_it() {
    use super::state::KubeState;
    let base = tempfile::tempdir().unwrap();
    let run = |name: &str, created: bool| -> PathBuf {
        let dir = base.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        KubeState {
            profile: KubeProfile::Kind,
            mode: super::Mode::Inline,
            cluster: Some("keyrig".into()),
            created_cluster: created,
            deleted: false,
            kubeconfig: None,
        }
        .save(&dir)
        .unwrap();
        dir
    };
    let _up = run("up", true);
    let e2e = run("e2e", false);
    assert_eq!(
        super::profile::delete_created_cluster(&e2e, &[])
            .await
            .unwrap(),
        None
    );
    // Already deleted by another run of the same `down`: only recorded.
    let other = run("other", true);
    assert_eq!(
        super::profile::delete_created_cluster(&other, &["keyrig".into()])
            .await
            .unwrap(),
        None
    );
    assert!(KubeState::load(&other).unwrap().unwrap().deleted);
}

/// The cluster profile's Vault is usually https: the same Vault side over
/// `bao server -dev -dev-tls`, trusting its CA file; a client that does not
/// trust it is refused with the certificate error, before any request.
#[tokio::test]
async fn cluster_vault_side_works_over_https_with_a_ca_file() {
    let bao = super::pinned_tool("bao");
    let base = tempfile::tempdir().unwrap();
    let run = RunDir::create_in(base.path()).unwrap();
    let mut supervisor = Supervisor::new(&run);
    let tls =
        rig::process::dev_tls_vault::DevTlsVault::start(&mut supervisor, &run, &bao, "bao-tls")
            .await
            .unwrap();
    assert!(tls.addr.starts_with("https://"), "{}", tls.addr);
    let root = &tls.root;
    let (_, auth) = setup_and_outside_cluster_auth(root).await;
    assert_eq!(
        vault_auth::mount_owner(root, &auth.auth_mount)
            .await
            .unwrap(),
        MountOwner::Keyrig
    );
    let untrusting = VaultClient::new(&tls.addr).unwrap();
    let err = format!(
        "{:#}",
        vault_auth::mount_owner(&untrusting, &auth.auth_mount)
            .await
            .unwrap_err()
    );
    assert!(err.contains("certificate verify failed"), "{err}");
    assert!(err.contains("VAULT_CACERT"), "{err}");
}

/// The external-secret mode's source in a Vault of someone else's: Vault's
/// usual `secret/` mount is used as it is when it exists (keyrig writes
/// only `keyrig/gateway` in it), and created marked as keyrig's when it
/// does not; the fresh secret-id is registered for redaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_secret_source_marks_only_a_mount_it_creates() {
    let vault = dev_vault().await;
    let root = &vault.root;
    let (setup, auth) = setup_and_outside_cluster_auth(root).await;
    let mount = auth.gateway_credentials.mount.clone();
    let description = async || {
        get(root, "sys/mounts").await["data"][format!("{mount}/")]["description"]
            .as_str()
            .map(str::to_owned)
    };
    let run_dir = tempfile::tempdir().unwrap();
    let write = async || {
        super::credentials::write_external_secret_source(
            root,
            &auth,
            &setup.keygate_role,
            "http://openbao.openbao.svc:8200",
            "default",
            super::credentials::secret_id_ttl(KubeProfile::Cluster),
            run_dir.path(),
        )
        .await
        .unwrap()
    };

    // The dev server's own `secret/`: used, not claimed.
    let theirs = description().await.expect("the dev server mounts secret/");
    write().await;
    assert_eq!(description().await.as_deref(), Some(theirs.as_str()));
    let source = root
        .kv2_get(&mount, &auth.gateway_credentials.path)
        .await
        .unwrap()
        .expect("the source was written");
    let secret_id = source["secret_id"].as_str().unwrap().to_owned();
    assert!(
        rig::base::redact::load_registry(run_dir.path())
            .unwrap()
            .contains(&secret_id),
        "the source's secret-id is not registered for redaction"
    );
    assert_eq!(
        secret_id_ttl(root, &setup.keygate_role, &secret_id).await,
        super::credentials::CLUSTER_SECRET_ID_TTL.as_secs(),
        "the cluster profile's secret-id expires"
    );

    // No such mount: created, and marked.
    root.call(Method::DELETE, &format!("sys/mounts/{mount}"), None)
        .await
        .unwrap();
    write().await;
    let ours = description().await.expect("the mount was created");
    assert!(
        ours.contains(rig::vault::ownership::OWNER_MARK),
        "created without the mark: {ours:?}"
    );
    assert!(
        root.kv2_get(&mount, &auth.gateway_credentials.path)
            .await
            .unwrap()
            .is_some()
    );
}
