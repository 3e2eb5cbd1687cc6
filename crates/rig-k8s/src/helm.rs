//! Helm releases of the pinned charts (env/k8s.toml `[charts.*]`):
//! `helm upgrade --install`, after repairing a release an interrupted run
//! left `pending-*` (kind) or saying how (cluster), and refusing a release
//! of another chart under the same name (`--vault` switched on a reused
//! cluster).

use std::path::Path;

use anyhow::{Context, Result};
use manifests::files::ChartPin;

use super::KubeProfile;
use super::commands::{Commands, PROGRESS_EVERY};
use rig::say;

/// A release of the same name from another chart (the other Vault of
/// `--vault`) cannot be upgraded in place: its StatefulSet's selector
/// differs, and Kubernetes refuses the change half way through the
/// upgrade. Refused first, with what to do.
pub async fn refuse_chart_switch(cmds: &Commands, helm: &Path, chart: &ChartPin) -> Result<()> {
    if let Some(Release {
        chart: installed, ..
    }) = release(cmds, helm, chart).await?
        && !is_chart(&installed, &chart.chart)
    {
        anyhow::bail!(
            "release {}/{} in this cluster is chart {installed}, not {}: switching Vault charts (--vault) needs a fresh cluster; run again with --recreate",
            chart.namespace,
            chart.release,
            chart.chart
        );
    }
    Ok(())
}

/// A Helm release as `helm list` shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Release {
    /// `<name>-<version>`.
    pub chart: String,
    /// `deployed`, `failed`, `pending-install`, `pending-upgrade`...
    pub status: String,
}

/// `chart`'s release in the cluster, whatever its status.
pub async fn release(cmds: &Commands, helm: &Path, chart: &ChartPin) -> Result<Option<Release>> {
    let mut args: Vec<String> = vec![
        "list".into(),
        "--all".into(),
        "--namespace".into(),
        chart.namespace.clone(),
        "--filter".into(),
        format!("^{}$", chart.release),
        "--output".into(),
        "json".into(),
    ];
    args.extend(cmds.context_args("--kube-context"));
    let listed = cmds.run("helm", helm, &args).await?;
    parse_release(&listed, &chart.release)
}

/// `release` in `helm list -o json`.
fn parse_release(listed: &str, release: &str) -> Result<Option<Release>> {
    let releases: Vec<serde_json::Value> =
        serde_json::from_str(listed.trim()).context("reading `helm list -o json`")?;
    Ok(releases
        .iter()
        .find(|r| r["name"] == release)
        .map(|r| Release {
            chart: r["chart"].as_str().unwrap_or_default().to_owned(),
            status: r["status"].as_str().unwrap_or_default().to_owned(),
        }))
}

/// Whether `installed` (`<name>-<version>`) is chart `name`.
fn is_chart(installed: &str, name: &str) -> bool {
    installed
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
}

/// `helm upgrade --install` of a pinned chart: idempotent on a reused
/// cluster. A release an interrupted run left `pending-*` (Ctrl-C kills
/// helm mid-operation) would refuse every later upgrade with "another
/// operation is in progress": in kind's cluster, keyrig's own, it is
/// uninstalled (never installed) or rolled back first; elsewhere `up`
/// stops and says what to run.
pub async fn install(
    cmds: &Commands,
    helm: &Path,
    chart: &ChartPin,
    profile: KubeProfile,
) -> Result<()> {
    if let Some(stuck) = release(cmds, helm, chart)
        .await?
        .filter(|r| r.status.starts_with("pending-"))
    {
        let repair: Vec<String> = if stuck.status == "pending-install" {
            vec!["uninstall".into(), chart.release.clone()]
        } else {
            vec!["rollback".into(), chart.release.clone()]
        };
        if profile != KubeProfile::Kind {
            anyhow::bail!(
                "Helm release {}/{} is {} (an interrupted helm, maybe an earlier run's): run \
                 `helm {} -n {}{}` if it is keyrig's, then `up` again",
                chart.namespace,
                chart.release,
                stuck.status,
                repair.join(" "),
                chart.namespace,
                cmds.context_args("--kube-context")
                    .iter()
                    .fold(String::new(), |line, arg| format!("{line} {arg}"))
            );
        }
        say!(
            "helm: release {}/{} is {} (an interrupted run): helm {} first",
            chart.namespace,
            chart.release,
            stuck.status,
            repair[0]
        );
        let mut args = repair;
        args.extend(["--namespace".into(), chart.namespace.clone()]);
        args.extend(cmds.context_args("--kube-context"));
        cmds.run("helm", helm, &args).await?;
    }
    let values = rig::base::paths::workspace_root().join(&chart.values);
    let mut args: Vec<String> = vec![
        "upgrade".into(),
        "--install".into(),
        chart.release.clone(),
        chart.chart.clone(),
        "--repo".into(),
        chart.repo.clone(),
        "--version".into(),
        chart.version.clone(),
        "--namespace".into(),
        chart.namespace.clone(),
        "--create-namespace".into(),
        "--values".into(),
        values.display().to_string(),
    ];
    args.extend(cmds.context_args("--kube-context"));
    cmds.run_long("helm", helm, &args, PROGRESS_EVERY).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_of_another_chart_is_told_apart() {
        let listed = r#"[{"name":"openbao","namespace":"openbao","revision":"2",
            "status":"pending-upgrade","chart":"openbao-0.29.6","app_version":"v2.6.2"}]"#;
        let installed = parse_release(listed, "openbao").unwrap().unwrap();
        assert_eq!(
            installed,
            Release {
                chart: "openbao-0.29.6".into(),
                status: "pending-upgrade".into()
            }
        );
        assert!(is_chart(&installed.chart, "openbao"));
        assert!(!is_chart(&installed.chart, "vault"));
        assert!(!is_chart("openbao-extra-1.0.0", "openbao"));
        assert!(is_chart("vault-0.34.1", "vault"));
        assert_eq!(parse_release("[]", "openbao").unwrap(), None);
    }
}
