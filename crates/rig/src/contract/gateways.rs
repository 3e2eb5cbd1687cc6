//! The gateways of the matrix, as data: one directory per gateway under
//! `env/gateways/<name>/`, holding `gateway.toml` (the manifest: the pinned
//! tool that runs it, its command line, the config files rendered from the
//! scenario's API groups, its readiness probe, which keygate contract it
//! uses, and how it deviates from the strict expectations) and the
//! templates it names. A directory added there is in the matrix: no Rust
//! code names a gateway (`local::gateway` is one generic runner).
//!
//! This module is the manifests' types and their loading (the [`Catalog`]);
//! starting a gateway is `local::gateway`'s, asserting its deviations the
//! e2e tests', which read them from env.json (`gateway_deviations`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// Each gateway directory's manifest.
pub const MANIFEST_FILE: &str = "gateway.toml";
/// Overrides where the catalog is read from (default `env/gateways`).
pub const GATEWAYS_DIR_VAR: &str = "KEYRIG_GATEWAYS_DIR";

/// Every gateway of `env/gateways/`, by name (sorted: the matrix's order).
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
    gateways: Vec<GatewayManifest>,
}

/// One gateway's `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayManifest {
    /// The directory's name: what env.json, `--gateway` and the results
    /// matrix call it.
    #[serde(skip)]
    pub name: String,
    /// The directory: templates are found relative to it.
    #[serde(skip)]
    pub dir: PathBuf,
    /// One line for the matrix table: what runs (product and version).
    pub description: String,
    /// One line for the matrix table: how it asks keygate (filter, options).
    pub asks_keygate: String,
    /// The pinned tool (env/tools.toml) whose binary runs it.
    pub tool: String,
    /// Which of keygate's ports it calls.
    pub contract: Contract,
    /// The default gateway of an environment (env.json `gateway_url`, the
    /// keys-file and diagnostics Envoy's listener): at most one manifest.
    #[serde(default)]
    pub default: bool,
    /// What the gateway loads besides its tool.
    #[serde(default)]
    pub loads: Vec<Extension>,
    pub run: Run,
    /// Config files rendered before it starts.
    #[serde(default)]
    pub config: Vec<ConfigFile>,
    #[serde(default)]
    pub readiness: ReadinessProbe,
    #[serde(default)]
    pub diagnostics: Diagnostics,
    /// Where it differs from the strict expectations (none: it behaves as
    /// the strict column of docs/gateways.md's compatibility table).
    #[serde(default)]
    pub deviations: Deviations,
}

/// keygate's two ways of being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Contract {
    /// Envoy's ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`)
    /// on keygate's gRPC port.
    Grpc,
    /// HTTP forward-auth (`/auth`, the original URI in `X-Forwarded-Uri` or
    /// `X-Original-URI`) on keygate's HTTP port.
    Http,
}

impl Contract {
    pub fn name(self) -> &'static str {
        match self {
            Contract::Grpc => "grpc",
            Contract::Http => "http",
        }
    }
}

/// What a gateway can load besides its tool, each with the harness's
/// support for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Extension {
    /// keygate's Envoy dynamic module (`crates/keygate-envoy`): checked
    /// against the tool's Envoy version before it starts, its directory on
    /// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`, and the templates get `module`
    /// (its filter and per-route configs, following keygate's cache TTLs).
    KeygateEnvoy,
}

impl Extension {
    pub fn name(self) -> &'static str {
        match self {
            Extension::KeygateEnvoy => "keygate-envoy",
        }
    }
}

/// The command line: the tool's binary with these arguments, and these
/// variables added to its environment. Each string is a template rendered
/// with the same values as the config files (`{{ dir }}`: the gateway's
/// directory in the run).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A template of the gateway's directory rendered to `file` in the run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Relative to the gateway's directory (it may reach a template shared
    /// by several gateways: `../../envoy/envoy.yaml.j2`).
    pub template: String,
    /// A file name in the gateway's run directory.
    pub file: String,
}

/// The probe that says the gateway serves: a GET of `path` through its
/// listener answered with `status`. The default is keygate's 403
/// `no-route` for a path no API serves: it shows the gateway listens,
/// routes and asks keygate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessProbe {
    pub path: String,
    pub status: u16,
}

/// A path no API group serves: keygate answers 403 `no-route` for it.
pub const READINESS_PATH: &str = "/keyrig-readiness-probe";

impl Default for ReadinessProbe {
    fn default() -> Self {
        Self {
            path: READINESS_PATH.to_owned(),
            status: 403,
        }
    }
}

/// What the diagnostics bundle saves from the gateway on a failure.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnostics {
    /// Paths of the gateway's admin listener (its second port, `{{ admin }}`
    /// in the templates), e.g. Envoy's `/stats` and `/clusters`.
    #[serde(default)]
    pub admin: Vec<String>,
}

/// A declared deviation's reason, in the manifest's words (shown under the
/// compatibility table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Why {
    pub why: String,
}

/// The largest request header the gateway passes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderLimit {
    /// A header line of this many bytes or more is refused (400) by the
    /// gateway itself.
    pub bytes: usize,
    pub why: String,
}

/// What the gateway does with `%2F` in a path, instead of refusing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodedSlash {
    pub handling: EncodedSlashHandling,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncodedSlashHandling {
    /// Passed on as sent: keygate routes no path with `%2F` (403 `no-route`).
    Passed,
    /// Decoded for the gateway's own path checks: refused (400) when the
    /// decoded path climbs above `/`, else passed on as sent.
    DecodedAboveRootRefused,
}

/// How a gateway differs from the strict expectations, one field per row
/// of docs/gateways.md's compatibility table that may differ. `None`: the
/// strict behaviour. The e2e tests assert each row per gateway, so a
/// manifest that declares a deviation its gateway does not show, or hides
/// one it shows, fails naming the gateway and the row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Deviations {
    /// keygate gets the request URI as the client sent it (dot segments,
    /// `//` unresolved), so it routes none of those paths (403 `no-route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_as_sent: Option<Why>,
    /// A denial reaches the client with the gateway's own body, not
    /// keygate's JSON `{"reason": ..}` (status and `x-keyrig-reason` still
    /// keygate's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_denial_body: Option<Why>,
    /// The client's `x-api-key` does not reach the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_not_forwarded: Option<Why>,
    /// Of keygate's answer, only `x-keyrig-owner` and `x-keyrig-group`
    /// reach the upstream, not the other headers keygate adds (its secret
    /// references' `upstream_headers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_and_group_only: Option<Why>,
    /// A request header of `bytes` or more (the 8 KiB `x-api-key` of the
    /// hostile case) is refused by the gateway, not judged by keygate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_limit: Option<HeaderLimit>,
    /// An encoded slash is not refused by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoded_slash: Option<EncodedSlash>,
    /// A key the gateway holds passes on any path under its group's route
    /// prefix, also one the group's OpenAPI document does not declare
    /// (keygate's own answer there is 403 `no-route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_keys_pass_undeclared_paths: Option<Why>,
}

/// The names of the [`Deviations`] rows, as a manifest spells them.
pub mod row {
    pub const PATH_AS_SENT: &str = "path-as-sent";
    pub const OWN_DENIAL_BODY: &str = "own-denial-body";
    pub const API_KEY_NOT_FORWARDED: &str = "api-key-not-forwarded";
    pub const OWNER_AND_GROUP_ONLY: &str = "owner-and-group-only";
    pub const HEADER_LIMIT: &str = "header-limit";
    pub const ENCODED_SLASH: &str = "encoded-slash";
    pub const HELD_KEYS_PASS_UNDECLARED_PATHS: &str = "held-keys-pass-undeclared-paths";
}

impl Deviations {
    /// (row, why) of every declared deviation, in the table's order.
    pub fn declared(&self) -> Vec<(&'static str, &str)> {
        fn why(w: &Option<Why>) -> Option<&str> {
            w.as_ref().map(|w| w.why.as_str())
        }
        [
            (row::PATH_AS_SENT, why(&self.path_as_sent)),
            (row::OWN_DENIAL_BODY, why(&self.own_denial_body)),
            (row::API_KEY_NOT_FORWARDED, why(&self.api_key_not_forwarded)),
            (row::OWNER_AND_GROUP_ONLY, why(&self.owner_and_group_only)),
            (
                row::HEADER_LIMIT,
                self.header_limit.as_ref().map(|l| l.why.as_str()),
            ),
            (
                row::ENCODED_SLASH,
                self.encoded_slash.as_ref().map(|e| e.why.as_str()),
            ),
            (
                row::HELD_KEYS_PASS_UNDECLARED_PATHS,
                why(&self.held_keys_pass_undeclared_paths),
            ),
        ]
        .into_iter()
        .filter_map(|(row, why)| Some((row, why?)))
        .collect()
    }

    /// Whether a header of `bytes` is refused by the gateway itself.
    pub fn refuses_header_of(&self, bytes: usize) -> bool {
        self.header_limit.as_ref().is_some_and(|l| bytes >= l.bytes)
    }
}

impl Catalog {
    /// `$KEYRIG_GATEWAYS_DIR`, else `env/gateways` of this workspace.
    pub fn default_dir() -> PathBuf {
        std::env::var_os(GATEWAYS_DIR_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::base::paths::env_dir().join("gateways"))
    }

    pub fn load_default() -> Result<Self> {
        Self::load(&Self::default_dir())
    }

    /// Every `<dir>/<name>/gateway.toml`. A directory without a manifest is
    /// an error (a gateway half added must not silently drop out of the
    /// matrix); so is a manifest that names a template that is not there.
    pub fn load(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).with_context(|| {
            format!(
                "reading the gateway catalog {}: it holds one directory per gateway (env/gateways/<name>/{MANIFEST_FILE})",
                dir.display()
            )
        })?;
        let mut gateways = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            gateways.push(GatewayManifest::load(&entry.path(), &name)?);
        }
        Self::from_manifests(dir, gateways)
    }

    fn from_manifests(dir: &Path, mut gateways: Vec<GatewayManifest>) -> Result<Self> {
        gateways.sort_by(|a, b| a.name.cmp(&b.name));
        let defaults: Vec<&str> = gateways
            .iter()
            .filter(|g| g.default)
            .map(|g| g.name.as_str())
            .collect();
        ensure!(
            defaults.len() <= 1,
            "{}: more than one gateway says `default = true` ({}); keep it in one manifest",
            dir.display(),
            defaults.join(", ")
        );
        ensure!(
            !gateways.is_empty(),
            "{} holds no gateway: add a directory with a {MANIFEST_FILE}",
            dir.display()
        );
        Ok(Self {
            dir: dir.to_owned(),
            gateways,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn iter(&self) -> impl Iterator<Item = &GatewayManifest> {
        self.gateways.iter()
    }

    pub fn names(&self) -> Vec<&str> {
        self.gateways.iter().map(|g| g.name.as_str()).collect()
    }

    /// The gateway called `name`, or an error listing the choices.
    pub fn get(&self, name: &str) -> Result<&GatewayManifest> {
        match self.gateways.iter().find(|g| g.name == name) {
            Some(g) => Ok(g),
            None => bail!(
                "no gateway called {name:?} in {}: choose one of {}",
                self.dir.display(),
                self.names().join(", ")
            ),
        }
    }

    /// The manifest with `default = true`, else the first.
    pub fn default_gateway(&self) -> &GatewayManifest {
        self.gateways
            .iter()
            .find(|g| g.default)
            .unwrap_or(&self.gateways[0])
    }

    /// Every gateway but `own`, each with `why` it does not run: env.json's
    /// `skipped_gateways` of an environment that runs `own` only.
    pub fn all_but(&self, own: &str, why: impl Fn(&str) -> String) -> BTreeMap<String, String> {
        self.names()
            .into_iter()
            .filter(|name| *name != own)
            .map(|name| (name.to_owned(), why(name)))
            .collect()
    }
}

impl GatewayManifest {
    /// `<dir>/gateway.toml`, for the gateway `name`; errors name the file.
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        let file = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {}: every directory of the gateway catalog needs one (see docs/gateways.md#adding-a-gateway)",
                file.display()
            )
        })?;
        Self::parse(&file, &text, name)
    }

    pub fn parse(file: &Path, text: &str, name: &str) -> Result<Self> {
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{}: the gateway's name is its directory's, {name:?}: use lowercase letters, digits and `-`",
            file.display()
        );
        let mut manifest: Self = toml::from_str(text)
            .with_context(|| format!("{} is not a valid gateway manifest", file.display()))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        manifest.name = name.to_owned();
        manifest.dir = dir.to_owned();
        ensure!(
            !manifest.run.args.is_empty() || !manifest.config.is_empty(),
            "{}: `run.args` is empty and no `[[config]]` is rendered: how does {name} find its config?",
            file.display()
        );
        for config in &manifest.config {
            ensure!(
                !config.file.is_empty()
                    && !config.file.contains('/')
                    && config.file != "."
                    && config.file != "..",
                "{}: `config.file` {:?} must be a plain file name (it is written into the gateway's run directory)",
                file.display(),
                config.file
            );
            let template = dir.join(&config.template);
            ensure!(
                template.is_file(),
                "{}: `config.template` {:?} is not a file ({} is missing)",
                file.display(),
                config.template,
                template.display()
            );
        }
        ensure!(
            manifest.readiness.path.starts_with('/'),
            "{}: `readiness.path` {:?} must start with `/`",
            file.display(),
            manifest.readiness.path
        );
        Ok(manifest)
    }

    /// The template of `config`, as a path.
    pub fn template_path(&self, config: &ConfigFile) -> PathBuf {
        self.dir.join(&config.template)
    }

    pub fn loads(&self, extension: Extension) -> bool {
        self.loads.contains(&extension)
    }
}

impl fmt::Display for GatewayManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Catalog {
        Catalog::load(&crate::base::paths::env_dir().join("gateways")).unwrap()
    }

    #[test]
    fn the_shipped_catalog_loads_with_one_default_gateway() {
        let catalog = shipped();
        assert!(catalog.names().len() >= 2, "{:?}", catalog.names());
        assert_eq!(catalog.iter().filter(|g| g.default).count(), 1);
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let catalog = shipped();
        let err = catalog.get("haproxy").unwrap_err().to_string();
        assert!(
            err.starts_with("no gateway called \"haproxy\" in "),
            "{err}"
        );
        assert!(err.ends_with(&catalog.names().join(", ")), "{err}");
    }

    fn parse(text: &str) -> Result<GatewayManifest> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.j2"), "x").unwrap();
        let file = dir.path().join(MANIFEST_FILE);
        GatewayManifest::parse(&file, text, "my-gateway")
    }

    const MINIMAL: &str = r#"
description = "d"
asks_keygate = "a"
tool = "caddy"
contract = "http"
run = { args = ["run", "{{ dir }}/a"] }
[[config]]
template = "a.j2"
file = "a"
"#;

    #[test]
    fn a_minimal_manifest_is_strict_with_the_shared_readiness_probe() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.name, "my-gateway");
        assert_eq!(m.contract, Contract::Http);
        assert_eq!(m.readiness, ReadinessProbe::default());
        assert_eq!(m.deviations, Deviations::default());
        assert!(m.deviations.declared().is_empty());
    }

    #[test]
    fn bad_manifests_name_the_file_and_the_field() {
        let typo = MINIMAL.replace("contract = \"http\"", "contract = \"grcp\"");
        let err = format!("{:#}", parse(&typo).unwrap_err());
        assert!(
            err.contains("gateway.toml is not a valid gateway manifest"),
            "{err}"
        );
        assert!(err.contains("contract"), "{err}");

        let unknown_row = format!("{MINIMAL}\n[deviations.raw-uri]\nwhy = \"x\"\n");
        let err = format!("{:#}", parse(&unknown_row).unwrap_err());
        assert!(err.contains("raw-uri"), "{err}");
        assert!(
            err.contains("path-as-sent"),
            "the known rows are listed: {err}"
        );

        let missing = MINIMAL.replace("a.j2", "b.j2");
        let err = format!("{:#}", parse(&missing).unwrap_err());
        assert!(
            err.contains("`config.template` \"b.j2\" is not a file"),
            "{err}"
        );

        let escape = MINIMAL.replace("file = \"a\"", "file = \"../a\"");
        let err = format!("{:#}", parse(&escape).unwrap_err());
        assert!(err.contains("must be a plain file name"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let err = GatewayManifest::parse(&dir.path().join(MANIFEST_FILE), MINIMAL, "My_GW")
            .unwrap_err()
            .to_string();
        assert!(err.contains("use lowercase letters"), "{err}");
    }

    #[test]
    fn deviations_are_listed_in_the_tables_order() {
        let text = format!(
            "{MINIMAL}\n[deviations.header-limit]\nbytes = 8192\nwhy = \"buffers\"\n\
             [deviations.path-as-sent]\nwhy = \"raw\"\n"
        );
        let m = parse(&text).unwrap();
        assert_eq!(
            m.deviations.declared(),
            [(row::PATH_AS_SENT, "raw"), (row::HEADER_LIMIT, "buffers")]
        );
        assert!(m.deviations.refuses_header_of(8192));
        assert!(!m.deviations.refuses_header_of(8191));
    }

    #[test]
    fn a_directory_without_a_manifest_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("half-added")).unwrap();
        let err = format!("{:#}", Catalog::load(dir.path()).unwrap_err());
        assert!(err.contains("half-added/gateway.toml"), "{err}");
    }

    #[test]
    fn two_defaults_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            let gw = dir.path().join(name);
            std::fs::create_dir(&gw).unwrap();
            std::fs::write(gw.join("a.j2"), "x").unwrap();
            std::fs::write(gw.join(MANIFEST_FILE), format!("default = true\n{MINIMAL}")).unwrap();
        }
        let err = Catalog::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("more than one gateway says `default = true` (a, b)"),
            "{err}"
        );
    }
}
