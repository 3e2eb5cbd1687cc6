//! Vault over its HTTP API: one client for the harness's setup and the
//! tests. It knows nothing of `env.json`: callers give it an address and a
//! token.
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

use crate::base::wait::{Probe, wait_until};

/// A secret string (token, secret-id): keygate's (on `secrecy`, zeroed
/// when dropped; `Debug` never shows it and there is no `Display`), so the
/// harness and keygate have one such type.
pub use keygate::config::Secret;

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
    Wait(#[from] crate::base::wait::Timeout),
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

    /// A client with a root token, e.g. a running environment's
    /// (`env.json`'s `vault_addr` and the token of its 0600 file). Trusts
    /// `VAULT_CACERT` like [`Self::from_env_addr`].
    pub fn root(addr: &str, token: Secret) -> Result<Self> {
        Ok(Self::from_env_addr(addr)?.with_token(token))
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
            Err(err) => match err.downcast::<crate::base::wait::Timeout>() {
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

    /// A new token with `policies` only (no default policy), renewable, for
    /// `ttl`; a child of this client's token. Never print it.
    pub async fn token_create(
        &self,
        policies: &[String],
        ttl: Duration,
    ) -> Result<Secret, VaultError> {
        let path = "auth/token/create";
        let body = serde_json::json!({
            "policies": policies,
            "no_default_policy": true,
            "ttl": format!("{}s", ttl.as_secs()),
            "renewable": true,
        });
        let reply = self.call(Method::POST, path, Some(&body)).await?;
        Ok(Secret::new(Self::string_field(
            Method::POST,
            path,
            &reply,
            "/auth/client_token",
        )?))
    }

    /// A new secret_id of AppRole `role`, valid as long as the role says
    /// (keyrig's roles: until destroyed).
    pub async fn approle_new_secret_id(&self, role: &str) -> Result<NewSecretId, VaultError> {
        self.new_secret_id(role, None).await
    }

    /// A new secret_id of AppRole `role` that Vault expires after `ttl`:
    /// for a Vault that outlives the run (someone else's).
    pub async fn approle_new_secret_id_expiring(
        &self,
        role: &str,
        ttl: Duration,
    ) -> Result<NewSecretId, VaultError> {
        self.new_secret_id(role, Some(ttl)).await
    }

    async fn new_secret_id(
        &self,
        role: &str,
        ttl: Option<Duration>,
    ) -> Result<NewSecretId, VaultError> {
        let path = format!("auth/approle/role/{role}/secret-id");
        let request = ttl.map(|ttl| json!({"ttl": format!("{}s", ttl.as_secs())}));
        let body = self.call(Method::POST, &path, request.as_ref()).await?;
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

pub use keyrig_scenario::setup::{Policy, Role};

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
    #[rstest]
    fn secrets_do_not_debug_print() {
        let id = NewSecretId {
            secret_id: Secret::new("abc-secret"),
            accessor: "acc".into(),
        };
        assert!(!format!("{id:?}").contains("abc-secret"));
    }
}
