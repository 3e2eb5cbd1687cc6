//! A kube-rs client for the profile's cluster: the kubeconfig file the kind
//! profile wrote (0600, in the run's secrets/), or the default one for the
//! cluster profile, at the context env.json names.

use std::path::Path;

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

use rig::contract::env::KubeEnvironment;

/// A client for `kubeconfig` (else `$KUBECONFIG` / `~/.kube/config`, or the
/// in-cluster config) at `context` (else the current one).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<kube::Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| {
                    format!(
                        "{} has no usable context {:?}",
                        path.display(),
                        context.unwrap_or("(current)")
                    )
                })?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .context("reading the default kubeconfig ($KUBECONFIG or ~/.kube/config)")?,
        None => kube::Config::infer()
            .await
            .context("no Kubernetes config: set KUBECONFIG or select a context with kubectl")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The client for the cluster an env.json describes.
pub async fn for_environment(kube: &KubeEnvironment) -> Result<kube::Client> {
    client(kube.kubeconfig.as_deref(), kube.context.as_deref()).await
}
