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
//!
//! ESO syncs an ExternalSecret when it changes or once its
//! `refreshInterval` has passed: [`force_sync`] makes it sync at once (`up`
//! after writing a new secret_id, the e2e rotation), and
//! [`wait_synced_since`] waits for a sync recorded after that.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use manifests::files::ChartPin;

use super::commands::Commands;
use super::{KubeProfile, names};
use rig::base::wait::{Probe, wait_until};
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

/// The annotation that makes ESO sync an ExternalSecret at once: any
/// change of its labels or annotations does (ESO's `shouldRefreshPeriodic`
/// compares `status.syncedResourceVersion`, the generation and a hash of
/// both, with the object's), and this is the one ESO's docs use.
pub const FORCE_SYNC_ANNOTATION: &str = "force-sync";

/// What [`force_sync`] changed, for [`synced_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedSync {
    /// The annotation's new value.
    pub value: String,
    /// `status.syncedResourceVersion` in the patch's answer: what the last
    /// sync before the patch recorded (`None`: never synced).
    pub synced_before: Option<String>,
}

/// `status.syncedResourceVersion` of `es`: `<generation>-<hash of its
/// labels and annotations>` as of its last successful sync (ESO's
/// `markAsDone` writes it with `refreshTime` and Ready=True).
pub fn synced_resource_version(es: &manifests::eso::v1::ExternalSecret) -> Option<&str> {
    es.status.as_ref()?.get("syncedResourceVersion")?.as_str()
}

/// ESO synced `es` after [`force_sync`] annotated it: Ready=True, and a
/// `syncedResourceVersion` other than the one before the patch. ESO
/// writes the status with the resourceVersion it read (a conflict is
/// retried), so a status written after the patch comes from a reconcile
/// that saw the annotation: one that read Vault after the patch. Ready=True
/// alone may be the last run's, left as it was.
pub fn synced_since(es: &manifests::eso::v1::ExternalSecret, forced: &ForcedSync) -> bool {
    let ready = super::waits::external_secret_ready(es).is_some_and(|(status, _)| status == "True");
    ready
        && synced_resource_version(es)
            .is_some_and(|now| Some(now) != forced.synced_before.as_deref())
}

/// What a wait for [`synced_since`] saw, for its messages.
fn describe_sync(es: &manifests::eso::v1::ExternalSecret, forced: &ForcedSync) -> String {
    let status = es.status.as_ref();
    let field = |name: &str| {
        status
            .and_then(|s| s.get(name))
            .and_then(|v| v.as_str())
            .unwrap_or("none")
            .to_owned()
    };
    format!(
        "syncedResourceVersion {} ({} before the force-sync), refreshTime {}, {}",
        field("syncedResourceVersion"),
        forced.synced_before.as_deref().unwrap_or("none"),
        field("refreshTime"),
        super::waits::describe_ready(status)
    )
}

/// Annotates ExternalSecret `name` with [`FORCE_SYNC_ANNOTATION`] = now (a
/// merge patch), which makes ESO sync it at once, whatever its
/// `refreshInterval`. Wait with [`wait_synced_since`].
pub async fn force_sync(client: &kube::Client, namespace: &str, name: &str) -> Result<ForcedSync> {
    use manifests::eso::v1::ExternalSecret;
    // Nanoseconds: two runs within a second still change it.
    let value = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting the time")?;
    let api: Api<ExternalSecret> = Api::namespaced(client.clone(), namespace);
    let patched = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {FORCE_SYNC_ANNOTATION: value}}
            })),
        )
        .await
        .with_context(|| {
            format!("annotating ExternalSecret {namespace}/{name} with {FORCE_SYNC_ANNOTATION}")
        })?;
    Ok(ForcedSync {
        synced_before: synced_resource_version(&patched).map(str::to_owned),
        value,
    })
}

/// Polls ExternalSecret `name` until [`synced_since`] `forced`, at most
/// `deadline`; on the deadline the error says what it last saw (the
/// synced version before and now, refreshTime, the Ready condition).
pub async fn wait_synced_since(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    forced: &ForcedSync,
    deadline: Duration,
) -> Result<manifests::eso::v1::ExternalSecret> {
    use manifests::eso::v1::ExternalSecret;
    let api: Api<ExternalSecret> = Api::namespaced(client.clone(), namespace);
    let started = std::time::Instant::now();
    let synced = wait_until(
        &format!(
            "ExternalSecret {namespace}/{name} synced since {FORCE_SYNC_ANNOTATION}={}",
            forced.value
        ),
        deadline,
        async || {
            // A failed read (an API server restarting) is one more look
            // that saw nothing; the deadline decides.
            anyhow::Ok(match api.get_opt(name).await {
                Ok(Some(es)) if synced_since(&es, forced) => Probe::Ready(es),
                Ok(Some(es)) => Probe::seen(describe_sync(&es, forced)),
                Ok(None) => Probe::seen("no such ExternalSecret"),
                Err(err) => Probe::seen(format!("reading it failed: {err}")),
            })
        },
    )
    .await?;
    say!(
        "external-secrets: {namespace}/{name} synced from Vault after {} ({})",
        rig::base::progress::secs(started.elapsed()),
        describe_sync(&synced, forced)
    );
    Ok(synced)
}

/// [`force_sync`], then [`wait_synced_since`].
pub async fn sync_now(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    deadline: Duration,
) -> Result<manifests::eso::v1::ExternalSecret> {
    let forced = force_sync(client, namespace, name).await?;
    wait_synced_since(client, namespace, name, &forced, deadline).await
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

#[cfg(test)]
mod sync_tests {
    use super::*;
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};

    fn external_secret(status: Value) -> manifests::eso::v1::ExternalSecret {
        serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": "gateway-credentials", "namespace": "keyrig",
                         "resourceVersion": "812", "generation": 1},
            "spec": {"refreshInterval": "1h"},
            "status": status,
        }))
        .unwrap()
    }

    /// As ESO's `markAsDone` writes it: Ready=True, refreshTime and
    /// syncedResourceVersion together.
    fn synced(version: &str) -> Value {
        json!({
            "refreshTime": "2026-09-01T10:00:00Z",
            "syncedResourceVersion": version,
            "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                            "message": "secret synced", "lastTransitionTime": "2026-09-01T10:00:00Z"}],
        })
    }

    /// `markAsFailed`: Ready=False, the last sync's fields left as they were.
    fn failed(version: &str) -> Value {
        json!({
            "refreshTime": "2026-09-01T10:00:00Z",
            "syncedResourceVersion": version,
            "conditions": [{"type": "Ready", "status": "False", "reason": "SecretSyncedError",
                            "message": "could not get secret data from provider"}],
        })
    }

    #[test]
    fn only_a_sync_recorded_after_the_force_sync_counts() {
        let forced = ForcedSync {
            value: "2026-09-01T11:00:00.123456789Z".into(),
            synced_before: Some("1-0a1b".into()),
        };
        // The last run's sync, Ready=True as it left it: not this run's.
        assert!(!synced_since(&external_secret(synced("1-0a1b")), &forced));
        // ESO tried after the patch and failed: the version stays.
        assert!(!synced_since(&external_secret(failed("1-0a1b")), &forced));
        // A status written after the patch: another version, Ready=True.
        assert!(synced_since(&external_secret(synced("1-9f8e")), &forced));
        // Never synced before; now synced.
        let fresh = ForcedSync {
            value: forced.value.clone(),
            synced_before: None,
        };
        assert!(!synced_since(&external_secret(json!({})), &fresh));
        assert!(synced_since(&external_secret(synced("1-9f8e")), &fresh));
    }

    /// A client of [`fake_api`], and what that server saw.
    struct FakeApi {
        client: kube::Client,
        /// The merge patches' bodies.
        patches: Arc<Mutex<Vec<Value>>>,
        /// How many GETs.
        reads: Arc<Mutex<usize>>,
    }

    /// A fake API server: answers the merge patch with `patched`, and each
    /// GET with the next of `gets` (the last one again once they run out).
    fn fake_api(patched: Value, gets: Vec<Value>) -> FakeApi {
        let patches = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(Mutex::new(0usize));
        let (patches_seen, reads_seen) = (Arc::clone(&patches), Arc::clone(&reads));
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let patches = Arc::clone(&patches);
            let reads = Arc::clone(&reads);
            let patched = patched.clone();
            let gets = gets.clone();
            async move {
                assert_eq!(
                    request.uri().path(),
                    "/apis/external-secrets.io/v1/namespaces/keyrig/externalsecrets/gateway-credentials"
                );
                let answer = match request.method().as_str() {
                    "PATCH" => {
                        assert_eq!(
                            request.headers()["content-type"],
                            "application/merge-patch+json"
                        );
                        let body = request.into_body().collect_bytes().await.unwrap();
                        patches
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                        patched
                    }
                    "GET" => {
                        let mut n = reads.lock().unwrap();
                        *n += 1;
                        gets[(*n - 1).min(gets.len() - 1)].clone()
                    }
                    other => panic!("unexpected {other}"),
                };
                let body = kube::client::Body::from(serde_json::to_vec(&answer).unwrap());
                Ok::<_, std::convert::Infallible>(http::Response::new(body))
            }
        });
        FakeApi {
            client: kube::Client::new(service, "keyrig"),
            patches: patches_seen,
            reads: reads_seen,
        }
    }

    fn object(status: Value) -> Value {
        serde_json::to_value(external_secret(status)).unwrap()
    }

    /// The force-sync annotation is patched on, and the wait passes over
    /// the stale Ready=True and a failed attempt until ESO records a sync
    /// of the annotated object.
    #[tokio::test]
    async fn sync_now_annotates_and_waits_for_a_sync_after_it() {
        let FakeApi {
            client,
            patches,
            reads,
        } = fake_api(
            object(synced("1-0a1b")),
            vec![
                object(synced("1-0a1b")),
                object(synced("1-0a1b")),
                object(failed("1-0a1b")),
                object(synced("1-9f8e")),
            ],
        );
        let es = sync_now(
            &client,
            "keyrig",
            "gateway-credentials",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(synced_resource_version(&es), Some("1-9f8e"));
        assert_eq!(*reads.lock().unwrap(), 4);
        let patches = patches.lock().unwrap();
        assert_eq!(patches.len(), 1, "{patches:?}");
        let value = patches[0]["metadata"]["annotations"][FORCE_SYNC_ANNOTATION]
            .as_str()
            .expect("the force-sync annotation");
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).unwrap();
    }

    /// ESO never syncs (no controller, a Vault that refuses): the wait ends
    /// at its deadline saying what it last saw.
    #[tokio::test]
    async fn on_the_deadline_the_wait_says_what_it_last_saw() {
        let FakeApi { client, reads, .. } = fake_api(
            object(synced("1-0a1b")),
            vec![object(synced("1-0a1b")), object(failed("1-0a1b"))],
        );
        let err = sync_now(
            &client,
            "keyrig",
            "gateway-credentials",
            Duration::from_millis(600),
        )
        .await
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message
                .starts_with("ExternalSecret keyrig/gateway-credentials synced since force-sync="),
            "{message}"
        );
        assert!(
            message.contains(
                "still syncedResourceVersion 1-0a1b (1-0a1b before the force-sync), \
                 refreshTime 2026-09-01T10:00:00Z, Ready=False reason \"SecretSyncedError\""
            ),
            "{message}"
        );
        assert!(*reads.lock().unwrap() >= 3, "it polled");
    }
}
