//! A Kubernetes Secret the way a pod sees it, on the local disk.
//!
//! The kubelet mounts a Secret as a directory whose entries are symlinks:
//!
//! ```text
//! <dir>/
//!   ..2026_11_22_13_53_49.123456789/   the current payload (0700), one 0600 file per key
//!   ..data -> ..2026_11_22_13_53_49.123456789
//!   role-id -> ..data/role-id
//!   secret-id -> ..data/secret-id
//! ```
//!
//! An update writes a whole new timestamped payload directory, then points
//! `..data` at it by renaming a temporary symlink over it. `rename(2)` is
//! atomic, so a reader that opens `<dir>/<key>` sees either every old value
//! or every new one, never half a rotation (a new secret-id with the old
//! role-id, say). The old payload is removed afterwards.
//!
//! Writers: rig (inline and existing-secret modes, and the test harness's
//! "helm upgrade") and `xtask publish-secret`, the hook `bao agent` runs after
//! each render (external-secret mode).

use std::collections::BTreeMap;
use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The symlink the key links go through.
pub const DATA_LINK: &str = "..data";
const TMP_DATA_LINK: &str = "..data_tmp";

/// A Secret directory. Holds only its path; every call works on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDir {
    path: PathBuf,
}

impl SecretDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a key is read: `<dir>/<key>`, a symlink through `..data`.
    pub fn key_path(&self, key: &str) -> PathBuf {
        self.path.join(key)
    }

    /// True once a first payload is published.
    pub fn is_published(&self) -> bool {
        std::fs::symlink_metadata(self.path.join(DATA_LINK)).is_ok()
    }

    /// The payload directory `..data` points to now (e.g. to tell that a
    /// rotation landed).
    pub fn current_payload(&self) -> Option<String> {
        std::fs::read_link(self.path.join(DATA_LINK))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// Reads one key's value. The error names the key, never the content.
    pub fn read(&self, key: &str) -> Result<String> {
        let path = self.key_path(key);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "the Secret {} has no readable key {key:?}",
                self.path.display()
            )
        })
    }

    /// Replaces the whole payload with `data` (key -> value) atomically.
    /// Keys the old payload had and `data` lacks disappear, as in Kubernetes.
    pub fn publish(&self, data: &BTreeMap<String, String>) -> Result<()> {
        for key in data.keys() {
            check_key(key)?;
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .with_context(|| format!("creating the Secret directory {}", self.path.display()))?;
        let previous = self.current_payload();

        // 1. The new payload, complete, under a name no reader uses yet.
        let payload = self.fresh_payload_name();
        let payload_dir = self.path.join(&payload);
        DirBuilder::new()
            .mode(0o700)
            .create(&payload_dir)
            .with_context(|| format!("creating {}", payload_dir.display()))?;
        for (key, value) in data {
            let file = payload_dir.join(key);
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            out.write_all(value.as_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
            out.sync_all().ok();
        }

        // 2. The swap: a temporary link renamed over `..data`.
        let tmp_link = self.path.join(TMP_DATA_LINK);
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&payload, &tmp_link)
            .with_context(|| format!("creating {}", tmp_link.display()))?;
        std::fs::rename(&tmp_link, self.path.join(DATA_LINK))
            .with_context(|| format!("swapping {}/{DATA_LINK}", self.path.display()))?;

        // 3. Key links (stable: they go through `..data`), and cleanup.
        for key in data.keys() {
            let link = self.path.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA_LINK).join(key), &link)
                    .with_context(|| format!("linking {}", link.display()))?;
            }
        }
        self.remove_stale_links(data)?;
        if let Some(old) = previous.filter(|old| *old != payload) {
            let _ = std::fs::remove_dir_all(self.path.join(old));
        }
        Ok(())
    }

    /// Key links whose key the new payload no longer has.
    fn remove_stale_links(&self, data: &BTreeMap<String, String>) -> Result<()> {
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !data.contains_key(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// `..<UTC timestamp with nanoseconds>` as the kubelet names them, plus a
    /// counter should two publishes land in one clock tick.
    fn fresh_payload_name(&self) -> String {
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.nanosecond()
        );
        (0..)
            .map(|n| {
                if n == 0 {
                    stamp.clone()
                } else {
                    format!("{stamp}-{n}")
                }
            })
            .find(|name| !self.path.join(name).exists())
            .expect("an unbounded range always yields a fresh name")
    }
}

/// A key becomes a file name: the Kubernetes rule for Secret keys.
fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && !key.starts_with("..")
        && key != "."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!(
            "{key:?} is not a valid Secret key: use letters, digits, `-`, `_` and `.`, not starting with `..`"
        );
    }
    Ok(())
}

/// The JSON document `bao agent` renders (one object: key -> string), read
/// by `xtask publish-secret`. One file is written by the agent in one
/// rename, so the set of keys is consistent; publishing makes it visible.
pub fn publish_rendered(rendered: &Path, dir: &SecretDir) -> Result<usize> {
    let text = std::fs::read_to_string(rendered)
        .with_context(|| format!("reading the rendered Secret {}", rendered.display()))?;
    let data: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a JSON object of key -> value: check the template's contents",
                rendered.display()
            )
        })?;
    let mut values = BTreeMap::new();
    for (key, value) in data {
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => bail!(
                "{}: key {key:?} rendered empty: the Vault field its remoteRef names is missing",
                rendered.display()
            ),
            other => other.to_string(),
        };
        values.insert(key, value);
    }
    dir.publish(&values)?;
    Ok(values.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::os::unix::fs::PermissionsExt;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[rstest]
    fn publishes_the_kubelet_layout_with_0600_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SecretDir::new(tmp.path().join("creds"));
        assert!(!dir.is_published());
        dir.publish(&data(&[("role-id", "r1"), ("secret-id", "s1")]))
            .unwrap();
        assert!(dir.is_published());
        assert_eq!(dir.read("secret-id").unwrap(), "s1");
        let link = std::fs::read_link(dir.key_path("role-id")).unwrap();
        assert_eq!(link, Path::new("..data/role-id"));
        let payload = dir.current_payload().unwrap();
        assert!(payload.starts_with("..20"), "{payload}");
        let file = dir.path().join(&payload).join("secret-id");
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[rstest]
    fn a_rotation_swaps_every_key_at_once_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SecretDir::new(tmp.path());
        dir.publish(&data(&[("a", "1"), ("b", "1"), ("gone", "x")]))
            .unwrap();
        let first = dir.current_payload().unwrap();
        dir.publish(&data(&[("a", "2"), ("b", "2")])).unwrap();
        assert_ne!(dir.current_payload().unwrap(), first);
        assert_eq!(
            (dir.read("a").unwrap(), dir.read("b").unwrap()),
            ("2".into(), "2".into())
        );
        assert!(dir.read("gone").is_err());
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("..2"))
            .collect();
        names.sort();
        assert_eq!(names, ["..data", "a", "b"]);
        // One payload directory left: the old one was removed.
        let payloads = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("..2")
            })
            .count();
        assert_eq!(payloads, 1);
    }

    #[rstest]
    fn a_reader_never_sees_a_mix_of_two_payloads() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SecretDir::new(tmp.path());
        dir.publish(&data(&[("a", "0"), ("b", "0")])).unwrap();
        let reader_dir = dir.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_reader = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut mixed = 0;
            while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
                // Read both through one resolution of `..data`, as a reader
                // that opens the payload directory does.
                let Some(payload) = reader_dir.current_payload() else {
                    continue;
                };
                let base = reader_dir.path().join(payload);
                if let (Ok(a), Ok(b)) = (
                    std::fs::read_to_string(base.join("a")),
                    std::fs::read_to_string(base.join("b")),
                ) && a != b
                {
                    mixed += 1;
                }
            }
            mixed
        });
        for n in 1..200 {
            let v = n.to_string();
            dir.publish(&data(&[("a", &v), ("b", &v)])).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reader.join().unwrap(), 0);
    }

    #[rstest]
    #[case("..data")]
    #[case("a/b")]
    #[case("")]
    fn refuses_keys_that_are_not_file_names(#[case] key: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let err = SecretDir::new(tmp.path())
            .publish(&data(&[(key, "v")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("is not a valid Secret key"),
            "{err}"
        );
    }

    #[rstest]
    fn publishes_what_the_agent_rendered() {
        let tmp = tempfile::tempdir().unwrap();
        let rendered = tmp.path().join("secret.json");
        std::fs::write(&rendered, r#"{"role-id": "r", "gateway-group": "default"}"#).unwrap();
        let dir = SecretDir::new(tmp.path().join("out"));
        assert_eq!(publish_rendered(&rendered, &dir).unwrap(), 2);
        assert_eq!(dir.read("gateway-group").unwrap(), "default");
        std::fs::write(&rendered, r#"{"role-id": null}"#).unwrap();
        let err = publish_rendered(&rendered, &dir).unwrap_err();
        assert!(err.to_string().contains("rendered empty"), "{err}");
    }
}
