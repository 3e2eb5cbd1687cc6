//! Before `up` writes anything to a cluster: every object it would apply
//! that already exists must be keyrig's. `kubectl apply` and server-side
//! apply overwrite whatever has the name, and a shared cluster (the
//! cluster profile) may hold a namespace `keyrig` or a ClusterSecretStore
//! of its own.
//!
//! **An existing object is keyrig's when it carries
//! [`names::PART_OF_LABEL`]`=keyrig` or [`names::MODE_LABEL`], or lives in
//! keyrig's namespace carrying that label; anything else of a name keyrig
//! applies stops `up` before its first write**, naming every such object.

use std::collections::HashMap;

use anyhow::{Context, Result};
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource};
use serde_json::Value;

use super::names;

/// `kind namespace/name` of every object of `objects` (rendered manifests)
/// that exists in the cluster without keyrig's labels.
pub async fn foreign_objects(client: &kube::Client, objects: &[Value]) -> Result<Vec<String>> {
    // Inside keyrig's own namespace everything is keyrig's, whatever its
    // labels: objects an older keyrig applied before it labelled them too.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let own_namespace = namespaces
        .get_opt(names::NAMESPACE)
        .await
        .with_context(|| format!("reading Namespace {}", names::NAMESPACE))?
        .is_some_and(|ns| is_keyrigs(ns.metadata.labels.as_ref()));
    let mut foreign = Vec::new();
    // One discovery per kind: the overlay holds several of most kinds.
    let mut discovered: HashMap<GroupVersionKind, Option<(ApiResource, ApiCapabilities)>> =
        HashMap::new();
    for object in objects {
        let (Some(api_version), Some(kind), Some(name)) = (
            object["apiVersion"].as_str(),
            object["kind"].as_str(),
            object["metadata"]["name"].as_str(),
        ) else {
            continue;
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = match discovered.get(&gvk) {
            Some(found) => found.clone(),
            None => {
                let found = kube::discovery::pinned_kind(client, &gvk).await.ok();
                discovered.insert(gvk, found.clone());
                found
            }
        };
        // Not served (ESO's CRDs before ESO is installed): none exists.
        let Some((resource, capabilities)) = found else {
            continue;
        };
        let namespace = object["metadata"]["namespace"].as_str();
        if own_namespace
            && capabilities.scope == kube::discovery::Scope::Namespaced
            && namespace.unwrap_or(names::NAMESPACE) == names::NAMESPACE
        {
            continue;
        }
        let api: Api<DynamicObject> = match (capabilities.scope, namespace) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            (kube::discovery::Scope::Namespaced, None) => {
                Api::namespaced_with(client.clone(), names::NAMESPACE, &resource)
            }
            (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let shown = format!(
            "{kind} {}{name}",
            namespace.map(|ns| format!("{ns}/")).unwrap_or_default()
        );
        if let Some(found) = api.get_opt(name).await.with_context(|| {
            format!("reading {shown} (to check it is keyrig's before writing it)")
        })? && !is_keyrigs(found.metadata.labels.as_ref())
        {
            foreign.push(shown);
        }
    }
    Ok(foreign)
}

fn is_keyrigs(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels.is_some_and(|labels| {
        labels.get(names::PART_OF_LABEL).map(String::as_str) == Some("keyrig")
            || labels.contains_key(names::MODE_LABEL)
    })
}

/// The refusal for [`foreign_objects`]' answer, naming each object.
pub fn refusal(foreign: &[String], context: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{context} already holds objects keyrig would overwrite, which it did not make \
         (no label {}=keyrig or {}): {}. Nothing was written. Delete or rename them, \
         or run against another cluster (kind: --recreate starts a fresh one).",
        names::PART_OF_LABEL,
        names::MODE_LABEL,
        foreign.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn an_object_is_keyrigs_by_either_label() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(is_keyrigs(Some(&labels(&[(
            names::PART_OF_LABEL,
            "keyrig"
        )]))));
        assert!(is_keyrigs(Some(&labels(&[(names::MODE_LABEL, "inline")]))));
        assert!(!is_keyrigs(Some(&labels(&[(
            names::PART_OF_LABEL,
            "platform"
        )]))));
        assert!(!is_keyrigs(Some(&labels(&[("app", "keyrig")]))));
        assert!(!is_keyrigs(None));
    }

    #[test]
    fn the_refusal_names_every_object_and_what_to_do() {
        let err = refusal(
            &[
                "Namespace keyrig".into(),
                "ClusterSecretStore keyrig-vault-backend".into(),
            ],
            "context prod",
        )
        .to_string();
        assert!(
            err.contains("Namespace keyrig, ClusterSecretStore keyrig-vault-backend"),
            "{err}"
        );
        assert!(err.contains("Nothing was written"), "{err}");
    }
}
