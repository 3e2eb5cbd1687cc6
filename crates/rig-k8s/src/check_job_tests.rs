//! The gateway credentials check Job's script
//! (scenarios/k8s/base/gateway-credentials-check.yaml), run as the Job runs
//! it, without a cluster: `/bin/sh -c <its script>` with the Job's own
//! environment, the pinned `bao` as its CLI, against a real OpenBao over
//! https (`bao server -dev -dev-tls`). The Job's verdicts are its exit
//! codes: 0 logs in, 2 fails the Job at once (a retry changes nothing),
//! 1 is retried.
//! - the cluster profile's Job (its overlay from `cluster_vault`) trusts the
//!   mounted CA, and only that CA;
//! - the kind profile's Job (no CA) trusts no private CA;
//! - a missing key, a refused login, http to an https listener: 2;
//! - no key at all, Vault down, Vault sealed: 1;
//! - no output names the role or secret ID.

#![cfg(test)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::cluster_vault::{CHECK_JOB_CA_DIR, ClusterVault};
use super::names;
use rig::base::run::RunDir;
use rig::process::dev_tls_vault::DevTlsVault;
use rig::process::supervisor::Supervisor;
use rig::vault::client::VaultClient;

/// The Job's container as rendered: its script, the environment it sets
/// itself, and which Secret key each of the other variables comes from.
struct CheckJob {
    script: String,
    literal_env: Vec<(String, String)>,
    /// (variable, key of the credentials Secret)
    secret_env: Vec<(String, String)>,
}

impl CheckJob {
    fn from_rendered(objects: &[Value]) -> Self {
        let job = manifests::find(objects, "Job", names::CHECK_JOB).expect("the check Job");
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["command"], json!(["/bin/sh", "-c"]));
        let mut literal_env = Vec::new();
        let mut secret_env = Vec::new();
        for var in container["env"].as_array().expect("env") {
            let name = var["name"].as_str().unwrap().to_owned();
            if let Some(value) = var["value"].as_str() {
                literal_env.push((name, value.to_owned()));
            } else {
                let reference = &var["valueFrom"]["secretKeyRef"];
                assert_eq!(reference["name"], names::CREDENTIALS_SECRET, "{name}");
                secret_env.push((name, reference["key"].as_str().unwrap().to_owned()));
            }
        }
        // BAO_CACERT names a file the pod has: ConfigMap keyrig-vault-ca's
        // ca.crt, mounted at its directory.
        if let Some((_, file)) = literal_env.iter().find(|(name, _)| name == "BAO_CACERT") {
            let dir = Path::new(file).parent().unwrap().to_str().unwrap();
            let mount = container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["mountPath"] == dir)
                .unwrap_or_else(|| panic!("nothing is mounted at {dir}: {container:#}"));
            let volume = job["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == mount["name"])
                .expect("the mounted volume");
            assert_eq!(
                volume["configMap"]["name"],
                super::cluster_vault::CA_CONFIGMAP
            );
            assert_eq!(Path::new(file).file_name().unwrap(), "ca.crt");
        }
        Self {
            script: container["args"][0]
                .as_str()
                .expect("the script")
                .to_owned(),
            literal_env,
            secret_env,
        }
    }

    /// The kind profile's Job: the mode's overlay as it is.
    fn kind() -> Self {
        let kubectl = super::pinned_tool("kubectl");
        let overlay = rig::base::paths::scenarios_dir().join("k8s/inline");
        Self::from_rendered(&manifests::render_overlay(&kubectl, &overlay).unwrap())
    }

    /// The cluster profile's Job: the run's overlay over the mode's.
    fn cluster(vault: &ClusterVault) -> Self {
        let kubectl = super::pinned_tool("kubectl");
        let overlay = rig::base::paths::scenarios_dir().join("k8s/inline");
        let rendered = manifests::render_overlay(&kubectl, &overlay).unwrap();
        let runs = rig::base::paths::rig_dir();
        std::fs::create_dir_all(&runs).unwrap();
        let dir = tempfile::tempdir_in(&runs).unwrap();
        vault
            .write_overlay(dir.path(), &overlay, &rendered)
            .unwrap();
        Self::from_rendered(&manifests::render_overlay(&kubectl, dir.path()).unwrap())
    }

    /// Runs the script with `secret` as the credentials Secret's data and
    /// the Job's mounted CA at `ca`: (exit code, stdout and stderr).
    async fn run(
        &self,
        tools: &Tools,
        secret: &[(&str, &str)],
        ca: Option<&Path>,
    ) -> (i32, String) {
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&self.script)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", tools.bin.path().display()),
            )
            .current_dir(tools.home.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for (name, value) in &self.literal_env {
            let value = match name.as_str() {
                "HOME" => tools.home.path().display().to_string(),
                "BAO_CACERT" => {
                    assert_eq!(value, &format!("{CHECK_JOB_CA_DIR}/ca.crt"));
                    let ca = ca.expect("the Job names a CA file: the test gives one");
                    ca.display().to_string()
                }
                _ => value.clone(),
            };
            command.env(name, value);
        }
        for (name, key) in &self.secret_env {
            if let Some((_, value)) = secret.iter().find(|(k, _)| k == key) {
                command.env(name, value);
            }
        }
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("the script ends within a minute")
            .expect("/bin/sh runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text)
    }

    fn names_a_ca(&self) -> bool {
        self.literal_env
            .iter()
            .any(|(name, _)| name == "BAO_CACERT")
    }
}

/// `bao` on the script's PATH (the pinned binary, whatever its file is
/// called), and a home for it.
struct Tools {
    bin: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Tools {
    fn new() -> Self {
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(super::pinned_tool("bao"), bin.path().join("bao")).unwrap();
        Self {
            bin,
            home: tempfile::tempdir().unwrap(),
        }
    }
}

/// A dev-tls OpenBao with an AppRole `gateway`: (its run, the server,
/// role ID, a secret ID).
async fn vault_with_approle() -> (tempfile::TempDir, Supervisor, DevTlsVault, String, String) {
    let base = tempfile::tempdir().unwrap();
    let run = RunDir::create_in(base.path()).unwrap();
    let mut supervisor = Supervisor::new(&run);
    let vault = DevTlsVault::start(&mut supervisor, &run, &super::pinned_tool("bao"), "bao")
        .await
        .unwrap();
    let root = &vault.root;
    root.enable_auth("approle", "approle").await.unwrap();
    root.approle_write_role(
        "gateway",
        &["default".into()],
        Duration::from_secs(300),
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let role_id = root.approle_role_id("gateway").await.unwrap();
    let secret_id = root
        .approle_new_secret_id("gateway")
        .await
        .unwrap()
        .secret_id
        .expose()
        .to_owned();
    (base, supervisor, vault, role_id, secret_id)
}

/// A CA that did not sign the server's certificate (a pki mount's root),
/// in a file.
async fn another_ca(root: &VaultClient, dir: &Path) -> PathBuf {
    let file = dir.join("another-ca.pem");
    std::fs::write(&file, super::vault_side_tests::some_ca(root).await).unwrap();
    file
}

#[tokio::test]
async fn the_check_job_logs_in_only_through_a_verified_vault_and_names_what_is_wrong() {
    let (_base, _supervisor, vault, role_id, secret_id) = vault_with_approle().await;
    let tools = Tools::new();
    let ca_pem = std::fs::read_to_string(&vault.ca_file).unwrap();
    let cluster = CheckJob::cluster(&ClusterVault::new(vault.addr.clone(), Some(ca_pem)).unwrap());
    assert!(
        cluster.names_a_ca(),
        "the cluster profile's Job gets BAO_CACERT"
    );
    let kind = CheckJob::kind();
    assert!(!kind.names_a_ca());

    let addr = vault.addr.as_str();
    let full = [
        ("vault-url", addr),
        ("role-id", role_id.as_str()),
        ("secret-id", secret_id.as_str()),
        ("gateway-group", "keyrig-gateways"),
    ];
    let with = |changes: &[(&'static str, Option<&'static str>)]| -> Vec<(&str, String)> {
        full.iter()
            .filter_map(
                |(key, value)| match changes.iter().find(|(k, _)| k == key) {
                    Some((_, None)) => None,
                    Some((_, Some(new))) => Some((*key, (*new).to_owned())),
                    None => Some((*key, (*value).to_owned())),
                },
            )
            .collect()
    };
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://{}", listener.local_addr().unwrap())
    };
    let plain_http = addr.replacen("https://", "http://", 1);
    let other_ca = another_ca(&vault.root, tools.home.path()).await;
    let ca = Some(vault.ca_file.as_path());

    struct Case<'a> {
        what: &'a str,
        job: &'a CheckJob,
        secret: Vec<(&'a str, String)>,
        ca: Option<&'a Path>,
        code: i32,
        says: &'a str,
    }
    let cases = [
        Case {
            what: "the cluster profile's Job with the Vault's CA",
            job: &cluster,
            secret: with(&[]),
            ca,
            code: 0,
            says: "its AppRole logs in to",
        },
        Case {
            what: "a wrong secret ID",
            job: &cluster,
            secret: with(&[("secret-id", Some("5b1d9a4e-0000-4000-8000-000000000000"))]),
            ca,
            code: 2,
            says: "refuses the AppRole login",
        },
        Case {
            what: "no gateway-group key",
            job: &cluster,
            secret: with(&[("gateway-group", None)]),
            ca,
            code: 2,
            says: "lacks key gateway-group",
        },
        Case {
            what: "no key at all (ESO has not synced yet)",
            job: &cluster,
            secret: Vec::new(),
            ca,
            code: 1,
            says: "has none of the keys",
        },
        Case {
            what: "a CA that did not sign Vault's certificate",
            job: &cluster,
            secret: with(&[]),
            ca: Some(other_ca.as_path()),
            code: 2,
            says: "x509",
        },
        Case {
            what: "the kind profile's Job (no CA) against a private CA",
            job: &kind,
            secret: with(&[]),
            ca: None,
            code: 2,
            says: "x509",
        },
        Case {
            what: "http:// to an https listener",
            job: &kind,
            secret: with(&[])
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        if k == "vault-url" {
                            plain_http.clone()
                        } else {
                            v
                        },
                    )
                })
                .collect(),
            ca: None,
            code: 2,
            says: "Code: 400",
        },
        Case {
            what: "nothing listening",
            job: &cluster,
            secret: with(&[])
                .into_iter()
                .map(|(k, v)| (k, if k == "vault-url" { closed.clone() } else { v }))
                .collect(),
            ca,
            code: 1,
            says: "does not answer",
        },
    ];
    let mut failures = Vec::new();
    let mut check = |what: &str, (code, text): (i32, String), want: i32, says: &str| {
        if code != want || !text.contains(says) {
            failures.push(format!(
                "{what}: exit {code} (want {want}, saying {says:?}):\n{text}"
            ));
        }
        for credential in [role_id.as_str(), secret_id.as_str()] {
            assert!(
                !text.contains(credential),
                "{what}: the output names a credential"
            );
        }
    };
    for case in &cases {
        let secret: Vec<(&str, &str)> = case.secret.iter().map(|(k, v)| (*k, v.as_str())).collect();
        check(
            case.what,
            case.job.run(&tools, &secret, case.ca).await,
            case.code,
            case.says,
        );
    }
    // Last: sealing ends the server's usefulness to the cases above.
    vault
        .root
        .call(Method::PUT, "sys/seal", None)
        .await
        .unwrap();
    let secret: Vec<(&str, &str)> = full.to_vec();
    check(
        "a sealed Vault",
        cluster.run(&tools, &secret, ca).await,
        1,
        "is sealed",
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
