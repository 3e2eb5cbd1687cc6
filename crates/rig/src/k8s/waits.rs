//! Waits on Kubernetes objects with kube-rs watches (`await_condition`), not
//! sleeps: each returns as soon as the API server reports the condition, and
//! on its deadline says what the object last looked like.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::conditions;
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::say;

/// Waits until `condition` holds for `name`, at most `deadline`; on timeout
/// the error carries `describe` of the object as last read.
pub async fn until<K>(
    api: Api<K>,
    name: &str,
    what: &str,
    deadline: Duration,
    condition: impl Condition<K>,
    describe: impl Fn(Option<&K>) -> String,
) -> Result<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    match tokio::time::timeout(deadline, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => {
            say!("{what}: ready after {}", crate::secs(started.elapsed()));
            Ok(object)
        }
        Ok(Ok(None)) => Err(anyhow!("{what}: {name} was deleted while waiting for it")),
        Ok(Err(err)) => Err(anyhow!("{what}: watching {name} failed: {err}")),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            Err(anyhow!(
                "{what}: not ready after {}; last seen: {}",
                crate::secs(deadline),
                describe(last.as_ref())
            ))
        }
    }
}

/// A CRD is Established (its API is served).
pub async fn crd_established(client: &Client, name: &str, deadline: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    until(
        api,
        name,
        &format!("CRD {name} Established"),
        deadline,
        conditions::is_crd_established(),
        |crd| match crd {
            None => "no such CRD".into(),
            Some(crd) => format!(
                "conditions {:?}",
                crd.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .map(|cs| cs
                        .iter()
                        .map(|c| format!("{}={}", c.type_, c.status))
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
        },
    )
    .await
    .map(|_| ())
}

/// Every replica of a Deployment is updated and available.
pub fn deployment_available(deployment: Option<&Deployment>) -> bool {
    let Some(deployment) = deployment else {
        return false;
    };
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    deployment.status.as_ref().is_some_and(|s| {
        s.observed_generation.unwrap_or(0) >= generation
            && s.updated_replicas.unwrap_or(0) == wanted
            && s.available_replicas.unwrap_or(0) == wanted
            && s.replicas.unwrap_or(0) == wanted
    })
}

pub async fn deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    deadline: Duration,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    until(
        api,
        name,
        &format!("Deployment {namespace}/{name} available"),
        deadline,
        deployment_available,
        |d| match d.and_then(|d| d.status.as_ref()) {
            None => "no status yet".into(),
            Some(s) => format!(
                "replicas {:?}, updated {:?}, ready {:?}, available {:?}",
                s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas
            ),
        },
    )
    .await
    .map(|_| ())
}

/// Every replica of a StatefulSet (OpenBao's server) is ready.
pub fn statefulset_ready(set: Option<&StatefulSet>) -> bool {
    let Some(set) = set else { return false };
    let wanted = set.spec.replicas.unwrap_or(1);
    set.status
        .as_ref()
        .is_some_and(|s| s.ready_replicas.unwrap_or(0) == wanted && wanted > 0)
}

pub async fn statefulset(
    client: &Client,
    namespace: &str,
    name: &str,
    deadline: Duration,
) -> Result<()> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    until(
        api,
        name,
        &format!("StatefulSet {namespace}/{name} ready"),
        deadline,
        statefulset_ready,
        |s| match s.and_then(|s| s.status.as_ref()) {
            None => "no status yet".into(),
            Some(s) => format!("replicas {}, ready {:?}", s.replicas, s.ready_replicas),
        },
    )
    .await
    .map(|_| ())
}

/// A Job finished: `Ok` when it succeeded, an error naming its failure
/// (the caller adds its log) when it failed.
pub async fn job(client: &Client, namespace: &str, name: &str, deadline: Duration) -> Result<()> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let finished = |job: Option<&Job>| job_finished(job).is_some();
    let job = until(
        api,
        name,
        &format!("Job {namespace}/{name} finished"),
        deadline,
        finished,
        |j| match j.and_then(|j| j.status.as_ref()) {
            None => "no status yet".into(),
            Some(s) => format!(
                "active {:?}, succeeded {:?}, failed {:?}",
                s.active, s.succeeded, s.failed
            ),
        },
    )
    .await?;
    match job_finished(Some(&job)) {
        Some(true) => Ok(()),
        _ => Err(anyhow!("Job {namespace}/{name} failed")),
    }
}

/// `Some(true)` complete, `Some(false)` failed, `None` still running.
pub fn job_finished(job: Option<&Job>) -> Option<bool> {
    let conditions = job?.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(true),
            "Failed" => Some(false),
            _ => None,
        })
}

/// The `Ready` condition of an ExternalSecret's status: (status, reason).
pub fn external_secret_ready(
    es: &manifests::eso::v1::ExternalSecret,
) -> Option<(String, Option<String>)> {
    let conditions = es.status.as_ref()?.get("conditions")?.as_array()?;
    conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))
        .map(|c| {
            (
                c.get("status")
                    .and_then(|s| s.as_str())
                    .unwrap_or("")
                    .to_owned(),
                c.get("reason").and_then(|r| r.as_str()).map(str::to_owned),
            )
        })
}

/// An ExternalSecret reports Ready=True.
pub async fn external_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    deadline: Duration,
) -> Result<manifests::eso::v1::ExternalSecret> {
    let api: Api<manifests::eso::v1::ExternalSecret> = Api::namespaced(client.clone(), namespace);
    until(
        api,
        name,
        &format!("ExternalSecret {namespace}/{name} Ready"),
        deadline,
        |es: Option<&manifests::eso::v1::ExternalSecret>| {
            es.and_then(external_secret_ready)
                .is_some_and(|(status, _)| status == "True")
        },
        |es| match es.map(|es| (external_secret_ready(es), es.status.clone())) {
            None => "no such ExternalSecret".into(),
            Some((Some((status, reason)), _)) => format!("Ready={status} reason {reason:?}"),
            Some((None, status)) => format!("no Ready condition; status {status:?}"),
        },
    )
    .await
    .context("ESO did not sync the gateway credentials")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "keygate", "generation": 2},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_is_available_only_when_its_current_generation_is() {
        let ready = json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        let stale = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        let rolling = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1});
        assert!(deployment_available(Some(&deployment(ready))));
        assert!(!deployment_available(Some(&deployment(stale))));
        assert!(!deployment_available(Some(&deployment(rolling))));
        assert!(!deployment_available(None));
    }

    #[test]
    fn a_job_is_finished_by_its_complete_or_failed_condition() {
        let job = |conditions: serde_json::Value| -> Job {
            serde_json::from_value(json!({"metadata": {}, "status": {"conditions": conditions}}))
                .unwrap()
        };
        assert_eq!(
            job_finished(Some(&job(json!([{"type": "Complete", "status": "True"}])))),
            Some(true)
        );
        assert_eq!(
            job_finished(Some(&job(json!([{"type": "Failed", "status": "True"}])))),
            Some(false)
        );
        assert_eq!(job_finished(Some(&job(json!([])))), None);
    }

    #[test]
    fn reads_the_ready_condition_of_an_external_secret() {
        let es: manifests::eso::v1::ExternalSecret = serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": "gateway-credentials"},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced"}]},
        }))
        .unwrap();
        assert_eq!(
            external_secret_ready(&es),
            Some(("True".into(), Some("SecretSynced".into())))
        );
    }
}
