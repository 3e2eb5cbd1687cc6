//! Vault over its HTTP API: a client for setup and tests, and `VaultSetup`,
//! which applies `scenarios/vault/setup.yaml`.
//!
//! The client speaks HTTP directly (no `bao` CLI) so tests can assert exact
//! status codes through [`VaultClient::request`], and so no token ever sits
//! on a command line. It speaks `http://` and `https://`: TLS is rustls on
//! ring, trusting the CA bundle given to [`VaultClient::with_ca_cert_file`]
//! (or named by `VAULT_CACERT`, see [`VaultClient::from_env_addr`]), else the
//! operating system's trust store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::say;
use crate::wait::{Probe, wait_until};

/// A secret string (token, secret-id): `Debug` never shows it and there is
/// no `Display`, so it cannot end up in a log line or error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for a 0600 file or a request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a Vault call failed, phrased as what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("no Vault answers at {addr}: is it running? (`cargo xtask up` starts one) ({reason})")]
    Unreachable { addr: String, reason: String },
    #[error(
        "Vault at {addr}: certificate verify failed{}, set {CA_CERT_VAR} to the CA that signed Vault's certificate ({reason})",
        trusted_suffix(.ca_file)
    )]
    Certificate {
        addr: String,
        /// The CA file the client trusted; `None`: the system's trust store.
        ca_file: Option<PathBuf>,
        reason: String,
    },
    #[error("Vault at {addr} is sealed: unseal it")]
    Sealed { addr: String },
    #[error("Vault answered {status} to {method} {path}{}{}", errors_suffix(.errors), hint(.status))]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        errors: Vec<String>,
    },
    #[error("Vault's answer to {method} {path} lacks {what}")]
    Unexpected {
        method: Method,
        path: String,
        what: String,
    },
    #[error(transparent)]
    Wait(#[from] crate::wait::Timeout),
}

fn trusted_suffix(ca_file: &Option<PathBuf>) -> String {
    match ca_file {
        Some(file) => format!(" against the CA in {}", file.display()),
        None => " against the system's trust store".into(),
    }
}

fn errors_suffix(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

fn hint(status: &StatusCode) -> &'static str {
    match *status {
        StatusCode::FORBIDDEN => {
            " (the token is invalid, expired, or its policies do not allow this)"
        }
        _ => "",
    }
}

impl VaultError {
    /// The HTTP status Vault answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            VaultError::Status { status, .. } => Some(*status),
            VaultError::Sealed { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
            _ => None,
        }
    }
}

/// The conventional variable naming the PEM CA bundle that signed Vault's
/// certificate; [`VaultClient::from_env_addr`] honours it.
pub const CA_CERT_VAR: &str = "VAULT_CACERT";

/// A Vault HTTP client, with or without a token.
#[derive(Clone)]
pub struct VaultClient {
    addr: String,
    token: Option<Secret>,
    http: transport::Http,
    timeout: Duration,
    /// The CA bundle trusted for https, if not the system's.
    ca_file: Option<PathBuf>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `sys/health`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    pub initialized: bool,
    pub sealed: bool,
    pub standby: bool,
    pub version: String,
}

/// A fresh AppRole secret-id and its accessor (which may be logged).
#[derive(Debug, Clone)]
pub struct NewSecretId {
    pub secret_id: Secret,
    pub accessor: String,
}

impl VaultClient {
    /// A client without a token, for `http://host:port` (no `/v1`).
    pub fn new(addr: &str) -> Result<Self> {
        Self::with_timeout(addr, Duration::from_secs(10))
    }

    /// A client whose requests may take up to `timeout`: `sys/init` on raft
    /// storage writes the keyring and waits for leadership, which on a busy
    /// 2-core machine took longer than the usual 10 s.
    /// `https://` addresses are verified against the system's trust store;
    /// see [`Self::with_ca_cert_file`] and [`Self::from_env_addr`].
    pub fn with_timeout(addr: &str, timeout: Duration) -> Result<Self> {
        let parsed = reqwest::Url::parse(addr).with_context(|| {
            format!("{addr:?} is not a Vault address like http://127.0.0.1:8200")
        })?;
        let https = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => {
                bail!("{addr:?} is not a Vault address: its scheme is {other:?}, not http or https")
            }
        };
        // The system's roots are read only when they can be used.
        let roots = if https {
            transport::system_roots()
        } else {
            Arc::new(rustls::RootCertStore::empty())
        };
        Ok(Self {
            addr: addr.trim_end_matches('/').to_owned(),
            token: None,
            http: transport::Http::new(roots, timeout)?,
            timeout,
            ca_file: None,
        })
    }

    /// The same server, trusting only the CA certificates in `file` (PEM,
    /// one or more) for https, as `VAULT_CACERT` does for the Vault CLI.
    pub fn with_ca_cert_file(self, file: &Path) -> Result<Self> {
        let roots = transport::load_ca_file(file)?;
        Ok(Self {
            http: transport::Http::new(Arc::new(roots), self.timeout)?,
            ca_file: Some(file.to_owned()),
            ..self
        })
    }

    /// The same server, trusting the CA bundle `VAULT_CACERT` names when it
    /// is set and not empty (else unchanged).
    pub fn with_ca_from_env(self) -> Result<Self> {
        self.with_ca_from_var(std::env::var_os(CA_CERT_VAR))
    }

    /// [`Self::with_ca_from_env`] with the variable's value given.
    fn with_ca_from_var(self, value: Option<std::ffi::OsString>) -> Result<Self> {
        match value.filter(|v| !v.is_empty()) {
            Some(file) => self
                .with_ca_cert_file(Path::new(&file))
                .with_context(|| format!("{CA_CERT_VAR} is set but cannot be used")),
            None => Ok(self),
        }
    }

    /// A client without a token for `addr`, trusting the CA bundle in
    /// `VAULT_CACERT` when it is set: the one place rig turns the process
    /// environment into TLS settings for Vault.
    pub fn from_env_addr(addr: &str) -> Result<Self> {
        Self::new(addr)?.with_ca_from_env()
    }

    /// The same server with this token.
    pub fn with_token(&self, token: Secret) -> Self {
        Self {
            token: Some(token),
            ..self.clone()
        }
    }

    /// The root client of a running environment (token read from its 0600 file).
    /// Trusts `VAULT_CACERT` like [`Self::from_env_addr`].
    pub fn root(env: &crate::env::Environment) -> Result<Self> {
        Ok(Self::from_env_addr(&env.vault_addr)?.with_token(Secret::new(env.root_token()?)))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// This client's token, e.g. to write it to a 0600 file. Never print it.
    pub fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    /// One request; any HTTP status is `Ok` so callers can assert on it.
    /// `path` is relative to `/v1/` (a leading `/v1/` is accepted too).
    /// An empty body comes back as `Value::Null`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), VaultError> {
        let path = path.trim_start_matches('/');
        let path = path.strip_prefix("v1/").unwrap_or(path);
        let url = format!("{}/v1/{path}", self.addr);
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value =
                HeaderValue::from_str(token.expose()).map_err(|_| VaultError::Unexpected {
                    method: method.clone(),
                    path: path.to_owned(),
                    what: "a token made of visible ASCII characters".into(),
                })?;
            value.set_sensitive(true);
            headers.insert("X-Vault-Token", value);
        }
        let (status, text) = self
            .http
            .send(method, &url, headers, body)
            .await
            .map_err(|err| match err {
                transport::Failure::Certificate(reason) => VaultError::Certificate {
                    addr: self.addr.clone(),
                    ca_file: self.ca_file.clone(),
                    reason,
                },
                transport::Failure::Other(reason) => VaultError::Unreachable {
                    addr: self.addr.clone(),
                    reason,
                },
            })?;
        // Vault answers JSON; anything else (a proxy's HTML page) is kept as a string.
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// A request that must succeed (2xx); returns the body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, VaultError> {
        let (status, value) = self.request(method.clone(), path, body).await?;
        if status.is_success() {
            return Ok(value);
        }
        Err(self.error(method, path, status, &value))
    }

    fn error(&self, method: Method, path: &str, status: StatusCode, body: &Value) -> VaultError {
        let errors: Vec<String> = body
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let sealed = body.get("sealed").and_then(Value::as_bool) == Some(true)
            || errors
                .iter()
                .any(|e| e.contains("Vault is sealed") || e.contains("sealed"));
        if status == StatusCode::SERVICE_UNAVAILABLE && sealed {
            return VaultError::Sealed {
                addr: self.addr.clone(),
            };
        }
        VaultError::Status {
            method,
            path: path.trim_start_matches('/').to_owned(),
            status,
            errors,
        }
    }

    fn field<'a>(
        method: Method,
        path: &str,
        body: &'a Value,
        pointer: &str,
    ) -> Result<&'a Value, VaultError> {
        body.pointer(pointer).ok_or_else(|| VaultError::Unexpected {
            method,
            path: path.to_owned(),
            what: pointer.to_owned(),
        })
    }

    fn string_field(
        method: Method,
        path: &str,
        body: &Value,
        pointer: &str,
    ) -> Result<String, VaultError> {
        let value = Self::field(method.clone(), path, body, pointer)?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| VaultError::Unexpected {
                method,
                path: path.to_owned(),
                what: format!("a string at {pointer}"),
            })
    }

    /// `sys/health`: `Ok` for an active or standby server, an error saying
    /// what to do when it is sealed or not initialized.
    pub async fn health(&self) -> Result<Health, VaultError> {
        let path = "sys/health";
        let (status, body) = self.request(Method::GET, path, None).await?;
        let health: Option<Health> = serde_json::from_value(body.clone()).ok();
        match (status.as_u16(), health) {
            (_, Some(health)) if health.sealed => Err(VaultError::Sealed {
                addr: self.addr.clone(),
            }),
            (501, _) => Err(VaultError::Status {
                method: Method::GET,
                path: path.into(),
                status,
                errors: vec!["Vault is not initialized: initialize and unseal it".into()],
            }),
            (200 | 429 | 472 | 473, Some(health)) => Ok(health),
            _ => Err(self.error(Method::GET, path, status, &body)),
        }
    }

    /// Mounts a KV v2 engine at `mount` unless one is there already, then
    /// waits until it serves requests (a new mount takes a moment).
    pub async fn enable_kv2(&self, mount: &str) -> Result<(), VaultError> {
        let mounts = self.call(Method::GET, "sys/mounts", None).await?;
        let key = format!("{mount}/");
        let existing = mounts.get("data").unwrap_or(&mounts).get(&key);
        match existing {
            Some(found) => {
                let kind = found.get("type").and_then(Value::as_str).unwrap_or("?");
                let version = found
                    .pointer("/options/version")
                    .and_then(Value::as_str)
                    .unwrap_or("1");
                if kind != "kv" || version != "2" {
                    return Err(VaultError::Status {
                        method: Method::POST,
                        path: format!("sys/mounts/{mount}"),
                        status: StatusCode::BAD_REQUEST,
                        errors: vec![format!(
                            "{mount}/ is already mounted as {kind} (version {version}), not kv version 2: choose another kv_mount or unmount it"
                        )],
                    });
                }
            }
            None => {
                let body = json!({"type": "kv", "options": {"version": "2"}});
                self.call(Method::POST, &format!("sys/mounts/{mount}"), Some(&body))
                    .await?;
            }
        }
        let config = format!("{mount}/config");
        wait_until(
            &format!("KV v2 mount {mount}"),
            Duration::from_secs(10),
            async || {
                let (status, _) = self.request(Method::GET, &config, None).await?;
                anyhow::Ok(if status.is_success() {
                    Probe::Ready(())
                } else {
                    Probe::seen(status)
                })
            },
        )
        .await
        .map_err(|err| match err.downcast::<VaultError>() {
            Ok(err) => err,
            Err(err) => match err.downcast::<crate::wait::Timeout>() {
                Ok(timeout) => VaultError::Wait(timeout),
                Err(other) => unreachable!("the probe fails only with a VaultError: {other}"),
            },
        })
    }

    /// Enables an auth method at `path` unless it is enabled there already.
    pub async fn enable_auth(&self, kind: &str, path: &str) -> Result<(), VaultError> {
        let auths = self.call(Method::GET, "sys/auth", None).await?;
        let key = format!("{path}/");
        if let Some(found) = auths.get("data").unwrap_or(&auths).get(&key) {
            let existing = found.get("type").and_then(Value::as_str).unwrap_or("?");
            if existing == kind {
                return Ok(());
            }
            return Err(VaultError::Status {
                method: Method::POST,
                path: format!("sys/auth/{path}"),
                status: StatusCode::BAD_REQUEST,
                errors: vec![format!(
                    "auth/{path} is already a {existing} auth method, not {kind}"
                )],
            });
        }
        self.call(
            Method::POST,
            &format!("sys/auth/{path}"),
            Some(&json!({"type": kind})),
        )
        .await?;
        Ok(())
    }

    pub async fn put_policy(&self, name: &str, hcl: &str) -> Result<(), VaultError> {
        self.call(
            Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(&json!({"policy": hcl})),
        )
        .await?;
        Ok(())
    }

    pub async fn approle_write_role(
        &self,
        name: &str,
        policies: &[String],
        token_ttl: Duration,
        token_max_ttl: Duration,
    ) -> Result<(), VaultError> {
        let body = json!({
            "token_policies": policies,
            "token_ttl": token_ttl.as_secs(),
            "token_max_ttl": token_max_ttl.as_secs(),
        });
        self.call(
            Method::POST,
            &format!("auth/approle/role/{name}"),
            Some(&body),
        )
        .await?;
        Ok(())
    }

    pub async fn approle_role_id(&self, role: &str) -> Result<String, VaultError> {
        let path = format!("auth/approle/role/{role}/role-id");
        let body = self.call(Method::GET, &path, None).await?;
        Self::string_field(Method::GET, &path, &body, "/data/role_id")
    }

    pub async fn approle_new_secret_id(&self, role: &str) -> Result<NewSecretId, VaultError> {
        let path = format!("auth/approle/role/{role}/secret-id");
        let body = self.call(Method::POST, &path, None).await?;
        Ok(NewSecretId {
            secret_id: Secret::new(Self::string_field(
                Method::POST,
                &path,
                &body,
                "/data/secret_id",
            )?),
            accessor: Self::string_field(Method::POST, &path, &body, "/data/secret_id_accessor")?,
        })
    }

    /// Logs in with AppRole; returns a client holding the new token.
    pub async fn approle_login(
        &self,
        role_id: &str,
        secret_id: &Secret,
    ) -> Result<VaultClient, VaultError> {
        let path = "auth/approle/login";
        let anonymous = Self {
            token: None,
            ..self.clone()
        };
        let body = json!({"role_id": role_id, "secret_id": secret_id.expose()});
        let answer = anonymous.call(Method::POST, path, Some(&body)).await?;
        let token = Self::string_field(Method::POST, path, &answer, "/auth/client_token")?;
        Ok(self.with_token(Secret::new(token)))
    }

    /// Writes a new version of `<mount>/<path>`; returns the version metadata.
    pub async fn kv2_put(
        &self,
        mount: &str,
        path: &str,
        data: &Value,
    ) -> Result<Value, VaultError> {
        let answer = self
            .call(
                Method::POST,
                &format!("{mount}/data/{path}"),
                Some(&json!({"data": data})),
            )
            .await?;
        Ok(answer.get("data").cloned().unwrap_or(Value::Null))
    }

    /// The latest version's data, `None` if there is none (or it is deleted).
    pub async fn kv2_get(&self, mount: &str, path: &str) -> Result<Option<Value>, VaultError> {
        let full = format!("{mount}/data/{path}");
        let (status, body) = self.request(Method::GET, &full, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => {
                Ok(body.pointer("/data/data").cloned().filter(|d| !d.is_null()))
            }
            status => Err(self.error(Method::GET, &full, status, &body)),
        }
    }

    /// Keys under `<mount>/<path>` (folders end with `/`); empty if none.
    pub async fn kv2_list(&self, mount: &str, path: &str) -> Result<Vec<String>, VaultError> {
        let full = format!("{mount}/metadata/{path}");
        let list = Method::from_bytes(b"LIST").expect("LIST is a valid method name");
        let (status, body) = self.request(list.clone(), &full, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            status if status.is_success() => Ok(body
                .pointer("/data/keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()),
            status => Err(self.error(list, &full, status, &body)),
        }
    }

    /// Deletes every version and the metadata of `<mount>/<path>`.
    pub async fn kv2_delete_metadata(&self, mount: &str, path: &str) -> Result<(), VaultError> {
        self.call(Method::DELETE, &format!("{mount}/metadata/{path}"), None)
            .await?;
        Ok(())
    }

    /// `auth/token/lookup-self`'s `data`.
    pub async fn token_lookup_self(&self) -> Result<Value, VaultError> {
        let answer = self
            .call(Method::GET, "auth/token/lookup-self", None)
            .await?;
        Ok(answer.get("data").cloned().unwrap_or(Value::Null))
    }

    /// `auth/token/lookup-accessor`'s `data`.
    pub async fn lookup_accessor(&self, accessor: &str) -> Result<Value, VaultError> {
        let answer = self
            .call(
                Method::POST,
                "auth/token/lookup-accessor",
                Some(&json!({"accessor": accessor})),
            )
            .await?;
        Ok(answer.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Revokes the token behind an accessor (and its children).
    pub async fn revoke_accessor(&self, accessor: &str) -> Result<(), VaultError> {
        self.call(
            Method::POST,
            "auth/token/revoke-accessor",
            Some(&json!({"accessor": accessor})),
        )
        .await?;
        Ok(())
    }
}

/// `scenarios/vault/setup.yaml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupFile {
    kv_mount: String,
    keygate_role: String,
    policies: Vec<PolicyEntry>,
    approle_roles: Vec<RoleEntry>,
    /// The gateway's TLS serving certificate (`rig::pki`); optional.
    #[serde(default)]
    pki: Option<crate::pki::PkiEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    name: String,
    file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleEntry {
    name: String,
    policies: Vec<String>,
    token_ttl: String,
    token_max_ttl: String,
}

/// A policy ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    /// The rendered HCL.
    pub hcl: String,
    /// The template it came from, so Vault's rejection names the file to fix.
    pub file: PathBuf,
}

/// An AppRole role ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub policies: Vec<String>,
    pub token_ttl: Duration,
    pub token_max_ttl: Duration,
}

/// What the harness applies to Vault: `setup.yaml` with every `{group}`
/// name expanded once per API group and every policy template rendered.
#[derive(Debug, Clone)]
pub struct VaultSetup {
    pub file: PathBuf,
    pub kv_mount: String,
    /// The AppRole role keygate logs in with.
    pub keygate_role: String,
    pub policies: Vec<Policy>,
    pub roles: Vec<Role>,
    /// The pki engine, role and TLS agent of the gateway's serving certificate.
    pub pki: Option<crate::pki::PkiSetup>,
}

/// Marks a name that stands for one entry per API group.
const GROUP: &str = "{group}";

impl VaultSetup {
    /// `scenarios/vault/setup.yaml` of this workspace.
    pub fn load_default(groups: &[String]) -> Result<Self> {
        Self::load(
            &crate::paths::scenarios_dir().join("vault/setup.yaml"),
            groups,
        )
    }

    /// Loads and expands a setup file; policy files are relative to it.
    pub fn load(file: &Path, groups: &[String]) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let raw: SetupFile = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a valid Vault setup", file.display()))?;
        let at = |field: String| format!("{}: {field}", file.display());
        let base = file.parent().unwrap_or(Path::new("."));

        let mut templates = minijinja::Environment::new();
        templates.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        templates.set_auto_escape_callback(|_| minijinja::AutoEscape::None);

        let mut policies = Vec::new();
        for (i, entry) in raw.policies.iter().enumerate() {
            let path = base.join(&entry.file);
            let source = std::fs::read_to_string(&path).with_context(|| {
                at(format!(
                    "policies[{i}].file: cannot read {}",
                    path.display()
                ))
            })?;
            let template = templates
                .template_from_str(&source)
                .with_context(|| format!("{} is not a valid policy template", path.display()))?;
            let render = |group: Option<&str>| {
                let rendered = match group {
                    Some(group) => template.render(
                        minijinja::context! { mount => &raw.kv_mount, group => group, pki => &raw.pki },
                    ),
                    None => template
                        .render(minijinja::context! { mount => &raw.kv_mount, pki => &raw.pki }),
                };
                rendered.with_context(|| {
                    format!(
                        "rendering {} for policy {:?} (only a policy whose name holds {GROUP} may use {{{{ group }}}})",
                        path.display(),
                        entry.name
                    )
                })
            };
            if entry.name.contains(GROUP) {
                for group in groups {
                    policies.push(Policy {
                        name: entry.name.replace(GROUP, group),
                        hcl: render(Some(group))?,
                        file: path.clone(),
                    });
                }
            } else {
                policies.push(Policy {
                    name: entry.name.clone(),
                    hcl: render(None)?,
                    file: path.clone(),
                });
            }
        }

        let mut roles = Vec::new();
        for (i, entry) in raw.approle_roles.iter().enumerate() {
            let field = |name: &str| at(format!("approle_roles[{i}] ({}).{name}", entry.name));
            let token_ttl = parse_ttl(&entry.token_ttl).with_context(|| field("token_ttl"))?;
            let token_max_ttl =
                parse_ttl(&entry.token_max_ttl).with_context(|| field("token_max_ttl"))?;
            if token_max_ttl < token_ttl {
                bail!(
                    "{}: token_max_ttl ({}) is shorter than token_ttl ({})",
                    field("token_max_ttl"),
                    entry.token_max_ttl,
                    entry.token_ttl
                );
            }
            let per_group = entry.name.contains(GROUP);
            if let Some(p) = entry
                .policies
                .iter()
                .find(|p| p.contains(GROUP) && !per_group)
            {
                bail!(
                    "{}: policy {p:?} is one per group but the role name has no {GROUP}: add {GROUP} to the name so there is one role per group",
                    field("policies")
                );
            }
            let expand = |group: &str| Role {
                name: entry.name.replace(GROUP, group),
                policies: entry
                    .policies
                    .iter()
                    .map(|p| p.replace(GROUP, group))
                    .collect(),
                token_ttl,
                token_max_ttl,
            };
            if per_group {
                roles.extend(groups.iter().map(|g| expand(g)));
            } else {
                roles.push(expand(""));
            }
        }

        // Every name a role refers to must be written by this file (or be
        // Vault's built-in `default`), else the role logs in powerless.
        for (i, role) in roles.iter().enumerate() {
            if let Some(missing) = role
                .policies
                .iter()
                .find(|p| *p != "default" && !policies.iter().any(|known| &known.name == *p))
            {
                bail!(
                    "{}",
                    at(format!(
                        "role {:?} (approle_roles, entry {i} after expansion) names policy {missing:?}, which `policies` does not define",
                        role.name
                    ))
                );
            }
        }
        for names in [
            policies.iter().map(|p| &p.name).collect::<Vec<_>>(),
            roles.iter().map(|r| &r.name).collect(),
        ] {
            if let Some(dup) = names
                .iter()
                .enumerate()
                .find(|(i, n)| names[..*i].contains(n))
                .map(|(_, n)| n)
            {
                bail!(
                    "{}",
                    at(format!(
                        "{dup:?} is defined twice (after expanding {GROUP})"
                    ))
                );
            }
        }
        if !roles.iter().any(|r| r.name == raw.keygate_role) {
            bail!(
                "{}",
                at(format!(
                    "keygate_role: {:?} is not one of the approle_roles",
                    raw.keygate_role
                ))
            );
        }

        let pki = match &raw.pki {
            Some(entry) => {
                let with_policies: Vec<(&Role, Vec<&str>)> = roles
                    .iter()
                    .map(|role| {
                        let hcl = policies
                            .iter()
                            .filter(|p| role.policies.contains(&p.name))
                            .map(|p| p.hcl.as_str())
                            .collect();
                        (role, hcl)
                    })
                    .collect();
                Some(crate::pki::PkiSetup::check(entry, &with_policies, |f| {
                    at(f.to_owned())
                })?)
            }
            None => None,
        };

        Ok(Self {
            file: file.to_owned(),
            kv_mount: raw.kv_mount,
            keygate_role: raw.keygate_role,
            policies,
            roles,
            pki,
        })
    }

    /// Mounts KV v2, enables AppRole, writes the policies and roles.
    /// Idempotent: applying twice changes nothing.
    pub async fn apply(&self, root: &VaultClient) -> Result<()> {
        say!(
            "vault: applying {}: kv-v2 at {}/, AppRole, {} policies, {} roles",
            self.file.display(),
            self.kv_mount,
            self.policies.len(),
            self.roles.len()
        );
        root.enable_kv2(&self.kv_mount).await?;
        root.enable_auth("approle", "approle").await?;
        for policy in &self.policies {
            root.put_policy(&policy.name, &policy.hcl)
                .await
                .with_context(|| {
                    format!(
                        "Vault rejected policy {:?} from {} (policies[].file in {}): fix the HCL in that file",
                        policy.name,
                        policy.file.display(),
                        self.file.display()
                    )
                })?;
        }
        for role in &self.roles {
            root.approle_write_role(
                &role.name,
                &role.policies,
                role.token_ttl,
                role.token_max_ttl,
            )
            .await
            .with_context(|| format!("writing AppRole role {}", role.name))?;
        }
        if let Some(pki) = &self.pki {
            pki.apply(root).await.with_context(|| {
                format!(
                    "applying the pki section of {} (mount {}/, role {})",
                    self.file.display(),
                    pki.mount,
                    pki.role
                )
            })?;
        }
        Ok(())
    }
}

fn parse_ttl(text: &str) -> Result<Duration> {
    let ttl = humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is not a duration like 1h or 30m"))?;
    if ttl < Duration::from_secs(1) {
        bail!("{text:?} is under a second: Vault counts TTLs in whole seconds");
    }
    Ok(ttl)
}

/// `bao server -dev -dev-tls` on loopback, for tests of the https path: a
/// generated CA and serving certificate (for 127.0.0.1 and localhost) in
/// `<run>/bao-tls/`.
pub struct DevTlsVault {
    /// `https://127.0.0.1:<port>`.
    pub addr: String,
    /// `vault-ca.pem`, the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// A root client trusting `ca_file`.
    pub root: VaultClient,
}

impl DevTlsVault {
    /// Starts it as component `name` under `supervisor`. The root token is
    /// generated here and reaches bao through its environment, never argv,
    /// as on the local profile; dev mode prints it on stdout, so stdout goes
    /// to a 0600 file under `secrets/`.
    pub async fn start(
        supervisor: &mut crate::process::Supervisor,
        run: &crate::run::RunDir,
        bao: &Path,
        name: &str,
    ) -> Result<Self> {
        use crate::process::{Component, Readiness};
        let port = crate::ports::free_port_pair()?;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let cert_dir = run.path().join(format!("{name}-tls"));
        // bao writes into the directory but does not create it.
        std::fs::create_dir_all(&cert_dir)
            .with_context(|| format!("creating {}", cert_dir.display()))?;
        let root_token = apikey::ApiKey::generate().expose().to_owned();
        crate::redact::register_in_run(run.path(), &root_token)?;
        supervisor
            .start(
                Component::new(name, bao)
                    .args(["server", "-dev", "-dev-tls", "-dev-no-store-token"])
                    .arg(format!("-dev-listen-address={listen}"))
                    .arg(format!("-dev-tls-cert-dir={}", cert_dir.display()))
                    .env("BAO_DEV_ROOT_TOKEN_ID", &root_token)
                    .stdout_file(run.secrets_dir().join(format!("{name}-stdout")))
                    .current_dir(run.path()),
                // The supervisor's probe trusts no private CA; the health
                // check below does.
                Readiness::Tcp(listen),
            )
            .await?;
        let addr = format!("https://{listen}");
        let ca_file = cert_dir.join("vault-ca.pem");
        let root = VaultClient::new(&addr)?
            .with_ca_cert_file(&ca_file)?
            .with_token(Secret::new(root_token));
        wait_until(
            &format!("{name} (dev-tls) sys/health"),
            Duration::from_secs(30),
            async || {
                Ok(match root.health().await {
                    Ok(_) => Probe::Ready(()),
                    Err(err) => Probe::seen(err),
                })
            },
        )
        .await?;
        Ok(Self {
            addr,
            ca_file,
            root,
        })
    }
}

/// HTTP(S) for [`VaultClient`]: hyper over rustls with ring, chosen per
/// client and never from process-wide state. hyper reads no proxy variables
/// and follows no redirects, so the token goes only to the client's address.
mod transport {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::{Context, Result, bail};
    use reqwest::header::HeaderMap;
    use reqwest::{Method, StatusCode};
    use rustls::RootCertStore;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    /// keygate's transport: one implementation of hyper + rustls (ring),
    /// no proxies and no redirects, for the validator and the harness.
    pub(super) use keygate::vault_http::{Failure, system_roots};

    #[derive(Clone)]
    pub(super) struct Http(keygate::vault_http::VaultHttp);

    impl Http {
        pub(super) fn new(roots: Arc<RootCertStore>, timeout: Duration) -> Result<Self> {
            keygate::vault_http::VaultHttp::with_roots(roots, timeout)
                .map(Self)
                .map_err(anyhow::Error::msg)
        }

        /// One exchange within the timeout: status and the whole body.
        pub(super) async fn send(
            &self,
            method: Method,
            url: &str,
            headers: HeaderMap,
            body: Option<&serde_json::Value>,
        ) -> Result<(StatusCode, String), Failure> {
            self.0.send(method, url, headers, body).await
        }
    }

    /// Every certificate of a PEM bundle, as trust anchors.
    pub(super) fn load_ca_file(file: &Path) -> Result<RootCertStore> {
        let pem = std::fs::read(file).with_context(|| {
            format!(
                "cannot read the CA certificate file {}: give the PEM file of the CA that signed Vault's certificate",
                file.display()
            )
        })?;
        let mut roots = RootCertStore::empty();
        for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let cert = cert.with_context(|| {
                format!(
                    "the CA certificate file {} is not valid PEM (certificate {})",
                    file.display(),
                    i + 1
                )
            })?;
            roots.add(cert).with_context(|| {
                format!(
                    "the CA certificate file {}: certificate {} is not a usable CA certificate",
                    file.display(),
                    i + 1
                )
            })?;
        }
        if roots.is_empty() {
            bail!(
                "the CA certificate file {} holds no certificate: give a PEM file with at least one -----BEGIN CERTIFICATE----- block",
                file.display()
            );
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[rstest]
    fn expands_the_repository_setup_per_group() {
        let setup = VaultSetup::load_default(&groups(&["billing-api", "pets"])).unwrap();
        assert_eq!(setup.kv_mount, "api-portal-keys");
        let names: Vec<_> = setup.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "api-portal-policy",
                "gateway-policy",
                "gateway-policy-billing-api",
                "gateway-policy-pets",
                "secret-delivery-policy",
                "keygate-references",
                "tls-agent-policy"
            ]
        );
        let billing = &setup.policies[2].hcl;
        assert!(
            billing.contains(r#"path "api-portal-keys/data/billing-api*""#),
            "{billing}"
        );
        assert!(!billing.contains("{{"), "{billing}");
        let roles: Vec<_> = setup
            .roles
            .iter()
            .map(|r| (r.name.as_str(), r.policies.clone()))
            .collect();
        assert_eq!(
            roles[3],
            ("gateway-pets", vec!["gateway-policy-pets".to_string()])
        );
        assert_eq!(roles.len(), 6);
        let tls = &setup.policies[6].hcl;
        assert!(tls.contains(r#"path "pki/issue/gateway-serving""#), "{tls}");
        assert_eq!(
            setup.pki.as_ref().map(|p| p.agent_role.as_str()),
            Some("tls-agent")
        );
        assert_eq!(setup.roles[0].token_ttl, Duration::from_secs(3600));
        assert_eq!(setup.keygate_role, "gateway");
    }

    struct Files(tempfile::TempDir);

    impl Files {
        fn new(setup: &str, policies: &[(&str, &str)]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("setup.yaml"), setup).unwrap();
            for (name, text) in policies {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            Self(dir)
        }

        fn load(&self) -> Result<VaultSetup> {
            VaultSetup::load(&self.0.path().join("setup.yaml"), &groups(&["a", "b"]))
        }
    }

    const POLICY: &str = r#"path "{{ mount }}/data/*" { capabilities = ["read"] }"#;

    #[rstest]
    #[case::missing_field(
        "kv_mount: kv\nkeygate_role: r\npolicies: []\napprole_roles:\n  - name: r\n    policies: []\n    token_ttl: 1h\n",
        "missing field `token_max_ttl` at line 5"
    )]
    #[case::unknown_field(
        "kv_mount: kv\nkeygate_role: r\npolicies: []\napprole_roles: []\nmounts: []\n",
        "unknown field `mounts`"
    )]
    #[case::bad_ttl(
        "kv_mount: kv\nkeygate_role: r\npolicies: []\napprole_roles:\n  - {name: r, policies: [], token_ttl: 1x, token_max_ttl: 2h}\n",
        "approle_roles[0] (r).token_ttl: \"1x\" is not a duration"
    )]
    #[case::unknown_policy(
        "kv_mount: kv\nkeygate_role: r\npolicies: []\napprole_roles:\n  - {name: r, policies: [nope], token_ttl: 1h, token_max_ttl: 2h}\n",
        "names policy \"nope\", which `policies` does not define"
    )]
    #[case::group_policy_in_a_single_role(
        "kv_mount: kv\nkeygate_role: r\npolicies: [{name: 'p-{group}', file: p.hcl}]\napprole_roles:\n  - {name: r, policies: ['p-{group}'], token_ttl: 1h, token_max_ttl: 2h}\n",
        "add {group} to the name"
    )]
    #[case::group_placeholder_in_a_single_policy(
        "kv_mount: kv\nkeygate_role: r\npolicies: [{name: p, file: g.hcl}]\napprole_roles:\n  - {name: r, policies: [p], token_ttl: 1h, token_max_ttl: 2h}\n",
        "only a policy whose name holds {group} may use {{ group }}"
    )]
    #[case::missing_policy_file(
        "kv_mount: kv\nkeygate_role: r\npolicies: [{name: p, file: nowhere.hcl}]\napprole_roles: []\n",
        "policies[0].file: cannot read"
    )]
    #[case::unknown_keygate_role(
        "kv_mount: kv\nkeygate_role: gw\npolicies: []\napprole_roles: []\n",
        "keygate_role: \"gw\" is not one of the approle_roles"
    )]
    fn setup_errors_name_file_and_field(#[case] setup: &str, #[case] expected: &str) {
        let files = Files::new(
            setup,
            &[
                ("p.hcl", POLICY),
                ("g.hcl", r#"path "{{ mount }}/data/{{ group }}*" {}"#),
            ],
        );
        let err = files.load().unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains(expected), "{message}");
        assert!(
            message.contains("setup.yaml") || message.contains(".hcl"),
            "{message}"
        );
    }

    #[rstest]
    #[tokio::test]
    async fn connection_refused_says_how_to_start_vault() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("http://127.0.0.1:{port}");
        let client = VaultClient::new(&addr)
            .unwrap()
            .with_token(Secret::new("hvs.topsecret"));
        let err = client.health().await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "no Vault answers at {addr}: is it running? (`cargo xtask up` starts one)"
            )),
            "{message}"
        );
        assert!(!message.contains("topsecret"));
        assert!(!format!("{client:?}").contains("topsecret"), "{client:?}");
    }

    /// A fake Vault answering every request with one status and body.
    async fn fake_vault(status: u16, body: Value) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move || {
            let body = body.clone();
            async move { (StatusCode::from_u16(status).unwrap(), axum::Json(body)) }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[rstest]
    #[tokio::test]
    async fn sealed_and_refused_answers_read_as_sentences() {
        let sealed = fake_vault(503, json!({"errors": ["Vault is sealed"]})).await;
        let err = VaultClient::new(&sealed)
            .unwrap()
            .kv2_put("kv", "a/b", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Vault at {sealed} is sealed: unseal it")
        );

        let denied = fake_vault(
            403,
            json!({"errors": ["1 error occurred:\n\t* permission denied\n\n"]}),
        )
        .await;
        let client = VaultClient::new(&denied)
            .unwrap()
            .with_token(Secret::new("s.hidden"));
        let err = client.kv2_get("kv", "a/b").await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        let message = err.to_string();
        assert!(
            message
                .starts_with("Vault answered 403 Forbidden to GET kv/data/a/b: 1 error occurred"),
            "{message}"
        );
        assert!(message.contains("permission denied"));
        assert!(!message.contains("s.hidden"));
        // `request` hands back any status for tests to assert on.
        let (status, body) = client
            .request(Method::GET, "/v1/kv/data/x", None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body["errors"].is_array());
    }

    #[rstest]
    fn ca_files_that_cannot_be_used_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.pem");
        let client = || VaultClient::new("https://127.0.0.1:8200").unwrap();
        let err = format!("{:#}", client().with_ca_cert_file(&missing).unwrap_err());
        assert!(
            err.starts_with(&format!(
                "cannot read the CA certificate file {}",
                missing.display()
            )),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(
            &empty,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = format!("{:#}", client().with_ca_cert_file(&empty).unwrap_err());
        assert!(
            err.contains(&format!(
                "the CA certificate file {} holds no certificate",
                empty.display()
            )),
            "{err}"
        );
        // VAULT_CACERT: unset or empty changes nothing; a bad file says which variable.
        assert_eq!(client().with_ca_from_var(None).unwrap().ca_file, None);
        assert_eq!(
            client().with_ca_from_var(Some("".into())).unwrap().ca_file,
            None
        );
        let err = format!(
            "{:#}",
            client()
                .with_ca_from_var(Some(missing.clone().into()))
                .unwrap_err()
        );
        assert!(
            err.starts_with(
                "VAULT_CACERT is set but cannot be used: cannot read the CA certificate file"
            ),
            "{err}"
        );
        assert!(VaultClient::new("ftp://127.0.0.1").is_err());
    }

    /// The pinned bao, resolved as the harness does. Missing is a failure,
    /// not a skip (as in crates/manifests' tests): `cargo xtask test`
    /// installs the tools first, and a check that silently does not run
    /// proves nothing.
    pub(crate) fn bao() -> PathBuf {
        let tools = crate::tools::Tools::load_default().unwrap_or_else(|err| panic!("{err:#}"));
        match tools.resolve("bao") {
            Ok(tool) => tool.path,
            Err(err) => panic!(
                "this test needs the pinned bao and cannot find it: {err}. `cargo xtask tools` installs it."
            ),
        }
    }

    #[rstest]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_to_a_dev_tls_server_with_its_ca_and_a_clear_error_without() {
        let dir = tempfile::tempdir().unwrap();
        let run = crate::run::RunDir::create_in(dir.path()).unwrap();
        let mut supervisor = crate::process::Supervisor::new(&run);
        let vault = DevTlsVault::start(&mut supervisor, &run, &bao(), "bao")
            .await
            .unwrap();
        assert!(
            vault.addr.starts_with("https://127.0.0.1:"),
            "{}",
            vault.addr
        );
        let health = vault.root.health().await.unwrap();
        assert!(!health.sealed && health.initialized, "{health:?}");
        vault.root.enable_kv2("tls-kv").await.unwrap();
        vault
            .root
            .kv2_put("tls-kv", "a/b", &json!({"field": "value"}))
            .await
            .unwrap();
        assert_eq!(
            vault.root.kv2_get("tls-kv", "a/b").await.unwrap(),
            Some(json!({"field": "value"}))
        );
        let token = vault.root.token().unwrap().expose().to_owned();

        // No CA given (and `new` never reads VAULT_CACERT): the system's
        // store does not know bao's generated CA.
        let untrusting = VaultClient::new(&vault.addr)
            .unwrap()
            .with_token(Secret::new(token.clone()));
        let err = untrusting.kv2_get("tls-kv", "a/b").await.unwrap_err();
        assert!(matches!(err, VaultError::Certificate { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "Vault at {}: certificate verify failed against the system's trust store, set VAULT_CACERT to the CA that signed Vault's certificate (invalid peer certificate: ",
                vault.addr
            )),
            "{message}"
        );
        assert!(!message.contains(&token));

        // The wrong CA (the server's own leaf certificate is no issuer).
        let wrong = vault.ca_file.with_file_name("vault-cert.pem");
        let err = VaultClient::new(&vault.addr)
            .unwrap()
            .with_ca_cert_file(&wrong)
            .unwrap()
            .health()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "Vault at {}: certificate verify failed against the CA in {}, set VAULT_CACERT",
                vault.addr,
                wrong.display()
            )),
            "{err}"
        );

        // Plain HTTP to the TLS listener is no certificate problem.
        let plain = vault.addr.replace("https://", "http://");
        let (status, _) = VaultClient::new(&plain)
            .unwrap()
            .request(Method::GET, "sys/health", None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        supervisor.stop_all();
    }

    #[rstest]
    fn secrets_do_not_debug_print() {
        let id = NewSecretId {
            secret_id: Secret::new("abc-secret"),
            accessor: "acc".into(),
        };
        assert!(!format!("{id:?}").contains("abc-secret"));
    }
}
