//! `<run>/k8s.json`: what a Kubernetes profile run created outside its own
//! processes, so `cargo xtask down --profile kind` deletes exactly that (a
//! kind cluster keyrig created; never one it only reused).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{KubeProfile, Mode};

pub const FILE: &str = "k8s.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeState {
    pub profile: KubeProfile,
    pub mode: Mode,
    /// The kind cluster's name (kind profile).
    #[serde(default)]
    pub cluster: Option<String>,
    /// True when this run created the cluster: `down` deletes it then.
    pub created_cluster: bool,
    /// Set by `down` once the cluster is deleted.
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

impl KubeState {
    pub fn load(run_dir: &Path) -> Result<Option<Self>> {
        let path = run_dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not a keyrig k8s.json", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KubeState::load(dir.path()).unwrap(), None);
        let state = KubeState {
            profile: KubeProfile::Kind,
            mode: Mode::ExternalSecret,
            cluster: Some("keyrig".into()),
            created_cluster: true,
            deleted: false,
            kubeconfig: None,
        };
        state.save(dir.path()).unwrap();
        assert_eq!(KubeState::load(dir.path()).unwrap(), Some(state));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"external-secret\""), "{text}");
    }
}
