//! How the pods of the cluster profile reach its Vault. The manifests name
//! the kind profile's in-cluster dev server, `http://openbao.openbao.svc:8200`;
//! a user's Vault has its own address, and almost always https with a CA of
//! its own. For the cluster profile `up` writes a kustomization of the run
//! (`<run>/overlay/`) over the mode's overlay that points everything at
//! that address and trusts that CA:
//! - keygate's config: `vault.address`, `vault.ca_cert_file` (the CA
//!   mounted from ConfigMap `keyrig-vault-ca`), no `allow_plain_http`
//!   for https;
//! - the SecretStore: `server` and `caProvider`;
//! - the gateway credentials check Job: the CA mounted, `BAO_CACERT`;
//! - the credentials Secret's Vault address (existing-secret: written by
//!   `credentials::apply_existing_secret`; external-secret: the ESO source,
//!   which takes keygate's address).
//!
//! **Everything a pod uses to reach Vault comes from one [`ClusterVault`],
//! and keygate's own config parser checks the result before it is applied.**

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::names;

/// Where the keygate container finds the CA (ConfigMap `keyrig-vault-ca`).
const CA_DIR: &str = "/etc/keygate/vault-ca";
/// Where the check Job's `bao` finds it (its `BAO_CACERT`).
pub const CHECK_JOB_CA_DIR: &str = "/etc/vault-ca";
const CA_KEY: &str = "ca.crt";
pub const CA_CONFIGMAP: &str = "keyrig-vault-ca";

/// The Vault the cluster's pods talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterVault {
    /// As pods reach it: `KEYRIG_VAULT_ADDR_IN_CLUSTER`, else `VAULT_ADDR`.
    pub address: String,
    /// PEM of the CA that signed its certificate (https only):
    /// `KEYRIG_VAULT_CACERT_IN_CLUSTER`, else `VAULT_CACERT`; `None`: the
    /// system's trust store (a publicly signed certificate).
    pub ca_pem: Option<String>,
}

impl ClusterVault {
    /// From the process's environment (the cluster profile's variables).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From the variables `var` gives (the process's environment, or a
    /// test's). A loopback `VAULT_ADDR` (a port-forward on this machine)
    /// is refused unless `KEYRIG_VAULT_ADDR_IN_CLUSTER` says where pods
    /// reach Vault: in a pod it names the pod itself, and the check Job
    /// would only fail after its retries, minutes later.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let (address, from) = match var("KEYRIG_VAULT_ADDR_IN_CLUSTER") {
            Some(address) => (address, "KEYRIG_VAULT_ADDR_IN_CLUSTER"),
            None => (
                var("VAULT_ADDR").context(
                    "VAULT_ADDR is not set: the cluster profile runs against an existing Vault \
                     (export VAULT_ADDR=https://...; KEYRIG_VAULT_ADDR_IN_CLUSTER when pods reach it \
                     by another address)",
                )?,
                "VAULT_ADDR",
            ),
        };
        if from == "VAULT_ADDR"
            && let Some(host) = loopback_host(&address)
        {
            bail!(
                "VAULT_ADDR={} names {host}, this machine's loopback (a port-forward?): \
                 the cluster's pods would reach themselves there, not Vault. Set \
                 KEYRIG_VAULT_ADDR_IN_CLUSTER to the address pods reach Vault at \
                 (e.g. http://vault.vault.svc:8200); VAULT_ADDR stays the one this machine uses",
                address.trim()
            );
        }
        let ca_file = var("KEYRIG_VAULT_CACERT_IN_CLUSTER")
            .map(|f| (f, "KEYRIG_VAULT_CACERT_IN_CLUSTER"))
            .or_else(|| var("VAULT_CACERT").map(|f| (f, "VAULT_CACERT")));
        let ca_pem = match ca_file {
            Some((file, name)) => {
                let pem = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {name}={file}"))?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    bail!("{name}={file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
                }
                Some(pem)
            }
            None => None,
        };
        Self::new(address, ca_pem).map_err(|err| anyhow!("{from}: {err}"))
    }

    /// Checks the address (http or https, no path) and that a CA comes
    /// only with https.
    pub fn new(address: String, ca_pem: Option<String>) -> Result<Self> {
        let address = address.trim().trim_end_matches('/').to_owned();
        let rest = address
            .strip_prefix("https://")
            .or_else(|| address.strip_prefix("http://"))
            .with_context(|| format!("{address:?} is not an http:// or https:// address"))?;
        if rest.is_empty() || rest.contains('/') {
            bail!("{address:?} must be scheme://host[:port], without a path");
        }
        let ca_pem = ca_pem.filter(|_| address.starts_with("https://"));
        Ok(Self { address, ca_pem })
    }

    fn https(&self) -> bool {
        self.address.starts_with("https://")
    }

    /// keygate's config text with this Vault: `vault.address`, and for
    /// https no `allow_plain_http` and, with a CA, `vault.ca_cert_file`.
    pub fn keygate_config(&self, text: &str) -> Result<String> {
        let mut config: serde_yaml::Value =
            serde_yaml::from_str(text).context("reading keygate's config")?;
        let vault = config
            .get_mut("vault")
            .and_then(serde_yaml::Value::as_mapping_mut)
            .context("keygate's config has no `vault:` section")?;
        vault.insert("address".into(), self.address.clone().into());
        if self.https() {
            vault.remove("allow_plain_http");
        } else {
            vault.insert("allow_plain_http".into(), true.into());
        }
        if self.ca_pem.is_some() {
            vault.insert("ca_cert_file".into(), format!("{CA_DIR}/{CA_KEY}").into());
        } else {
            vault.remove("ca_cert_file");
        }
        let text = serde_yaml::to_string(&config).context("writing keygate's config")?;
        Ok(format!(
            "# Written by keyrig for this run (rig_k8s::cluster_vault): scenarios/k8s/base/config/keygate.yaml\n# with the cluster profile's Vault.\n{text}"
        ))
    }

    /// Writes `<dir>/kustomization.yaml` (and the files it names) over the
    /// mode's overlay `mode_overlay`, whose rendering is `rendered`.
    pub fn write_overlay(&self, dir: &Path, mode_overlay: &Path, rendered: &[Value]) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let configmap = manifests::find(rendered, "ConfigMap", "keygate-config")
            .context("the overlay renders no ConfigMap keygate-config")?;
        let text = configmap["data"]["keygate.yaml"]
            .as_str()
            .context("ConfigMap keygate-config has no data.keygate.yaml")?;
        write(&dir.join("keygate.yaml"), &self.keygate_config(text)?)?;
        let base = relative_path(dir, mode_overlay)?;
        let mut generators = vec![json!({
            "name": "keygate-config", "namespace": names::NAMESPACE,
            "behavior": "replace", "files": ["keygate.yaml"],
        })];
        // JSON 6902 patches; kustomize reads a patch given as a list of ops.
        let mut patches = Vec::new();
        let mut patch = |kind: &str, name: &str, ops: Value| {
            patches.push(json!({"target": {"kind": kind, "name": name}, "patch": ops.to_string()}));
        };
        if manifests::find(rendered, "SecretStore", names::SECRET_STORE).is_some() {
            let mut ops = vec![
                json!({"op": "replace", "path": "/spec/provider/vault/server", "value": self.address}),
            ];
            if self.ca_pem.is_some() {
                let ca = json!({"type": "ConfigMap", "name": CA_CONFIGMAP, "key": CA_KEY});
                ops.push(
                    json!({"op": "add", "path": "/spec/provider/vault/caProvider", "value": ca}),
                );
            }
            patch("SecretStore", names::SECRET_STORE, Value::Array(ops));
        }
        if let Some(pem) = &self.ca_pem {
            write(&dir.join(CA_KEY), pem)?;
            generators.push(json!({
                "name": CA_CONFIGMAP, "namespace": names::NAMESPACE, "files": [CA_KEY],
                "options": {"labels": {names::PART_OF_LABEL: "keyrig"}},
            }));
            // The CA ConfigMap as a volume of the pod, mounted at `dir` in
            // its first container.
            let mount_ca = |dir: &str| {
                vec![
                    json!({"op": "add", "path": "/spec/template/spec/volumes/-",
                     "value": {"name": "vault-ca", "configMap": {"name": CA_CONFIGMAP}}}),
                    json!({"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
                     "value": {"name": "vault-ca", "mountPath": dir, "readOnly": true}}),
                ]
            };
            patch("Deployment", names::KEYGATE, Value::Array(mount_ca(CA_DIR)));
            let mut job = mount_ca(CHECK_JOB_CA_DIR);
            job.push(
                json!({"op": "add", "path": "/spec/template/spec/containers/0/env/-",
                "value": {"name": "BAO_CACERT", "value": format!("{CHECK_JOB_CA_DIR}/{CA_KEY}")}}),
            );
            patch("Job", names::CHECK_JOB, Value::Array(job));
        }
        let kustomization = json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [base.display().to_string()],
            "generatorOptions": {"disableNameSuffixHash": true},
            "configMapGenerator": generators,
            "patches": patches,
        });
        let text = serde_yaml::to_string(&kustomization).context("writing the kustomization")?;
        write(
            &dir.join("kustomization.yaml"),
            &format!(
                "# Written by keyrig for this run (rig_k8s::cluster_vault): the mode's overlay\n\
                 # with the cluster profile's Vault at {}.\n{text}",
                self.address
            ),
        )
    }
}

/// The host of `address` (`scheme://host[:port]...`) when it is a
/// loopback one: `localhost` (or a name under it), 127.0.0.0/8, `::1`,
/// an IPv4-mapped loopback, or the unspecified address (which a
/// connection takes for this host).
fn loopback_host(address: &str) -> Option<String> {
    let rest = address.trim().split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    let loopback = lower == "localhost"
        || lower.ends_with(".localhost")
        || lower.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            let ip = ip.to_canonical();
            ip.is_loopback() || ip.is_unspecified()
        });
    loopback.then(|| host.to_owned())
}

fn write(file: &Path, text: &str) -> Result<()> {
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))
}

/// `to` relative to directory `from` (kustomize refuses an absolute
/// resource path). Both are resolved first, symlinks too, as kustomize
/// resolves them (`target/` may be a link elsewhere).
pub(crate) fn relative_path(from: &Path, to: &Path) -> Result<PathBuf> {
    let absolute = |p: &Path| -> Result<Vec<String>> {
        let p = match std::fs::canonicalize(p) {
            Ok(p) => p,
            Err(_) => {
                std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?
            }
        };
        let mut parts: Vec<String> = Vec::new();
        for component in p.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    parts.pop();
                }
                _ => {}
            }
        }
        Ok(parts)
    };
    let (from, to) = (absolute(from)?, absolute(to)?);
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for part in &to[common..] {
        relative.push(part);
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn an_address_is_scheme_host_and_port_and_a_ca_comes_with_https_only() {
        let vault =
            ClusterVault::new("https://vault.example.com:8200/".into(), Some(CA.into())).unwrap();
        assert_eq!(vault.address, "https://vault.example.com:8200");
        assert!(vault.ca_pem.is_some());
        let plain =
            ClusterVault::new("http://vault.vault.svc:8200".into(), Some(CA.into())).unwrap();
        assert_eq!(plain.ca_pem, None);
        for bad in ["vault.example.com:8200", "https://", "https://vault/v1"] {
            assert!(ClusterVault::new(bad.into(), None).is_err(), "{bad}");
        }
    }

    /// A VAULT_ADDR on this machine's loopback (the user's port-forward)
    /// would be handed to pods, which reach themselves there: refused at
    /// once, naming the variable to set, unless that variable is set.
    #[test]
    fn a_loopback_vault_addr_is_refused_without_the_in_cluster_address() {
        let from = |pairs: &[(&str, &str)]| {
            let vars: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            ClusterVault::from_vars(|name| vars.get(name).cloned())
        };
        for loopback in [
            "http://127.0.0.1:8200",
            "https://localhost:8200",
            "http://LOCALHOST.:8200",
            "http://vault.localhost:8200",
            "http://127.1.2.3:8200",
            "http://[::1]:8200",
            "http://[::ffff:127.0.0.1]:8200",
            "http://0.0.0.0:8200",
        ] {
            let err = format!("{:#}", from(&[("VAULT_ADDR", loopback)]).unwrap_err());
            assert!(
                err.contains("Set KEYRIG_VAULT_ADDR_IN_CLUSTER"),
                "{loopback}: {err}"
            );
            assert!(err.contains(loopback), "{loopback}: {err}");
        }
        // Told where pods reach Vault: the loopback VAULT_ADDR is this
        // machine's business.
        let vault = from(&[
            ("VAULT_ADDR", "http://127.0.0.1:8200"),
            (
                "KEYRIG_VAULT_ADDR_IN_CLUSTER",
                "http://vault.vault.svc:8200",
            ),
        ])
        .unwrap();
        assert_eq!(vault.address, "http://vault.vault.svc:8200");
        // Addresses that only look alike.
        for address in [
            "https://vault.example.com:8200",
            "http://127.0.0.1.nip.io:8200",
            "http://localhost-vault:8200",
            "http://10.0.0.1:8200",
            "http://[fd00::1]:8200",
        ] {
            assert_eq!(from(&[("VAULT_ADDR", address)]).unwrap().address, address);
        }
    }

    #[test]
    fn the_relative_path_climbs_to_the_common_directory() {
        assert_eq!(
            relative_path(
                Path::new("/w/target/rig/run-1/overlay"),
                Path::new("/w/scenarios/k8s/inline")
            )
            .unwrap(),
            PathBuf::from("../../../../scenarios/k8s/inline")
        );
    }

    /// The run's overlay, rendered by the pinned kubectl: every place a pod
    /// reaches Vault names the cluster profile's Vault and trusts its CA,
    /// and keygate's own parser accepts its config.
    #[test]
    fn the_runs_overlay_points_every_pod_at_the_clusters_vault() {
        let kubectl = super::super::pinned_tool("kubectl");
        let mode_overlay = rig::base::paths::scenarios_dir()
            .join("k8s")
            .join("external-secret");
        let rendered = manifests::render_overlay(&kubectl, &mode_overlay).unwrap();
        // Where run directories are.
        let runs = rig::base::paths::rig_dir();
        std::fs::create_dir_all(&runs).unwrap();
        let dir = tempfile::tempdir_in(&runs).unwrap();
        let vault =
            ClusterVault::new("https://vault.example.com:8200".into(), Some(CA.into())).unwrap();
        vault
            .write_overlay(dir.path(), &mode_overlay, &rendered)
            .unwrap();
        let ours = manifests::render_overlay(&kubectl, dir.path()).unwrap();

        let text = serde_json::to_string(&ours).unwrap();
        assert!(
            !text.contains("openbao.openbao.svc"),
            "an in-cluster dev address is left"
        );
        let store = manifests::find(&ours, "SecretStore", names::SECRET_STORE).unwrap();
        let vault_spec = &store["spec"]["provider"]["vault"];
        assert_eq!(vault_spec["server"], "https://vault.example.com:8200");
        assert_eq!(vault_spec["caProvider"]["name"], CA_CONFIGMAP);
        assert_eq!(vault_spec["caProvider"]["key"], CA_KEY);
        // Every object, patched ones included, round-trips through its
        // typed struct (ESO's `caProvider` spelled as ESO reads it).
        manifests::check_all(&ours).unwrap_or_else(|lost| panic!("{lost:?}"));
        let ca = manifests::find(&ours, "ConfigMap", CA_CONFIGMAP).unwrap();
        assert_eq!(ca["data"][CA_KEY], CA);
        assert_eq!(ca["metadata"]["labels"][names::PART_OF_LABEL], "keyrig");
        let keygate = manifests::find(&ours, "Deployment", names::KEYGATE).unwrap();
        let pod = &keygate["spec"]["template"]["spec"];
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["configMap"]["name"] == CA_CONFIGMAP),
            "{pod}"
        );
        assert!(
            pod["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == CA_DIR),
            "{pod}"
        );
        let config = super::super::environment::keygate_config(&ours, dir.path()).unwrap();
        assert_eq!(config.vault.address, "https://vault.example.com:8200");
        assert_eq!(
            config.vault.ca_cert_file.as_deref(),
            Some(Path::new("/etc/keygate/vault-ca/ca.crt"))
        );
        assert!(!config.vault.allow_plain_http);
    }
}
