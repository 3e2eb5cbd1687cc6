//! `up` and `down` of the kind and cluster profiles, in the order
//! scenarios/k8s/README.md gives. Versions, charts and values come from
//! env/k8s.toml; object names from `super::names`.
//!
//! What `up` leaves behind outside its own processes is recorded in
//! `<run>/k8s.json` before it is made, so `down` (and the end of `e2e`)
//! can delete a kind cluster keyrig created even when `up` failed half way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams};
use manifests::files::{ChartPin, K8sPins};
use serde_json::json;

use super::commands::Commands;
use super::preflight::KubeTools;
use super::state::KubeState;
use super::{KubeProfile, Mode, VaultChart, names};
use rig::base::run::RunDir;
use rig::contract::env::Environment;
use rig::process::supervisor::{Component, Readiness, Supervisor};
use rig::process::tools::{ToolEnv, Tools};
use rig::say;
use rig::vault::client::{Secret, VaultClient};

/// The field manager of keyrig's server-side applies.
const FIELD_MANAGER: &str = "keyrig";

/// Keeps a port-forward up: `kubectl port-forward` exits when the pod it
/// picked goes away (a rollout restart), so it is started again. `$0` is
/// kubectl, `$@` its arguments; the Supervisor stops the whole group.
const KEEP_FORWARDING: &str =
    r#"while :; do "$0" "$@"; echo "[keyrig] port-forward ended; again in 1 s" >&2; sleep 1; done"#;

#[derive(Debug, Clone)]
pub struct KubeOptions {
    pub profile: KubeProfile,
    pub mode: Mode,
    /// kind: delete an existing `keyrig` cluster first.
    pub recreate: bool,
    /// Each wait on the cluster (pods, CRDs, the Job, the ExternalSecret).
    pub wait_deadline: Duration,
    /// kind: which Vault the dev server in the cluster is.
    pub vault: VaultChart,
}

impl KubeOptions {
    pub fn new(profile: KubeProfile, mode: Mode) -> Self {
        Self {
            profile,
            mode,
            recreate: false,
            wait_deadline: Duration::from_secs(300),
            vault: VaultChart::OpenBao,
        }
    }
}

/// A running Kubernetes environment. Dropping it stops the port-forwards;
/// the cluster stays until `down --profile kind` (or the end of `e2e`).
pub struct KubeRun {
    pub supervisor: Supervisor,
    pub environment: Environment,
    pub run: RunDir,
    pub state: KubeState,
}

/// Checks the tools `profile` needs, in this process's environment.
pub fn preflight(profile: KubeProfile) -> Result<KubeTools> {
    let pins = load_pins()?;
    let env = ToolEnv::from_process();
    let tools = Tools::load(&rig::base::paths::env_dir().join("tools.toml"), env.clone())?;
    super::preflight::check(profile, &tools, &env, &pins.kind.version).map_err(anyhow::Error::new)
}

fn load_pins() -> Result<K8sPins> {
    K8sPins::load(&rig::base::paths::env_dir().join("k8s.toml")).map_err(|err| anyhow!("{err}"))
}

fn chart<'a>(pins: &'a K8sPins, name: &str) -> Result<&'a ChartPin> {
    pins.charts
        .get(name)
        .with_context(|| format!("env/k8s.toml has no [charts.{name}]"))
}

/// Brings the profile up in `run` (created by the caller, so that after a
/// failure it still knows which run's cluster to delete); on error, the
/// port-forwards started so far stop (the Supervisor drops) and the
/// cluster is left for `down` or [`delete_created_cluster`].
pub async fn up(opts: &KubeOptions, tools: &KubeTools, run: RunDir) -> Result<KubeRun> {
    let started = Instant::now();
    for warning in &tools.warnings {
        say!("warning: {warning}");
    }
    // Refused combinations (inline on cluster) before anything is made.
    let source = super::credentials::source_for(opts.profile, opts.mode)?;
    let root_dir = rig::base::paths::workspace_root();
    let scenarios = rig::base::paths::scenarios_dir();
    let pins = load_pins()?;
    let groups = rig::contract::scenario::load_default_apis()?;
    // The matrix's names, checked before anything is created.
    let catalog = rig::contract::gateways::Catalog::load_default()?;
    let group_ids: Vec<String> = groups.iter().map(|g| g.group_id.clone()).collect();
    let setup = rig::vault::setup::load_default(&group_ids)?;
    let overlay = scenarios.join("k8s").join(opts.mode.as_str());
    let kubectl = tools.kubectl.as_path();
    let helm = tools.helm.as_path();
    // Rendered first: keygate's own parser must accept the config the
    // overlay would deploy, and env.json says what that config does. The
    // cluster profile applies the mode's overlay through one of the run's
    // own, with its Vault's address and CA (`cluster_vault`).
    let mode_rendered =
        manifests::render_overlay(kubectl, &overlay).map_err(|err| anyhow!("{err}"))?;
    let cluster_vault = match opts.profile {
        KubeProfile::Cluster => Some(super::cluster_vault::ClusterVault::from_env()?),
        KubeProfile::Kind => None,
    };
    let (applied, rendered) = match &cluster_vault {
        Some(vault) => {
            let dir = run.path().join("overlay");
            vault.write_overlay(&dir, &overlay, &mode_rendered)?;
            let rendered =
                manifests::render_overlay(kubectl, &dir).map_err(|err| anyhow!("{err}"))?;
            say!(
                "cluster profile: pods reach Vault at {}{} ({})",
                vault.address,
                if vault.ca_pem.is_some() {
                    ", trusting the CA given"
                } else {
                    ""
                },
                dir.join("kustomization.yaml").display()
            );
            (dir, rendered)
        }
        None => (overlay.clone(), mode_rendered),
    };
    let keygate_config = super::environment::keygate_config(&rendered, &applied)?;
    say!(
        "{} profile, mode {}: run {}",
        opts.profile,
        opts.mode,
        run.id()
    );
    let mut supervisor = Supervisor::new(&run).with_ready_timeout(Duration::from_secs(60));

    // 1. The cluster.
    let mut state = KubeState {
        profile: opts.profile,
        mode: opts.mode,
        cluster: None,
        created_cluster: false,
        deleted: false,
        kubeconfig: None,
    };
    let (kubeconfig, context) = match opts.profile {
        KubeProfile::Kind => {
            let kind = tools.kind.as_deref().context("preflight found no kind")?;
            let name = pins.kind.cluster_name.clone();
            let kubeconfig = run.secrets_dir().join("kubeconfig");
            let plain = Commands::new(run.logs_dir(), None, None);
            let clusters = plain.run("kind", kind, ["get", "clusters"]).await?;
            let exists = clusters.lines().any(|l| l.trim() == name);
            if exists && opts.recreate {
                plain
                    .run("kind", kind, ["delete", "cluster", "--name", &name])
                    .await?;
            }
            state.cluster = Some(name.clone());
            state.kubeconfig = Some(kubeconfig.clone());
            if !exists || opts.recreate {
                // Recorded first: a create that fails half way still leaves
                // a container for `down` to delete.
                state.created_cluster = true;
                state.save(run.path())?;
                let config = root_dir.join(&pins.kind.config);
                plain
                    .run_long(
                        "kind",
                        kind,
                        [
                            "create".as_ref(),
                            "cluster".as_ref(),
                            "--name".as_ref(),
                            name.as_ref(),
                            "--config".as_ref(),
                            config.as_os_str(),
                            "--image".as_ref(),
                            pins.kind.node_image.as_ref(),
                            "--kubeconfig".as_ref(),
                            kubeconfig.as_os_str(),
                            "--wait".as_ref(),
                            "120s".as_ref(),
                        ],
                        super::commands::PROGRESS_EVERY,
                    )
                    .await?;
            } else {
                say!("kind: reusing cluster {name} (--recreate starts afresh)");
                state.save(run.path())?;
            }
            plain
                .run(
                    "kind",
                    kind,
                    [
                        "export".as_ref(),
                        "kubeconfig".as_ref(),
                        "--name".as_ref(),
                        name.as_ref(),
                        "--kubeconfig".as_ref(),
                        kubeconfig.as_os_str(),
                    ],
                )
                .await?;
            // It holds the cluster's client key.
            rig::base::run::write_secret_file(
                &kubeconfig,
                &std::fs::read_to_string(&kubeconfig).context("reading the kind kubeconfig")?,
            )?;
            (Some(kubeconfig), Some(format!("kind-{name}")))
        }
        KubeProfile::Cluster => {
            // One context for the whole run: kube-rs reads the kubeconfig
            // once, kubectl and helm on every call, so a `kubectl config
            // use-context` elsewhere mid-run would split the run across
            // two clusters.
            let context = current_context(&run, kubectl).await?;
            state.save(run.path())?;
            (None, context)
        }
    };
    let cmds = Commands::new(run.logs_dir(), kubeconfig.clone(), context.clone());
    let client = super::client::client(kubeconfig.as_deref(), context.as_deref()).await?;
    // Nothing of someone else's is overwritten: looked at before the
    // first write to the cluster or to Vault.
    let foreign =
        super::claim::foreign_objects(&client, &objects_to_apply(&rendered, &overlay)?).await?;
    if !foreign.is_empty() {
        let target = match &context {
            Some(context) => format!("the cluster of context {context}"),
            None => "the cluster".to_owned(),
        };
        return Err(super::claim::refusal(&foreign, &target));
    }

    // 2. The keygate image.
    let keygate_image = super::image::provide(super::image::ImageInputs {
        cmds: &cmds,
        tools,
        profile: opts.profile,
        kind_cluster: state.cluster.as_deref(),
        base_tag: pins
            .images
            .get("keygate")
            .context("env/k8s.toml has no images.keygate")?,
        root_dir: &root_dir,
        run: &run,
    })
    .await?;

    // 3. Vault: a dev server in the kind cluster (OpenBao, or HashiCorp
    // Vault with --vault hashicorp), or the one VAULT_ADDR names.
    let (vault_addr, root_token) = match opts.profile {
        KubeProfile::Kind => {
            let vault_chart = chart(&pins, opts.vault.chart())?;
            super::helm::refuse_chart_switch(&cmds, helm, vault_chart).await?;
            super::helm::install(&cmds, helm, vault_chart, opts.profile).await?;
            // Both charts update their StatefulSet `OnDelete`: a changed pin
            // or values file reaches the running server only through a new
            // pod.
            crate::waits::replace_outdated_pods(
                &client,
                &vault_chart.namespace,
                &vault_chart.release,
            )
            .await?;
            crate::waits::statefulset(
                &client,
                &vault_chart.namespace,
                &vault_chart.release,
                opts.wait_deadline,
            )
            .await?;
            let port = rig::base::ports::free_port()?;
            let addr = format!("http://127.0.0.1:{port}");
            supervisor
                .start(
                    port_forward(
                        &cmds,
                        kubectl,
                        &vault_chart.namespace,
                        &vault_chart.release,
                        names::VAULT_PORT,
                        port,
                    ),
                    Readiness::http(format!("{addr}/v1/sys/health"), 200),
                )
                .await?;
            (addr, dev_root_token(&root_dir.join(&vault_chart.values))?)
        }
        KubeProfile::Cluster => (
            std::env::var("VAULT_ADDR")
                .ok()
                .filter(|v| !v.is_empty())
                .context("VAULT_ADDR is not set: the cluster profile runs against an existing Vault (export VAULT_ADDR=https://...)")?,
            Secret::new(
                std::env::var("VAULT_TOKEN")
                    .ok()
                    .filter(|v| !v.is_empty())
                    .context("VAULT_TOKEN is not set: the cluster profile needs a token that may create mounts, policies and roles")?,
            ),
        ),
    };
    let root_token_file = run.write_secret("root-token", root_token.expose())?;
    rig::base::redact::register_in_run(run.path(), root_token.expose())?;
    let root = match opts.profile {
        // A port-forward to the in-cluster dev server: plain HTTP on loopback.
        KubeProfile::Kind => VaultClient::new(&vault_addr)?,
        // The user's Vault: https with the CA `VAULT_CACERT` names, as the
        // vault CLI reads it (else the system's trust store).
        KubeProfile::Cluster => VaultClient::from_env_addr(&vault_addr)?,
    }
    .with_token(root_token);
    rig::vault::setup::apply(&setup, &root).await?;

    // 4. The namespace and the ConfigMap of API documents (kustomize may
    // not read scenarios/apis), by server-side apply; then Vault's
    // Kubernetes auth on keyrig's own mount.
    apply_namespace_and_apis(&client, &groups).await?;
    let outside = match std::env::var("KEYRIG_VAULT_KUBERNETES_HOST")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(host) => Some(outside_cluster_review(&client, host, run.path()).await?),
        None => None,
    };
    let auth =
        super::vault_auth::apply(&root, &super::vault_auth::roles_file(), outside.as_ref()).await?;

    // 5. keygate's Vault credentials, per mode and profile.
    let committed = super::credentials::committed_credentials(
        (opts.mode == Mode::Inline).then_some(rendered.as_slice()),
    )?;
    use super::credentials::CredentialSource;
    // (the credentials to register, the committed file the report flags)
    let registered = match (source, opts.mode) {
        (CredentialSource::Committed, Mode::Inline) => Some((
            super::credentials::inline_credentials(&rendered)?,
            Some(overlay.join("kustomization.yaml")),
        )),
        (CredentialSource::Committed, _) => Some((
            super::credentials::existing_secret_credentials(&overlay)?,
            Some(overlay.join("precreate/secret.yaml")),
        )),
        (CredentialSource::PerRun, _) => {
            let creds = super::credentials::per_run_credentials(
                root.approle_role_id(&setup.keygate_role).await?,
            );
            rig::base::redact::register_in_run(run.path(), creds.secret_id.expose())?;
            Some((creds, None))
        }
        (CredentialSource::FromVault, _) => {
            super::credentials::write_external_secret_source(
                &root,
                &auth,
                &setup.keygate_role,
                &keygate_config.vault.address,
                "default",
                super::credentials::secret_id_ttl(opts.profile),
                run.path(),
            )
            .await?;
            None
        }
    };
    if let Some((creds, committed_in)) = &registered {
        super::credentials::register_dev_credentials(
            &root,
            &setup.keygate_role,
            creds,
            opts.profile,
            &committed,
        )
        .await?;
        if let Some(file) = committed_in {
            flag_committed_credentials(&run, file)?;
        }
    }
    let per_run =
        registered.and_then(|(creds, committed_in)| committed_in.is_none().then_some(creds));

    // 6. What an earlier run of another mode left in a reused cluster (its
    // ExternalSecret would keep overwriting this mode's Secret), then the
    // mode's own preparations.
    super::prune::other_modes(&client, kubectl, opts.mode, opts.wait_deadline).await?;
    match opts.mode {
        Mode::ExistingSecret => match &per_run {
            None => {
                let precreate = overlay.join("precreate/secret.yaml");
                let mut args = vec!["apply".into(), "-f".into(), precreate.display().to_string()];
                args.extend(cmds.context_args("--context"));
                cmds.run("kubectl", kubectl, &args).await?;
            }
            Some(creds) => {
                super::credentials::apply_existing_secret(
                    &client,
                    &overlay,
                    creds,
                    cluster_vault.as_ref().map(|v| v.address.as_str()),
                )
                .await?;
            }
        },
        Mode::ExternalSecret => {
            let eso = chart(&pins, "external-secrets")?;
            super::eso::ensure(&cmds, helm, eso, &client, opts.profile, opts.wait_deadline).await?;
        }
        Mode::Inline => {}
    }

    // 7. The overlay. The check Job's pod template is immutable, so a Job
    // left by an earlier run (maybe of another mode) goes first. ESO's
    // webhook may refuse objects for a few seconds after its pod is ready.
    let mut delete_job = vec![
        "-n".to_owned(),
        names::NAMESPACE.to_owned(),
        "delete".into(),
        "job".into(),
        names::CHECK_JOB.into(),
        "--ignore-not-found".into(),
    ];
    delete_job.extend(cmds.context_args("--context"));
    cmds.run("kubectl", kubectl, &delete_job).await?;
    // keygate's image and the overlay's digest in what is applied.
    let stamped = run.path().join("applied");
    super::image::write_stamped_overlay(
        &stamped,
        &applied,
        &keygate_image,
        &super::image::overlay_digest(&rendered, &groups)?,
    )?;
    let mut apply = vec![
        "apply".to_owned(),
        "-k".into(),
        stamped.display().to_string(),
    ];
    apply.extend(cmds.context_args("--context"));
    rig::base::wait::wait_until(
        &format!(
            "kubectl apply -k {} (over scenarios/k8s/{})",
            stamped.display(),
            opts.mode
        ),
        Duration::from_secs(120),
        async || {
            anyhow::Ok(match cmds.run("kubectl", kubectl, &apply).await {
                Ok(_) => rig::base::wait::Probe::Ready(()),
                Err(err) => rig::base::wait::Probe::seen(
                    format!("{err:#}").lines().last().unwrap_or("").to_owned(),
                ),
            })
        },
    )
    .await?;
    if opts.mode == Mode::ExternalSecret {
        sync_this_runs_credentials(&client, &cmds, kubectl, &stamped, &delete_job, &run, opts)
            .await?;
    }

    // 8. Wait for the check Job, the ExternalSecret, then the Deployments.
    if let Err(err) = super::waits::job(
        &client,
        names::NAMESPACE,
        names::CHECK_JOB,
        opts.wait_deadline,
    )
    .await
    {
        let mut logs = vec![
            "-n".to_owned(),
            names::NAMESPACE.into(),
            "logs".into(),
            format!("job/{}", names::CHECK_JOB),
        ];
        logs.extend(cmds.context_args("--context"));
        let _ = cmds.run("check-job", kubectl, &logs).await;
        // In external-secret mode the Secret the Job checks is ESO's to
        // make; why ESO did not is in its objects' conditions, not the Job's log.
        let eso = if opts.mode == Mode::ExternalSecret {
            format!("\n{}", super::eso::conditions(&client).await)
        } else {
            String::new()
        };
        return Err(err.context(format!(
            "the gateway credentials check failed: its log is in {}{eso}",
            run.logs_dir().join("check-job.log").display()
        )));
    }
    if opts.mode == Mode::ExternalSecret {
        super::waits::external_secret(
            &client,
            names::NAMESPACE,
            names::EXTERNAL_SECRET,
            opts.wait_deadline,
        )
        .await?;
    }
    for deployment in [names::UPSTREAM, names::KEYGATE, names::GATEWAY] {
        super::waits::deployment(&client, names::NAMESPACE, deployment, opts.wait_deadline).await?;
    }

    // 9. Port-forwards to the gateway, keygate and the upstream.
    let gateway_port = rig::base::ports::free_port()?;
    let keygate_port = rig::base::ports::free_port()?;
    let upstream_port = rig::base::ports::free_port()?;
    let forwarded = super::environment::Forwarded {
        gateway_url: format!("http://127.0.0.1:{gateway_port}"),
        keygate_url: format!("http://127.0.0.1:{keygate_port}"),
        upstream_url: format!("http://127.0.0.1:{upstream_port}"),
        vault_addr,
    };
    supervisor
        .start(
            port_forward(
                &cmds,
                kubectl,
                names::NAMESPACE,
                names::UPSTREAM,
                names::UPSTREAM_PORT,
                upstream_port,
            ),
            Readiness::Tcp(([127, 0, 0, 1], upstream_port).into()),
        )
        .await?;
    supervisor
        .start(
            port_forward(
                &cmds,
                kubectl,
                names::NAMESPACE,
                names::KEYGATE,
                names::KEYGATE_HTTP_PORT,
                keygate_port,
            ),
            Readiness::http(format!("{}/readyz", forwarded.keygate_url), 200),
        )
        .await?;
    supervisor
        .start(
            port_forward(
                &cmds,
                kubectl,
                names::NAMESPACE,
                names::GATEWAY,
                names::GATEWAY_PORT,
                gateway_port,
            ),
            Readiness::Tcp(([127, 0, 0, 1], gateway_port).into()),
        )
        .await?;

    // 10. env.json.
    let environment = super::environment::kube_environment(super::environment::KubeEnvInputs {
        profile: opts.profile,
        mode: opts.mode,
        run_id: run.id(),
        logs_dir: run.logs_dir(),
        root_token_file,
        forwarded,
        kv_mount: &setup.kv_mount,
        groups: &groups,
        keygate: &keygate_config,
        kubernetes_auth_mount: &auth.auth_mount,
        credentials_kv_mount: &auth.gateway_credentials.mount,
        credentials_kv_path: &auth.gateway_credentials.path,
        keygate_approle: &setup.keygate_role,
        kubeconfig,
        context,
        catalog: &catalog,
    });
    environment.save(&run.env_file())?;
    say!(
        "{} profile (mode {}) up in {}",
        opts.profile,
        opts.mode,
        rig::base::progress::secs(started.elapsed())
    );
    Ok(KubeRun {
        supervisor,
        environment,
        run,
        state,
    })
}

/// External-secret mode, after the apply. ESO syncs an ExternalSecret when
/// it changes (generation, labels, annotations) or once its
/// `refreshInterval` (1 h) has passed: in a reused cluster the apply
/// changed nothing, so the Secret still holds the last run's secret_id
/// (this run wrote a new one to Vault), and the Ready=True the next waits
/// look for is the last run's too. So: a forced sync, waited for until ESO
/// records one that read Vault after this run's write; then the check Job,
/// whose pod may have started on the old Secret, is made again, so that it
/// checks this run's credentials.
async fn sync_this_runs_credentials(
    client: &kube::Client,
    cmds: &Commands,
    kubectl: &Path,
    stamped: &Path,
    delete_job: &[String],
    run: &RunDir,
    opts: &KubeOptions,
) -> Result<()> {
    if let Err(err) = super::eso::sync_now(
        client,
        names::NAMESPACE,
        names::EXTERNAL_SECRET,
        opts.wait_deadline,
    )
    .await
    {
        return Err(err.context(format!(
            "ESO did not sync this run's gateway credentials from Vault\n{}",
            super::eso::conditions(client).await
        )));
    }
    let rendered = manifests::render_overlay(kubectl, stamped).map_err(|err| anyhow!("{err}"))?;
    let job = manifests::find(&rendered, "Job", names::CHECK_JOB)
        .with_context(|| format!("{} renders no Job {}", stamped.display(), names::CHECK_JOB))?;
    let file = run.path().join("check-job.json");
    std::fs::write(&file, serde_json::to_vec_pretty(job)?)
        .with_context(|| format!("writing {}", file.display()))?;
    cmds.run("kubectl", kubectl, delete_job).await?;
    let mut apply = vec!["apply".to_owned(), "-f".into(), file.display().to_string()];
    apply.extend(cmds.context_args("--context"));
    cmds.run("kubectl", kubectl, &apply).await?;
    say!(
        "k8s: Job {}/{} made again, to check the Secret ESO synced for this run",
        names::NAMESPACE,
        names::CHECK_JOB
    );
    Ok(())
}

/// The report's warning for a run whose credentials are committed in git
/// (kind only: the cluster profile never uses them).
fn flag_committed_credentials(run: &RunDir, file: &Path) -> Result<()> {
    let location = file
        .strip_prefix(rig::base::paths::workspace_root())
        .unwrap_or(file)
        .display()
        .to_string();
    say!(
        "warning: this run's gateway credentials are committed in {location}: dev only, never for a real Vault"
    );
    rig::contract::records::record_in(
        run.path(),
        "findings",
        &rig::contract::report::Finding::warning(
            "committed-dev-credentials",
            &location,
            "the gateway AppRole's role-id and secret-id are plaintext in git; registered only in the kind cluster's throwaway dev Vault",
        ),
    )?;
    Ok(())
}

/// The ServiceAccount a Vault outside the cluster reviews tokens with.
const TOKEN_REVIEWER: &str = "keyrig-token-reviewer";

/// How a Vault outside the cluster reviews ServiceAccount tokens: the API
/// server as it reaches it (`host`), the cluster's CA (every namespace's
/// ConfigMap kube-root-ca.crt) and the token of a ServiceAccount keyrig
/// binds to system:auth-delegator (valid 24 h: one run, or one `up`).
async fn outside_cluster_review(
    client: &kube::Client,
    host: String,
    run_dir: &Path,
) -> Result<super::vault_auth::OutsideCluster> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), names::NAMESPACE);
    accounts
        .patch(
            TOKEN_REVIEWER,
            &params,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": TOKEN_REVIEWER, "namespace": names::NAMESPACE,
                             "labels": {"app.kubernetes.io/part-of": "keyrig"}},
            })),
        )
        .await
        .with_context(|| {
            format!(
                "applying ServiceAccount {}/{TOKEN_REVIEWER}",
                names::NAMESPACE
            )
        })?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            TOKEN_REVIEWER,
            &params,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": TOKEN_REVIEWER, "labels": {"app.kubernetes.io/part-of": "keyrig"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
                "subjects": [{"kind": "ServiceAccount", "name": TOKEN_REVIEWER, "namespace": names::NAMESPACE}],
            })),
        )
        .await
        .with_context(|| format!("binding {TOKEN_REVIEWER} to system:auth-delegator"))?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request(TOKEN_REVIEWER, &Default::default(), &request)
        .await
        .with_context(|| format!("requesting a token for {TOKEN_REVIEWER}"))?
        .status
        .and_then(|s| s.token)
        .context("the TokenRequest answered without a token")?;
    // The root CA publisher writes it into a new namespace a moment after
    // the namespace appears.
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), names::NAMESPACE);
    let ca = rig::base::wait::wait_until(
        "ConfigMap kube-root-ca.crt (the cluster's CA) in the namespace",
        Duration::from_secs(30),
        async || {
            anyhow::Ok(
                match configmaps
                    .get_opt("kube-root-ca.crt")
                    .await
                    .context("reading ConfigMap kube-root-ca.crt (the cluster's CA)")?
                    .and_then(|c| c.data)
                    .and_then(|d| d.get("ca.crt").cloned())
                {
                    Some(ca) => rig::base::wait::Probe::Ready(ca),
                    None => rig::base::wait::Probe::seen("not there yet, or without ca.crt"),
                },
            )
        },
    )
    .await?;
    // A 24 h credential of the cluster: redacted and scanned for like the
    // run's other secrets.
    rig::base::redact::register_in_run(run_dir, &token)?;
    say!(
        "vault: reviews tokens at {host} as ServiceAccount {TOKEN_REVIEWER} (Vault outside the cluster)"
    );
    Ok(super::vault_auth::OutsideCluster {
        kubernetes_host: host,
        kubernetes_ca_cert: ca,
        token_reviewer_jwt: Secret::new(token),
    })
}

/// A supervised, self-restarting `kubectl port-forward svc/<service>`.
fn port_forward(
    cmds: &Commands,
    kubectl: &Path,
    namespace: &str,
    service: &str,
    remote: u16,
    local: u16,
) -> Component {
    let mut component = Component::new(format!("port-forward-{service}"), "/bin/sh")
        .arg("-c")
        .arg(KEEP_FORWARDING)
        .arg(kubectl)
        .args([
            "port-forward",
            "--address",
            "127.0.0.1",
            "-n",
            namespace,
            &format!("svc/{service}"),
            &format!("{local}:{remote}"),
        ])
        .args(cmds.context_args("--context"))
        .inherit_env(super::commands::KUBE_TOOL_ENV)
        .current_dir(rig::base::paths::workspace_root());
    if let Some(kubeconfig) = cmds.kubeconfig() {
        component = component.env("KUBECONFIG", kubeconfig);
    }
    component
}

/// The dev server's root token, from the OpenBao values file
/// (`server.dev.devRootToken`): the chart sets it from there too.
fn dev_root_token(values_file: &Path) -> Result<Secret> {
    let text = std::fs::read_to_string(values_file)
        .with_context(|| format!("reading {}", values_file.display()))?;
    let values: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not YAML", values_file.display()))?;
    values["server"]["dev"]["devRootToken"]
        .as_str()
        .map(Secret::new)
        .with_context(|| {
            format!(
                "{}: server.dev.devRootToken is missing: the kind profile needs OpenBao in dev mode with a known root token",
                values_file.display()
            )
        })
}

async fn apply_namespace_and_apis(
    client: &kube::Client,
    groups: &[rig::contract::scenario::ApiGroup],
) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": names::NAMESPACE, "labels": {"app.kubernetes.io/part-of": "keyrig"}},
    });
    namespaces
        .patch(names::NAMESPACE, &params, &Patch::Apply(&namespace))
        .await
        .with_context(|| format!("applying namespace {}", names::NAMESPACE))?;
    let mut data = BTreeMap::new();
    for group in groups {
        let name = group
            .file
            .file_name()
            .context("an API document without a file name")?
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&group.file)
            .with_context(|| format!("reading {}", group.file.display()))?;
        data.insert(name, text);
    }
    let configmap = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(names::APIS_CONFIGMAP.into()),
            namespace: Some(names::NAMESPACE.into()),
            labels: Some(BTreeMap::from([(
                names::PART_OF_LABEL.to_owned(),
                "keyrig".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    let mut object = serde_json::to_value(&configmap)?;
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("ConfigMap");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), names::NAMESPACE);
    configmaps
        .patch(names::APIS_CONFIGMAP, &params, &Patch::Apply(&object))
        .await
        .with_context(|| format!("applying ConfigMap {}", names::APIS_CONFIGMAP))?;
    Ok(())
}

/// Everything `up` applies by name, for [`super::claim`]: the rendered
/// overlay, its precreated Secret, the ConfigMap of API documents (the
/// Namespace is in the overlay), and with `KEYRIG_VAULT_KUBERNETES_HOST`
/// the token reviewer's ServiceAccount and ClusterRoleBinding.
fn objects_to_apply(
    rendered: &[serde_json::Value],
    overlay: &Path,
) -> Result<Vec<serde_json::Value>> {
    let mut objects = rendered.to_vec();
    if std::env::var_os("KEYRIG_VAULT_KUBERNETES_HOST").is_some_and(|v| !v.is_empty()) {
        // outside_cluster_review's ServiceAccount and binding.
        objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": TOKEN_REVIEWER, "namespace": names::NAMESPACE}}));
        objects.push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": TOKEN_REVIEWER}}),
        );
    }
    let precreate = overlay.join("precreate/secret.yaml");
    if precreate.is_file() {
        objects.extend(manifests::read_yaml_file(&precreate).map_err(|err| anyhow!("{err}"))?);
    }
    objects.push(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": names::APIS_CONFIGMAP, "namespace": names::NAMESPACE},
    }));
    Ok(objects)
}

/// The cluster profile's context: kubectl's current one, said with its
/// API server before anything is written to it. `None` inside a pod
/// without a kubeconfig: the pod's service account (kube-rs and kubectl
/// both fall back to it).
async fn current_context(run: &RunDir, kubectl: &Path) -> Result<Option<String>> {
    let plain = Commands::new(run.logs_dir(), None, None);
    let current = plain
        .run("kubectl", kubectl, ["config", "current-context"])
        .await
        .map(|context| context.trim().to_owned())
        .ok()
        .filter(|context| !context.is_empty());
    let Some(context) = current else {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            say!(
                "cluster profile: no kubeconfig context; this pod's service account, against the API server at $KUBERNETES_SERVICE_HOST"
            );
            return Ok(None);
        }
        anyhow::bail!(
            "the cluster profile runs against kubectl's current context, and there is none \
             (kubectl config use-context <name>, or KUBECONFIG=<file>)"
        );
    };
    let server = plain
        .run(
            "kubectl",
            kubectl,
            [
                "config",
                "view",
                "--minify",
                "--context",
                &context,
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
            ],
        )
        .await
        .map(|server| server.trim().to_owned())
        .unwrap_or_default();
    say!(
        "cluster profile: context {context} (API server {}); every kubectl, Helm and API call of this run uses it",
        if server.is_empty() {
            "unknown"
        } else {
            &server
        }
    );
    Ok(Some(context))
}

/// Rollout restart, as `kubectl rollout restart` does it: a new pod-template
/// annotation. Returns once the patch is accepted; wait with `waits::deployment`.
pub async fn restart_deployment(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting the time")?;
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": now
    }}}}});
    deployments
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .with_context(|| format!("restarting Deployment {namespace}/{name}"))?;
    Ok(())
}

/// `down --profile kind`: deletes every kind cluster a run recorded as
/// created and not yet deleted (`<run>/k8s.json`); clusters keyrig only
/// reused are left alone. Returns what it deleted.
pub async fn delete_created_clusters() -> Result<Vec<String>> {
    let rig_dir = rig::base::paths::rig_dir();
    let entries = match std::fs::read_dir(&rig_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", rig_dir.display())),
    };
    let mut runs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect();
    runs.sort();
    let mut deleted: Vec<String> = Vec::new();
    for run in runs {
        if let Some(name) = delete_created_cluster(&run, &deleted).await? {
            deleted.push(name);
        }
    }
    if deleted.is_empty() {
        say!("no kind cluster to delete: none was created by keyrig, or it is gone already");
    }
    Ok(deleted)
}

/// The end of `e2e --profile kind`: deletes the cluster of this one run if
/// the run created it. A cluster another run created (say, one `up` left
/// running, which this run reused) is not this run's to delete.
/// `already`: clusters deleted a moment ago (`down` walks several runs).
pub async fn delete_created_cluster(run: &Path, already: &[String]) -> Result<Option<String>> {
    let Some(mut state) = super::state::KubeState::load(run)? else {
        return Ok(None);
    };
    let Some(name) = state.cluster.clone() else {
        return Ok(None);
    };
    if !state.created_cluster || state.deleted {
        return Ok(None);
    }
    let mut newly = None;
    if !already.contains(&name) {
        let kind = ToolEnv::from_process().which("kind").with_context(|| {
            format!(
                "run {} created kind cluster {name}, but no `kind` is on PATH to delete it (kind delete cluster --name {name})",
                run.display()
            )
        })?;
        let cmds = Commands::new(run.join("logs"), None, None);
        cmds.run("kind", &kind, ["delete", "cluster", "--name", &name])
            .await?;
        newly = Some(name);
    }
    state.deleted = true;
    state.save(run)?;
    Ok(newly)
}

/// What `up` prints: where everything is.
pub fn describe(run: &KubeRun) -> String {
    let env = &run.environment;
    format!(
        "keyrig {} environment {} (mode {}):\n  gateway   {}\n  vault     {}  (root token in {})\n  keygate   {}\n  env.json  {}\n  logs      {}",
        env.profile,
        env.run_id,
        run.state.mode,
        env.gateway_url,
        env.vault_addr,
        env.root_token_file.display(),
        env.keygate_url,
        run.run.env_file().display(),
        env.logs_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dev_root_token_of_both_vault_charts() {
        let pins = load_pins().unwrap();
        for vault in [VaultChart::OpenBao, VaultChart::HashiCorp] {
            let values = rig::base::paths::workspace_root()
                .join(&chart(&pins, vault.chart()).unwrap().values);
            assert!(
                !dev_root_token(&values).unwrap().expose().is_empty(),
                "{vault:?}"
            );
        }
    }

    #[test]
    fn pins_name_every_chart_the_profiles_install() {
        let pins = load_pins().unwrap();
        for name in ["openbao", "vault", "external-secrets"] {
            chart(&pins, name).unwrap();
        }
        assert!(pins.images.contains_key("keygate"));
    }
}
