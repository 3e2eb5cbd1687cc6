//! A run directory, `target/rig/<run-id>/`: logs, secrets (0600 files in a
//! 0700 directory), `pids.json`, `env.json` and the e2e case records.
//! `target/rig/latest` points at the newest one.

use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Name of the symlink to the newest run.
pub const LATEST: &str = "latest";

/// Set by `cargo xtask e2e` for the test process: the run directory whose
/// `cases/`, `rotations/`, `faults/` and `findings/` receive the records, and
/// whose registry redacts the secrets the tests create.
pub const RUN_DIR_VAR: &str = "KEYRIG_RUN_DIR";

/// The run directory of the e2e run this process is part of
/// (`$KEYRIG_RUN_DIR`); `None` outside one, e.g. `cargo test` by hand, where
/// records are not kept.
pub fn current_run_dir() -> Option<PathBuf> {
    std::env::var_os(RUN_DIR_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[derive(Debug, Clone)]
pub struct RunDir {
    id: String,
    path: PathBuf,
}

impl RunDir {
    /// A new run under `target/rig/`, which becomes `latest`.
    pub fn create() -> Result<Self> {
        Self::create_in(&crate::base::paths::rig_dir())
    }

    /// A new run under `base` (tests use a temporary directory).
    pub fn create_in(base: &Path) -> Result<Self> {
        std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
        let stamp = stamp(time::OffsetDateTime::now_utc())?;
        let pid = std::process::id();
        // Two runs of one process within a second (tests) get a suffix.
        let (id, path) = (0..)
            .map(|n| {
                if n == 0 {
                    format!("{stamp}-{pid}")
                } else {
                    format!("{stamp}-{pid}-{n}")
                }
            })
            .map(|id| {
                let path = base.join(&id);
                (id, path)
            })
            .find(|(_, path)| !path.exists())
            .expect("an unbounded range always yields a fresh name");
        std::fs::create_dir(&path)
            .with_context(|| format!("creating the run directory {}", path.display()))?;
        let run = Self { id, path };
        std::fs::create_dir(run.logs_dir()).context("creating the logs directory")?;
        DirBuilder::new()
            .mode(0o700)
            .create(run.secrets_dir())
            .context("creating the secrets directory")?;
        run.point_latest(base)?;
        Ok(run)
    }

    /// An existing run directory (e.g. `target/rig/latest`, for `down`).
    pub fn open(path: &Path) -> Result<Self> {
        let path = path
            .canonicalize()
            .with_context(|| format!("no run directory at {}", path.display()))?;
        let id = path
            .file_name()
            .context("a run directory has a name")?
            .to_string_lossy()
            .into_owned();
        Ok(Self { id, path })
    }

    /// Repoints `latest` with a temporary symlink renamed over it: rename is
    /// atomic, so readers see the old run or the new one, never no link.
    fn point_latest(&self, base: &Path) -> Result<()> {
        let tmp = base.join(format!(".{LATEST}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.id, &tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        std::fs::rename(&tmp, base.join(LATEST))
            .with_context(|| format!("repointing {}/{LATEST}", base.display()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.path.join("logs")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.path.join("secrets")
    }

    pub fn pids_file(&self) -> PathBuf {
        self.path.join("pids.json")
    }

    pub fn env_file(&self) -> PathBuf {
        self.path.join("env.json")
    }

    pub fn cases_dir(&self) -> PathBuf {
        self.path.join("cases")
    }

    /// Writes `secrets/<name>` readable by the owner only and returns its
    /// path. The file is created with mode 0600 (never chmod-ed afterwards,
    /// which would leave a window) under a temporary name, then renamed into
    /// place, so a rewrite replaces the secret atomically.
    pub fn write_secret(&self, name: &str, value: &str) -> Result<PathBuf> {
        write_secret_file(&self.secrets_dir().join(name), value)
    }
}

/// A run id's leading part: the time it was created, to the second, in
/// an order that sorts as text.
fn stamp(at: time::OffsetDateTime) -> Result<String> {
    at.format(time::macros::format_description!(
        "[year][month][day]T[hour][minute][second]"
    ))
    .context("formatting the run id")
}

/// The runs under `base` that process `pid` created at `since` or later: a
/// run's id is `<stamp>-<pid>[-<n>]`, so the run of a nested `cargo xtask
/// up` is found by that process's pid, from the moment it is started (and
/// after it has detached and exited), without relying on `latest`, which
/// another run may have repointed.
pub fn runs_created_by(base: &Path, pid: u32, since: time::OffsetDateTime) -> Vec<PathBuf> {
    let (Ok(since), Ok(entries)) = (stamp(since), std::fs::read_dir(base)) else {
        return Vec::new();
    };
    let pid = pid.to_string();
    let mut runs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        // Not `latest`, a symlink to one of them.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.splitn(3, '-');
            let (Some(created), Some(by)) = (parts.next(), parts.next()) else {
                return false;
            };
            by == pid && created >= since.as_str()
        })
        .map(|e| e.path())
        .collect();
    runs.sort();
    runs
}

/// Writes a 0600 file atomically; see [`RunDir::write_secret`].
pub fn write_secret_file(path: &Path, value: &str) -> Result<PathBuf> {
    let dir = path
        .parent()
        .context("a secret file lives in a directory")?;
    let name = path
        .file_name()
        .context("a secret file has a name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(value.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all().ok();
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving the secret into {}", path.display()))?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[rstest]
    fn creates_the_layout_and_points_latest() {
        let base = tempfile::tempdir().unwrap();
        let first = RunDir::create_in(base.path()).unwrap();
        let second = RunDir::create_in(base.path()).unwrap();
        assert_ne!(first.id(), second.id());
        assert!(first.logs_dir().is_dir());
        assert_eq!(mode(&first.secrets_dir()), 0o700);
        let latest = std::fs::read_link(base.path().join(LATEST)).unwrap();
        assert_eq!(latest, PathBuf::from(second.id()));
        let opened = RunDir::open(&base.path().join(LATEST)).unwrap();
        assert_eq!(opened.id(), second.id());
    }

    /// A process's runs are found by its pid, from the second it started
    /// on; an older run of a process that had the same pid, another
    /// process's run and `latest` are not.
    #[rstest]
    fn the_runs_of_a_process_are_found_by_its_pid() {
        let base = tempfile::tempdir().unwrap();
        let since = time::OffsetDateTime::now_utc();
        let first = RunDir::create_in(base.path()).unwrap();
        let second = RunDir::create_in(base.path()).unwrap();
        let me = std::process::id();
        std::fs::create_dir(base.path().join(format!("20000101T000000-{me}"))).unwrap();
        std::fs::create_dir(base.path().join(format!("29990101T000000-{}", me + 1))).unwrap();
        let mut expected = vec![first.path().to_owned(), second.path().to_owned()];
        expected.sort();
        assert_eq!(runs_created_by(base.path(), me, since), expected);
        assert!(runs_created_by(base.path(), me + 2, since).is_empty());
        let later = since + time::Duration::hours(1);
        assert!(runs_created_by(base.path(), me, later).is_empty());
        assert!(runs_created_by(&base.path().join("absent"), me, since).is_empty());
    }

    #[rstest]
    fn secrets_are_0600_from_the_start_and_rewritable() {
        let base = tempfile::tempdir().unwrap();
        let run = RunDir::create_in(base.path()).unwrap();
        let path = run.write_secret("root-token", "first").unwrap();
        assert_eq!(mode(&path), 0o600);
        run.write_secret("root-token", "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        assert_eq!(mode(&path), 0o600);
        // Nothing but the secret is left behind.
        assert_eq!(std::fs::read_dir(run.secrets_dir()).unwrap().count(), 1);
    }
}
