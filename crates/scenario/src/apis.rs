//! API groups from the OpenAPI documents in `scenarios/apis/`. Each document
//! names its group with a root `groupId` (the Tanzu API-portal convention)
//! and its base path with `servers[0].url`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiGroup {
    pub group_id: String,
    /// Path of `servers[0].url`, without a trailing slash (`/billing`);
    /// empty for an API served at the root.
    pub base_path: String,
    /// `base_path + "/"`: what the gateway routes to this group.
    pub route_prefix: String,
    /// The first path of `paths:` with a GET and no `{parameter}`, under
    /// the base path (`/billing/invoices`): what tests request to reach the
    /// group's API. `None` when the document declares none.
    pub sample_get_path: Option<String>,
    /// Every path template of `paths:`, under the base path
    /// (`/billing/invoices/{id}`), in document order: what the group's
    /// OpenAPI document declares, for gateways that route per operation.
    pub path_templates: Vec<String>,
    pub file: PathBuf,
}

/// Only the fields the harness reads; the rest of the document is keygate's.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    group_id: Option<String>,
    servers: Option<Vec<Server>>,
    /// Path -> operations; only the GET-ness of each path is read. Document
    /// order is kept so "the first" path means the first one written.
    #[serde(default)]
    paths: serde_yaml::Mapping,
}

#[derive(Debug, Deserialize)]
struct Server {
    url: String,
}

/// Every `*.yaml`/`*.yml` in `dir`, in file-name order.
pub fn load_apis(dir: &Path) -> Result<Vec<ApiGroup>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the API directory {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading the API directory {}", dir.display()))?;
    files.retain(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")));
    files.sort();
    if files.is_empty() {
        bail!(
            "{} has no OpenAPI documents (*.yaml): add one per API group",
            dir.display()
        );
    }

    let mut groups: Vec<ApiGroup> = Vec::new();
    for file in files {
        let group = load_api(&file)?;
        if let Some(other) = groups.iter().find(|g| g.group_id == group.group_id) {
            bail!(
                "{} and {} both declare groupId {:?}: each API group needs its own document",
                other.file.display(),
                file.display(),
                group.group_id
            );
        }
        if let Some(other) = groups.iter().find(|g| g.route_prefix == group.route_prefix) {
            bail!(
                "{} and {} both serve {}: two groups cannot share a route prefix, change one's servers[0].url",
                other.file.display(),
                file.display(),
                group.route_prefix
            );
        }
        groups.push(group);
    }
    Ok(groups)
}

pub fn load_api(file: &Path) -> Result<ApiGroup> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc: Document = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a valid OpenAPI document", file.display()))?;
    let Some(group_id) = doc.group_id.filter(|g| !g.trim().is_empty()) else {
        bail!(
            "{} has no groupId: add `groupId: <name>` at the document root (the API group whose keys open these routes)",
            file.display()
        );
    };
    if !group_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!(
            "{}: groupId {group_id:?} may hold only letters, digits, '-', '_' and '.', since it is part of Vault paths and policy names",
            file.display()
        );
    }
    let Some(url) = doc
        .servers
        .as_ref()
        .and_then(|s| s.first())
        .map(|s| s.url.as_str())
    else {
        bail!(
            "{} has no servers[0].url: add `servers: [{{url: /base-path}}]` so the gateway knows where this API lives",
            file.display()
        );
    };
    let base_path =
        base_path(url).with_context(|| format!("{}: servers[0].url", file.display()))?;
    let route_prefix = format!("{base_path}/");
    // keygate refuses such a document at start (keygate-config's routes):
    // say so here, before any process starts.
    if doc.paths.is_empty() {
        bail!(
            "{}: paths is empty or missing: declare the API's operations, or keygate routes nothing to {group_id}",
            file.display()
        );
    }
    if let Some(path) = doc
        .paths
        .iter()
        .map(|(path, _)| path)
        .find(|path| !path.as_str().is_some_and(|p| p.starts_with('/')))
    {
        bail!(
            "{}: paths has {}, which does not start with `/`: write it as it follows servers[0].url, e.g. /invoices",
            file.display(),
            serde_yaml::to_string(path).unwrap_or_default().trim()
        );
    }
    let sample_get_path = doc
        .paths
        .iter()
        .filter(|(_, ops)| ops.get("get").is_some())
        .filter_map(|(path, _)| path.as_str())
        .find(|path| path.starts_with('/') && !path.contains('{'))
        .map(|path| format!("{base_path}{path}"));
    let path_templates = doc
        .paths
        .iter()
        .filter_map(|(path, _)| path.as_str())
        .filter(|path| path.starts_with('/'))
        .map(|path| format!("{base_path}{path}"))
        .collect();
    Ok(ApiGroup {
        group_id,
        path_templates,
        base_path,
        route_prefix,
        sample_get_path,
        file: file.to_owned(),
    })
}

/// The path of an absolute URL or a relative path, without trailing slash.
fn base_path(url: &str) -> Result<String> {
    let path = if url.starts_with('/') {
        url.split(['?', '#']).next().unwrap_or("").to_owned()
    } else {
        url::Url::parse(url)
            .with_context(|| {
                format!("{url:?} is neither an absolute URL nor a path starting with /")
            })?
            .path()
            .to_owned()
    };
    Ok(path.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn dir_with(docs: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in docs {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[rstest]
    fn sample_get_path_skips_parameters_and_other_methods() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.yaml");
        std::fs::write(
            &file,
            "groupId: g\nservers: [{url: /g}]\npaths:\n  /a/{id}: {get: {}}\n  /b: {post: {}}\n  /c: {get: {}}\n",
        )
        .unwrap();
        assert_eq!(
            load_api(&file).unwrap().sample_get_path.as_deref(),
            Some("/g/c")
        );
        assert_eq!(
            load_api(&file).unwrap().path_templates,
            ["/g/a/{id}", "/g/b", "/g/c"]
        );
        std::fs::write(
            &file,
            "groupId: g\nservers: [{url: /g}]\npaths: {/b: {post: {}}}\n",
        )
        .unwrap();
        assert_eq!(load_api(&file).unwrap().sample_get_path, None);
    }

    #[rstest]
    #[case::absolute("http://gateway.local/animal-rescue/", "/animal-rescue")]
    #[case::relative("/billing", "/billing")]
    #[case::nested("https://h:8443/api/v2", "/api/v2")]
    #[case::root("http://gateway.local", "")]
    fn base_paths(#[case] url: &str, #[case] expected: &str) {
        assert_eq!(base_path(url).unwrap(), expected);
    }

    #[rstest]
    fn missing_group_id_says_what_to_add() {
        let dir = dir_with(&[("pets.yaml", "openapi: 3.0.1\nservers: [{url: /pets}]\n")]);
        let err = load_apis(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("pets.yaml has no groupId: add `groupId: <name>` at the document root"),
            "{err}"
        );
    }

    #[rstest]
    fn same_route_prefix_names_both_files() {
        let dir = dir_with(&[
            (
                "a.yaml",
                "groupId: a\nservers: [{url: 'http://x/shared/'}]\npaths: {/a: {}}\n",
            ),
            (
                "b.yaml",
                "groupId: b\nservers: [{url: /shared}]\npaths: {/b: {}}\n",
            ),
        ]);
        let err = load_apis(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a.yaml and "), "{err}");
        assert!(err.contains("b.yaml both serve /shared/"), "{err}");
    }

    #[rstest]
    #[case::no_servers("groupId: a\n", "has no servers[0].url")]
    #[case::bad_url("groupId: a\nservers: [{url: 'not a url'}]\n", "servers[0].url")]
    #[case::bad_yaml("groupId: [a\n", "is not a valid OpenAPI document")]
    #[case::bad_group("groupId: 'a/b'\nservers: [{url: /a}]\n", "may hold only letters")]
    #[case::no_paths("groupId: a\nservers: [{url: /a}]\n", "paths is empty or missing")]
    #[case::relative_path(
        "groupId: a\nservers: [{url: /a}]\npaths: {/x: {}, y: {}}\n",
        "paths has y, which does not start with `/`"
    )]
    fn bad_documents(#[case] text: &str, #[case] expected: &str) {
        let dir = dir_with(&[("api.yaml", text)]);
        let err = format!("{:#}", load_apis(dir.path()).unwrap_err());
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("api.yaml"), "{err}");
    }

    #[rstest]
    fn duplicate_group_ids_are_an_error() {
        let dir = dir_with(&[
            (
                "a.yaml",
                "groupId: x\nservers: [{url: /a}]\npaths: {/a: {}}\n",
            ),
            (
                "b.yaml",
                "groupId: x\nservers: [{url: /b}]\npaths: {/b: {}}\n",
            ),
        ]);
        let err = load_apis(dir.path()).unwrap_err().to_string();
        assert!(err.contains("both declare groupId \"x\""), "{err}");
    }
}
