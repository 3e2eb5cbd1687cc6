//! External Secrets Operator, for the external-secret mode: installed from
//! the pinned chart (kind; a cluster without it), or used where someone
//! else installed it (cluster), and waited for either way; the conditions
//! of its objects when a sync fails.
//!
//! **An ESO keyrig did not install is never upgraded or changed: its CRDs
//! and, when they can be found by the chart's labels, its Deployments are
//! waited for.**

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
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
