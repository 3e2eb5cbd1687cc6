//! Notices a rotated credential file and logs in again at once, instead of
//! at two thirds of the token TTL or on the next 403.
//!
//! The files are usually keys of a mounted Secret (`<dir>/secret-id ->
//! ..data/secret-id`): a rotation swaps `..data` to a new payload
//! directory, so the file the key resolves to changes identity (device,
//! inode) even when size and mtime happen to match. A plain file rewritten
//! in place changes its mtime or size. Polling `stat` every second catches
//! both without an inotify dependency, and costs nothing measurable.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::vault::Vault;

/// How often the credential files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of a file: (device, inode, mtime ns, size),
/// following symlinks. `None` while the file cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(Option<(u64, u64, i64, u64)>);

impl Fingerprint {
    pub fn of(path: &std::path::Path) -> Self {
        Self(std::fs::metadata(path).ok().map(|m| {
            (
                m.dev(),
                m.ino(),
                m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                m.size(),
            )
        }))
    }
}

/// The fingerprints of a set of files, compared as a whole.
#[derive(Debug, Clone)]
pub struct FileSet {
    files: Vec<PathBuf>,
    seen: Vec<Fingerprint>,
}

impl FileSet {
    pub fn new(files: Vec<PathBuf>) -> Self {
        let seen = files.iter().map(|f| Fingerprint::of(f)).collect();
        Self { files, seen }
    }

    /// The current fingerprints, and whether they differ from the
    /// accepted ones.
    pub fn check(&self) -> (Vec<Fingerprint>, bool) {
        let now: Vec<_> = self.files.iter().map(|f| Fingerprint::of(f)).collect();
        let changed = now != self.seen;
        (now, changed)
    }

    /// Accepts `now` as the version in use.
    pub fn accept(&mut self, now: Vec<Fingerprint>) {
        self.seen = now;
    }
}

/// Runs forever: when a credential file changes, logs in with the new
/// content. A failed login keeps the current session (a half-written
/// credential must not take the gateway down) and is retried on the next
/// poll, logging once per change.
pub async fn relogin_on_change(vault: Arc<Vault>, files: Vec<PathBuf>) {
    if files.is_empty() {
        return;
    }
    let mut set = FileSet::new(files);
    let mut warned_for: Option<Vec<Fingerprint>> = None;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let (now, changed) = set.check();
        if !changed {
            continue;
        }
        match vault.login().await {
            Ok(info) => {
                info!(accessor = %info.accessor, "a credential file changed; logged in with the new credentials");
                set.accept(now);
                warned_for = None;
            }
            Err(err) => {
                if warned_for.as_ref() != Some(&now) {
                    warn!(error = %err, "a credential file changed but logging in with it failed; keeping the current session and retrying");
                    warned_for = Some(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swapped_symlink_target_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "same").unwrap();
        std::fs::write(&b, "same").unwrap();
        let link = dir.path().join("key");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let set = FileSet::new(vec![link.clone()]);
        assert!(!set.check().1);
        let tmp = dir.path().join("key.tmp");
        std::os::unix::fs::symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert!(set.check().1, "same size and content, other file");
    }

    #[test]
    fn a_missing_file_and_its_return_are_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let mut set = FileSet::new(vec![f.clone()]);
        std::fs::write(&f, "x").unwrap();
        let (now, changed) = set.check();
        assert!(changed);
        set.accept(now);
        assert!(!set.check().1);
    }
}
