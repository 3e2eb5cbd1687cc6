//! Before a mode is applied to a reused cluster: delete what another mode
//! left there. Without this, switching from `external-secret` to `inline`
//! leaves the ExternalSecret behind, and ESO keeps overwriting the inline
//! credentials Secret every refresh.
//!
//! **Only objects that carry [`names::MODE_LABEL`] with another mode's value
//! are deleted.** Which objects a mode makes comes from rendering its overlay
//! (and its precreated Secret), never from a list kept by hand; an object of
//! that name without the label is left alone with a warning. What older
//! keyrigs applied and no overlay renders any more ([`retired_objects`],
//! the one list kept by hand) goes the same way, in every mode.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::Value;

use super::{Mode, names};
use rig::base::wait::{Probe, wait_until};
use rig::say;

/// One object a mode makes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModeObject {
    pub api_version: String,
    pub kind: String,
    /// `None`: cluster-scoped (ClusterSecretStore).
    pub namespace: Option<String>,
    pub name: String,
}

fn mode_of(object: &Value) -> Option<&str> {
    object["metadata"]["labels"][names::MODE_LABEL].as_str()
}

/// The objects of `rendered` labelled as made by `mode`.
pub fn objects_of_mode(rendered: &[Value], mode: Mode) -> Vec<ModeObject> {
    let mut objects: Vec<ModeObject> = rendered
        .iter()
        .filter(|o| mode_of(o) == Some(mode.as_str()))
        .filter_map(|o| {
            Some(ModeObject {
                api_version: o["apiVersion"].as_str()?.to_owned(),
                kind: o["kind"].as_str()?.to_owned(),
                namespace: o["metadata"]["namespace"].as_str().map(str::to_owned),
                name: o["metadata"]["name"].as_str()?.to_owned(),
            })
        })
        .collect();
    objects.sort();
    objects.dedup();
    objects
}

/// Everything `mode` makes: its overlay, and its precreated Secret.
pub fn mode_objects(kubectl: &std::path::Path, mode: Mode) -> Result<Vec<ModeObject>> {
    let overlay = rig::base::paths::scenarios_dir()
        .join("k8s")
        .join(mode.as_str());
    let mut rendered =
        manifests::render_overlay(kubectl, &overlay).map_err(|err| anyhow!("{err}"))?;
    let precreate = overlay.join("precreate");
    if precreate.is_dir() {
        for entry in std::fs::read_dir(&precreate)
            .with_context(|| format!("reading {}", precreate.display()))?
        {
            let file = entry?.path();
            rendered.extend(manifests::read_yaml_file(&file).map_err(|err| anyhow!("{err}"))?);
        }
    }
    Ok(objects_of_mode(&rendered, mode))
}

/// What older keyrigs applied that no overlay renders now, with the mode
/// whose label they carry: a reused cluster may still hold them.
/// - ClusterSecretStore `keyrig-vault-backend` (external-secret mode): no
///   ExternalSecret read it, and ESO validated it against the user's Vault
///   every few minutes all the same (a login, a token lookup, a revoke).
pub fn retired_objects() -> Vec<(ModeObject, Mode)> {
    vec![(
        ModeObject {
            api_version: "external-secrets.io/v1".into(),
            kind: "ClusterSecretStore".into(),
            namespace: None,
            name: names::CLUSTER_SECRET_STORE.into(),
        },
        Mode::ExternalSecret,
    )]
}

/// Deletes every object another mode made and every retired one, then the
/// credentials Secret if
/// another mode (or no mode label: a run from before the label) made it,
/// and waits until it is gone: an ESO-owned Secret is deleted by the
/// garbage collector, which must not race the new mode's apply.
pub async fn other_modes(
    client: &kube::Client,
    kubectl: &std::path::Path,
    mode: Mode,
    deadline: Duration,
) -> Result<()> {
    for other in Mode::ALL.into_iter().filter(|m| *m != mode) {
        for object in mode_objects(kubectl, other)? {
            delete_if_labelled(client, &object, other).await?;
        }
    }
    for (object, made_by) in retired_objects() {
        delete_if_labelled(client, &object, made_by).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), names::NAMESPACE);
    let Some(secret) = secrets.get_opt(names::CREDENTIALS_SECRET).await? else {
        return Ok(());
    };
    let made_by = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::MODE_LABEL))
        .cloned();
    if made_by.as_deref() == Some(mode.as_str()) {
        return Ok(());
    }
    say!(
        "k8s: deleting Secret {}/{} left by mode {}",
        names::NAMESPACE,
        names::CREDENTIALS_SECRET,
        made_by.as_deref().unwrap_or("(unlabelled)")
    );
    secrets
        .delete(names::CREDENTIALS_SECRET, &DeleteParams::foreground())
        .await
        .with_context(|| format!("deleting Secret {}", names::CREDENTIALS_SECRET))?;
    wait_until(
        &format!("Secret {} to be gone", names::CREDENTIALS_SECRET),
        deadline,
        async || {
            anyhow::Ok(match secrets.get_opt(names::CREDENTIALS_SECRET).await? {
                None => Probe::Ready(()),
                Some(s) => Probe::seen(format!(
                    "still there (deletionTimestamp {:?})",
                    s.metadata.deletion_timestamp
                )),
            })
        },
    )
    .await?;
    Ok(())
}

async fn delete_if_labelled(client: &kube::Client, object: &ModeObject, mode: Mode) -> Result<()> {
    let (group, version) = match object.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", object.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &object.kind);
    // Not served (e.g. ESO's CRDs are not installed): nothing of it exists.
    let Ok((resource, _)) = kube::discovery::pinned_kind(client, &gvk).await else {
        return Ok(());
    };
    let api: Api<DynamicObject> = match &object.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let shown = format!(
        "{} {}{}",
        object.kind,
        object
            .namespace
            .as_deref()
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default(),
        object.name
    );
    let Some(found) = api.get_opt(&object.name).await? else {
        return Ok(());
    };
    let label = found
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::MODE_LABEL));
    if label.map(String::as_str) != Some(mode.as_str()) {
        say!(
            "warning: {shown} exists but is not labelled {}={mode}: left alone",
            names::MODE_LABEL
        );
        return Ok(());
    }
    say!("k8s: deleting {shown}, left by mode {mode}");
    api.delete(&object.name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting {shown}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_objects_labelled_with_the_mode_are_its() {
        let rendered = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "keygate", "namespace": "keyrig"}}),
            json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
                   "metadata": {"name": "keyrig-vault-backend", "labels": {"keyrig.dev/mode": "external-secret"}}}),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "x", "namespace": "keyrig", "labels": {"keyrig.dev/mode": "inline"}}}),
        ];
        assert_eq!(
            objects_of_mode(&rendered, Mode::ExternalSecret),
            vec![ModeObject {
                api_version: "external-secrets.io/v1".into(),
                kind: "ClusterSecretStore".into(),
                namespace: None,
                name: "keyrig-vault-backend".into(),
            }]
        );
        assert_eq!(objects_of_mode(&rendered, Mode::Inline).len(), 1);
        assert!(objects_of_mode(&rendered, Mode::ExistingSecret).is_empty());
    }

    /// Rendered with the pinned kubectl: every mode-specific object carries
    /// the label, and no object of the base does (the base is every mode's:
    /// deleting it on a switch would take the gateway down).
    #[test]
    fn each_overlay_labels_exactly_its_own_objects() {
        let kubectl = super::super::pinned_tool("kubectl");
        let render = |mode: Mode| {
            manifests::render_overlay(
                &kubectl,
                &rig::base::paths::scenarios_dir()
                    .join("k8s")
                    .join(mode.as_str()),
            )
            .unwrap()
        };
        let key = |o: &Value| {
            (
                o["kind"].as_str().unwrap_or("").to_owned(),
                o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        };
        let all: Vec<(Mode, Vec<Value>)> = Mode::ALL.iter().map(|m| (*m, render(*m))).collect();
        for (mode, rendered) in &all {
            for object in rendered {
                let in_every_mode = all
                    .iter()
                    .all(|(_, other)| other.iter().any(|o| key(o) == key(object)));
                let (kind, name) = key(object);
                if in_every_mode {
                    assert_eq!(mode_of(object), None, "{mode}: base object {kind}/{name}");
                } else {
                    assert_eq!(
                        mode_of(object),
                        Some(mode.as_str()),
                        "{mode}: {kind}/{name} is made by this mode only"
                    );
                }
            }
        }
        assert!(
            mode_objects(&kubectl, Mode::ExternalSecret)
                .unwrap()
                .iter()
                .any(|o| o.kind == "ExternalSecret")
        );
        assert!(
            mode_objects(&kubectl, Mode::ExistingSecret)
                .unwrap()
                .iter()
                .any(|o| o.kind == "Secret" && o.name == names::CREDENTIALS_SECRET)
        );
        // A retired object is in no overlay: `up` would delete what it
        // applies a moment later.
        for (retired, _) in retired_objects() {
            for (mode, rendered) in &all {
                assert!(
                    !rendered
                        .iter()
                        .any(|o| key(o) == (retired.kind.clone(), retired.name.clone())),
                    "{mode} still applies retired {} {}",
                    retired.kind,
                    retired.name
                );
            }
        }
    }
}
