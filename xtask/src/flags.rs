//! The command line's value types shared by several subcommands: profile,
//! delivery mode, the Kubernetes options, the tools profile.

use anyhow::{Result, bail};
use clap::ValueEnum;

/// `scenarios/modes/<mode>.yaml`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeliveryMode {
    /// Credentials in the values file; rig writes the Secret (development only).
    Inline,
    /// A Secret created out of band, with custom key names.
    ExistingSecret,
    /// bao agent renders the Secret from Vault KV v2 (External Secrets style).
    ExternalSecret,
}

impl DeliveryMode {
    pub(crate) fn mode(self) -> rig::contract::modes::Mode {
        match self {
            DeliveryMode::Inline => rig::contract::modes::Mode::Inline,
            DeliveryMode::ExistingSecret => rig::contract::modes::Mode::ExistingSecret,
            DeliveryMode::ExternalSecret => rig::contract::modes::Mode::ExternalSecret,
        }
    }
}

/// Options of the kind and cluster profiles (ignored by the local one).
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct KubeArgs {
    /// kind: delete an existing `keyrig` cluster and start afresh.
    #[arg(long)]
    pub(crate) recreate: bool,
    /// kind: the dev Vault installed in the cluster (env/k8s.toml
    /// [charts.openbao] or [charts.vault]).
    #[arg(long, value_enum, default_value_t = VaultFlavour::Openbao)]
    pub(crate) vault: VaultFlavour,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VaultFlavour {
    /// OpenBao (the local profile's Vault too).
    Openbao,
    /// HashiCorp Vault.
    Hashicorp,
}

impl From<VaultFlavour> for rig_k8s::VaultChart {
    fn from(flavour: VaultFlavour) -> Self {
        match flavour {
            VaultFlavour::Openbao => rig_k8s::VaultChart::OpenBao,
            VaultFlavour::Hashicorp => rig_k8s::VaultChart::HashiCorp,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Profile {
    /// Every component a process on loopback.
    Local,
    /// A kind cluster.
    Kind,
    /// The current kubectl context's cluster.
    Cluster,
}

impl Profile {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Kind => "kind",
            Profile::Cluster => "cluster",
        }
    }

    pub(crate) fn kube(self) -> Option<rig_k8s::KubeProfile> {
        match self {
            Profile::Local => None,
            Profile::Kind => Some(rig_k8s::KubeProfile::Kind),
            Profile::Cluster => Some(rig_k8s::KubeProfile::Cluster),
        }
    }

    pub(crate) fn require_local(self) -> Result<()> {
        if self != Profile::Local {
            bail!(
                "the {} profile is not implemented yet in this build: use --profile local",
                self.name()
            );
        }
        Ok(())
    }
}

/// The profiles `cargo xtask tools` installs for: the environments', and
/// `offline` (what the offline checks run: env/tools.toml's
/// `profiles = ["offline"]`, e.g. the pinned kubectl).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ToolsProfile {
    /// Every pin that pip or apt-get can install (local, gateways, offline).
    All,
    Local,
    Offline,
    Kind,
    Cluster,
}

impl ToolsProfile {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ToolsProfile::All => "all",
            ToolsProfile::Local => "local",
            ToolsProfile::Offline => "offline",
            ToolsProfile::Kind => "kind",
            ToolsProfile::Cluster => "cluster",
        }
    }
}
