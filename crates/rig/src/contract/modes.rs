//! How the gateway gets its credentials: the values model of
//! `scenarios/modes/*.yaml`, shaped like the API7 gateway chart
//! (`gateway.inline` / `existingSecret` + `existingSecretKeys` / an External
//! Secrets `ExternalSecret`) and the Tanzu API portal's `apiKey` values.
//!
//! The mode follows from the values, the way the chart decides whether it
//! creates a Secret:
//! - `gateway.existingSecret` empty: **inline**; rig writes `gateway.inline`
//!   into a Secret (what the chart's `secret-*.yaml` template does).
//! - `gateway.existingSecret` set, no `gateway.externalSecret`:
//!   **existing-secret**; the Secret is pre-created out of band with the key
//!   names of `existingSecretKeys` (here: by rig, as `kubectl create secret`).
//! - `gateway.externalSecret` set: **external-secret**; `bao agent` renders
//!   the Vault KV v2 fields named by `data[].remoteRef` into that Secret every
//!   `refreshInterval`.
//!
//! A values file cannot hold this run's credentials (Vault is new each run),
//! so it names them with placeholders rig fills: `${RUN_VAULT_ADDR}`,
//! `${RUN_ROLE_ID}`, `${RUN_SECRET_ID}`. Anything else in those fields is
//! used as written.
//!
//! Everything is checked by [`ModeValues::load`] before any process starts;
//! every problem names the file and the field path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

pub const VAULT_ADDR_PLACEHOLDER: &str = "${RUN_VAULT_ADDR}";
pub const ROLE_ID_PLACEHOLDER: &str = "${RUN_ROLE_ID}";
pub const SECRET_ID_PLACEHOLDER: &str = "${RUN_SECRET_ID}";

/// The finding the run report carries for inline values.
pub const PLAINTEXT_FINDING: &str = "plaintext credentials in values file";

/// The three delivery modes, named like `scenarios/modes/<mode>.yaml` (and
/// the Kubernetes overlays `scenarios/k8s/<mode>/`): the one `Mode` of the
/// local and Kubernetes profiles and the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Inline,
    ExistingSecret,
    ExternalSecret,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Inline, Mode::ExistingSecret, Mode::ExternalSecret];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Inline => "inline",
            Mode::ExistingSecret => "existing-secret",
            Mode::ExternalSecret => "external-secret",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{text:?} is not a delivery mode: use inline, existing-secret or external-secret"
                )
            })
    }

    /// `scenarios/modes/<mode>.yaml`.
    pub fn values_file(self, scenarios_dir: &Path) -> PathBuf {
        scenarios_dir
            .join("modes")
            .join(format!("{}.yaml", self.as_str()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The logical keys keygate needs from its Secret, and their names there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretKeys {
    pub role_id: String,
    pub secret_id: String,
    pub group: String,
}

/// The inline mode's Secret key names: the chart's defaults.
pub fn default_keys() -> SecretKeys {
    SecretKeys {
        role_id: "role-id".into(),
        secret_id: "secret-id".into(),
        group: "gateway-group".into(),
    }
}

/// A validated values file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeValues {
    pub file: PathBuf,
    pub mode: Mode,
    /// The Secret's name (`existingSecret`, or `<release>-credentials` inline).
    pub secret_name: String,
    pub keys: SecretKeys,
    pub delivery: Delivery,
    pub api_key: ApiKeyValues,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Inline {
        vault_url: String,
        role_id: String,
        secret_id: String,
        group: String,
    },
    /// The group value the out-of-band step stores in the Secret.
    ExistingSecret {
        group: String,
    },
    ExternalSecret(ExternalSecret),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExternalSecret {
    /// KV v2 mount (ESO `SecretStore.spec.provider.vault.path`).
    pub path: String,
    /// The AppRole `bao agent` logs in with.
    pub role: String,
    /// `bao agent`'s `static_secret_render_interval`.
    pub refresh_interval: Duration,
    pub data: Vec<ExternalData>,
    /// The group value the operator stores in Vault.
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalData {
    pub secret_key: String,
    /// Path below the mount.
    pub key: String,
    pub property: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyValues {
    pub vault_url: String,
    /// The AppRole role keygate logs in as.
    pub role: String,
    /// KV v2 mount of the keys, when given.
    pub path: Option<String>,
}

impl ModeValues {
    /// `scenarios/modes/<mode>.yaml`, checked to describe that mode.
    pub fn load_mode(scenarios_dir: &Path, mode: Mode) -> Result<Self> {
        let values = Self::load(&mode.values_file(scenarios_dir))?;
        if values.mode != mode {
            bail!(
                "{}: these values describe the {} mode, not {mode}: {}",
                values.file.display(),
                values.mode,
                match values.mode {
                    Mode::Inline =>
                        "set gateway.existingSecret (and gateway.externalSecret for external-secret)",
                    Mode::ExistingSecret if mode == Mode::Inline =>
                        "leave gateway.existingSecret empty and fill gateway.inline",
                    Mode::ExistingSecret => "add a gateway.externalSecret section",
                    Mode::ExternalSecret => "remove the gateway.externalSecret section",
                }
            );
        }
        Ok(values)
    }

    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|err| {
            anyhow::anyhow!(
                "cannot read the values file {} ({err}): check the path or the --mode given",
                file.display()
            )
        })?;
        Self::parse(file, &text)
    }

    /// Parses and validates; every problem found is listed, one per line.
    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        let raw: RawValues = serde_yaml::from_str(text).map_err(|err| {
            anyhow::anyhow!(
                "{}: {}",
                file.display(),
                match err.location() {
                    Some(loc) => format!(
                        "line {}, column {}: {}",
                        loc.line(),
                        loc.column(),
                        err.to_string().replacen(
                            &format!(" at line {} column {}", loc.line(), loc.column()),
                            "",
                            1
                        )
                    ),
                    None => err.to_string(),
                }
            )
        })?;
        let mut problems = Problems::default();
        let values = validate(file, raw, &mut problems);
        if !problems.0.is_empty() {
            let list = problems
                .0
                .iter()
                .map(|p| format!("{}: {p}", file.display()))
                .collect::<Vec<_>>()
                .join("\n");
            bail!("{list}");
        }
        Ok(values.expect("no problems means a value"))
    }

    /// The findings the run report carries for these values.
    pub fn findings(&self) -> Vec<String> {
        match self.delivery {
            Delivery::Inline { .. } => vec![PLAINTEXT_FINDING.to_owned()],
            _ => Vec::new(),
        }
    }
}

/// Fills the run's placeholders in one values string.
pub fn fill(value: &str, vault_addr: &str, role_id: &str, secret_id: &str) -> String {
    value
        .replace(VAULT_ADDR_PLACEHOLDER, vault_addr)
        .replace(ROLE_ID_PLACEHOLDER, role_id)
        .replace(SECRET_ID_PLACEHOLDER, secret_id)
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, message: impl Into<String>) {
        self.0.push(message.into());
    }

    /// The trimmed value, or a problem "<field> is empty<why>".
    fn required(&mut self, field: &str, value: Option<&String>, why: &str) -> String {
        match value.map(|v| v.trim()).filter(|v| !v.is_empty()) {
            Some(v) => v.to_owned(),
            None => {
                self.add(format!("{field} is empty{why}"));
                String::new()
            }
        }
    }
}

// ---- raw, as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawValues {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    api_key: RawApiKey,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGateway {
    inline: Option<RawInline>,
    existing_secret: Option<String>,
    existing_secret_keys: Option<RawKeys>,
    external_secret: Option<RawExternal>,
    /// What the out-of-band step stores besides the credentials.
    seed: Option<RawSeed>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawInline {
    vault_url: Option<String>,
    role_id: Option<String>,
    secret_id: Option<String>,
    group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKeys {
    role_id: Option<String>,
    secret_id: Option<String>,
    group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSeed {
    group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawExternal {
    path: Option<String>,
    role: Option<String>,
    refresh_interval: Option<String>,
    #[serde(default)]
    data: Vec<RawData>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawData {
    secret_key: Option<String>,
    remote_ref: Option<RawRemoteRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteRef {
    key: Option<String>,
    property: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    enabled: Option<bool>,
    #[serde(default)]
    vault: RawApiKeyVault,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKeyVault {
    url: Option<String>,
    role: Option<String>,
    path: Option<String>,
}

fn validate(file: &Path, raw: RawValues, problems: &mut Problems) -> Option<ModeValues> {
    let gateway = raw.gateway;
    let existing = gateway
        .existing_secret
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let mode = match (&existing, &gateway.external_secret) {
        (None, None) => Mode::Inline,
        (Some(_), None) => Mode::ExistingSecret,
        (_, Some(_)) => Mode::ExternalSecret,
    };

    // The Secret's name and key names.
    let (secret_name, keys) = match mode {
        Mode::Inline => {
            if gateway.existing_secret_keys.is_some() {
                problems.add(
                    "gateway.existingSecretKeys is set but gateway.existingSecret is empty: \
                     name the existing Secret, or drop existingSecretKeys (inline values use the default key names)",
                );
            }
            ("keygate-credentials".to_owned(), default_keys())
        }
        Mode::ExistingSecret | Mode::ExternalSecret => {
            let name = match existing.clone() {
                Some(name) => name,
                None => {
                    problems.add(
                        "gateway.existingSecret is empty but gateway.externalSecret is set: \
                         name the Secret the ExternalSecret writes (its target)",
                    );
                    String::new()
                }
            };
            let raw_keys = gateway.existing_secret_keys.unwrap_or_default();
            let why = " but gateway.existingSecret is set: name the Secret's key that holds it";
            let keys = SecretKeys {
                role_id: problems.required(
                    "gateway.existingSecretKeys.roleId",
                    raw_keys.role_id.as_ref(),
                    why,
                ),
                secret_id: problems.required(
                    "gateway.existingSecretKeys.secretId",
                    raw_keys.secret_id.as_ref(),
                    why,
                ),
                group: problems.required(
                    "gateway.existingSecretKeys.group",
                    raw_keys.group.as_ref(),
                    why,
                ),
            };
            let names = [&keys.role_id, &keys.secret_id, &keys.group];
            for (i, name) in names.iter().enumerate() {
                if !name.is_empty() && names[..i].contains(name) {
                    problems.add(format!(
                        "gateway.existingSecretKeys names the key {name:?} twice: each value needs its own key"
                    ));
                }
            }
            (name, keys)
        }
    };

    let delivery = match mode {
        Mode::Inline => {
            let inline = match gateway.inline {
                Some(inline) => inline,
                None => {
                    problems.add(
                        "gateway.inline is missing and gateway.existingSecret is empty: \
                         give inline values (vaultUrl, roleId, secretId, group) or name an existing Secret",
                    );
                    RawInline::default()
                }
            };
            let why =
                " but gateway.existingSecret is empty, so the chart builds the Secret from it";
            let vault_url =
                problems.required("gateway.inline.vaultUrl", inline.vault_url.as_ref(), why);
            check_url(problems, "gateway.inline.vaultUrl", &vault_url);
            Delivery::Inline {
                role_id: problems.required("gateway.inline.roleId", inline.role_id.as_ref(), why),
                secret_id: problems.required(
                    "gateway.inline.secretId",
                    inline.secret_id.as_ref(),
                    why,
                ),
                group: problems.required("gateway.inline.group", inline.group.as_ref(), why),
                vault_url,
            }
        }
        Mode::ExistingSecret | Mode::ExternalSecret => {
            if gateway.inline.is_some() {
                problems.add(
                    "gateway.inline is set but gateway.existingSecret names a Secret, which wins: \
                     remove gateway.inline so no credentials sit in the values file",
                );
            }
            let group = problems.required(
                "gateway.seed.group",
                gateway.seed.as_ref().and_then(|s| s.group.as_ref()),
                ": give the group value the out-of-band step stores with the credentials",
            );
            match gateway.external_secret {
                None => Delivery::ExistingSecret { group },
                Some(external) => {
                    Delivery::ExternalSecret(external_secret(problems, external, &keys, group))
                }
            }
        }
    };

    let api_key = raw.api_key;
    match api_key.enabled {
        Some(true) => {}
        Some(false) => problems
            .add("apiKey.enabled is false: keygate exists to validate API keys, so set it to true"),
        None => problems.add("apiKey.enabled is missing: set it to true"),
    }
    let why = " but apiKey.enabled is true";
    let api_vault_url = problems.required("apiKey.vault.url", api_key.vault.url.as_ref(), why);
    check_url(problems, "apiKey.vault.url", &api_vault_url);
    let api_role = problems.required("apiKey.vault.role", api_key.vault.role.as_ref(), why);
    let api_key = ApiKeyValues {
        vault_url: api_vault_url,
        role: api_role,
        path: api_key
            .vault
            .path
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty()),
    };

    Some(ModeValues {
        file: file.to_path_buf(),
        mode,
        secret_name,
        keys,
        delivery,
        api_key,
    })
}

fn external_secret(
    problems: &mut Problems,
    raw: RawExternal,
    keys: &SecretKeys,
    group: String,
) -> ExternalSecret {
    let why = " but gateway.externalSecret is set";
    let path = problems.required("gateway.externalSecret.path", raw.path.as_ref(), why);
    let role = problems.required("gateway.externalSecret.role", raw.role.as_ref(), why);
    let refresh_interval = match raw.refresh_interval.as_deref().map(str::trim) {
        None | Some("") => {
            problems.add(format!(
                "gateway.externalSecret.refreshInterval is empty{why}: give a duration such as 1s or 5m"
            ));
            Duration::ZERO
        }
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                problems.add(
                    "gateway.externalSecret.refreshInterval is 0, which would render once and never rotate: give a duration such as 1s",
                );
                Duration::ZERO
            }
            Err(err) => {
                problems.add(format!(
                    "gateway.externalSecret.refreshInterval is {text:?}, which is not a duration ({err}): write it like 1s or 5m"
                ));
                Duration::ZERO
            }
        },
    };
    if raw.data.is_empty() {
        problems.add(
            "gateway.externalSecret.data is empty: map each Secret key to a Vault field with secretKey and remoteRef",
        );
    }
    let mut data = Vec::new();
    for (i, item) in raw.data.into_iter().enumerate() {
        let field = format!("gateway.externalSecret.data[{i}]");
        let remote = item.remote_ref.unwrap_or_default();
        let entry = ExternalData {
            secret_key: problems.required(
                &format!("{field}.secretKey"),
                item.secret_key.as_ref(),
                "",
            ),
            key: problems.required(&format!("{field}.remoteRef.key"), remote.key.as_ref(), ""),
            property: problems.required(
                &format!("{field}.remoteRef.property"),
                remote.property.as_ref(),
                "",
            ),
        };
        if data.iter().any(|d: &ExternalData| {
            !entry.secret_key.is_empty() && d.secret_key == entry.secret_key
        }) {
            problems.add(format!(
                "{field}.secretKey {:?} is mapped twice: each Secret key comes from one Vault field",
                entry.secret_key
            ));
        }
        data.push(entry);
    }
    for (logical, name) in [
        ("roleId", &keys.role_id),
        ("secretId", &keys.secret_id),
        ("group", &keys.group),
    ] {
        if !name.is_empty() && !data.iter().any(|d| &d.secret_key == name) {
            problems.add(format!(
                "gateway.externalSecret.data has no entry with secretKey {name:?}, which \
                 gateway.existingSecretKeys.{logical} names: add one, or keygate finds no {logical} in the Secret"
            ));
        }
    }
    ExternalSecret {
        path,
        role,
        refresh_interval,
        data,
        group,
    }
}

/// A Vault URL: the run's placeholder, or an http(s) URL.
fn check_url(problems: &mut Problems, field: &str, value: &str) {
    if value.is_empty() || value == VAULT_ADDR_PLACEHOLDER {
        return;
    }
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => problems.add(format!(
            "{field} is {value:?}, which is not an http(s) URL: write it like http://127.0.0.1:8200 or use {VAULT_ADDR_PLACEHOLDER}"
        )),
    }
}

/// The data the out-of-band step writes, keyed by Secret key name, for
/// existing-secret (the Secret) and external-secret (per Vault path:
/// property -> value). Exposed for local.rs and the rotation tests.
pub fn secret_data(
    keys: &SecretKeys,
    role_id: &str,
    secret_id: &str,
    group: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys.role_id.clone(), role_id.to_owned()),
        (keys.secret_id.clone(), secret_id.to_owned()),
        (keys.group.clone(), group.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parse(text: &str) -> Result<ModeValues> {
        ModeValues::parse(Path::new("scenarios/modes/x.yaml"), text)
    }

    const API_KEY: &str =
        "apiKey:\n  enabled: true\n  vault:\n    url: ${RUN_VAULT_ADDR}\n    role: gateway\n";

    #[rstest]
    fn the_shipped_values_load_as_their_modes() {
        for mode in Mode::ALL {
            let values = ModeValues::load_mode(&crate::base::paths::scenarios_dir(), mode).unwrap();
            assert_eq!(values.mode, mode);
        }
        let inline =
            ModeValues::load_mode(&crate::base::paths::scenarios_dir(), Mode::Inline).unwrap();
        assert_eq!(inline.findings(), [PLAINTEXT_FINDING]);
        let existing =
            ModeValues::load_mode(&crate::base::paths::scenarios_dir(), Mode::ExistingSecret)
                .unwrap();
        assert!(existing.findings().is_empty());
        assert_ne!(
            existing.keys,
            default_keys(),
            "the scenario uses custom key names"
        );
    }

    #[rstest]
    fn api_key_enabled_needs_url_and_role() {
        let err = parse("gateway:\n  inline: {vaultUrl: http://v:1, roleId: r, secretId: s, group: g}\napiKey:\n  enabled: true\n  vault: {url: http://v:1, role: ''}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "scenarios/modes/x.yaml: apiKey.vault.role is empty but apiKey.enabled is true"
        );
    }

    #[rstest]
    fn every_problem_is_listed_with_its_field_path() {
        let text = format!(
            "gateway:\n  existingSecret: creds\n  existingSecretKeys: {{roleId: a, secretId: a}}\n  seed: {{group: g}}\n  externalSecret:\n    path: gc\n    role: sd\n    refreshInterval: soon\n    data:\n      - secretKey: a\n        remoteRef: {{key: k}}\n{API_KEY}"
        );
        let err = parse(&text).unwrap_err().to_string();
        for expected in [
            "gateway.existingSecretKeys.group is empty",
            "gateway.existingSecretKeys names the key \"a\" twice",
            "gateway.externalSecret.refreshInterval is \"soon\", which is not a duration",
            "gateway.externalSecret.data[0].remoteRef.property is empty",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
        assert!(
            err.lines()
                .all(|l| l.starts_with("scenarios/modes/x.yaml: ")),
            "{err}"
        );
    }

    #[rstest]
    fn external_data_must_cover_every_key() {
        let text = format!(
            "gateway:\n  existingSecret: creds\n  existingSecretKeys: {{roleId: r, secretId: s, group: g}}\n  seed: {{group: default}}\n  externalSecret:\n    path: gc\n    role: sd\n    refreshInterval: 1s\n    data:\n      - {{secretKey: r, remoteRef: {{key: k, property: role_id}}}}\n      - {{secretKey: s, remoteRef: {{key: k, property: secret_id}}}}\n{API_KEY}"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("gateway.externalSecret.data has no entry with secretKey \"g\""),
            "{err}"
        );
    }

    #[rstest]
    fn unknown_fields_name_their_line() {
        let err = parse("gateway:\n  inlne: {}\n").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "scenarios/modes/x.yaml: line 2, column 3: gateway: unknown field `inlne`"
            ),
            "{err}"
        );
    }

    #[rstest]
    fn a_file_of_another_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("modes")).unwrap();
        std::fs::write(
            dir.path().join("modes/existing-secret.yaml"),
            format!("gateway:\n  inline: {{vaultUrl: http://v:1, roleId: r, secretId: s, group: g}}\n{API_KEY}"),
        )
        .unwrap();
        let err = ModeValues::load_mode(dir.path(), Mode::ExistingSecret)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("these values describe the inline mode, not existing-secret"),
            "{err}"
        );
    }

    #[rstest]
    fn placeholders_are_filled() {
        assert_eq!(
            fill("${RUN_VAULT_ADDR}/x ${RUN_SECRET_ID}", "http://a", "r", "s"),
            "http://a/x s"
        );
    }
}
