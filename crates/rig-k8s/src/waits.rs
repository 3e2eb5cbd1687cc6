//! Waits on Kubernetes objects with kube-rs watches (`await_condition`), not
//! sleeps: each returns as soon as the API server reports the condition, and
//! on its deadline says what the object last looked like.
//!
//! A watch that fails (the API server restarting, a dropped connection, a
//! 410 Gone) is started again after a short backoff until the deadline
//! ([`retry_until`]); the deadline's error names the last failure too.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::conditions;
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use rig::say;

/// How long to wait before starting a failed watch again: `first`, doubled
/// after each failure, never more than `max` (nor past the deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// The backoff of every wait here: an API server that restarts is back
/// within seconds, and a wait should notice soon after.
pub const WATCH_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(250),
    max: Duration::from_secs(4),
};

/// [`retry_until`] ran out of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlinePassed {
    /// Attempts started, the one cut short by the deadline included.
    pub attempts: u32,
    /// The last attempt's error, if any attempt failed.
    pub last_error: Option<String>,
}

/// Runs `attempt` (a watch until the condition holds) until it returns,
/// starting it again after an error, with `backoff` between attempts, for
/// at most `deadline` in all.
pub async fn retry_until<T, E, F, Fut>(
    deadline: Duration,
    backoff: Backoff,
    mut attempt: F,
) -> Result<T, DeadlinePassed>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut delay = backoff.first;
    let mut attempts = 0;
    let mut last_error = None;
    loop {
        attempts += 1;
        match tokio::time::timeout_at(end, attempt()).await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(err)) => last_error = Some(err.to_string()),
            Err(_) => break,
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep_until((now + delay).min(end)).await;
        delay = (delay * 2).min(backoff.max);
    }
    Err(DeadlinePassed {
        attempts,
        last_error,
    })
}

/// How often a wait says it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Waits until `condition` holds for `name`, at most `deadline`; on timeout
/// the error carries `describe` of the object as last read, and the last
/// watch error if watching failed (failed watches are retried meanwhile).
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
    let condition = Arc::new(condition);
    let watch = || {
        let condition = Arc::clone(&condition);
        await_condition(api.clone(), name, move |object: Option<&K>| {
            condition.matches_object(object)
        })
    };
    // A line every PROGRESS_EVERY with the object as it is then, so a
    // slow image pull or a crash loop shows while it happens.
    let progress = async {
        let mut every =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        loop {
            every.tick().await;
            let now = match api.get_opt(name).await {
                Ok(object) => describe(object.as_ref()),
                Err(err) => format!("unknown (reading {name} failed: {err})"),
            };
            say!(
                "{what}: still waiting ({} of {}); now: {now}",
                rig::base::progress::secs(started.elapsed()),
                rig::base::progress::secs(deadline)
            );
        }
    };
    let waited = tokio::select! {
        waited = retry_until(deadline, WATCH_BACKOFF, watch) => waited,
        never = progress => never,
    };
    match waited {
        Ok(Some(object)) => {
            say!(
                "{what}: ready after {}",
                rig::base::progress::secs(started.elapsed())
            );
            Ok(object)
        }
        Ok(None) => Err(anyhow!("{what}: {name} was deleted while waiting for it")),
        Err(passed) => {
            let last = match api.get_opt(name).await {
                Ok(object) => describe(object.as_ref()),
                Err(err) => format!("unknown (reading {name} failed: {err})"),
            };
            Err(anyhow!(
                "{}",
                deadline_message(what, deadline, &last, &passed)
            ))
        }
    }
}

/// What a wait that ran out of time says: the last state, and the last
/// watch error with how many watches were tried, when any failed.
pub fn deadline_message(
    what: &str,
    deadline: Duration,
    last_seen: &str,
    passed: &DeadlinePassed,
) -> String {
    let mut message = format!(
        "{what}: not ready after {}; last seen: {last_seen}",
        rig::base::progress::secs(deadline)
    );
    if let Some(err) = &passed.last_error {
        message.push_str(&format!(
            "; last watch error ({} watches started): {err}",
            passed.attempts
        ));
    }
    message
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
    .or_else_pods(client, namespace, name)
    .await
}

/// Every replica of a StatefulSet (OpenBao's server) is ready and of its
/// current spec (a pod of the last spec still ready does not count).
pub fn statefulset_ready(set: Option<&StatefulSet>) -> bool {
    let Some(set) = set else { return false };
    let wanted = set.spec.replicas.unwrap_or(1);
    let generation = set.metadata.generation.unwrap_or(0);
    set.status.as_ref().is_some_and(|s| {
        wanted > 0
            && s.observed_generation.unwrap_or(0) >= generation
            && s.ready_replicas.unwrap_or(0) == wanted
            && s.updated_replicas.unwrap_or(0) == wanted
    })
}

/// Deletes the pods of StatefulSet `name` that run an older revision than
/// its spec's. With the `OnDelete` update strategy (the Vault charts'
/// default) that is how a new spec reaches them; the StatefulSet makes
/// them again at once.
pub async fn replace_outdated_pods(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    // Until the controller has looked at the new spec, its revision is not
    // known: a few seconds at most. Past that, the wait that follows (which
    // counts updated replicas) says what it sees.
    let mut revision = None;
    for _ in 0..30 {
        let Some(set) = sets.get_opt(name).await? else {
            return Ok(());
        };
        let generation = set.metadata.generation.unwrap_or(0);
        let status = set.status.as_ref();
        if status.and_then(|s| s.observed_generation).unwrap_or(0) >= generation {
            revision = status.and_then(|s| s.update_revision.clone());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let Some(revision) = revision else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in pods.list(&Default::default()).await?.items {
        let Some(pod_name) = pod.metadata.name.as_deref() else {
            continue;
        };
        let owned = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "StatefulSet" && o.name == name);
        let pod_revision = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("controller-revision-hash"));
        if owned && pod_revision.is_some_and(|r| *r != revision) {
            say!(
                "StatefulSet {namespace}/{name}: replacing pod {pod_name} (an older revision of the chart's spec)"
            );
            pods.delete(pod_name, &Default::default())
                .await
                .with_context(|| format!("deleting pod {namespace}/{pod_name}"))?;
        }
    }
    Ok(())
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
            Some(s) => format!(
                "replicas {}, ready {:?}, of the current spec {:?}",
                s.replicas, s.ready_replicas, s.updated_replicas
            ),
        },
    )
    .await
    .map(|_| ())
    .or_else_pods(client, namespace, name)
    .await
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
    .await
    .or_else_pods(client, namespace, name)
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
    status_condition(es.status.as_ref(), "Ready").map(|c| (c.status, c.reason))
}

/// One condition of a custom resource's status (ESO's objects keep theirs
/// as untyped JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCondition {
    pub status: String,
    pub reason: Option<String>,
    /// What went wrong, where ESO says it (Vault's 403, an unknown role).
    pub message: Option<String>,
}

/// The `Ready` condition of a custom resource's status, for a message:
/// status, reason and message (where ESO says what went wrong).
pub fn describe_ready(status: Option<&serde_json::Value>) -> String {
    match status_condition(status, "Ready") {
        Some(c) => format!(
            "Ready={} reason {:?} message {:?}",
            c.status,
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default()
        ),
        None => format!("no Ready condition; status {status:?}"),
    }
}

/// Condition `type_` of `status`, if it has one.
pub fn status_condition(
    status: Option<&serde_json::Value>,
    type_: &str,
) -> Option<StatusCondition> {
    let condition = status?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(type_))?;
    let field = |name: &str| {
        condition
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    Some(StatusCondition {
        status: field("status").unwrap_or_default(),
        reason: field("reason"),
        message: field("message"),
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
        |es| match es.map(|es| es.status.as_ref()) {
            None => "no such ExternalSecret".into(),
            Some(status) => describe_ready(status),
        },
    )
    .await
    .context("ESO did not sync the gateway credentials")
}

/// On a wait's error: add what the pods of the workload look like.
trait OrElsePods<T> {
    async fn or_else_pods(self, client: &Client, namespace: &str, workload: &str) -> Result<T>;
}

impl<T> OrElsePods<T> for Result<T> {
    async fn or_else_pods(self, client: &Client, namespace: &str, workload: &str) -> Result<T> {
        match self {
            Ok(found) => Ok(found),
            Err(err) => Err(anyhow!(
                "{err:#}\n{}",
                pods_report(client, namespace, workload).await
            )),
        }
    }
}

/// Each pod of `workload` (a Deployment's through its ReplicaSets, a
/// StatefulSet's or a Job's directly): its phase, and every
/// container's waiting or terminated reason with its message
/// (ErrImageNeverPull, ImagePullBackOff, CrashLoopBackOff,
/// CreateContainerConfigError...), which the workload's status never says.
pub async fn pods_report(client: &Client, namespace: &str, workload: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = match pods.list(&Default::default()).await {
        Ok(list) => list,
        Err(err) => return format!("pods of {workload}: cannot list them ({err})"),
    };
    let lines: Vec<String> = list
        .items
        .iter()
        .filter(|pod| owned_by(pod, workload))
        .map(describe_pod)
        .collect();
    if lines.is_empty() {
        format!("pods of {workload}: none")
    } else {
        format!("pods of {workload}:\n{}", lines.join("\n"))
    }
}

/// Whether `pod` belongs to `workload`: owned by it, or by one of its
/// ReplicaSets (`<workload>-<hash>`, the hash without a dash). By name
/// prefix alone, Deployment `gateway` would claim Job
/// `gateway-credentials-check`'s pods.
fn owned_by(pod: &Pod, workload: &str) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|owner| {
        owner.name == workload
            || (owner.kind == "ReplicaSet"
                && owner
                    .name
                    .strip_prefix(workload)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|hash| !hash.is_empty() && !hash.contains('-')))
    })
}

/// One line per pod: phase, and each container's state when not running.
pub fn describe_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("unknown");
    let mut line = format!("  pod {name}: {phase}");
    let containers = status.into_iter().flat_map(|s| {
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
    });
    for container in containers {
        let state = container.state.as_ref();
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            line.push_str(&format!(
                "; {} waiting: {} {}",
                container.name,
                waiting.reason.as_deref().unwrap_or("?"),
                waiting.message.as_deref().unwrap_or("")
            ));
        } else if let Some(done) = state.and_then(|s| s.terminated.as_ref()) {
            line.push_str(&format!(
                "; {} terminated: {} (exit {}) {}",
                container.name,
                done.reason.as_deref().unwrap_or("?"),
                done.exit_code,
                done.message.as_deref().unwrap_or("")
            ));
        }
        if container.restart_count > 0 {
            line.push_str(&format!(", {} restarts", container.restart_count));
        }
    }
    for condition in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        line.push_str(&format!(
            "; not scheduled: {}",
            condition.message.as_deref().unwrap_or("")
        ));
    }
    line.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::Cell;

    #[test]
    fn a_pod_says_why_its_containers_do_not_run() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "keygate-7d9f-abcde"},
            "status": {
                "phase": "Pending",
                "containerStatuses": [{
                    "name": "keygate", "image": "keyrig/keygate:dev-0123456789ab", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImageNeverPull",
                        "message": "Container image \"keyrig/keygate:dev-0123456789ab\" is not present with pull policy of Never"}}
                }]
            }
        }))
        .unwrap();
        let line = describe_pod(&pod);
        assert!(
            line.starts_with("  pod keygate-7d9f-abcde: Pending"),
            "{line}"
        );
        assert!(
            line.contains("keygate waiting: ErrImageNeverPull Container image"),
            "{line}"
        );

        let crashing: Pod = serde_json::from_value(json!({
            "metadata": {"name": "gateway-1"},
            "status": {
                "phase": "Running",
                "containerStatuses": [{
                    "name": "envoy", "image": "envoy", "imageID": "", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
                }]
            }
        }))
        .unwrap();
        let line = describe_pod(&crashing);
        assert!(line.contains("envoy waiting: CrashLoopBackOff"), "{line}");
        assert!(line.ends_with("4 restarts"), "{line}");
    }

    #[test]
    fn a_statefulset_is_ready_only_with_every_pod_of_its_current_spec() {
        let set = |status: serde_json::Value| -> StatefulSet {
            serde_json::from_value(json!({
                "metadata": {"name": "openbao", "generation": 3},
                "spec": {"replicas": 1, "selector": {}, "template": {}, "serviceName": "openbao"},
                "status": status,
            }))
            .unwrap()
        };
        let ready = set(
            json!({"replicas": 1, "observedGeneration": 3, "readyReplicas": 1, "updatedReplicas": 1}),
        );
        assert!(statefulset_ready(Some(&ready)));
        // OnDelete: the old pod is still ready, none runs the new spec.
        let outdated = set(
            json!({"replicas": 1, "observedGeneration": 3, "readyReplicas": 1, "updatedReplicas": 0}),
        );
        assert!(!statefulset_ready(Some(&outdated)));
        let unobserved = set(
            json!({"replicas": 1, "observedGeneration": 2, "readyReplicas": 1, "updatedReplicas": 1}),
        );
        assert!(!statefulset_ready(Some(&unobserved)));
        assert!(!statefulset_ready(None));
    }

    #[test]
    fn a_workloads_pods_are_found_by_owner_not_by_name() {
        let pod = |kind: &str, owner: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": format!("{owner}-x"),
                "ownerReferences": [{"apiVersion": "v1", "kind": kind, "name": owner, "uid": "u"}]}}))
            .unwrap()
        };
        assert!(owned_by(&pod("ReplicaSet", "gateway-7d9f8c"), "gateway"));
        assert!(owned_by(&pod("StatefulSet", "openbao"), "openbao"));
        assert!(owned_by(
            &pod("Job", "gateway-credentials-check"),
            "gateway-credentials-check"
        ));
        assert!(!owned_by(
            &pod("Job", "gateway-credentials-check"),
            "gateway"
        ));
        assert!(!owned_by(
            &pod("ReplicaSet", "gateway-credentials-7d9f"),
            "gateway"
        ));
    }

    #[test]
    fn a_condition_message_is_read_from_a_custom_status() {
        let status = json!({"conditions": [
            {"type": "Ready", "status": "False", "reason": "SecretSyncedError",
             "message": "could not get secret data from provider"}
        ]});
        assert_eq!(
            status_condition(Some(&status), "Ready")
                .and_then(|c| c.message)
                .as_deref(),
            Some("could not get secret data from provider")
        );
        assert_eq!(status_condition(Some(&status), "Synced"), None);
        assert_eq!(status_condition(None, "Ready"), None);
    }

    const FAST: Backoff = Backoff {
        first: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };

    /// Watches that fail twice and then see the condition: the wait
    /// succeeds, after the backoff between attempts.
    #[tokio::test]
    async fn a_failed_watch_is_retried_within_the_deadline() {
        let calls = Cell::new(0);
        let started = std::time::Instant::now();
        let found = retry_until(Duration::from_secs(10), FAST, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(format!("watch {n}: connection reset"))
                } else {
                    Ok("ready")
                }
            }
        })
        .await;
        assert_eq!(found, Ok("ready"));
        assert_eq!(calls.get(), 3);
        // 10 ms after the first failure, 20 ms after the second.
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    /// Watches that always fail: the deadline ends the wait, naming the last
    /// error; the backoff doubles up to its cap and never passes the deadline.
    #[tokio::test]
    async fn on_the_deadline_the_last_watch_error_is_reported() {
        let calls = Cell::new(0);
        let started = std::time::Instant::now();
        let deadline = Duration::from_millis(200);
        let passed = retry_until(deadline, FAST, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { Err::<(), _>(format!("watch {n}: 410 Gone")) }
        })
        .await
        .unwrap_err();
        let elapsed = started.elapsed();
        eprintln!("{} attempts in {elapsed:?}", calls.get());
        // Not before the deadline (a lower bound: a slow machine only adds).
        assert!(elapsed >= deadline, "{elapsed:?}");
        // At 0, 10, 30, 70, 110, 150, 190 (and 200) ms at the most (backoff
        // 10, 20, 40, 40, ...): more than one attempt, no busy loop. Fewer
        // than the most where the machine stalls; never more.
        assert!((2..=8).contains(&calls.get()), "{}", calls.get());
        assert_eq!(passed.attempts, calls.get());
        assert_eq!(
            passed.last_error,
            Some(format!("watch {}: 410 Gone", calls.get()))
        );
    }

    /// A watch that never sees the condition is cut at the deadline; no
    /// error, so none is reported.
    #[tokio::test]
    async fn a_watch_that_never_matches_ends_at_the_deadline() {
        let passed = retry_until(Duration::from_millis(50), FAST, || {
            std::future::pending::<Result<(), String>>()
        })
        .await
        .unwrap_err();
        assert_eq!(
            passed,
            DeadlinePassed {
                attempts: 1,
                last_error: None
            }
        );
        let message = deadline_message(
            "Deployment keyrig/keygate available",
            Duration::from_secs(5),
            "no status yet",
            &passed,
        );
        assert!(message.ends_with("last seen: no status yet"), "{message}");
    }

    #[test]
    fn the_deadline_message_names_the_last_state_and_the_last_error() {
        let message = deadline_message(
            "Job keyrig/check finished",
            Duration::from_secs(60),
            "active Some(1), succeeded None, failed None",
            &DeadlinePassed {
                attempts: 4,
                last_error: Some("watch stream failed: 410 Gone".into()),
            },
        );
        assert!(
            message.contains("last seen: active Some(1), succeeded None, failed None"),
            "{message}"
        );
        assert!(
            message.contains("last watch error (4 watches started): watch stream failed: 410 Gone"),
            "{message}"
        );
    }

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
