//! Where things are: the workspace, cargo's target directory and the
//! harness's own corner of it.

use std::path::PathBuf;

/// The workspace root. Taken from where rig was compiled, so tests and xtask
/// find scenarios and templates whatever their current directory is.
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    // canonicalize only fails if the checkout moved after the build; the
    // un-normalized path still works then.
    root.canonicalize().unwrap_or(root)
}

/// cargo's target directory: `$CARGO_TARGET_DIR` if set (relative to the
/// workspace root, as cargo reads it), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// `target/rig`: one directory per run, plus the `latest` symlink.
pub fn rig_dir() -> PathBuf {
    target_dir().join("rig")
}

/// The `scenarios/` directory (data only: APIs, Vault setup).
pub fn scenarios_dir() -> PathBuf {
    workspace_root().join("scenarios")
}

/// The `env/` directory: tool pins and templates.
pub fn env_dir() -> PathBuf {
    workspace_root().join("env")
}
