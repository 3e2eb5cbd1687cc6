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
use std::time::{Duration, Instant};

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

/// First retry of a changed credential that failed to log in, and the cap
/// of the doubling (`crate::backoff`). A minute bounds how late a fixed
/// credential is noticed when no new file version arrives; a new version
/// is tried at once whatever the schedule.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// A changed version of the files that has not logged in yet.
struct Pending {
    version: Vec<Fingerprint>,
    failures: u32,
    next_try: Instant,
}

/// Runs forever: when a credential file changes, logs in with the new
/// content. A failed login keeps the current session (a half-written or
/// wrong credential must not take the gateway down; the old token serves
/// while it is valid). A login Vault could not answer is retried with an
/// exponential backoff (1 s doubling to a minute, jittered), not on every
/// poll: a bad secret-id rolled out to every pod must not become a login
/// per second per pod. Credentials Vault rejected are not sent again until
/// the files change or 16 minutes pass (`crate::rejected`: Vault's user
/// lockout). The backoff restarts when the files change again or a login
/// succeeds.
pub async fn relogin_on_change(vault: Arc<Vault>, files: Vec<PathBuf>) {
    if files.is_empty() {
        return;
    }
    let mut set = FileSet::new(files);
    let mut pending: Option<Pending> = None;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let (now, changed) = set.check();
        if !changed {
            // Back to the version in use: nothing left to log in with.
            pending = None;
            continue;
        }
        let attempt = match &mut pending {
            Some(p) if p.version == now => p,
            _ => pending.insert(Pending {
                version: now.clone(),
                failures: 0,
                next_try: Instant::now(),
            }),
        };
        if Instant::now() < attempt.next_try {
            continue;
        }
        match vault.login().await {
            Ok(info) => {
                info!(accessor = %info.accessor, "a credential file changed; logged in with the new credentials");
                set.accept(now);
                pending = None;
            }
            // Nothing sent: these files were rejected already, and said so.
            Err(err @ crate::vault::VaultError::LoginHeldBack { .. }) => {
                attempt.failures += 1;
                attempt.next_try = Instant::now() + RETRY_CAP;
                tracing::debug!(error = %err, "not logging in with the changed credential files");
            }
            Err(err) => {
                attempt.failures += 1;
                let retry_in = crate::backoff::retry_delay(
                    attempt.failures,
                    RETRY_BASE,
                    RETRY_CAP,
                    crate::backoff::jitter(),
                );
                attempt.next_try = Instant::now() + retry_in;
                if err.is_rejected_credentials() {
                    warn!(
                        error = %err,
                        "Vault rejected the changed credential files; keeping the current session \
                         while its token is valid. They are sent again only when the files change \
                         (or after 16 minutes: Vault's user lockout counts every rejected login)"
                    );
                    continue;
                }
                warn!(
                    error = %err,
                    failures = attempt.failures,
                    retry_in = ?retry_in,
                    "a credential file changed but logging in with it failed; keeping the current \
                     session while its token is valid, next try in {retry_in:.1?} (or at once when \
                     the file changes again)"
                );
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
