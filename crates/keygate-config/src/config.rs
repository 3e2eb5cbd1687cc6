//! The YAML config file. Parsing happens in two steps: serde reads a "raw"
//! shape where every required field is optional, then `validate` turns it
//! into [`Config`]. The split exists so a missing field produces a sentence
//! that names the field and the fix, instead of serde's bare "missing field".

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::limits::{Limits, RawLimits};

pub const DEFAULT_KV_MOUNT: &str = "api-portal-keys";
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_POSITIVE_TTL: Duration = Duration::from_secs(5);
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// How long a found record keeps being served after its positive TTL while
/// Vault cannot be read (outage, seal): long enough to ride out a Vault
/// restart, short enough that a revocation made meanwhile lands soon after.
pub const DEFAULT_RESURRECT_TTL: Duration = Duration::from_secs(30);

/// A problem with the config file or a file it points to. Displays as
/// `<file>: <sentence>`, the sentence naming the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: impl fmt::Display, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The config file as given on the command line; errors name it so.
    pub file: PathBuf,
    pub listen: Listen,
    pub vault: VaultConfig,
    /// OpenAPI documents, resolved against the config file's directory.
    pub apis: Vec<ApiFile>,
    pub cache: CacheConfig,
    /// A file holding this gateway's group setting (delivered with its
    /// credentials, e.g. the `gateway-group` key of its Secret); `/readyz`
    /// reports it, re-read on every call so a rotation shows.
    pub gateway_group_file: Option<PathBuf>,
    /// Where key records come from (`keys:`); Vault unless set.
    pub keys: KeysConfig,
    /// `upstream_headers:` name -> value or secret reference, in name order.
    pub upstream_headers: Vec<UpstreamHeader>,
    /// `limits:`, defaults filled in.
    pub limits: Limits,
    /// `invalidation:`: where Vault's socket audit device connects; `None`:
    /// no audit stream, revocation lands with the positive TTL.
    pub invalidation: Option<InvalidationConfig>,
}

/// Lines buffered between the audit socket and the parser before keygate
/// drops them (and marks the cache stale) rather than slow Vault down.
pub const DEFAULT_INVALIDATION_QUEUE: usize = 4096;
/// An audit connection nothing arrived on this long is closed: Vault
/// reconnects with its next entry (and keygate's own reads and token
/// lookups are entries), a connection left open by anyone else frees its
/// place.
pub const DEFAULT_INVALIDATION_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// `invalidation:`, see keygate's `invalidation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationConfig {
    pub listen: AuditListen,
    /// `invalidation.queue`: lines buffered for the parser.
    pub queue: usize,
    /// `invalidation.idle_timeout`: a connection with nothing read this
    /// long is closed.
    pub idle_timeout: Duration,
    /// `invalidation.allow_non_loopback`: a TCP `listen` address other than
    /// loopback was asked for explicitly (keygate warns at start).
    pub allow_non_loopback: bool,
}

impl InvalidationConfig {
    /// A TCP listener other than on loopback: allowed only with
    /// `invalidation.allow_non_loopback`, and worth a warning.
    pub fn non_loopback(&self) -> bool {
        matches!(&self.listen, AuditListen::Tcp(addr) if !addr.ip().is_loopback())
    }
}

/// `invalidation.listen`: `127.0.0.1:9003` or `unix:/path/to/socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for AuditListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditListen::Tcp(addr) => write!(f, "{addr}"),
            AuditListen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One `upstream_headers` entry: added to every allowed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHeader {
    Plain {
        name: String,
        value: String,
    },
    Ref {
        name: String,
        text: String,
        reference: crate::reference::Reference,
        mount: String,
        policy: crate::reference::Policy,
    },
}

/// Kong's defaults: values never re-read unless `ttl` is set; misses
/// remembered 60 s; the last value kept for about three years if refreshing fails.
pub const DEFAULT_REF_TTL: Duration = Duration::ZERO;
pub const DEFAULT_REF_NEG_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_REF_RESURRECT_TTL: Duration = Duration::from_secs(3 * 365 * 24 * 3600);

pub const DEFAULT_KEYS_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// `keys:`: validate against Vault directly (default) or against keys files
/// rendered by a Vault Agent (Spring Cloud Gateway's way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysConfig {
    Vault,
    File {
        /// (groupId, `keys.files.<groupId>`, path), sorted by group.
        files: Vec<(String, String, PathBuf)>,
        poll_interval: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8200` or
    /// `https://vault.example.com:8200`.
    pub address: String,
    /// `vault.ca_cert_file`: the PEM CA bundle trusted for an https address
    /// instead of the system's trust store (resolved against the config
    /// file's directory).
    pub ca_cert_file: Option<PathBuf>,
    /// `vault.allow_plain_http`: plain HTTP to a non-loopback Vault was
    /// asked for explicitly (keygate warns at start).
    pub allow_plain_http: bool,
    /// KV v2 mount without surrounding slashes.
    pub kv_mount: String,
    pub timeout: Duration,
    pub auth: Auth,
}

impl VaultConfig {
    /// Plain HTTP to a host other than this machine's loopback: allowed only
    /// with `vault.allow_plain_http`, and worth a warning.
    pub fn plain_http_to_non_loopback(&self) -> bool {
        url::Url::parse(&self.address).is_ok_and(|url| url.scheme() == "http" && !is_loopback(&url))
    }
}

/// 127.0.0.0/8, ::1 or `localhost`: traffic that never leaves the machine.
pub fn is_loopback(url: &url::Url) -> bool {
    // The URL parser writes IPv6 hosts in brackets and lowercases names.
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[derive(Debug, Clone)]
pub enum Auth {
    AppRole {
        mount: String,
        role_id_file: SecretFile,
        secret_id_file: SecretFile,
    },
    TokenFile(SecretFile),
}

/// One entry of `apis`: where it was written in the config, and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFile {
    /// `apis[<i>]`, for messages.
    pub field: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    /// After `positive_ttl`, a found record is still served for this long if
    /// Vault cannot be read; 0 turns resurrection off (503 at once).
    pub resurrect_ttl: Duration,
}

/// A file holding a secret (token, role-id, secret-id). Only the path lives
/// in the config; the content is read when needed and wrapped in [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// Field path, e.g. `vault.auth.approle.secret_id_file`.
    pub field: &'static str,
    pub path: PathBuf,
}

/// Why a secret file could not be used. Never includes the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFileError {
    #[error(
        "{field} points to {path}, which cannot be read ({reason}): create the file or fix the path"
    )]
    Unreadable {
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error("{field} points to {path}, which is empty: write the secret into it")]
    Empty { field: &'static str, path: String },
    /// A line break or another control character inside: Vault's answer to
    /// such a token or secret-id was taken for an outage, forever.
    #[error(
        "{field} points to {path}, whose content is not a single line: \
         write only the secret into it (a trailing newline is fine)"
    )]
    NotOneLine { field: &'static str, path: String },
    #[error("{field} points to {path}, which is not UTF-8 text: save it as UTF-8")]
    NotUtf8 { field: &'static str, path: String },
}

impl SecretFile {
    /// Reads and trims the file. Called at startup and again on each login,
    /// so a rotated secret-id is picked up without a restart.
    pub fn read(&self) -> Result<Secret, SecretFileError> {
        let text = std::fs::read_to_string(&self.path).map_err(|err| self.unreadable(&err))?;
        self.secret_of(&text)
    }

    /// This file's content as a secret: without a byte order mark and the
    /// whitespace around it (a trailing newline), not empty, and one line
    /// without control characters (a token, role-id or secret-id is one).
    pub fn secret_of(&self, text: &str) -> Result<Secret, SecretFileError> {
        let trimmed = without_bom(text).trim();
        let path = || self.path.display().to_string();
        if trimmed.is_empty() {
            return Err(SecretFileError::Empty {
                field: self.field,
                path: path(),
            });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(SecretFileError::NotOneLine {
                field: self.field,
                path: path(),
            });
        }
        Ok(Secret::new(trimmed))
    }

    /// The error naming this file's field and path, not its content.
    pub fn unreadable(&self, err: &std::io::Error) -> SecretFileError {
        let path = self.path.display().to_string();
        if is_not_utf8(err) {
            return SecretFileError::NotUtf8 {
                field: self.field,
                path,
            };
        }
        SecretFileError::Unreadable {
            field: self.field,
            path,
            reason: err.to_string(),
        }
    }
}

/// `read_to_string`'s error for a file that is not UTF-8 (as an editor on
/// another locale may save it): worth its own message, not "check the path".
pub fn is_not_utf8(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::InvalidData
}

/// `text` without a leading UTF-8 byte order mark, which some editors
/// (Notepad, PowerShell's `Out-File`) write: serde_yaml would read it as
/// content before the first key ("more than one document").
pub fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Whether `value` can be an HTTP header value: no line break, NUL or other
/// control character but a tab (`http::HeaderValue`'s rule, which Envoy's
/// ext_authz and forward-auth answers both need).
pub fn is_header_value(value: &str) -> bool {
    http::HeaderValue::from_str(value).is_ok()
}

/// A secret string, on `secrecy`: zeroed when dropped; `Debug` hides it,
/// and there is no `Display`, so it cannot end up in a log line or an error
/// message by accident.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

// Equality for tests of parsed configs; nothing compares secrets on a
// request path (keys are verified in constant time in `apikey`).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

// ---- raw, as written in YAML ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<RawListen>,
    vault: Option<RawVault>,
    apis: Option<Vec<String>>,
    #[serde(default)]
    cache: RawCache,
    gateway_group_file: Option<String>,
    keys: Option<RawKeys>,
    vaults: Option<std::collections::BTreeMap<String, RawRefVault>>,
    upstream_headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    limits: RawLimits,
    invalidation: Option<RawInvalidation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInvalidation {
    listen: Option<String>,
    queue: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    allow_non_loopback: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefVault {
    kv_mount: Option<String>,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    neg_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    resurrect_ttl: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    source: Option<String>,
    files: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, with = "humantime_serde")]
    poll_interval: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    grpc: Option<String>,
    http: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    address: Option<String>,
    ca_cert_file: Option<String>,
    allow_plain_http: Option<bool>,
    kv_mount: Option<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    auth: Option<RawAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    approle: Option<RawAppRole>,
    token_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppRole {
    mount: Option<String>,
    role_id_file: Option<String>,
    secret_id_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default, with = "humantime_serde")]
    positive_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    negative_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    resurrect_ttl: Option<Duration>,
}

impl Config {
    /// Reads and validates the config file, including that every secret file
    /// is readable and non-empty. OpenAPI documents are loaded by `routes`;
    /// `vault.ca_cert_file` is parsed as certificates by keygate's
    /// `config::load` (TLS is keygate's, not this crate's).
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|err| {
            let message = if is_not_utf8(&err) {
                "the config file is not UTF-8 text: save it as UTF-8".to_owned()
            } else {
                format!("cannot read the config file ({err}): check the path given to --config")
            };
            ConfigError::new(file.display(), message)
        })?;
        let config = Self::parse(file, &text)?;
        for secret in config.secret_files() {
            secret
                .read()
                .map_err(|err| ConfigError::new(file.display(), err.to_string()))?;
        }
        Ok(config)
    }

    /// Parses and validates `text` as the content of `file`, without touching
    /// the file system.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let name = file.display();
        let text = without_bom(text);
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|err| ConfigError::new(&name, yaml_message(&err)))?
        };
        let base = file.parent().unwrap_or(Path::new("")).to_path_buf();
        validate(raw, &base)
            .map_err(|message| ConfigError::new(&name, message))
            .map(|mut config| {
                config.file = file.to_path_buf();
                config
            })
    }

    pub fn secret_files(&self) -> Vec<&SecretFile> {
        match &self.vault.auth {
            Auth::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => vec![role_id_file, secret_id_file],
            Auth::TokenFile(token) => vec![token],
        }
    }
}

/// `line L, column C: <message>` for a serde_yaml error. serde_yaml appends
/// ` at line L column C` to its own message; we move the position to the
/// front, where editors and people look for it.
pub(crate) fn yaml_message(err: &serde_yaml::Error) -> String {
    let text = err.to_string();
    match err.location() {
        Some(loc) => {
            let mark = format!(" at line {} column {}", loc.line(), loc.column());
            format!(
                "line {}, column {}: {}",
                loc.line(),
                loc.column(),
                text.replacen(&mark, "", 1)
            )
        }
        None => text,
    }
}

fn validate(raw: RawConfig, base: &Path) -> Result<Config, String> {
    let listen = raw.listen.ok_or(
        "listen is missing: add a `listen:` section with `grpc: 127.0.0.1:9001` and `http: 127.0.0.1:9002`",
    )?;
    let grpc = socket_addr("listen.grpc", listen.grpc, "127.0.0.1:9001")?;
    let http = socket_addr("listen.http", listen.http, "127.0.0.1:9002")?;
    if grpc == http {
        return Err(format!(
            "listen.grpc and listen.http are both {grpc}: give them different ports"
        ));
    }

    let vault = raw
        .vault
        .ok_or("vault is missing: add a `vault:` section with at least `address:` and `auth:`")?;
    let allow_plain_http = vault.allow_plain_http.unwrap_or(false);
    let address = vault_address(vault.address, allow_plain_http)?;
    let ca_cert_file = match vault.ca_cert_file {
        Some(path) if path.trim().is_empty() => {
            return Err("vault.ca_cert_file is empty: give the path of the PEM file of the CA that signed Vault's certificate, or remove it".into());
        }
        Some(_) if address.starts_with("http://") => {
            return Err(format!(
                "vault.ca_cert_file is set but vault.address `{address}` is plain http: use an https:// address, or remove ca_cert_file"
            ));
        }
        Some(path) => Some(base.join(path.trim())),
        None => None,
    };
    let kv_mount = match vault.kv_mount {
        None => DEFAULT_KV_MOUNT.to_owned(),
        Some(mount) => mount_path("vault.kv_mount", &mount)?,
    };
    let timeout = vault.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err("vault.timeout is 0: set a positive duration such as 2s".into());
    }
    let auth = auth(vault.auth, base)?;

    let apis = raw.apis.ok_or(
        "apis is missing: list at least one OpenAPI document, e.g. `apis: [apis/billing-api.yaml]`",
    )?;
    if apis.is_empty() {
        return Err("apis is empty: list at least one OpenAPI document".into());
    }
    let apis = apis
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let field = format!("apis[{i}]");
            if path.trim().is_empty() {
                return Err(format!(
                    "{field} is empty: give the path of an OpenAPI document"
                ));
            }
            Ok(ApiFile {
                path: base.join(path),
                field,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let cache = CacheConfig {
        positive_ttl: raw.cache.positive_ttl.unwrap_or(DEFAULT_POSITIVE_TTL),
        negative_ttl: raw.cache.negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL),
        resurrect_ttl: raw.cache.resurrect_ttl.unwrap_or(DEFAULT_RESURRECT_TTL),
    };

    let gateway_group_file = match raw.gateway_group_file {
        Some(path) if path.trim().is_empty() => {
            return Err("gateway_group_file is empty: give the path of the file holding the gateway group, or remove it".into());
        }
        Some(path) => Some(base.join(path)),
        None => None,
    };
    let keys = keys(raw.keys, base)?;
    let upstream_headers = upstream_headers(raw.vaults, raw.upstream_headers)?;
    let invalidation = match raw.invalidation {
        None => None,
        Some(raw) => Some(invalidation(raw, base, grpc, http)?),
    };
    let limits = raw.limits.resolve()?;

    Ok(Config {
        file: PathBuf::new(),
        gateway_group_file,
        listen: Listen { grpc, http },
        vault: VaultConfig {
            address,
            ca_cert_file,
            allow_plain_http,
            kv_mount,
            timeout,
            auth,
        },
        apis,
        cache,
        keys,
        upstream_headers,
        invalidation,
        limits,
    })
}

fn invalidation(
    raw: RawInvalidation,
    base: &Path,
    grpc: SocketAddr,
    http: SocketAddr,
) -> Result<InvalidationConfig, String> {
    const EXAMPLE: &str = "127.0.0.1:9003 (or unix:/run/keygate/audit.sock)";
    let listen = raw.listen.ok_or_else(|| {
        format!("invalidation.listen is missing: set the address Vault's socket audit device connects to, e.g. {EXAMPLE}, or remove `invalidation:`")
    })?;
    let listen = match listen.trim().strip_prefix("unix:") {
        Some(path) if path.trim().is_empty() => {
            return Err(format!(
                "invalidation.listen is `{listen}`, which names no socket file: write it like {EXAMPLE}"
            ));
        }
        Some(path) => AuditListen::Unix(base.join(path.trim())),
        None => {
            let addr = socket_addr("invalidation.listen", Some(listen), EXAMPLE)?;
            if addr == grpc || addr == http {
                return Err(format!(
                    "invalidation.listen is {addr}, which listen.grpc or listen.http uses already: give it a port of its own"
                ));
            }
            AuditListen::Tcp(addr)
        }
    };
    let allow_non_loopback = raw.allow_non_loopback.unwrap_or(false);
    if let AuditListen::Tcp(addr) = &listen
        && !addr.ip().is_loopback()
        && !allow_non_loopback
    {
        // Connections are not authenticated: whoever reaches the port
        // speaks for Vault's audit device.
        return Err(format!(
            "invalidation.listen is {addr}, which is not a loopback address: anyone who can \
             reach it can connect in Vault's place (the audit stream is not authenticated) and \
             make keygate read every key from Vault again; listen on 127.0.0.1 or a unix: \
             socket beside Vault, or set `invalidation.allow_non_loopback: true` if only Vault \
             can reach that address (a private network, a firewall)"
        ));
    }
    let queue = raw.queue.unwrap_or(DEFAULT_INVALIDATION_QUEUE);
    if queue == 0 {
        return Err("invalidation.queue is 0: set the number of audit lines to buffer, e.g. 4096 (the default)".into());
    }
    let idle_timeout = raw
        .idle_timeout
        .unwrap_or(DEFAULT_INVALIDATION_IDLE_TIMEOUT);
    if idle_timeout.is_zero() {
        return Err("invalidation.idle_timeout is 0s, which would close every audit connection at once: give a duration, e.g. 5m (the default)".into());
    }
    Ok(InvalidationConfig {
        listen,
        queue,
        idle_timeout,
        allow_non_loopback,
    })
}

fn upstream_headers(
    vaults: Option<std::collections::BTreeMap<String, RawRefVault>>,
    headers: Option<std::collections::BTreeMap<String, String>>,
) -> Result<Vec<UpstreamHeader>, String> {
    use crate::reference::{Policy, Reference};
    let vaults = vaults.unwrap_or_default();
    let mut out = Vec::new();
    for (name, value) in headers.unwrap_or_default() {
        let field = format!("upstream_headers.{name}");
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(format!(
                "{field}: `{name}` is not a header name: use lowercase letters, digits and `-`"
            ));
        }
        if !crate::reference::is_reference(&value) {
            // Accepted, it made every allowed forward-auth answer go
            // without the header and Envoy answer 503 "invalid header
            // value" to every allowed check. Not shown: it may be a secret.
            if !is_header_value(&value) {
                return Err(format!(
                    "{field}: its value holds a line break or another control character, \
                     which an HTTP header value cannot: write it on one line (a YAML block \
                     scalar `|` keeps the final line break; use `|-` or a quoted string)"
                ));
            }
            out.push(UpstreamHeader::Plain { name, value });
            continue;
        }
        let reference = Reference::parse(&value).map_err(|err| format!("{field}: {err}"))?;
        let (mount, policy) = match &reference {
            Reference::Env { .. } => (
                String::new(),
                Policy {
                    ttl: DEFAULT_REF_TTL,
                    neg_ttl: DEFAULT_REF_NEG_TTL,
                    resurrect_ttl: DEFAULT_REF_RESURRECT_TTL,
                },
            ),
            Reference::Vault { vault, .. } => {
                let Some(named) = vaults.get(vault) else {
                    return Err(format!(
                        "{field} refers to vault `{vault}`, which `vaults:` does not define: add `vaults: {{{vault}: {{kv_mount: secret, ttl: 1m}}}}`"
                    ));
                };
                let mount = mount_path(
                    &format!("vaults.{vault}.kv_mount"),
                    named.kv_mount.as_deref().unwrap_or("secret"),
                )?;
                (
                    mount,
                    Policy {
                        ttl: named.ttl.unwrap_or(DEFAULT_REF_TTL),
                        neg_ttl: named.neg_ttl.unwrap_or(DEFAULT_REF_NEG_TTL),
                        resurrect_ttl: named.resurrect_ttl.unwrap_or(DEFAULT_REF_RESURRECT_TTL),
                    },
                )
            }
        };
        out.push(UpstreamHeader::Ref {
            name,
            text: value.trim().to_owned(),
            reference,
            mount,
            policy,
        });
    }
    Ok(out)
}

fn keys(raw: Option<RawKeys>, base: &Path) -> Result<KeysConfig, String> {
    let Some(raw) = raw else {
        return Ok(KeysConfig::Vault);
    };
    let source = raw.source.as_deref().map(str::trim).unwrap_or("vault");
    match source {
        "vault" => {
            if raw.files.is_some() || raw.poll_interval.is_some() {
                return Err("keys.files and keys.poll_interval apply only to `source: file`, but keys.source is vault: \
                     set `source: file` or remove them"
                    .into());
            }
            Ok(KeysConfig::Vault)
        }
        "file" => {
            let files = raw.files.unwrap_or_default();
            if files.is_empty() {
                return Err("keys.source is file but keys.files is missing or empty: \
                     map each groupId to the keys file the Vault Agent renders, e.g. `files: {billing-api: keys/billing-api}`"
                    .into());
            }
            let files = files
                .into_iter()
                .map(|(group, path)| {
                    let field = format!("keys.files.{group}");
                    if path.trim().is_empty() {
                        return Err(format!(
                            "{field} is empty: give the path of the group's keys file"
                        ));
                    }
                    Ok((group, field, base.join(path.trim())))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let poll_interval = raw.poll_interval.unwrap_or(DEFAULT_KEYS_POLL_INTERVAL);
            if poll_interval.is_zero() {
                return Err(
                    "keys.poll_interval is 0: set a positive duration such as 500ms".into(),
                );
            }
            Ok(KeysConfig::File {
                files,
                poll_interval,
            })
        }
        other => Err(format!(
            "keys.source is `{other}`: write `vault` (read each key from Vault) or `file` (keys files rendered by a Vault Agent)"
        )),
    }
}

fn socket_addr(field: &str, value: Option<String>, example: &str) -> Result<SocketAddr, String> {
    let value = value.ok_or_else(|| {
        format!("{field} is missing: set it to an address and port, e.g. {example}")
    })?;
    value.trim().parse().map_err(|_| {
        format!(
            "{field} is `{value}`, which is not an IP address and port: write it like {example}"
        )
    })
}

fn vault_address(value: Option<String>, allow_plain_http: bool) -> Result<String, String> {
    const EXAMPLE: &str = "http://127.0.0.1:8200";
    let value = value.ok_or_else(|| {
        format!("vault.address is missing: set it to the Vault URL, e.g. {EXAMPLE}")
    })?;
    // Userinfo (`user:password@`): keygate logs the address at start, and
    // its Vault client never sends it. Refused before any message below can
    // echo the value.
    if value.contains('@') {
        return Err(format!(
            "vault.address has a user name or password in it (it holds an `@`, as in \
             `user:password@host`): remove it, and change that password if it is a real one; \
             keygate authenticates to Vault with vault.auth only. Write the address like {EXAMPLE}"
        ));
    }
    let url = url::Url::parse(value.trim()).map_err(|err| {
        format!("vault.address is `{value}`, which is not a URL ({err}): write it like {EXAMPLE}")
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "vault.address is `{value}`, which has no host: write it like {EXAMPLE}"
        ));
    }
    match url.scheme() {
        "https" => {}
        // Plain HTTP carries keygate's Vault token and the key hashes in the
        // clear: fine on this machine's loopback, elsewhere only on request.
        "http" if is_loopback(&url) || allow_plain_http => {}
        "http" => {
            return Err(format!(
                "vault.address is `{value}`: plain HTTP to a host other than loopback would send keygate's Vault token unencrypted; \
                 use https://, or set `vault.allow_plain_http: true` if this is a trusted local link such as a Vault Agent sidecar"
            ));
        }
        other => {
            return Err(format!(
                "vault.address is `{value}`, whose scheme `{other}` is not http or https: write it like {EXAMPLE}"
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        // Not shown: a query may carry a token.
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        return Err(format!(
            "vault.address `{shown}` has a query or fragment (`?...` or `#...`): give only scheme, host, port (and path prefix)"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A Vault mount path: slash-separated segments of `[A-Za-z0-9._-]`. The
/// value becomes part of request URLs, so anything else is refused.
fn mount_path(field: &str, value: &str) -> Result<String, String> {
    let trimmed = value.trim().trim_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(format!(
            "{field} is `{value}`, which is not a Vault mount path: use letters, digits, `-`, `_`, `.` and `/`"
        ))
    }
}

fn auth(raw: Option<RawAuth>, base: &Path) -> Result<Auth, String> {
    const HOW: &str =
        "set exactly one of `approle:` (with role_id_file and secret_id_file) or `token_file:`";
    let raw = raw.ok_or_else(|| format!("vault.auth is missing: {HOW}"))?;
    match (raw.approle, raw.token_file) {
        (Some(_), Some(_)) => Err(format!(
            "vault.auth sets both approle and token_file: {HOW}"
        )),
        (None, None) => Err(format!(
            "vault.auth sets neither approle nor token_file: {HOW}"
        )),
        (None, Some(token)) => Ok(Auth::TokenFile(secret_file(
            "vault.auth.token_file",
            Some(token),
            base,
        )?)),
        (Some(approle), None) => Ok(Auth::AppRole {
            mount: match approle.mount {
                None => DEFAULT_APPROLE_MOUNT.to_owned(),
                Some(mount) => mount_path("vault.auth.approle.mount", &mount)?,
            },
            role_id_file: secret_file(
                "vault.auth.approle.role_id_file",
                approle.role_id_file,
                base,
            )?,
            secret_id_file: secret_file(
                "vault.auth.approle.secret_id_file",
                approle.secret_id_file,
                base,
            )?,
        }),
    }
}

fn secret_file(
    field: &'static str,
    value: Option<String>,
    base: &Path,
) -> Result<SecretFile, String> {
    match value {
        Some(path) if !path.trim().is_empty() => Ok(SecretFile {
            field,
            path: base.join(path.trim()),
        }),
        _ => Err(format!(
            "{field} is missing: set it to the path of the file holding the secret"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const VALID: &str = "\
listen:
  grpc: 127.0.0.1:9001
  http: 127.0.0.1:9002
vault:
  address: http://127.0.0.1:8200/
  auth:
    approle:
      role_id_file: secrets/role-id
      secret_id_file: secrets/secret-id
apis:
  - apis/billing.yaml
";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("conf/keygate.yaml"), text)
    }

    #[test]
    fn valid_config_gets_defaults_and_resolved_paths() {
        let config = parse(VALID).unwrap();
        assert_eq!(config.listen.grpc, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.vault.address, "http://127.0.0.1:8200");
        assert_eq!(config.vault.kv_mount, DEFAULT_KV_MOUNT);
        assert_eq!(config.vault.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            config.cache,
            CacheConfig {
                positive_ttl: DEFAULT_POSITIVE_TTL,
                negative_ttl: DEFAULT_NEGATIVE_TTL,
                resurrect_ttl: DEFAULT_RESURRECT_TTL,
            }
        );
        assert_eq!(
            config.apis,
            vec![ApiFile {
                field: "apis[0]".into(),
                path: "conf/apis/billing.yaml".into()
            }]
        );
        match &config.vault.auth {
            Auth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                assert_eq!(mount, DEFAULT_APPROLE_MOUNT);
                assert_eq!(role_id_file.path, Path::new("conf/secrets/role-id"));
                assert_eq!(secret_id_file.field, "vault.auth.approle.secret_id_file");
            }
            other => panic!("expected approle, got {other:?}"),
        }
    }

    #[test]
    fn the_invalidation_section_takes_a_tcp_or_unix_listener() {
        assert_eq!(parse(VALID).unwrap().invalidation, None);
        let tcp = parse(&format!("{VALID}invalidation:\n  listen: 127.0.0.1:9003\n")).unwrap();
        assert_eq!(
            tcp.invalidation,
            Some(InvalidationConfig {
                listen: AuditListen::Tcp("127.0.0.1:9003".parse().unwrap()),
                queue: DEFAULT_INVALIDATION_QUEUE,
                idle_timeout: DEFAULT_INVALIDATION_IDLE_TIMEOUT,
                allow_non_loopback: false,
            })
        );
        let unix = parse(&format!(
            "{VALID}invalidation:\n  listen: unix:run/audit.sock\n  queue: 16\n  idle_timeout: 90s\n"
        ))
        .unwrap();
        assert_eq!(
            unix.invalidation,
            Some(InvalidationConfig {
                listen: AuditListen::Unix("conf/run/audit.sock".into()),
                queue: 16,
                idle_timeout: Duration::from_secs(90),
                allow_non_loopback: false,
            })
        );
        for (section, expected) in [
            ("invalidation: {}\n", "invalidation.listen is missing"),
            (
                "invalidation:\n  listen: 127.0.0.1:9002\n",
                "give it a port of its own",
            ),
            (
                "invalidation:\n  listen: here\n",
                "not an IP address and port",
            ),
            ("invalidation:\n  listen: 'unix:'\n", "names no socket file"),
            (
                "invalidation:\n  listen: 127.0.0.1:9003\n  queue: 0\n",
                "invalidation.queue is 0",
            ),
            (
                "invalidation:\n  listen: 127.0.0.1:9003\n  idle_timeout: 0s\n",
                "invalidation.idle_timeout is 0s",
            ),
        ] {
            let err = parse(&format!("{VALID}{section}")).unwrap_err();
            assert!(err.message.contains(expected), "{section}: {err}");
        }
    }

    /// The audit listener is not authenticated: an address other than
    /// loopback is refused, naming the field and the file, unless
    /// `invalidation.allow_non_loopback` says only Vault can reach it.
    #[test]
    fn a_non_loopback_audit_listener_needs_an_explicit_opt_in() {
        for listen in ["0.0.0.0:9003", "10.0.0.7:9003", "[::]:9003"] {
            let err = parse(&format!("{VALID}invalidation:\n  listen: '{listen}'\n")).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("conf/keygate.yaml: invalidation.listen is ")
                    && err.message.contains("not a loopback address")
                    && err
                        .message
                        .contains("set `invalidation.allow_non_loopback: true`"),
                "{listen}: {err}"
            );
            let allowed = parse(&format!(
                "{VALID}invalidation:\n  listen: '{listen}'\n  allow_non_loopback: true\n"
            ))
            .unwrap()
            .invalidation
            .unwrap();
            assert!(
                allowed.allow_non_loopback && allowed.non_loopback(),
                "{listen}"
            );
        }
        for listen in [
            "127.0.0.1:9003",
            "127.0.0.2:9003",
            "'[::1]:9003'",
            "unix:audit.sock",
        ] {
            let config = parse(&format!("{VALID}invalidation:\n  listen: {listen}\n"))
                .unwrap()
                .invalidation
                .unwrap();
            assert!(!config.non_loopback(), "{listen}");
        }
    }

    #[test]
    fn explicit_values_override_defaults() {
        let text = VALID.replace(
            "  auth:\n",
            "  kv_mount: /keys/\n  timeout: 750ms\n  auth:\n",
        ) + "cache:\n  positive_ttl: 1m\n  negative_ttl: 0s\n  resurrect_ttl: 0s\n";
        let config = parse(&text).unwrap();
        assert_eq!(config.vault.kv_mount, "keys");
        assert_eq!(config.vault.timeout, Duration::from_millis(750));
        assert_eq!(config.cache.positive_ttl, Duration::from_secs(60));
        assert_eq!(config.cache.negative_ttl, Duration::ZERO);
        assert_eq!(config.cache.resurrect_ttl, Duration::ZERO);
    }

    #[rstest]
    #[case::no_listen(VALID.replace("listen:\n  grpc: 127.0.0.1:9001\n  http: 127.0.0.1:9002\n", ""), "listen is missing")]
    #[case::no_grpc(VALID.replace("  grpc: 127.0.0.1:9001\n", ""), "listen.grpc is missing")]
    #[case::bad_http(VALID.replace("127.0.0.1:9002", "localhost"), "listen.http is `localhost`")]
    #[case::same_ports(VALID.replace("9002", "9001"), "listen.grpc and listen.http are both")]
    #[case::no_address(VALID.replace("  address: http://127.0.0.1:8200/\n", ""), "vault.address is missing: set it to the Vault URL, e.g. http://127.0.0.1:8200")]
    #[case::plain_http_remote(VALID.replace("http://127.0.0.1", "http://vault.example.com"), "vault.address is `http://vault.example.com:8200/`: plain HTTP to a host other than loopback would send keygate's Vault token unencrypted; use https://, or set `vault.allow_plain_http: true` if this is a trusted local link such as a Vault Agent sidecar")]
    #[case::plain_http_lan_ip(VALID.replace("http://127.0.0.1", "http://10.0.0.7"), "set `vault.allow_plain_http: true`")]
    #[case::other_scheme(VALID.replace("http://127.0.0.1", "ftp://127.0.0.1"), "whose scheme `ftp` is not http or https")]
    #[case::ca_with_plain_http(VALID.replace("  auth:\n", "  ca_cert_file: ca.pem\n  auth:\n"), "vault.ca_cert_file is set but vault.address `http://127.0.0.1:8200` is plain http")]
    #[case::empty_ca(VALID.replace("http://127.0.0.1", "https://127.0.0.1").replace("  auth:\n", "  ca_cert_file: ' '\n  auth:\n"), "vault.ca_cert_file is empty")]
    #[case::allow_plain_http_not_bool(VALID.replace("  auth:\n", "  allow_plain_http: maybe\n  auth:\n"), "vault.allow_plain_http")]
    #[case::bad_address(VALID.replace("http://127.0.0.1:8200/", "127.0.0.1:8200"), "vault.address is `127.0.0.1:8200`")]
    #[case::bad_mount(VALID.replace("  auth:\n", "  kv_mount: a/../b\n  auth:\n"), "vault.kv_mount is `a/../b`")]
    #[case::bad_timeout(VALID.replace("  auth:\n", "  timeout: soon\n  auth:\n"), "vault.timeout")]
    #[case::no_auth(VALID.lines().take(5).collect::<Vec<_>>().join("\n") + "\napis: [a.yaml]\n", "vault.auth is missing")]
    #[case::both_auth(VALID.replace("    approle:\n", "    token_file: t\n    approle:\n"), "vault.auth sets both approle and token_file")]
    #[case::no_secret_id(VALID.replace("      secret_id_file: secrets/secret-id\n", ""), "vault.auth.approle.secret_id_file is missing")]
    #[case::no_apis(VALID.replace("apis:\n  - apis/billing.yaml\n", ""), "apis is missing")]
    #[case::empty_apis(VALID.replace("apis:\n  - apis/billing.yaml\n", "apis: []\n"), "apis is empty")]
    #[case::misspelt(VALID.replace("address:", "adress:"), "line 5, column 3: vault: unknown field `adress`")]
    #[case::misspelt_cache(VALID.to_owned() + "cache:\n  positve_ttl: 1s\n", "cache: unknown field `positve_ttl`")]
    #[case::empty_file(String::new(), "listen is missing")]
    #[case::ref_unknown_vault(VALID.to_owned() + "upstream_headers:\n  x-t: '{vault://nope/a/b}'\n", "upstream_headers.x-t refers to vault `nope`")]
    #[case::ref_malformed(VALID.to_owned() + "upstream_headers:\n  x-t: '{vault://env/a/b}'\n", "upstream_headers.x-t: `{vault://env/a/b}`: an env reference")]
    #[case::ref_bad_header(VALID.to_owned() + "upstream_headers:\n  X T: v\n", "is not a header name")]
    #[case::ref_vault_misspelt(VALID.to_owned() + "vaults:\n  v:\n    tll: 1s\n", "unknown field `tll`")]
    #[case::keys_bad_source(VALID.to_owned() + "keys:\n  source: disk\n", "keys.source is `disk`: write `vault`")]
    #[case::keys_file_without_files(VALID.to_owned() + "keys:\n  source: file\n", "keys.source is file but keys.files is missing")]
    #[case::keys_files_with_vault(VALID.to_owned() + "keys:\n  files: {g: k}\n", "apply only to `source: file`")]
    #[case::keys_misspelt(VALID.to_owned() + "keys:\n  source: file\n  file: {g: k}\n", "keys: unknown field `file`")]
    #[case::malformed_yaml(VALID.replace("    approle:\n", "    approle: [\n"), "line ")]
    fn errors_name_the_file_and_the_field(#[case] text: String, #[case] expected: &str) {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("conf/keygate.yaml: "), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }

    #[rstest]
    #[case::localhost("http://localhost:8200")]
    #[case::localhost_upper("http://LOCALHOST:8200")]
    #[case::loopback_v4("http://127.0.0.1:8200")]
    #[case::loopback_v4_range("http://127.9.8.7:8200")]
    #[case::loopback_v6("http://[::1]:8200")]
    fn plain_http_to_loopback_needs_no_flag(#[case] address: &str) {
        let config = parse(&VALID.replace("http://127.0.0.1:8200/", address)).unwrap();
        assert!(!config.vault.allow_plain_http);
        assert!(!config.vault.plain_http_to_non_loopback());
    }

    #[test]
    fn allow_plain_http_permits_a_remote_vault_and_is_remembered() {
        let text = VALID
            .replace("http://127.0.0.1", "http://vault-agent.internal")
            .replace("  auth:\n", "  allow_plain_http: true\n  auth:\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.vault.address, "http://vault-agent.internal:8200");
        assert!(config.vault.allow_plain_http);
        // keygate warns about this at start.
        assert!(config.vault.plain_http_to_non_loopback());
    }

    #[test]
    fn https_address_takes_a_ca_file_relative_to_the_config() {
        let text = VALID
            .replace("http://127.0.0.1", "https://vault.example.com")
            .replace("  auth:\n", "  ca_cert_file: tls/vault-ca.pem\n  auth:\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.vault.address, "https://vault.example.com:8200");
        assert_eq!(
            config.vault.ca_cert_file.as_deref(),
            Some(Path::new("conf/tls/vault-ca.pem"))
        );
        assert!(!config.vault.plain_http_to_non_loopback());
        let no_ca = parse(&VALID.replace("http://", "https://")).unwrap();
        assert_eq!(no_ca.vault.ca_cert_file, None);
    }

    #[test]
    fn upstream_headers_take_the_named_vaults_ttls() {
        let text = VALID.to_owned()
            + "vaults:\n  kv:\n    kv_mount: secret\n    ttl: 2s\n    neg_ttl: 1s\n    resurrect_ttl: 30s\n\
               upstream_headers:\n  x-a: plain\n  x-b: '{vault://kv/app/upstream/token}'\n  x-c: '{vault://env/my-name}'\n";
        let config = parse(&text).unwrap();
        assert_eq!(config.upstream_headers.len(), 3);
        assert_eq!(
            config.upstream_headers[0],
            UpstreamHeader::Plain {
                name: "x-a".into(),
                value: "plain".into()
            }
        );
        match &config.upstream_headers[1] {
            UpstreamHeader::Ref {
                mount,
                policy,
                reference,
                ..
            } => {
                assert_eq!(mount, "secret");
                assert_eq!(policy.ttl, Duration::from_secs(2));
                assert_eq!(policy.resurrect_ttl, Duration::from_secs(30));
                assert_eq!(
                    reference,
                    &crate::reference::Reference::Vault {
                        vault: "kv".into(),
                        path: "app/upstream".into(),
                        key: "token".into()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        match &config.upstream_headers[2] {
            UpstreamHeader::Ref { policy, .. } => assert_eq!(policy.neg_ttl, DEFAULT_REF_NEG_TTL),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_file_mode_resolves_paths_per_group() {
        let text = VALID.to_owned()
            + "keys:\n  source: file\n  files:\n    billing: keys/billing\n  poll_interval: 250ms\n";
        let config = parse(&text).unwrap();
        assert_eq!(
            config.keys,
            KeysConfig::File {
                files: vec![(
                    "billing".into(),
                    "keys.files.billing".into(),
                    "conf/keys/billing".into()
                )],
                poll_interval: Duration::from_millis(250),
            }
        );
        assert_eq!(parse(VALID).unwrap().keys, KeysConfig::Vault);
    }

    #[test]
    fn malformed_yaml_puts_the_position_first() {
        let err = parse("listen:\n  grpc: [\n  http: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("conf/keygate.yaml: line "), "{err}");
        assert!(!err.contains(" at line "), "{err}");
    }

    #[test]
    fn secret_files_are_checked_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SecretFile {
            field: "vault.auth.token_file",
            path: dir.path().join("token"),
        };
        let err = missing.read().unwrap_err().to_string();
        assert!(err.starts_with("vault.auth.token_file points to "), "{err}");
        assert!(err.contains("token"), "{err}");

        std::fs::write(&missing.path, "  \n").unwrap();
        assert!(matches!(missing.read(), Err(SecretFileError::Empty { .. })));

        std::fs::write(&missing.path, "s.abcdef\n").unwrap();
        let secret = missing.read().unwrap();
        assert_eq!(secret.expose(), "s.abcdef");
        assert!(!format!("{secret:?}").contains("abcdef"));
    }

    /// A user name or password in vault.address is refused at load, and
    /// the message never shows it (keygate logs the address at start, and
    /// its Vault client would not send it anyway).
    #[rstest]
    #[case::user_and_password("http://admin:pw-0c4e@127.0.0.1:8200")]
    #[case::user_only("https://pw-0c4e@vault.example.com")]
    #[case::no_scheme("admin:pw-0c4e@127.0.0.1:8200")]
    #[case::other_scheme("ftp://admin:pw-0c4e@127.0.0.1:8200")]
    fn credentials_in_the_vault_address_are_refused_unshown(#[case] address: &str) {
        let err = parse(&VALID.replace("http://127.0.0.1:8200/", address))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vault.address has a user name or password in it"),
            "{err}"
        );
        assert!(!err.contains("pw-0c4e"), "{err}");
    }

    /// A query can carry a token as well: the message leaves it out.
    #[test]
    fn a_query_in_the_vault_address_is_refused_unshown() {
        let text = VALID.replace("8200/", "8200/?token=tok-0c4e");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("has a query or fragment"), "{err}");
        assert!(!err.contains("tok-0c4e"), "{err}");
    }

    /// A plain upstream header value that cannot be an HTTP header value is
    /// refused at load, naming the field and not the value: accepted, every
    /// allowed forward-auth answer went without it and Envoy answered 503
    /// "invalid header value" to every allowed gRPC check.
    #[rstest]
    #[case::line_feed("x-t: \"sec-0c4e\\nx-evil: 1\"\n")]
    #[case::carriage_return("x-t: \"sec-0c4e\\r\"\n")]
    #[case::nul("x-t: \"sec-0c4e\\0\"\n")]
    #[case::escape("x-t: \"sec-0c4e\\e\"\n")]
    #[case::delete("x-t: \"sec-0c4e\\x7f\"\n")]
    fn upstream_header_values_must_be_header_values(#[case] entry: &str) {
        let err = parse(&format!("{VALID}upstream_headers:\n  {entry}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "upstream_headers.x-t: its value holds a line break or another control character"
            ),
            "{err}"
        );
        assert!(!err.contains("sec-0c4e"), "{err}");
        let fine = parse(&format!("{VALID}upstream_headers:\n  x-t: \"a\\tb c\"\n")).unwrap();
        assert_eq!(fine.upstream_headers.len(), 1);
    }

    /// A token, role-id or secret-id file of more than one line (or with a
    /// control character) is refused when read, at `--check` too: keygate
    /// used to send it and report Vault's answer as an outage, forever.
    #[rstest]
    #[case::two_lines("s.tok-0c4e\ns.other\n")]
    #[case::crlf_inside("s.tok-0c4e\r\nmore")]
    #[case::tab_inside("s.tok\t0c4e")]
    #[case::nul("s.tok-0c4e\0")]
    fn a_secret_file_must_hold_one_line(#[case] content: &str) {
        let dir = tempfile::tempdir().unwrap();
        let file = SecretFile {
            field: "vault.auth.token_file",
            path: dir.path().join("token"),
        };
        std::fs::write(&file.path, content).unwrap();
        let err = file.read().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "vault.auth.token_file points to {}, whose content is not a single line: \
                 write only the secret into it (a trailing newline is fine)",
                file.path.display()
            )
        );
        assert!(!err.contains("0c4e"), "{err}");
    }

    #[rstest]
    #[case::newline("s.tok-0c4e\n")]
    #[case::crlf("s.tok-0c4e\r\n")]
    #[case::spaces("  s.tok-0c4e  \n\n")]
    #[case::bom("\u{feff}s.tok-0c4e\n")]
    fn a_secret_file_may_end_in_a_newline(#[case] content: &str) {
        let dir = tempfile::tempdir().unwrap();
        let file = SecretFile {
            field: "vault.auth.token_file",
            path: dir.path().join("token"),
        };
        std::fs::write(&file.path, content).unwrap();
        assert_eq!(file.read().unwrap().expose(), "s.tok-0c4e");
    }

    /// Files that are not UTF-8 say so, instead of "check the path".
    #[test]
    fn files_that_are_not_utf8_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let token = SecretFile {
            field: "vault.auth.token_file",
            path: dir.path().join("token"),
        };
        std::fs::write(&token.path, b"s.tok\xff\xfe\n").unwrap();
        let err = token.read().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "vault.auth.token_file points to {}, which is not UTF-8 text: save it as UTF-8",
                token.path.display()
            )
        );
        let config = dir.path().join("keygate.yaml");
        // Latin-1, as an editor on another locale might save it.
        std::fs::write(&config, b"# caf\xe9\nlisten: {}\n").unwrap();
        let err = Config::load(&config).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: the config file is not UTF-8 text: save it as UTF-8",
                config.display()
            )
        );
    }

    /// A UTF-8 byte order mark (what some Windows editors write) before the
    /// first key is not content: without this, serde_yaml said "deserializing
    /// from YAML containing more than one document is not supported".
    #[test]
    fn a_byte_order_mark_is_not_content() {
        let config = parse(&format!("\u{feff}{VALID}")).unwrap();
        assert_eq!(config.vault.address, "http://127.0.0.1:8200");
    }

    #[test]
    fn load_reports_a_missing_secret_file_with_field_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keygate.yaml");
        std::fs::write(&file, VALID).unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: vault.auth.approle.role_id_file points to ",
                file.display()
            )),
            "{err}"
        );
        assert!(err.contains("secrets/role-id"), "{err}");
    }
}
