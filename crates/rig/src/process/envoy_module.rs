//! Envoy with keygate's dynamic module (`crates/keygate-envoy`) loaded: the
//! library, the version check that comes before every start, and the
//! Envoy command line with the module's search path.
//!
//! Envoy checks only the ABI version string a module returns when loaded;
//! a module built against another Envoy's header may still load and then
//! pass arguments Envoy reads differently. So before starting Envoy with
//! the module, [`check`] reads the build marker the module carries
//! (`keygate_envoy::build_info`: `keygate-envoy-build abi=v0.2.0
//! envoy=1.40;`) and the binary's `envoy --version`, and refuses, naming
//! both, unless the Envoy is of the release series the module was built
//! for.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::process::supervisor::Component;
use crate::process::tools::Tools;

/// The variable Envoy searches for `lib<name>.so` (colon-separated
/// directories).
pub const SEARCH_PATH_VAR: &str = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH";
/// The module's name in Envoy's config (`dynamic_module_config.name`),
/// found as `lib<name>.so`.
pub const MODULE_NAME: &str = "keygate_envoy";
/// Overrides where the library is taken from.
pub const MODULE_VAR: &str = "KEYRIG_KEYGATE_ENVOY";

const MARKER: &str = "keygate-envoy-build ";

/// What a module library says it was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleBuild {
    /// The dynamic-module ABI version (e.g. `v0.2.0`).
    pub abi: String,
    /// The Envoy release series (`major.minor`, e.g. `1.40`).
    pub envoy: String,
}

/// `$KEYRIG_KEYGATE_ENVOY`, else the debug build in this workspace's
/// target directory (what `cargo build -p keygate-envoy` produces).
pub fn default_module() -> PathBuf {
    std::env::var_os(MODULE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::base::paths::target_dir().join("debug/libkeygate_envoy.so"))
}

/// The build marker in `module`'s bytes.
pub fn read_build(module: &Path) -> Result<ModuleBuild> {
    let bytes = std::fs::read(module).with_context(|| {
        format!(
            "cannot read the keygate Envoy module {}: build it with `cargo build -p keygate-envoy`, or point {MODULE_VAR} at one",
            module.display()
        )
    })?;
    parse_build(&bytes).with_context(|| {
        format!(
            "{} carries no keygate-envoy build marker: it is not a keygate-envoy module, or one older than the marker; rebuild it with `cargo build -p keygate-envoy`",
            module.display()
        )
    })
}

fn parse_build(bytes: &[u8]) -> Option<ModuleBuild> {
    let start = bytes
        .windows(MARKER.len())
        .position(|w| w == MARKER.as_bytes())?
        + MARKER.len();
    let end = start + bytes[start..].iter().position(|b| *b == b';')?;
    let text = std::str::from_utf8(&bytes[start..end]).ok()?;
    let mut abi = None;
    let mut envoy = None;
    for field in text.split(' ') {
        match field.split_once('=') {
            Some(("abi", value)) => abi = Some(value.to_owned()),
            Some(("envoy", value)) => envoy = Some(value.to_owned()),
            _ => {}
        }
    }
    Some(ModuleBuild {
        abi: abi?,
        envoy: envoy?,
    })
}

/// Whether an Envoy of `envoy_version` (`1.40.0`) may load a module built
/// as `build`: only the release series it was built and tested for.
/// (Envoy promises that a module built for X.Y also loads on X.(Y+1); that
/// promise is about loading, and the module was never tested there.)
pub fn supported(
    module: &Path,
    build: &ModuleBuild,
    envoy: &Path,
    envoy_version: &str,
) -> Result<()> {
    let series = envoy_version
        .splitn(3, '.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    if series != build.envoy {
        bail!(
            "{} was built for Envoy {} (dynamic-module ABI {}), but {} is Envoy {envoy_version}: \
             use Envoy {}.x (env/tools.toml pins it), or rebuild the module against Envoy {series}'s ABI header",
            module.display(),
            build.envoy,
            build.abi,
            envoy.display(),
            build.envoy,
        );
    }
    Ok(())
}

/// Reads both versions and checks them: the module's marker and the
/// binary's `envoy --version` (as `env/tools.toml` parses it).
pub fn check(module: &Path, envoy: &Path) -> Result<ModuleBuild> {
    let build = read_build(module)?;
    let version = Tools::load_default()?.version_of("envoy", envoy)?;
    supported(module, &build, envoy, &version)?;
    Ok(build)
}

/// Envoy as component `name` on `config` with `module` loadable, after
/// [`check`]. The command line is the harness's Envoy's
/// (`local::envoy::command`): no hot restart, one worker, logs at
/// `log_level` on stderr.
pub fn command(
    name: &str,
    envoy: &Path,
    config: &Path,
    module: &Path,
    log_level: &str,
) -> Result<Component> {
    let component = Component::new(name, envoy)
        .arg("-c")
        .arg(config)
        .args(["--disable-hot-restart", "--concurrency", "1"])
        .args(["--log-level", log_level]);
    loadable(component, envoy, module)
}

/// `component` (an Envoy, `envoy` its binary) with `module` loadable: its
/// directory in [`SEARCH_PATH_VAR`], after [`check`] and a check that the
/// file has the name Envoy looks for.
pub fn loadable(component: Component, envoy: &Path, module: &Path) -> Result<Component> {
    check(module, envoy)?;
    let file_name = format!("lib{MODULE_NAME}.so");
    if module.file_name().and_then(|n| n.to_str()) != Some(file_name.as_str()) {
        bail!(
            "{}: Envoy finds the module as {file_name} in {SEARCH_PATH_VAR}; name the file so",
            module.display()
        );
    }
    let dir = module
        .parent()
        .with_context(|| format!("{} has no directory", module.display()))?;
    Ok(component.env(SEARCH_PATH_VAR, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_among_other_bytes() {
        let mut bytes = b"\x7fELF\0\0 some code".to_vec();
        bytes.extend_from_slice(b"keygate-envoy-build abi=v0.2.0 envoy=1.40;\n\0more");
        assert_eq!(
            parse_build(&bytes),
            Some(ModuleBuild {
                abi: "v0.2.0".into(),
                envoy: "1.40".into()
            })
        );
        assert_eq!(parse_build(b"\x7fELF no marker"), None);
        assert_eq!(parse_build(b"keygate-envoy-build abi=v0.2.0;"), None);
    }

    #[test]
    fn another_envoy_series_is_refused_naming_both_versions() {
        let build = ModuleBuild {
            abi: "v0.2.0".into(),
            envoy: "1.40".into(),
        };
        let module = Path::new("/t/libkeygate_envoy.so");
        let envoy = Path::new("/bin/envoy");
        supported(module, &build, envoy, "1.40.3").unwrap();
        let err = supported(module, &build, envoy, "1.41.0")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/t/libkeygate_envoy.so was built for Envoy 1.40 (dynamic-module ABI v0.2.0), but /bin/envoy is Envoy 1.41.0: \
             use Envoy 1.40.x (env/tools.toml pins it), or rebuild the module against Envoy 1.41's ABI header"
        );
        assert!(supported(module, &build, envoy, "1.4.0").is_err());
    }
}
