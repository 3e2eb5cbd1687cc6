//! External Secrets Operator, for the external-secret mode: installed from
//! the pinned chart (kind; a cluster without it), or used where someone
//! else installed it (cluster), and waited for either way; the conditions
//! of its objects when a sync fails.
//!
//! **An ESO keyrig did not install is never upgraded or changed: its CRDs
//! and, when they can be found by the chart's labels, its Deployments are
//! waited for.** Its CRDs must serve `external-secrets.io/v1`, the version
//! the overlay is written in; else `up` stops at once, naming the versions
//! they serve.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use manifests::files::ChartPin;

use super::commands::Commands;
use super::{KubeProfile, names};
use rig::say;

/// The chart labels each of its Deployments `app.kubernetes.io/name` =
/// the chart's name plus the component's suffix, which are the Deployments'
/// names under the release `external-secrets`: a selector for all three.
fn chart_deployments_selector() -> String {
    format!(
        "app.kubernetes.io/name in ({})",
        names::ESO_DEPLOYMENTS.join(",")
    )
}

/// Installs ESO unless the cluster profile finds it installed, then waits
/// for its CRDs and Deployments.
pub async fn ensure(
    cmds: &Commands,
    helm: &Path,
    chart: &ChartPin,
    client: &kube::Client,
    profile: KubeProfile,
    deadline: Duration,
) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let installed = crds.get_opt(names::ESO_CRDS[0]).await?.is_some();
    let someone_elses = installed
        && profile == KubeProfile::Cluster
        // An install an earlier run left pending is keyrig's to finish
        // (helm::install says what to run).
        && !super::helm::release(cmds, helm, chart)
            .await?
            .is_some_and(|r| r.status.starts_with("pending-"));
    if someone_elses {
        // Its CRDs must serve the version the overlay is written in, or
        // `kubectl apply` fails minutes later ("no matches for kind").
        for name in names::ESO_CRDS {
            match crds.get_opt(name).await? {
                Some(crd) => serves(&crd, ESO_API_VERSION, &chart.version)?,
                None => bail!(
                    "an External Secrets Operator someone else installed is in the cluster \
                     (CRD {}), but CRD {name} is missing: the external-secret overlay needs it; \
                     complete or upgrade that install, or run another --mode",
                    names::ESO_CRDS[0]
                ),
            }
        }
        say!("external-secrets: already installed in the cluster; left as it is");
    } else {
        super::helm::install(cmds, helm, chart, profile).await?;
    }
    for crd in names::ESO_CRDS {
        super::waits::crd_established(client, crd, deadline).await?;
    }
    let deployments = if someone_elses {
        found_deployments(client).await
    } else {
        names::ESO_DEPLOYMENTS
            .iter()
            .map(|name| (chart.namespace.clone(), (*name).to_owned()))
            .collect()
    };
    for (namespace, name) in deployments {
        super::waits::deployment(client, &namespace, &name, deadline).await?;
    }
    Ok(())
}

/// The version of `external-secrets.io` the external-secret overlay's
/// objects are written in (ESO serves it since v0.16.0, and only it since
/// v0.17.0).
const ESO_API_VERSION: &str = "v1";

/// `crd` serves `version` (`spec.versions[].served`); else the refusal,
/// naming the versions it does serve (`pinned`: the chart version keyrig
/// would install, for the message).
fn serves(crd: &CustomResourceDefinition, version: &str, pinned: &str) -> Result<()> {
    let versions = &crd.spec.versions;
    if versions.iter().any(|v| v.name == version && v.served) {
        return Ok(());
    }
    let served: Vec<&str> = versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.as_str())
        .collect();
    let name = crd.metadata.name.as_deref().unwrap_or("?");
    bail!(
        "the External Secrets Operator installed in this cluster (not by keyrig, which leaves it \
         as it is) serves {name} in {}, not {}/{version}, which the external-secret overlay is \
         written in (ESO v0.16.0 and later serve it; keyrig's pin, env/k8s.toml, is chart \
         {pinned}): upgrade that ESO, or run another --mode",
        if served.is_empty() {
            "no version".to_owned()
        } else {
            format!("version(s) {}", served.join(", "))
        },
        crd.spec.group,
    )
}

/// The Deployments of an ESO someone else installed, wherever they are,
/// by the chart's labels. None found (another installer, a `nameOverride`)
/// or not allowed to look: said, and nothing to wait for; the
/// ExternalSecret's own wait then shows whether anything syncs it.
async fn found_deployments(client: &kube::Client) -> Vec<(String, String)> {
    let api: Api<Deployment> = Api::all(client.clone());
    let selector = chart_deployments_selector();
    match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => {
            let found: Vec<(String, String)> = list
                .items
                .into_iter()
                .filter_map(|d| Some((d.metadata.namespace?, d.metadata.name?)))
                .collect();
            if found.is_empty() {
                say!(
                    "external-secrets: no Deployment in any namespace matches `{selector}` (installed another way, or with a nameOverride?): not waited for"
                );
            } else {
                let list: Vec<String> = found.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
                say!(
                    "external-secrets: waiting for its Deployments {}",
                    list.join(", ")
                );
            }
            found
        }
        Err(err) => {
            say!(
                "external-secrets: cannot list Deployments across namespaces ({err}): its pods are not waited for"
            );
            Vec::new()
        }
    }
}

/// The Ready conditions (status, reason, message) of the ExternalSecret and
/// its SecretStore, as ESO wrote them: Vault's 403 or an unknown role land
/// there. Neither has a status at all when no controller runs.
pub async fn conditions(client: &kube::Client) -> String {
    use manifests::eso::v1::{ExternalSecret, SecretStore};
    let externals: Api<ExternalSecret> = Api::namespaced(client.clone(), names::NAMESPACE);
    let stores: Api<SecretStore> = Api::namespaced(client.clone(), names::NAMESPACE);
    let external = match externals.get_opt(names::EXTERNAL_SECRET).await {
        Ok(Some(es)) => super::waits::describe_ready(es.status.as_ref()),
        Ok(None) => "not found".into(),
        Err(err) => format!("cannot read it ({err})"),
    };
    let store = match stores.get_opt(names::SECRET_STORE).await {
        Ok(Some(store)) => super::waits::describe_ready(store.status.as_ref()),
        Ok(None) => "not found".into(),
        Err(err) => format!("cannot read it ({err})"),
    };
    format!(
        "ExternalSecret {ns}/{}: {external}\nSecretStore {ns}/{}: {store}",
        names::EXTERNAL_SECRET,
        names::SECRET_STORE,
        ns = names::NAMESPACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// CRD externalsecrets.external-secrets.io as ESO ships it
    /// (config/crds/bases/external-secrets.io_externalsecrets.yaml), its
    /// schemas and printer columns left out, with `versions` (name,
    /// served, storage).
    fn external_secrets_crd(versions: &[(&str, bool, bool)]) -> CustomResourceDefinition {
        let versions: Vec<Value> = versions
            .iter()
            .map(|(name, served, storage)| {
                json!({"name": name, "served": served, "storage": storage,
                       "subresources": {"status": {}},
                       "schema": {"openAPIV3Schema": {"type": "object"}}})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "externalsecrets.external-secrets.io",
                         "annotations": {"controller-gen.kubebuilder.io/version": "v0.13.0"}},
            "spec": {
                "group": "external-secrets.io",
                "names": {"categories": ["externalsecrets"], "kind": "ExternalSecret",
                          "listKind": "ExternalSecretList", "plural": "externalsecrets",
                          "shortNames": ["es"], "singular": "externalsecret"},
                "scope": "Namespaced",
                "versions": versions,
            },
            "status": {"conditions": [{"type": "Established", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z",
                                       "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}]},
        }))
        .unwrap()
    }

    /// An ESO someone else installed is used only when its CRDs serve
    /// external-secrets.io/v1; else `up` stops at once naming what they serve.
    #[test]
    fn an_eso_whose_crds_do_not_serve_v1_is_refused_naming_what_they_serve() {
        // ESO v0.9.9: v1alpha1 and v1beta1 (storage).
        let old = external_secrets_crd(&[("v1alpha1", true, false), ("v1beta1", true, true)]);
        let err = serves(&old, ESO_API_VERSION, "2.10.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "serves externalsecrets.external-secrets.io in version(s) v1alpha1, v1beta1, \
                 not external-secrets.io/v1"
            ),
            "{err}"
        );
        assert!(err.contains("chart 2.10.0"), "{err}");
        // A CRD that lists v1 without serving it.
        let unserved = external_secrets_crd(&[("v1", false, false), ("v1beta1", true, true)]);
        let err = serves(&unserved, ESO_API_VERSION, "2.10.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("in version(s) v1beta1, not"), "{err}");
        // ESO v0.17.0 and later (v2.x): v1 served and stored, v1beta1 not served.
        let current = external_secrets_crd(&[("v1", true, true), ("v1beta1", false, false)]);
        serves(&current, ESO_API_VERSION, "2.10.0").unwrap();
        // v0.16: both served, v1 stored.
        let both = external_secrets_crd(&[("v1", true, true), ("v1beta1", true, false)]);
        serves(&both, ESO_API_VERSION, "2.10.0").unwrap();
    }
}
