//! Keys-file mode, compatible with Spring Cloud Gateway for Kubernetes: a
//! Vault Agent (here `bao agent`) renders one file per API group with a
//! line `<selector>,<hash>` per key, listed from `<mount>/metadata/<groupId>`;
//! keygate validates from those files instead of reading Vault per key.
//!
//! The files are polled (modification time, size and inode) every
//! `poll_interval` and re-read when any changes: the agent writes through a
//! temporary file and a rename, so a reader sees the old or the new file,
//! never half of one. A file that cannot be read makes its group answer
//! `vault-unavailable` (fail closed) until it can be read again; a line that
//! is not `<32 hex>,<64 hex>` is skipped and counted in the log.
//!
//! What the file cannot carry: the owner (so `x-keyrig-owner` is empty) and
//! the expiry (so an expired key is accepted until the portal deletes it).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use apikey::{KeyRecord, Selector};
use tracing::{info, warn};

use crate::boxed_future::BoxFuture;
use crate::cache::RecordSource;
use crate::vault::VaultError;

/// The parsed content of one keys file: selector -> hex hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeysTable {
    pub hashes: HashMap<String, String>,
    /// Lines that were neither blank nor `<selector>,<hash>`.
    pub skipped: usize,
}

impl KeysTable {
    /// Parses `<selector>,<hash>` lines. Blank lines are ignored (the agent's
    /// template leaves some); whitespace around fields is trimmed.
    pub fn parse(text: &str) -> Self {
        let mut table = KeysTable::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let parsed = line.split_once(',').and_then(|(selector, hash)| {
                let (selector, hash) = (selector.trim(), hash.trim());
                (is_lower_hex(selector, 32) && is_lower_hex(hash, 64))
                    .then(|| (selector.to_owned(), hash.to_owned()))
            });
            match parsed {
                Some((selector, hash)) => {
                    table.hashes.insert(selector, hash);
                }
                None => table.skipped += 1,
            }
        }
        table
    }
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &std::path::Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

/// One group's file and what was last loaded from it.
struct GroupFile {
    field: String,
    path: PathBuf,
    state: RwLock<FileState>,
}

enum FileState {
    Loaded { stamp: Stamp, table: Arc<KeysTable> },
    Failed { reason: String },
}

/// Every group's keys file, reloaded on change.
pub struct KeysFiles {
    groups: BTreeMap<String, GroupFile>,
}

impl KeysFiles {
    /// `files`: groupId -> (config field, path). Loads every file once; a
    /// file that cannot be read yet is reported and retried by `watch`.
    pub fn new(files: impl IntoIterator<Item = (String, String, PathBuf)>) -> Self {
        let groups = files
            .into_iter()
            .map(|(group, field, path)| {
                let file = GroupFile {
                    field,
                    path,
                    state: RwLock::new(FileState::Failed {
                        reason: "not read yet".into(),
                    }),
                };
                (group, file)
            })
            .collect();
        let files = Self { groups };
        files.reload_changed();
        files
    }

    /// Re-reads each file whose stamp changed since the last load.
    pub fn reload_changed(&self) {
        for (group, file) in &self.groups {
            let current = stamp(&file.path);
            let unchanged = {
                let state = file.state.read().unwrap_or_else(|e| e.into_inner());
                matches!((&*state, &current), (FileState::Loaded { stamp, .. }, Ok(now)) if stamp == now)
            };
            if unchanged {
                continue;
            }
            let next = current
                .and_then(|stamp| Ok((stamp, std::fs::read_to_string(&file.path)?)))
                .map(|(stamp, text)| (stamp, KeysTable::parse(&text)));
            let mut state = file.state.write().unwrap_or_else(|e| e.into_inner());
            match next {
                Ok((stamp, table)) => {
                    info!(
                        group = %group,
                        file = %file.path.display(),
                        keys = table.hashes.len(),
                        skipped_lines = table.skipped,
                        "loaded the keys file"
                    );
                    if table.skipped > 0 {
                        warn!(group = %group, file = %file.path.display(), skipped_lines = table.skipped,
                            "the keys file has lines that are not `<selector>,<hash>`; they are ignored");
                    }
                    *state = FileState::Loaded {
                        stamp,
                        table: Arc::new(table),
                    };
                }
                Err(err) => {
                    let reason = err.to_string();
                    let was_loaded = matches!(&*state, FileState::Loaded { .. });
                    if was_loaded
                        || !matches!(&*state, FileState::Failed { reason: r } if *r == reason)
                    {
                        warn!(group = %group, file = %file.path.display(), error = %reason,
                            "cannot read the keys file; the group answers 503 until it can");
                    }
                    *state = FileState::Failed { reason };
                }
            }
        }
    }

    /// Polls forever.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let files = self.clone();
            // File reads block; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || files.reload_changed()).await;
        }
    }

    /// `Ok(())` when every group's file is loaded, else the first problem.
    pub fn readiness(&self) -> Result<usize, String> {
        let mut keys = 0;
        for file in self.groups.values() {
            match &*file.state.read().unwrap_or_else(|e| e.into_inner()) {
                FileState::Loaded { table, .. } => keys += table.hashes.len(),
                FileState::Failed { reason } => {
                    return Err(format!(
                        "{} points to {}, which cannot be read ({reason})",
                        file.field,
                        file.path.display()
                    ));
                }
            }
        }
        Ok(keys)
    }

    fn lookup(&self, group: &str, selector: &Selector) -> Result<Option<KeyRecord>, VaultError> {
        let Some(file) = self.groups.get(group) else {
            // A group without a file has no keys in this mode; the config
            // check makes this rare (every API group needs a file).
            return Ok(None);
        };
        match &*file.state.read().unwrap_or_else(|e| e.into_inner()) {
            FileState::Loaded { table, .. } => {
                Ok(table.hashes.get(selector.as_str()).map(|hash| KeyRecord {
                    key: hash.clone(),
                    owner: String::new(),
                    name: None,
                    expires: None,
                }))
            }
            FileState::Failed { reason } => Err(VaultError::KeysFile {
                path: file.path.display().to_string(),
                reason: reason.clone(),
            }),
        }
    }
}

impl RecordSource for KeysFiles {
    fn read<'a>(
        &'a self,
        group: &'a str,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, VaultError>> {
        Box::pin(async move { self.lookup(group, selector) })
    }
}

/// `/readyz` in keys-file mode: every keys file loaded, then Vault (keygate
/// still logs in, for its secret references and to report its identity).
pub struct FileModeReadiness {
    pub files: Arc<KeysFiles>,
    pub vault: Arc<crate::vault::Vault>,
}

impl crate::http::ReadinessSource for FileModeReadiness {
    fn readiness(&self) -> BoxFuture<'_, crate::vault::Readiness> {
        Box::pin(async move {
            match self.files.readiness() {
                Ok(_) => self.vault.readiness().await,
                Err(why) => crate::vault::Readiness::NotReady(why),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apikey::ApiKey;

    #[test]
    fn parses_lines_and_skips_garbage() {
        let a = ApiKey::generate();
        let text = format!(
            "\n{},{}\n  \nnot a line\n{},short\n",
            a.selector(),
            a.verifier_hash().to_hex(),
            a.selector()
        );
        let table = KeysTable::parse(&text);
        assert_eq!(table.hashes.len(), 1);
        assert_eq!(table.skipped, 2);
        assert_eq!(
            table.hashes[a.selector().as_str()],
            a.verifier_hash().to_hex()
        );
    }

    #[test]
    fn an_empty_hash_from_a_soft_deleted_secret_is_skipped() {
        // The template prints `<selector>,` when the latest version has no data.
        let table = KeysTable::parse(&format!("{},\n", "a".repeat(32)));
        assert!(table.hashes.is_empty());
        assert_eq!(table.skipped, 1);
    }

    #[test]
    fn reloads_on_change_and_fails_closed_when_the_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let key = ApiKey::generate();
        let line = format!("{},{}\n", key.selector(), key.verifier_hash().to_hex());
        std::fs::write(&path, "").unwrap();
        let files = KeysFiles::new([("g".into(), "keys.files.g".into(), path.clone())]);
        assert_eq!(files.lookup("g", &key.selector()).unwrap(), None);
        assert_eq!(files.readiness(), Ok(0));

        // Atomic replace, as the agent does it: new inode, so the stamp differs.
        let tmp = dir.path().join("keys.tmp");
        std::fs::write(&tmp, &line).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        files.reload_changed();
        let record = files.lookup("g", &key.selector()).unwrap().unwrap();
        assert_eq!(record.owner, "");
        assert_eq!(record.expires, None);
        assert!(key.verify(&record.hash().unwrap()));

        std::fs::remove_file(&path).unwrap();
        files.reload_changed();
        assert!(matches!(
            files.lookup("g", &key.selector()),
            Err(VaultError::KeysFile { .. })
        ));
        let why = files.readiness().unwrap_err();
        assert!(why.starts_with("keys.files.g points to "), "{why}");
        // A group with no file has no keys.
        assert_eq!(files.lookup("other", &key.selector()).unwrap(), None);
    }
}
