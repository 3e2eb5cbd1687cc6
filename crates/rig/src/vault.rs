//! Vault over its HTTP API: a client for setup and tests, and `VaultSetup`,
//! which applies `scenarios/vault/setup.yaml`.
//!
//! The client speaks HTTP directly (no `bao` CLI) so tests can assert exact
//! status codes through [`VaultClient::request`], and so no token ever sits
//! on a command line.

use std::fmt;
use std::path::{Path, PathBuf};
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

/// A Vault HTTP client, with or without a token.
#[derive(Clone)]
pub struct VaultClient {
    addr: String,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
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
        let parsed = reqwest::Url::parse(addr).with_context(|| {
            format!("{addr:?} is not a Vault address like http://127.0.0.1:8200")
        })?;
        let loopback = matches!(
            parsed.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        );
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if loopback {
            // A proxy from the environment cannot reach this machine's loopback.
            builder = builder.no_proxy();
        }
        Ok(Self {
            addr: addr.trim_end_matches('/').to_owned(),
            token: None,
            http: builder.build()?,
        })
    }

    /// The same server with this token.
    pub fn with_token(&self, token: Secret) -> Self {
        Self {
            token: Some(token),
            ..self.clone()
        }
    }

    /// The root client of a running environment (token read from its 0600 file).
    pub fn root(env: &crate::env::Environment) -> Result<Self> {
        Ok(Self::new(&env.vault_addr)?.with_token(Secret::new(env.root_token()?)))
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
        let mut request = self.http.request(method, &url).headers(headers);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| VaultError::Unreachable {
                addr: self.addr.clone(),
                reason: crate::process::describe_request_error(&err),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| VaultError::Unreachable {
                addr: self.addr.clone(),
                reason: crate::process::describe_request_error(&err),
            })?;
        // Vault answers JSON; anything else (a proxy's HTML page) is kept as a string.
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
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
                    Some(group) => template
                        .render(minijinja::context! { mount => &raw.kv_mount, group => group }),
                    None => template.render(minijinja::context! { mount => &raw.kv_mount }),
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

        Ok(Self {
            file: file.to_owned(),
            kv_mount: raw.kv_mount,
            keygate_role: raw.keygate_role,
            policies,
            roles,
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
                "keygate-references"
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
        assert_eq!(roles.len(), 5);
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
    fn secrets_do_not_debug_print() {
        let id = NewSecretId {
            secret_id: Secret::new("abc-secret"),
            accessor: "acc".into(),
        };
        assert!(!format!("{id:?}").contains("abc-secret"));
    }
}
