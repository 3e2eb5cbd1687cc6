//! A small Vault HTTP client: AppRole or token-file login, KV v2 read, token
//! lookup, over http or https (`crate::vault_http`). It speaks HTTP directly because keygate must tell apart 404 (no
//! such key), 403 (token gone: log in again), and 5xx / sealed / connection
//! errors (outage: answer 503, never allow).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use apikey::{KeyRecord, Selector, storage_path};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::config::{Auth, Secret, SecretFileError, VaultConfig};
use crate::metrics::{LoginResult, Metrics};
use crate::rejected::{CredentialDigest, RETRY_REJECTED_AFTER, RejectedCredentials};

/// How long a readiness answer is reused, so a busy `/readyz` does not turn
/// into a stream of token lookups.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A 403 right after a fresh login means the policy, not the token, is the
/// problem; logging in again would only hammer Vault.
const MIN_RELOGIN_INTERVAL: Duration = Duration::from_secs(5);
/// The maintenance loop wakes at least this often to notice sessions
/// replaced by on-demand re-logins.
const MAINTAIN_TICK: Duration = Duration::from_secs(30);
/// The maintenance loop's login retries: short, since it retries only
/// when keygate has no usable token (at start, or past two thirds of the
/// TTL), where every second without one is a second of 503s.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often `maintain` repeats the same login failure in the log.
const REPEAT_WARNING_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    #[error("cannot reach Vault at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error(
        "cannot reach Vault at {address}: {what} failed: certificate verify failed against {trusted} ({reason}): \
         set vault.ca_cert_file to the CA that signed Vault's certificate"
    )]
    Certificate {
        address: String,
        what: String,
        /// `the CA in <file>` or `the system's trust store`.
        trusted: String,
        reason: String,
    },
    #[error("Vault answered {status} to {what}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("Vault sent an unexpected answer to {what}: {reason}")]
    BadResponse { what: String, reason: String },
    #[error("Vault rejected keygate's login{detail}: check {hint}")]
    LoginRejected { detail: String, hint: String },
    /// Not sent: Vault rejected these same credentials `ago` ago
    /// (`crate::rejected`).
    #[error(
        "Vault rejected these credentials {ago} ago: check {hint}. keygate sends them again only \
         when the files change, or {retry} after the rejection, because Vault's user lockout counts \
         each rejected login and after 5 refuses the role-id for 15 minutes, the right secret-id included"
    )]
    LoginHeldBack {
        ago: String,
        retry: String,
        hint: String,
    },
    #[error(
        "the Vault token keygate got carries the root policy; keygate refuses to run with a root token: \
         give it an AppRole or token whose policy only reads the key mount (e.g. gateway-policy)"
    )]
    RootToken,
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    #[error("keygate is not logged in to Vault (yet)")]
    NotLoggedIn,
    /// `vault.kv_mount` is not a KV version 2 mount Vault serves (no such
    /// mount, or one of another kind): every key would look unknown.
    /// Vault's answer, not an outage: never resurrected.
    #[error(
        "vault.kv_mount in {file} is `{mount}`, but {detail}: set vault.kv_mount to the path of \
         the KV version 2 mount that holds the key records"
    )]
    KvMount {
        file: String,
        mount: String,
        detail: String,
    },
    /// A 404 to a request every Vault answers, or one that is not Vault's
    /// JSON: whatever answered may not be Vault.
    #[error("{what} was answered {answer}: {hint}")]
    NotVault {
        /// The request and its path.
        what: String,
        answer: String,
        /// That `vault.address` may not point at Vault, and what else may
        /// be wrong.
        hint: String,
    },
    #[error(
        "Vault denied keygate reading {path} (403) with a fresh token: \
         the token's policy must allow `read` on that path"
    )]
    Forbidden { path: String },
    /// Keys-file mode: the group's rendered file cannot be read.
    #[error(
        "cannot read the keys file {path} ({reason}): is the Vault Agent that renders it running?"
    )]
    KeysFile { path: String, reason: String },
    /// `limits.vault_reads` reads in flight and `limits.vault_read_queue`
    /// waiting: this read was not sent (`crate::read_limit`).
    #[error(
        "too many Vault reads at once ({in_flight} in flight, {queued} queued): not sending this one \
         (limits.vault_reads, limits.vault_read_queue)"
    )]
    Busy { in_flight: usize, queued: usize },
}

impl VaultError {
    /// Errors that waiting will not fix: keygate stops at startup on these
    /// instead of retrying forever.
    pub fn is_permanent(&self) -> bool {
        matches!(self, VaultError::RootToken | VaultError::SecretFile(_))
    }

    /// Vault's answer, not an outage: a 403 on the read with a fresh
    /// token, or, after a 403, the re-login refused (keygate cut off: its
    /// token revoked, its secret-id destroyed). Never resurrected.
    pub fn is_refusal(&self) -> bool {
        matches!(self, VaultError::Forbidden { .. }) || self.is_rejected_credentials()
    }

    /// Vault's answers show keygate's config does not fit this Vault
    /// (`vault.kv_mount`, `vault.address`): not an outage, so never
    /// resurrected, and not an unknown key either (503
    /// `vault-misconfigured`).
    pub fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            VaultError::KvMount { .. } | VaultError::NotVault { .. }
        )
    }

    /// Vault refused the credentials, now or before (held back): a fixed
    /// Secret fixes it, so keygate keeps running, unready, and logs in as
    /// soon as the files change. Exiting instead would have the pod
    /// restarted with the same credentials, each restart a rejected login
    /// towards Vault's lockout.
    pub fn is_rejected_credentials(&self) -> bool {
        matches!(
            self,
            VaultError::LoginRejected { .. } | VaultError::LoginHeldBack { .. }
        )
    }
}

/// What a token lookup says about keygate's token. The accessor and the
/// policy names are not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub accessor: String,
    pub policies: Vec<String>,
    /// Remaining lifetime; zero means the token does not expire.
    pub ttl: Duration,
    pub renewable: bool,
}

/// `/readyz`'s view of Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready(TokenInfo),
    NotReady(String),
}

struct Session {
    token: Secret,
    info: TokenInfo,
    generation: u64,
    obtained: Instant,
}

impl Session {
    /// Time until the token should be replaced: at two thirds of its TTL, so
    /// a slow or failing login still has a third of the TTL to succeed.
    fn refresh_in(&self) -> Duration {
        if self.info.ttl.is_zero() {
            return MAINTAIN_TICK;
        }
        // At least a second apart, so a short-lived token that cannot be
        // renewed does not turn into a busy loop of lookups near its end.
        (self.info.ttl * 2 / 3)
            .max(Duration::from_secs(1))
            .saturating_sub(self.obtained.elapsed())
    }
}

pub struct Vault {
    http: crate::vault_http::VaultHttp,
    address: String,
    /// Which roots verify Vault's certificate, for messages.
    trusted: String,
    kv_mount: String,
    auth: Auth,
    session: RwLock<Option<Arc<Session>>>,
    generation: AtomicU64,
    /// One login at a time; a caller of `relogin_after` that waited for it
    /// reuses the session the other caller obtained.
    login_lock: Mutex<()>,
    /// The last login that failed, if the last login failed: an on-demand
    /// re-login (after a 403) within `MIN_RELOGIN_INTERVAL` of it answers
    /// its error instead of trying again, so requests carrying a revoked
    /// token cannot turn a bad credential into a login per request.
    /// Guarded by `login_lock` in practice; a `std` mutex, never held
    /// across an await.
    last_failure: std::sync::Mutex<Option<(Instant, VaultError)>>,
    /// AppRole credentials Vault rejected: not sent again until they
    /// change or a while has passed (`crate::rejected`).
    rejected: RejectedCredentials,
    probe: Mutex<Option<(Instant, Readiness)>>,
    metrics: Option<Arc<Metrics>>,
    /// The config file, for messages that name a field of it.
    config_file: String,
    /// Whether key records are read from `kv_mount` (not in keys-file
    /// mode): then logins and readiness check that it is KV version 2.
    check_kv_mount: bool,
    /// What shows `kv_mount` is not a KV version 2 mount, if something does.
    /// A std mutex, never held across an await.
    kv_mount_problem: std::sync::Mutex<Option<MountProblem>>,
}

/// Why `vault.kv_mount` does not hold KV version 2 records.
#[derive(Debug, Clone)]
struct MountProblem {
    /// The end of [`VaultError::KvMount`]'s sentence.
    detail: String,
    /// The read whose answer showed it (no such mount), read again by the
    /// readiness probe until it answers like KV version 2, since an unready
    /// keygate gets no requests that would; `None` when Vault's mount
    /// description showed it (another kind of mount).
    seen_reading: Option<String>,
}

/// What a 404 to a KV version 2 read means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotFound {
    /// KV v2's own: never written, metadata deleted (`{"errors":[]}`), or
    /// the latest version deleted or destroyed (its metadata, data null).
    NoRecord,
    /// Vault's router: no mount there (`no handler for route ...`).
    NoMount(String),
    /// Not Vault's JSON: a proxy or another server answered.
    NotVaultJson,
}

/// Tells a 404 to a KV v2 read apart: only KV v2's own means "no record";
/// OpenBao 2.7 answers `{"errors":[]}` for a secret never written and
/// `{"errors":["no handler for route \"nope/data/g/s\". route entry not
/// found."]}` when there is no mount at all.
fn not_found(body: &str) -> NotFound {
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return NotFound::NotVaultJson;
    };
    if body["data"]["metadata"].is_object() {
        return NotFound::NoRecord;
    }
    match body.get("errors").and_then(Value::as_array) {
        Some(errors) if errors.is_empty() => NotFound::NoRecord,
        Some(_) => NotFound::NoMount(errors_of(&body)),
        None => NotFound::NotVaultJson,
    }
}

impl Vault {
    pub fn new(config: &VaultConfig) -> Result<Self, VaultError> {
        let http =
            crate::vault_http::VaultHttp::new(config.ca_cert_file.as_deref(), config.timeout)
                .map_err(|reason| VaultError::Unreachable {
                    address: config.address.clone(),
                    reason,
                })?;
        if config.plain_http_to_non_loopback() {
            warn!(
                address = %config.address,
                "vault.allow_plain_http is set: keygate sends its Vault token and reads key records \
                 over plain HTTP to a host other than loopback; use https:// unless this link is trusted"
            );
        }
        let trusted = match &config.ca_cert_file {
            Some(file) => format!("the CA in {}", file.display()),
            None => "the system's trust store".to_owned(),
        };
        Ok(Self {
            http,
            trusted,
            address: config.address.clone(),
            kv_mount: config.kv_mount.clone(),
            auth: config.auth.clone(),
            session: RwLock::new(None),
            generation: AtomicU64::new(0),
            login_lock: Mutex::new(()),
            last_failure: std::sync::Mutex::new(None),
            rejected: RejectedCredentials::default(),
            probe: Mutex::new(None),
            metrics: None,
            config_file: "the config file".to_owned(),
            check_kv_mount: false,
            kv_mount_problem: std::sync::Mutex::new(None),
        })
    }

    /// Names `file` in messages about its fields.
    pub fn with_config_file(mut self, file: &std::path::Path) -> Self {
        self.config_file = file.display().to_string();
        self
    }

    /// Key records are read from `vault.kv_mount` (Vault mode): each
    /// login and readiness probe checks it is a KV version 2 mount, where
    /// Vault's description of it is readable to keygate's token.
    pub fn checking_kv_mount(mut self) -> Self {
        self.check_kv_mount = true;
        self
    }

    /// Counts logins in `keygate_vault_logins_total`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn kv_mount(&self) -> &str {
        &self.kv_mount
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Logs in (AppRole) or adopts the token file, then checks the token is
    /// not a root token.
    pub async fn login(&self) -> Result<TokenInfo, VaultError> {
        let _guard = self.login_lock.lock().await;
        self.login_locked().await
    }

    async fn login_locked(&self) -> Result<TokenInfo, VaultError> {
        let result = self.login_once().await;
        let counted = match &result {
            Ok(_) => Some(LoginResult::Ok),
            Err(VaultError::LoginRejected { .. } | VaultError::RootToken) => {
                Some(LoginResult::Rejected)
            }
            // Not sent to Vault: not a login.
            Err(VaultError::LoginHeldBack { .. }) => None,
            Err(_) => Some(LoginResult::Error),
        };
        if let Some(metrics) = &self.metrics
            && let Some(counted) = counted
        {
            metrics.vault_login(counted);
        }
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = result
            .as_ref()
            .err()
            .map(|err| (Instant::now(), err.clone()));
        result
    }

    async fn login_once(&self) -> Result<TokenInfo, VaultError> {
        let (token, hint) = match &self.auth {
            Auth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let hint = format!(
                    "the role-id in {} and the secret-id in {} (AppRole mount `{mount}`)",
                    role_id_file.path.display(),
                    secret_id_file.path.display()
                );
                // One version of the pair, even while a Secret's `..data`
                // swaps (crate::credentials).
                let (role_id, secret_id) =
                    crate::credentials::read_pair(role_id_file, secret_id_file)?;
                let credentials = CredentialDigest::of(role_id.expose(), secret_id.expose());
                if let Some(ago) = self.rejected.held_back(credentials, Instant::now()) {
                    return Err(VaultError::LoginHeldBack {
                        ago: minutes_or_seconds(ago),
                        retry: minutes_or_seconds(RETRY_REJECTED_AFTER),
                        hint,
                    });
                }
                match self.approle_login(mount, &role_id, &secret_id, &hint).await {
                    Ok(token) => {
                        self.rejected.accepted();
                        (token, hint)
                    }
                    Err(err) => {
                        if matches!(err, VaultError::LoginRejected { .. }) {
                            self.rejected.rejected(credentials, Instant::now());
                        }
                        return Err(err);
                    }
                }
            }
            Auth::TokenFile(file) => (
                file.read()?,
                format!("the token in {}", file.path.display()),
            ),
        };
        let mut info = self
            .lookup_self(&token)
            .await
            .map_err(|err| rejected_on_403(err, &hint))?;
        if info.policies.iter().any(|p| p == "root") {
            // A root token keygate obtained itself should not outlive this
            // refusal; one from a file belongs to whoever wrote the file.
            if matches!(self.auth, Auth::AppRole { .. }) {
                let _ = self.revoke_self(&token).await;
            }
            return Err(VaultError::RootToken);
        }
        // A token from a file is someone else's to issue; keygate keeps it
        // alive if Vault lets it.
        if matches!(self.auth, Auth::TokenFile(_)) && info.renewable && !info.ttl.is_zero() {
            match self.renew_self(&token).await {
                Ok(()) => info = self.lookup_self(&token).await?,
                Err(err) => {
                    warn!(error = %err, "renewing the Vault token from the token file failed")
                }
            }
        }
        let kv_mount = self.check_kv_mount(&token).await;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let session = Session {
            token,
            info: info.clone(),
            generation,
            obtained: Instant::now(),
        };
        let previous = self
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(Arc::new(session));
        info!(
            accessor = %info.accessor,
            policies = ?info.policies,
            ttl = ?info.ttl,
            "logged in to Vault"
        );
        // Said at start, not only on the first request (503
        // vault-misconfigured) or by /readyz.
        if let Some(err) = kv_mount {
            warn!(error = %err, "keygate cannot read key records from Vault: not ready");
        }
        // The token this login replaces would otherwise stay valid until
        // its TTL: one live token per rotation and per refresh, each able
        // to read every key. Only tokens keygate obtained itself (AppRole);
        // a token file's token belongs to whoever wrote the file. Requests
        // still in flight with it get a 403 and retry with the new one
        // (`relogin_after` sees the newer generation).
        if let Some(previous) = previous
            && matches!(self.auth, Auth::AppRole { .. })
            && previous.info.accessor != info.accessor
        {
            self.revoke_previous(&previous).await;
        }
        Ok(info)
    }

    /// Revokes a replaced session's token; a failure is logged (by
    /// accessor, never the token) and changes nothing else: the new
    /// session is in use either way.
    async fn revoke_previous(&self, previous: &Session) {
        match self.revoke_self(&previous.token).await {
            Ok(()) => info!(accessor = %previous.info.accessor, "revoked the previous Vault token"),
            // Expired or revoked already (often why keygate logged in again).
            Err(VaultError::Status { status: 403, .. }) => debug!(
                accessor = %previous.info.accessor,
                "the previous Vault token was no longer valid; nothing to revoke"
            ),
            Err(err) => warn!(
                accessor = %previous.info.accessor,
                error = %err,
                "revoking the previous Vault token failed; it stays valid until its TTL ends"
            ),
        }
    }

    /// Logs in again unless someone already replaced `stale`, or the current
    /// session is too fresh for a re-login to help.
    async fn relogin_after(&self, stale: &Session) -> Result<(), VaultError> {
        let _guard = self.login_lock.lock().await;
        if let Some(current) = self.current()
            && (current.generation != stale.generation
                || current.obtained.elapsed() < MIN_RELOGIN_INTERVAL)
        {
            return Ok(());
        }
        if let Some((at, err)) = &*self.last_failure.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < MIN_RELOGIN_INTERVAL
        {
            return Err(err.clone());
        }
        debug!("Vault answered 403; logging in again");
        self.login_locked().await.map(drop)
    }

    /// Runs forever: replaces the token at two thirds of its TTL and retries
    /// failed logins with a capped backoff.
    pub async fn maintain(self: Arc<Self>) {
        let mut failures = 0;
        // A token Vault refuses fails every retry alike: a line a minute,
        // and at once when the error changes, not one per retry.
        let mut repeats = log_throttle::Repeats::new(REPEAT_WARNING_EVERY);
        loop {
            if let Some(session) = self.current() {
                let wait = session.refresh_in();
                if !wait.is_zero() {
                    tokio::time::sleep(wait.min(MAINTAIN_TICK)).await;
                    continue;
                }
            }
            match self.login().await {
                Ok(_) => {
                    failures = 0;
                    repeats.reset();
                }
                Err(err) => {
                    failures += 1;
                    let backoff = crate::backoff::retry_delay(
                        failures,
                        Duration::from_secs(1),
                        MAX_BACKOFF,
                        crate::backoff::jitter(),
                    );
                    // Held back: nothing was sent, and the rejection was
                    // logged when it happened.
                    if matches!(err, VaultError::LoginHeldBack { .. }) {
                        debug!(error = %err, retry_in = ?backoff, "not logging in to Vault");
                    } else if let Some(left_out) =
                        repeats.admit(&err.to_string(), std::time::Instant::now())
                    {
                        warn!(
                            error = %err,
                            retry_in = ?backoff,
                            left_out,
                            "logging in to Vault failed (the same error again is written once a minute; left_out says how many were not)"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// The record for `(group, selector)`: `None` when Vault has no live
    /// version of it. A 403 triggers one re-login and retry.
    pub async fn read_record(
        &self,
        group: &str,
        selector: &Selector,
    ) -> Result<Option<KeyRecord>, VaultError> {
        let session = self.current().ok_or(VaultError::NotLoggedIn)?;
        if let Some(found) = self.kv_get(&session, group, selector).await? {
            return Ok(found);
        }
        self.relogin_after(&session).await?;
        let session = self.current().ok_or(VaultError::NotLoggedIn)?;
        match self.kv_get(&session, group, selector).await? {
            Some(found) => Ok(found),
            None => Err(VaultError::Forbidden {
                path: storage_path(&self.kv_mount, group, selector),
            }),
        }
    }

    /// `Ok(None)` means 403; `Ok(Some(None))` means no live record.
    async fn kv_get(
        &self,
        session: &Session,
        group: &str,
        selector: &Selector,
    ) -> Result<Option<Option<KeyRecord>>, VaultError> {
        let what = "a KV read";
        let url = format!(
            "{}/v1/{}/data/{group}/{selector}",
            self.address, self.kv_mount
        );
        let (status, body) = self
            .send(what, Method::GET, &url, None, Some(&session.token))
            .await?;
        let body = match self.kv_answer(status, &body, &url) {
            KvAnswer::Found(body) => body,
            // 404 covers never written, metadata deleted, and (with data
            // null) the latest version soft-deleted or destroyed; unless
            // Vault's mount description showed kv_mount is not KV v2 (a KV
            // v1 mount answers the same 404 for a key it lacks).
            KvAnswer::NoRecord => {
                return match self.kv_mount_error(false) {
                    Some(err) => Err(err),
                    None => Ok(Some(None)),
                };
            }
            KvAnswer::Forbidden => return Ok(None),
            KvAnswer::Wrong(err) => return Err(err),
            KvAnswer::Other => return Err(status_error(what, status, &body)),
        };
        let data = &body["data"];
        let live_until = match version_state(&data["metadata"], time::OffsetDateTime::now_utc()) {
            VersionState::Deleted => return Ok(Some(None)),
            VersionState::Live { until } => until,
        };
        let record = &data["data"];
        if record.is_null() {
            return Ok(Some(None));
        }
        match KeyRecord::deserialize(record) {
            // A version deleted at a set time (`delete_version_after`)
            // expires then, cached or not: no write reaches the audit
            // stream when that time comes.
            Ok(mut record) => {
                if let Some(until) = live_until {
                    record.expires = Some(record.expires.map_or(until, |e| e.min(until)));
                }
                Ok(Some(Some(record)))
            }
            Err(err) => {
                // A record exists but is unusable. Answering "unknown" would
                // hide the bad writer, so it becomes a record whose hash
                // cannot parse, which `KeyRecord::check` reports as corrupt.
                warn!(
                    path = %storage_path(&self.kv_mount, group, selector),
                    error = %err,
                    "the Vault record is not a key record"
                );
                Ok(Some(Some(KeyRecord {
                    key: String::new(),
                    owner: String::new(),
                    name: None,
                    expires: None,
                })))
            }
        }
    }

    /// What one answer to a KV v2 read of `url` says, recording (or
    /// clearing) what it shows of `kv_mount`.
    fn kv_answer(&self, status: StatusCode, body: &str, url: &str) -> KvAnswer {
        let seen = |detail: String| {
            self.set_kv_mount_problem(Some(MountProblem {
                detail,
                seen_reading: Some(url.to_owned()),
            }));
            self.kv_mount_error(true)
                .expect("a problem was just recorded")
        };
        let answer = match status {
            StatusCode::OK => match serde_json::from_str::<Value>(body) {
                Ok(body) if body["data"]["metadata"].is_object() => KvAnswer::Found(body),
                // A KV v1 mount answers `data` as the record itself.
                Ok(_) => KvAnswer::Wrong(seen(
                    "Vault answered a key read without KV version 2's metadata, \
                     as a KV version 1 mount does"
                        .into(),
                )),
                Err(err) => KvAnswer::Wrong(VaultError::BadResponse {
                    what: "a KV read".into(),
                    reason: err.to_string(),
                }),
            },
            StatusCode::NOT_FOUND => match not_found(body) {
                NotFound::NoRecord => KvAnswer::NoRecord,
                NotFound::NoMount(errors) => KvAnswer::Wrong(seen(format!(
                    "Vault has no mount there (it answered a key read with 404{errors})"
                ))),
                NotFound::NotVaultJson => KvAnswer::Wrong(self.not_vault(
                    "a KV read",
                    &url.replacen(&format!("{}/v1/", self.address), "", 1),
                    "404 in a body that is not Vault's JSON",
                    "",
                )),
            },
            StatusCode::FORBIDDEN => KvAnswer::Forbidden,
            _ => KvAnswer::Other,
        };
        // An answer only a KV v2 mount gives clears what a read showed
        // before (the mount was created meanwhile).
        if matches!(answer, KvAnswer::Found(_) | KvAnswer::NoRecord) {
            self.clear_kv_mount_problem_seen_reading();
        }
        answer
    }

    /// [`VaultError::KvMount`] for what is known against `kv_mount`, if
    /// anything; with `any` false, only what Vault's mount description
    /// showed (a read's evidence is cleared by a KV v2 answer first).
    fn kv_mount_error(&self, any: bool) -> Option<VaultError> {
        let problem = self
            .kv_mount_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        (any || problem.seen_reading.is_none()).then(|| VaultError::KvMount {
            file: self.config_file.clone(),
            mount: self.kv_mount.clone(),
            detail: problem.detail,
        })
    }

    fn set_kv_mount_problem(&self, problem: Option<MountProblem>) {
        *self
            .kv_mount_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    fn clear_kv_mount_problem_seen_reading(&self) {
        let mut problem = self
            .kv_mount_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if problem.as_ref().is_some_and(|p| p.seen_reading.is_some()) {
            *problem = None;
        }
    }

    /// Checks `kv_mount` is a KV version 2 mount, where Vault says: its
    /// mount description (`sys/internal/ui/mounts/<mount>`) is readable to
    /// any token whose policy grants something under the mount, whatever
    /// the policy says of `sys/`. Vault answers 403 alike for a mount that
    /// does not exist and one the token may not use, so that says nothing;
    /// a read that found no mount is then read again instead. The error
    /// when something shows it is not.
    async fn check_kv_mount(&self, token: &Secret) -> Option<VaultError> {
        if !self.check_kv_mount {
            return None;
        }
        let url = format!(
            "{}/v1/sys/internal/ui/mounts/{}",
            self.address, self.kv_mount
        );
        let described = match self
            .send("a mount lookup", Method::GET, &url, None, Some(token))
            .await
        {
            Ok((StatusCode::OK, body)) => serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|body| mount_problem(&self.kv_mount, &body["data"])),
            _ => None,
        };
        match described {
            Some(Ok(())) => self.set_kv_mount_problem(None),
            Some(Err(detail)) => self.set_kv_mount_problem(Some(MountProblem {
                detail,
                seen_reading: None,
            })),
            None => {
                let seen = self
                    .kv_mount_problem
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|p| p.seen_reading.clone());
                match seen {
                    Some(Some(read)) => {
                        // Read again: `kv_answer` records, or clears, what
                        // it shows (a 403 or an outage, nothing).
                        if let Ok((status, body)) = self
                            .send("a KV read", Method::GET, &read, None, Some(token))
                            .await
                        {
                            let _ = self.kv_answer(status, &body, &read);
                        }
                    }
                    // What an earlier description showed no longer holds
                    // for sure: let requests find out.
                    Some(None) => self.set_kv_mount_problem(None),
                    None => {}
                }
            }
        }
        self.kv_mount_error(true)
    }

    /// `/readyz`: ready when logged in and Vault answered a token lookup in
    /// the last second.
    pub async fn readiness(&self) -> Readiness {
        let mut probe = self.probe.lock().await;
        if let Some((at, answer)) = &*probe
            && at.elapsed() < PROBE_INTERVAL
        {
            // A read that showed kv_mount wrong since counts at once.
            if let Readiness::Ready(_) = answer
                && let Some(err) = self.kv_mount_error(true)
            {
                return Readiness::NotReady(err.to_string());
            }
            return answer.clone();
        }
        let answer = self.probe_now().await;
        *probe = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn probe_now(&self) -> Readiness {
        let answer = self.probe_token().await;
        if let Readiness::Ready(_) = answer
            && let Some(session) = self.current()
            && let Some(err) = self.check_kv_mount(&session.token).await
        {
            return Readiness::NotReady(err.to_string());
        }
        answer
    }

    async fn probe_token(&self) -> Readiness {
        let Some(session) = self.current() else {
            return Readiness::NotReady(VaultError::NotLoggedIn.to_string());
        };
        match self.lookup_self(&session.token).await {
            Ok(info) => Readiness::Ready(info),
            Err(VaultError::Status { status: 403, .. }) => {
                if let Err(err) = self.relogin_after(&session).await {
                    return Readiness::NotReady(err.to_string());
                }
                match self.current() {
                    Some(fresh) => match self.lookup_self(&fresh.token).await {
                        Ok(info) => Readiness::Ready(info),
                        Err(err) => Readiness::NotReady(err.to_string()),
                    },
                    None => Readiness::NotReady(VaultError::NotLoggedIn.to_string()),
                }
            }
            Err(err) => Readiness::NotReady(err.to_string()),
        }
    }

    async fn approle_login(
        &self,
        mount: &str,
        role_id: &Secret,
        secret_id: &Secret,
        hint: &str,
    ) -> Result<Secret, VaultError> {
        let what = "the AppRole login";
        let url = format!("{}/v1/auth/{mount}/login", self.address);
        let login =
            serde_json::json!({"role_id": role_id.expose(), "secret_id": secret_id.expose()});
        let (status, body) = self
            .send(what, Method::POST, &url, Some(&login), None)
            .await?;
        match status {
            StatusCode::OK => {}
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(VaultError::LoginRejected {
                    detail: vault_errors(&body),
                    hint: hint.to_owned(),
                });
            }
            StatusCode::NOT_FOUND => {
                return Err(self.not_vault(
                    what,
                    &format!("auth/{mount}/login"),
                    "404",
                    &format!(", or vault.auth.approle.mount `{mount}` is not an AppRole mount"),
                ));
            }
            other => return Err(status_error(what, other, &body)),
        }
        #[derive(Deserialize)]
        struct Login {
            auth: LoginAuth,
        }
        #[derive(Deserialize)]
        struct LoginAuth {
            client_token: String,
        }
        let login: Login = parse(what, &body)?;
        Ok(Secret::new(login.auth.client_token))
    }

    async fn lookup_self(&self, token: &Secret) -> Result<TokenInfo, VaultError> {
        let what = "a token lookup";
        let url = format!("{}/v1/auth/token/lookup-self", self.address);
        let (status, body) = self
            .send(what, Method::GET, &url, None, Some(token))
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self.not_vault(
                what,
                "auth/token/lookup-self, which every Vault serves",
                "404",
                "",
            ));
        }
        if status != StatusCode::OK {
            return Err(status_error(what, status, &body));
        }
        #[derive(Deserialize)]
        struct Lookup {
            data: LookupData,
        }
        #[derive(Deserialize)]
        struct LookupData {
            #[serde(default)]
            accessor: String,
            #[serde(default)]
            policies: Vec<String>,
            #[serde(default)]
            ttl: u64,
            #[serde(default)]
            renewable: bool,
        }
        let lookup: Lookup = parse(what, &body)?;
        Ok(TokenInfo {
            accessor: lookup.data.accessor,
            policies: lookup.data.policies,
            ttl: Duration::from_secs(lookup.data.ttl),
            renewable: lookup.data.renewable,
        })
    }

    async fn revoke_self(&self, token: &Secret) -> Result<(), VaultError> {
        let what = "a token revocation";
        let url = format!("{}/v1/auth/token/revoke-self", self.address);
        let (status, body) = self
            .send(what, Method::POST, &url, None, Some(token))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(what, status, &body))
        }
    }

    async fn renew_self(&self, token: &Secret) -> Result<(), VaultError> {
        let what = "a token renewal";
        let url = format!("{}/v1/auth/token/renew-self", self.address);
        let (status, body) = self
            .send(
                what,
                Method::POST,
                &url,
                Some(&serde_json::json!({})),
                Some(token),
            )
            .await?;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(status_error(what, status, &body))
        }
    }

    /// Sends a request and reads the whole body. Only transport failures are
    /// errors here; callers decide what each status means.
    async fn send(
        &self,
        what: &str,
        method: Method,
        url: &str,
        json: Option<&Value>,
        token: Option<&Secret>,
    ) -> Result<(StatusCode, String), VaultError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            let mut value =
                HeaderValue::from_str(token.expose()).map_err(|_| VaultError::BadResponse {
                    what: what.to_owned(),
                    reason: "the token holds characters not allowed in an HTTP header".into(),
                })?;
            value.set_sensitive(true);
            headers.insert("X-Vault-Token", value);
        }
        use crate::vault_http::Failure;
        self.http
            .send(method, url, headers, json)
            .await
            .map_err(|failure| match failure {
                Failure::Certificate(reason) => VaultError::Certificate {
                    address: self.address.clone(),
                    what: what.to_owned(),
                    trusted: self.trusted.clone(),
                    reason,
                },
                Failure::Other(reason) => VaultError::Unreachable {
                    address: self.address.clone(),
                    reason: format!("{what} failed: {reason}"),
                },
            })
    }
}

impl Vault {
    /// [`VaultError::NotVault`] for `what` (`path`) answered `answer`;
    /// `extra` (`, or ...`) names another field that may be wrong.
    fn not_vault(&self, what: &str, path: &str, answer: &str, extra: &str) -> VaultError {
        VaultError::NotVault {
            what: format!("{what} ({path})"),
            answer: answer.to_owned(),
            hint: format!(
                "vault.address `{}` in {} may not point at Vault (another server, or a path \
                 after host and port that Vault does not serve){extra}",
                self.address, self.config_file
            ),
        }
    }
}

/// What one answer to a KV v2 read says.
enum KvAnswer {
    /// 200 in KV v2's shape (a record, or a deleted version's metadata).
    Found(Value),
    NoRecord,
    /// 403: keygate's token may not read it.
    Forbidden,
    /// Not KV v2's answer: `vault.kv_mount` or `vault.address` is wrong.
    Wrong(VaultError),
    /// Any other status: Vault's error (sealed, 5xx).
    Other,
}

/// From Vault's description of the mount at (or around) `mount`: whether
/// it is a KV version 2 mount at exactly that path, or why not; `None`
/// when the description is not one.
fn mount_problem(mount: &str, described: &Value) -> Option<Result<(), String>> {
    let kind = described["type"].as_str()?;
    let path = described["path"].as_str().unwrap_or_default();
    // A KV mount enabled without `-version=2` (or `kv-v2`) has no version.
    let version = described["options"]["version"].as_str().unwrap_or("1");
    Some(if path.trim_end_matches('/') != mount {
        Err(format!(
            "Vault's mount there is `{path}`, around it: a path inside a mount is not a mount"
        ))
    } else if kind != "kv" {
        Err(format!(
            "Vault says it is a `{kind}` mount, not KV version 2"
        ))
    } else if version != "2" {
        Err(format!(
            "Vault says it is a KV version {version} mount, whose records keygate cannot read \
             (`bao secrets enable -version=2 kv`, or `bao kv enable-versioning` on this mount)"
        ))
    } else {
        Ok(())
    })
}

impl crate::refs::RefSource for Vault {
    fn fetch<'a>(
        &'a self,
        mount: &'a str,
        path: &'a str,
        key: &'a str,
    ) -> crate::boxed_future::BoxFuture<'a, crate::refs::Fetched> {
        Box::pin(self.read_field(mount, path, key))
    }
}

impl Vault {
    /// Field `key` of the KV v2 secret `<mount>/<path>`, for secret
    /// references. On 403 keygate logs in again (its token may have been
    /// revoked or expired) and reads once more, Kong's "check on failure".
    pub async fn read_field(&self, mount: &str, path: &str, key: &str) -> crate::refs::Fetched {
        use crate::refs::Fetched;
        let url = format!("{}/v1/{mount}/data/{path}", self.address);
        for attempt in 0..2 {
            let Some(session) = self.current() else {
                return Fetched::Failed;
            };
            let answer = self
                .send(
                    "a secret reference read",
                    Method::GET,
                    &url,
                    None,
                    Some(&session.token),
                )
                .await;
            let (status, body) = match answer {
                Ok(answer) => answer,
                Err(err) => {
                    debug!(error = %err, "secret reference read failed");
                    return Fetched::Failed;
                }
            };
            match status {
                StatusCode::OK => {
                    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    return match body["data"]["data"][key].as_str() {
                        Some(value) => Fetched::Value(value.to_owned()),
                        None => Fetched::Missing,
                    };
                }
                StatusCode::NOT_FOUND => return Fetched::Missing,
                StatusCode::FORBIDDEN if attempt == 0 => {
                    info!(
                        mount,
                        path,
                        "Vault answered 403 to a secret reference; logging in again and re-reading"
                    );
                    if self.relogin_after(&session).await.is_err() {
                        return Fetched::Failed;
                    }
                }
                _ => return Fetched::Failed,
            }
        }
        Fetched::Failed
    }
}

/// What a KV v2 read answered 200 says of the version it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionState {
    /// Destroyed, or its `deletion_time` has come.
    Deleted,
    /// Live; `until` its `deletion_time`, if one is set.
    Live { until: Option<time::OffsetDateTime> },
}

/// The version's state from its `metadata`, at `now`. A `deletion_time`
/// is not only that of a deletion done: with the mount's or the key's
/// `delete_version_after` set, KV v2 stamps every write with the future
/// moment it will be deleted, and answers 200 with the data until then
/// (404 after). A `deletion_time` that is not RFC 3339 cannot be told
/// from a past one: deleted (denied `unknown`), never allowed.
fn version_state(metadata: &Value, now: time::OffsetDateTime) -> VersionState {
    if metadata["destroyed"].as_bool() == Some(true) {
        return VersionState::Deleted;
    }
    match metadata["deletion_time"].as_str().map(str::trim) {
        None | Some("") => VersionState::Live { until: None },
        Some(text) => {
            match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            {
                Ok(at) if at > now => VersionState::Live { until: Some(at) },
                _ => VersionState::Deleted,
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T, VaultError> {
    serde_json::from_str(body).map_err(|err| VaultError::BadResponse {
        what: what.to_owned(),
        reason: err.to_string(),
    })
}

/// `: <errors joined>` from Vault's `{"errors": [...]}`, or empty. Vault's
/// error strings are short and never echo tokens.
fn vault_errors(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|body| errors_of(&body))
        .unwrap_or_default()
}

/// [`vault_errors`] of a parsed body.
fn errors_of(body: &Value) -> String {
    let errors: Vec<&str> = body
        .get("errors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .filter(|e| !e.is_empty())
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

fn status_error(what: &str, status: StatusCode, body: &str) -> VaultError {
    VaultError::Status {
        what: what.to_owned(),
        status: status.as_u16(),
        detail: vault_errors(body),
    }
}

/// `42 s` under two minutes, else whole minutes (`16 min`).
fn minutes_or_seconds(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs / 60)
    }
}

fn rejected_on_403(err: VaultError, hint: &str) -> VaultError {
    match err {
        VaultError::Status {
            status: 403,
            detail,
            ..
        } => VaultError::LoginRejected {
            detail,
            hint: hint.to_owned(),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretFile;
    use std::sync::atomic::AtomicUsize;

    /// An AppRole config for `address` with credentials in `dir`.
    fn config(address: &str, dir: &std::path::Path) -> VaultConfig {
        std::fs::write(dir.join("role-id"), "role").unwrap();
        std::fs::write(dir.join("secret-id"), "secret-id-0c4e").unwrap();
        VaultConfig {
            address: address.to_owned(),
            ca_cert_file: None,
            allow_plain_http: false,
            kv_mount: "kv".into(),
            timeout: Duration::from_secs(2),
            auth: Auth::AppRole {
                mount: "approle".into(),
                role_id_file: SecretFile {
                    field: "vault.auth.approle.role_id_file",
                    path: dir.join("role-id"),
                },
                secret_id_file: SecretFile {
                    field: "vault.auth.approle.secret_id_file",
                    path: dir.join("secret-id"),
                },
            },
        }
    }

    /// A server counting the requests it gets, answering each with `answer`.
    async fn server(
        answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            async move { answer() }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, hits)
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_so_the_credentials_stay_put() {
        use axum::response::IntoResponse;
        let (elsewhere, elsewhere_hits) = server(|| {
            axum::Json(serde_json::json!({"auth": {"client_token": "t"}})).into_response()
        })
        .await;
        let location = format!("{elsewhere}/v1/auth/approle/login");
        let (vault, vault_hits) = server(move || {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(reqwest::header::LOCATION, location.clone())],
            )
                .into_response()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let client = Vault::new(&config(&vault, dir.path())).unwrap();
        let err = client.login().await.unwrap_err();
        assert!(
            matches!(err, VaultError::Status { status: 307, .. }),
            "{err:?}"
        );
        assert_eq!(vault_hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            elsewhere_hits.load(Ordering::SeqCst),
            0,
            "keygate followed the redirect with its secret-id"
        );
        assert!(!err.to_string().contains("secret-id-0c4e"));
    }

    /// A Vault that logs keygate in and answers every KV read under `kv`
    /// with `record` and `metadata`.
    async fn vault_answering(record: &KeyRecord, metadata: Value) -> String {
        use axum::routing::{get, post};
        let body = serde_json::json!({"data": {"data": record, "metadata": metadata}});
        let app = axum::Router::new()
            .route(
                "/v1/auth/approle/login",
                post(|| async { axum::Json(serde_json::json!({"auth": {"client_token": "t"}})) }),
            )
            .route(
                "/v1/auth/token/lookup-self",
                get(|| async {
                    axum::Json(serde_json::json!({"data": {"policies": ["default"], "ttl": 3600}}))
                }),
            )
            .route(
                "/v1/kv/data/{group}/{selector}",
                get(move || {
                    let body = body.clone();
                    async move { axum::Json(body) }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// With `delete_version_after` set, KV v2 stamps every write with the
    /// future moment the version will be deleted and answers 200 with the
    /// data until then: such a record is live, and expires at that moment
    /// (or its own `expires`, if sooner). A past one, a `deletion_time`
    /// that is not RFC 3339, or `destroyed` is no record.
    #[tokio::test]
    async fn a_deletion_time_to_come_is_a_live_version_that_expires_then() {
        use time::format_description::well_known::Rfc3339;
        let key = apikey::ApiKey::generate();
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap();
        let (later, sooner) = (
            now + Duration::from_secs(3600),
            now + Duration::from_secs(60),
        );
        let rfc = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap();
        let lasting = KeyRecord::for_key(&key, "o");
        let expiring = KeyRecord::for_key(&key, "o").with_expiry(sooner);
        let metadata = |deletion_time: &str, destroyed: bool| serde_json::json!({"version": 1, "deletion_time": deletion_time, "destroyed": destroyed});
        for (what, record, metadata, want) in [
            ("none", &lasting, metadata("", false), Some(None)),
            (
                "to come",
                &lasting,
                metadata(&rfc(later), false),
                Some(Some(later)),
            ),
            (
                "to come, with nanoseconds",
                &lasting,
                metadata("2999-01-02T03:04:05.123456789Z", false),
                Some(Some(
                    time::OffsetDateTime::parse("2999-01-02T03:04:05.123456789Z", &Rfc3339)
                        .unwrap(),
                )),
            ),
            (
                "to come, after the record's expiry",
                &expiring,
                metadata(&rfc(later), false),
                Some(Some(sooner)),
            ),
            (
                "passed",
                &lasting,
                metadata(&rfc(now - Duration::from_secs(1)), false),
                None,
            ),
            ("not RFC 3339", &lasting, metadata("soon", false), None),
            ("destroyed", &lasting, metadata("", true), None),
        ] {
            let address = vault_answering(record, metadata).await;
            let dir = tempfile::tempdir().unwrap();
            let client = Vault::new(&config(&address, dir.path())).unwrap();
            client.login().await.unwrap();
            let found = client.read_record("g", &key.selector()).await.unwrap();
            assert_eq!(found.map(|r| r.expires), want, "deletion_time {what}");
        }
    }

    /// OpenBao 2.7.2's answers to KV v2 reads (recorded with the pinned
    /// `bao server -dev`): only a KV v2 mount's own 404 is "no record".
    #[rstest::rstest]
    #[case::never_written(r#"{"errors":[]}"#, NotFound::NoRecord)]
    #[case::soft_deleted(
        r#"{"request_id":"5","data":{"data":null,"metadata":{"created_time":"2026-12-07T20:22:26Z","deletion_time":"2026-12-07T20:22:27Z","destroyed":false,"version":1}}}"#,
        NotFound::NoRecord
    )]
    #[case::no_mount(
        r#"{"errors":["no handler for route \"nope/data/g/sel\". route entry not found."]}"#,
        NotFound::NoMount(": no handler for route \"nope/data/g/sel\". route entry not found.".into())
    )]
    #[case::not_json("404 page not found\n", NotFound::NotVaultJson)]
    #[case::other_json(r#"{"message":"Not Found"}"#, NotFound::NotVaultJson)]
    fn a_404_is_no_record_only_from_kv_v2_itself(#[case] body: &str, #[case] want: NotFound) {
        assert_eq!(not_found(body), want);
    }

    /// `sys/internal/ui/mounts/<mount>` as OpenBao 2.7.2 answers it.
    #[rstest::rstest]
    #[case::kv_v2(
        "api-portal-keys",
        r#"{"type":"kv","path":"api-portal-keys/","options":{"version":"2"}}"#,
        None
    )]
    #[case::kv_v1(
        "kv1",
        r#"{"type":"kv","path":"kv1/","options":{"version":"1"}}"#,
        Some("Vault says it is a KV version 1 mount")
    )]
    #[case::kv_without_options(
        "kv1",
        r#"{"type":"kv","path":"kv1/","options":null}"#,
        Some("Vault says it is a KV version 1 mount")
    )]
    #[case::transit(
        "keys",
        r#"{"type":"transit","path":"keys/","options":null}"#,
        Some("Vault says it is a `transit` mount, not KV version 2")
    )]
    #[case::inside(
        "keys/sub",
        r#"{"type":"kv","path":"keys/","options":{"version":"2"}}"#,
        Some("Vault's mount there is `keys/`, around it")
    )]
    fn a_mount_is_checked_against_its_description(
        #[case] mount: &str,
        #[case] described: &str,
        #[case] problem: Option<&str>,
    ) {
        let described: Value = serde_json::from_str(described).unwrap();
        match (mount_problem(mount, &described), problem) {
            (Some(Ok(())), None) => {}
            (Some(Err(detail)), Some(expected)) => {
                assert!(detail.starts_with(expected), "{detail}")
            }
            (other, _) => panic!("{other:?} for {described}"),
        }
        assert_eq!(mount_problem(mount, &Value::Null), None);
    }

    #[tokio::test]
    async fn a_missing_ca_file_stops_the_client_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config("https://127.0.0.1:1", dir.path());
        config.ca_cert_file = Some(dir.path().join("ca.pem"));
        let err = Vault::new(&config).err().expect("no CA file, no client");
        assert!(
            err.to_string().contains("vault.ca_cert_file points to ")
                && err.to_string().contains("ca.pem, which cannot be read"),
            "{err}"
        );
    }
}
