//! Rendering a kustomize overlay with the pinned kubectl, and reading
//! multi-document YAML into JSON values.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

/// What can go wrong reading manifests and keyrig's Kubernetes files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} does not run ({source}): `cargo xtask tools` installs the pinned kubectl", kubectl.display())]
    Spawn {
        kubectl: PathBuf,
        source: std::io::Error,
    },
    #[error("`{} kustomize {}` failed ({status}): {stderr}", kubectl.display(), dir.display())]
    Kustomize {
        kubectl: PathBuf,
        dir: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{origin}: document {document} is not YAML keyrig can read: {message}")]
    Yaml {
        origin: String,
        document: usize,
        message: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// Runs `kubectl kustomize <dir>` and returns its objects, in order.
///
/// No network and no cluster: kustomize only reads `dir` (and the bases it
/// names). The pinned kubectl (env/tools.toml) is the one to pass, so the
/// kustomize version is the same on every machine.
pub fn render_overlay(kubectl: &Path, dir: &Path) -> Result<Vec<Value>, Error> {
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            kubectl: kubectl.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Kustomize {
            kubectl: kubectl.to_owned(),
            dir: dir.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&output.stdout);
    parse_documents(&text, &format!("`kubectl kustomize {}`", dir.display()))
}

/// Splits multi-document YAML into JSON values, skipping empty documents
/// (a leading `---`, a file of comments). `origin` names the text in errors.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<Value>, Error> {
    let mut objects = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        // Through serde_json::Value directly: YAML-only constructs (tags,
        // non-string keys) are errors here, as they are for the API server.
        let value = Value::deserialize(document).map_err(|err| Error::Yaml {
            origin: origin.to_owned(),
            document: i + 1,
            message: err.to_string(),
        })?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// Reads a YAML file of one or more documents.
pub fn read_yaml_file(path: &Path) -> Result<Vec<Value>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_documents(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn documents_are_split_and_empty_ones_skipped() {
        let objects =
            parse_documents("---\n# only a comment\n---\na: 1\n---\nb: [x]\n", "test").unwrap();
        assert_eq!(
            objects,
            [
                serde_json::json!({ "a": 1 }),
                serde_json::json!({ "b": ["x"] })
            ]
        );
    }

    #[rstest]
    fn a_bad_document_is_named() {
        let err = parse_documents("a: 1\n---\nb: [\n", "overlay")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("overlay: document 2 is not YAML keyrig can read:"),
            "{err}"
        );
    }

    #[rstest]
    fn a_missing_kubectl_says_how_to_install_it() {
        let err = render_overlay(Path::new("/nonexistent/kubectl"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`cargo xtask tools` installs the pinned kubectl"),
            "{err}"
        );
    }
}
