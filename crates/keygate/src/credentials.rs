//! Reads the AppRole pair (role-id, secret-id) as one version.
//!
//! A Kubernetes Secret mounted as a directory has one symlink per key
//! through `..data` (`<dir>/secret-id -> ..data/secret-id`, `..data ->
//! ..2026_..._<timestamp>/`), and an update swaps `..data` to a new payload
//! directory in one `rename(2)`. Opening `<dir>/role-id` and then
//! `<dir>/secret-id` resolves `..data` twice, so a swap between the two
//! opens pairs the old role-id with the new secret-id, and that login fails
//! (or, with two roles, logs in as the wrong one). Here `..data` is
//! resolved once and both files are read from the payload directory it
//! points to. The kubelet removes the old payload right after a swap, so a
//! read from a payload that vanished meanwhile starts over with a fresh
//! resolution: the answer is always one whole version.
//!
//! Files not in that layout (plain files, files in two directories) are
//! read one after the other, as before.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::config::{Secret, SecretFile, SecretFileError};

/// The symlink a mounted Secret's key links go through.
pub const DATA_LINK: &str = "..data";

/// Resolutions of `..data` tried before giving up: each retry means the
/// payload just read from was replaced, which happens once per rotation.
const ATTEMPTS: usize = 3;

/// The role-id and secret-id, read from one version of their Secret.
pub fn read_pair(
    role_id: &SecretFile,
    secret_id: &SecretFile,
) -> Result<(Secret, Secret), SecretFileError> {
    read_pair_with(role_id, secret_id, || {})
}

/// [`read_pair`], calling `between` after the first file is read and
/// before the second: the tests swap `..data` there, which makes the race
/// deterministic.
fn read_pair_with(
    first: &SecretFile,
    second: &SecretFile,
    mut between: impl FnMut(),
) -> Result<(Secret, Secret), SecretFileError> {
    let Some(layout) = SecretDirLayout::of(first, second) else {
        let a = first.read()?;
        between();
        return Ok((a, second.read()?));
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let payload = layout.payload().map_err(|err| first.unreadable(&err))?;
        let a = read_from(first, &payload.join(&layout.first));
        between();
        let b = read_from(second, &payload.join(&layout.second));
        match (a, b) {
            (Ok(a), Ok(b)) => return Ok((a, b)),
            (a, b) => {
                let vanished = [&a, &b]
                    .iter()
                    .any(|r| matches!(r, Err(ReadError::Io(kind)) if *kind == ErrorKind::NotFound));
                if vanished && attempt < ATTEMPTS {
                    continue;
                }
                a.map_err(|e| e.into_error(first))?;
                b.map_err(|e| e.into_error(second))?;
                unreachable!("one of the two reads failed");
            }
        }
    }
}

/// Two key links in one Secret directory, both through `..data`.
#[derive(Debug)]
struct SecretDirLayout {
    dir: PathBuf,
    /// The files' names inside the payload directory.
    first: PathBuf,
    second: PathBuf,
}

impl SecretDirLayout {
    fn of(first: &SecretFile, second: &SecretFile) -> Option<Self> {
        let dir = first.path.parent()?;
        if second.path.parent()? != dir {
            return None;
        }
        let is_link =
            |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link(&dir.join(DATA_LINK)) {
            return None;
        }
        Some(Self {
            dir: dir.to_path_buf(),
            first: through_data_link(&first.path)?,
            second: through_data_link(&second.path)?,
        })
    }

    /// The payload directory `..data` points to now.
    fn payload(&self) -> std::io::Result<PathBuf> {
        std::fs::canonicalize(self.dir.join(DATA_LINK))
    }
}

/// For a key link `<dir>/<key> -> ..data/<rest>`, `<rest>`.
fn through_data_link(key_link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(key_link).ok()?;
    let mut components = target.components();
    match components.next() {
        Some(Component::Normal(first)) if first == DATA_LINK => {}
        _ => return None,
    }
    let rest = components.as_path();
    (!rest.as_os_str().is_empty() && rest.components().all(|c| matches!(c, Component::Normal(_))))
        .then(|| rest.to_path_buf())
}

/// Why one file of the pair could not be used, before it is put in terms
/// of the configured file.
#[derive(Debug)]
enum ReadError {
    Io(ErrorKind),
    Other(SecretFileError),
}

impl ReadError {
    fn into_error(self, file: &SecretFile) -> SecretFileError {
        match self {
            ReadError::Io(kind) => file.unreadable(&std::io::Error::from(kind)),
            ReadError::Other(err) => err,
        }
    }
}

/// Reads `actual` (`file`'s content, reached another way) with `file`'s
/// rules; errors name `file`, never the content.
fn read_from(file: &SecretFile, actual: &Path) -> Result<Secret, ReadError> {
    let text = std::fs::read_to_string(actual).map_err(|err| ReadError::Io(err.kind()))?;
    file.secret_of(&text).map_err(ReadError::Other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A Secret directory as the kubelet lays it out, with `publish` doing
    /// what an update does (new payload, `..data` renamed over, and the
    /// old payload removed unless `keep_old`).
    struct SecretDir {
        dir: tempfile::TempDir,
        version: usize,
    }

    impl SecretDir {
        fn new(role_id: &str, secret_id: &str) -> Self {
            let mut dir = Self {
                dir: tempfile::tempdir().unwrap(),
                version: 0,
            };
            dir.publish(role_id, secret_id, false);
            for key in ["role-id", "secret-id"] {
                symlink(Path::new(DATA_LINK).join(key), dir.path().join(key)).unwrap();
            }
            dir
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn publish(&mut self, role_id: &str, secret_id: &str, keep_old: bool) {
            let old = format!("..payload_{}", self.version);
            self.version += 1;
            let payload = format!("..payload_{}", self.version);
            std::fs::create_dir(self.path().join(&payload)).unwrap();
            std::fs::write(self.path().join(&payload).join("role-id"), role_id).unwrap();
            std::fs::write(self.path().join(&payload).join("secret-id"), secret_id).unwrap();
            symlink(&payload, self.path().join("..data_tmp")).unwrap();
            std::fs::rename(self.path().join("..data_tmp"), self.path().join(DATA_LINK)).unwrap();
            if !keep_old {
                let _ = std::fs::remove_dir_all(self.path().join(old));
            }
        }

        fn files(&self) -> (SecretFile, SecretFile) {
            (
                SecretFile {
                    field: "vault.auth.approle.role_id_file",
                    path: self.path().join("role-id"),
                },
                SecretFile {
                    field: "vault.auth.approle.secret_id_file",
                    path: self.path().join("secret-id"),
                },
            )
        }
    }

    fn exposed((a, b): (Secret, Secret)) -> (String, String) {
        (a.expose().to_owned(), b.expose().to_owned())
    }

    #[test]
    fn a_swap_between_the_two_reads_does_not_mix_versions() {
        let mut secret = SecretDir::new("role-1", "secret-1");
        let (role_id, secret_id) = secret.files();
        let mut swapped = false;
        let pair = read_pair_with(&role_id, &secret_id, || {
            if !swapped {
                // The old payload stays (a slow kubelet, or a reader that
                // holds it): the pair comes from it, whole.
                secret.publish("role-2", "secret-2", true);
                swapped = true;
            }
        })
        .unwrap();
        assert!(swapped);
        // Read through the key link, the second file is the new version
        // now: that is the pair a second open would have made.
        assert_eq!(
            std::fs::read_to_string(&secret_id.path).unwrap(),
            "secret-2"
        );
        assert_eq!(exposed(pair), ("role-1".into(), "secret-1".into()));
    }

    #[test]
    fn a_payload_removed_between_the_reads_is_read_again_from_the_new_one() {
        let mut secret = SecretDir::new("role-1", "secret-1");
        let (role_id, secret_id) = secret.files();
        let mut calls = 0;
        let pair = read_pair_with(&role_id, &secret_id, || {
            calls += 1;
            if calls == 1 {
                secret.publish("role-2", "secret-2", false);
            }
        })
        .unwrap();
        assert_eq!(calls, 2, "read once more after the payload vanished");
        assert_eq!(exposed(pair), ("role-2".into(), "secret-2".into()));
    }

    #[test]
    fn plain_files_are_read_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("role-id"), "role\n").unwrap();
        std::fs::write(dir.path().join("secret-id"), " secret ").unwrap();
        let role_id = SecretFile {
            field: "vault.auth.approle.role_id_file",
            path: dir.path().join("role-id"),
        };
        let secret_id = SecretFile {
            field: "vault.auth.approle.secret_id_file",
            path: dir.path().join("secret-id"),
        };
        assert!(SecretDirLayout::of(&role_id, &secret_id).is_none());
        assert_eq!(
            exposed(read_pair(&role_id, &secret_id).unwrap()),
            ("role".into(), "secret".into())
        );
    }

    #[test]
    fn an_empty_or_missing_key_names_the_configured_file() {
        let mut secret = SecretDir::new("role-1", "secret-1");
        secret.publish("role-2", "\n", false);
        let (role_id, secret_id) = secret.files();
        let err = read_pair(&role_id, &secret_id).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "vault.auth.approle.secret_id_file points to {}, which is empty: write the secret into it",
                secret_id.path.display()
            )
        );
        assert!(!err.contains("role-2"), "{err}");
        let payload = std::fs::canonicalize(secret.path().join(DATA_LINK)).unwrap();
        std::fs::remove_file(payload.join("role-id")).unwrap();
        let err = read_pair(&role_id, &secret_id).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "vault.auth.approle.role_id_file points to {}, which cannot be read (",
                role_id.path.display()
            )),
            "{err}"
        );
    }
}
