//! Shared fixtures for the e2e assertions. Everything here goes through public
//! endpoints named by `env.json`: the gateway, the Vault HTTP API and
//! keygate's health endpoint. Tokens live in memory and are never printed.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use apikey::{ApiKey, KeyRecord};
use reqwest::Method;
use rig::env::Environment;
use serde_json::{Value, json};

pub use rig::case::CaseGuard;

/// The running environment, from `$KEYRIG_ENV` or `target/rig/latest/env.json`.
pub fn env() -> &'static Environment {
    static ENV: OnceLock<Environment> = OnceLock::new();
    ENV.get_or_init(|| match Environment::discover() {
        Ok(env) => env,
        Err(err) => panic!("{err:#}"),
    })
}

/// Records this case for the run's results table (group, name, status, time).
/// Through the keys-file gateway the group reads `<group>@keys-file`, so the
/// table tells the two passes of the same test apart.
pub fn case(group: &str, name: &str) -> CaseGuard {
    if keys_file_mode() {
        CaseGuard::start(&format!("{group}@keys-file"), name)
    } else {
        CaseGuard::start(group, name)
    }
}

/// Whether `gateway_url` validates from keys files rendered by a Vault
/// Agent (Spring Cloud Gateway's way) instead of reading Vault per key.
/// What differs there: the file holds `<selector>,<hash>` only, so the
/// upstream gets an empty `x-keyrig-owner`, expiry is unknown (an expired
/// key is accepted until it is deleted), and a change lands within the
/// render interval plus keygate's poll instead of the cache TTL.
pub fn keys_file_mode() -> bool {
    env().key_source == rig::env::KEY_SOURCE_FILE
}

/// The longest a rendered change may take to reach the keys-file gateway:
/// render interval + keygate's poll + slack for the agent's own work.
pub fn render_deadline() -> Duration {
    let side = env()
        .keys_file
        .as_ref()
        .expect("this environment has no keys-file gateway (env.json keys_file)");
    Duration::from_millis(side.render_interval_ms + side.poll_interval_ms) + Duration::from_secs(5)
}

/// In keys-file mode a key written to Vault exists at the gateway only once
/// the agent rendered it: wait until the gateway stops calling it `unknown`.
/// In Vault mode, the negative cache is the only delay and a fresh selector
/// has never been looked up, so there is nothing to wait for.
pub async fn await_delivery(group: &str, key: &str) -> Result<()> {
    if !keys_file_mode() {
        return Ok(());
    }
    let path = api_path(group);
    rig::wait::wait_until(
        "the agent to render the new key into the keys file",
        render_deadline(),
        async || {
            let reply = gateway_get(&path, Some(key)).await?;
            Ok(match reply.reason.as_deref() {
                Some("unknown") => rig::wait::Probe::seen(format!("{} unknown", reply.status)),
                _ => rig::wait::Probe::Ready(()),
            })
        },
    )
    .await
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // Each #[tokio::test] has its own runtime and a pooled connection dies
        // with the runtime that opened it, so connections are not kept.
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("building the HTTP client")
    })
}

/// A Vault token. `Debug` hides it so a failed assertion cannot print it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// No token, for logins.
    pub fn none() -> Self {
        Token(String::new())
    }

    /// The client token of a login answer.
    pub fn from_login(body: &Value) -> Result<Self> {
        match body["auth"]["client_token"].as_str() {
            Some(token) => Ok(Token(token.to_owned())),
            None => bail!("the login answer carries no token: {}", body["errors"]),
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A Vault answer: status and JSON body (Null when empty).
#[derive(Debug)]
pub struct VaultReply {
    pub status: u16,
    pub body: Value,
}

/// Calls the Vault HTTP API: `path` is below `/v1/`.
pub async fn vault(
    method: &str,
    path: &str,
    token: &Token,
    body: Option<Value>,
) -> Result<VaultReply> {
    let method = Method::from_bytes(method.as_bytes())?;
    let url = format!("{}/v1/{}", env().vault_addr, path.trim_start_matches('/'));
    let mut request = http()
        .request(method.clone(), &url)
        .header("X-Vault-Token", &token.0);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}: Vault did not answer"))?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    };
    Ok(VaultReply { status, body })
}

pub fn root_token() -> Token {
    Token(
        env()
            .root_token()
            .expect("reading the root token file named by env.json"),
    )
}

/// Logs in with an AppRole of the scenario, the way a service would: the root
/// token fetches the role-id and mints a secret-id, then the login uses only those.
pub async fn login_as(role: &str) -> Result<Token> {
    let root = root_token();
    let role_id = vault(
        "GET",
        &format!("auth/approle/role/{role}/role-id"),
        &root,
        None,
    )
    .await?;
    let secret_id = vault(
        "POST",
        &format!("auth/approle/role/{role}/secret-id"),
        &root,
        None,
    )
    .await?;
    if role_id.status != 200 || secret_id.status != 200 {
        bail!(
            "AppRole {role}: role-id answered {}, secret-id answered {}",
            role_id.status,
            secret_id.status
        );
    }
    let login = vault(
        "POST",
        "auth/approle/login",
        &Token(String::new()),
        Some(json!({
            "role_id": role_id.body["data"]["role_id"],
            "secret_id": secret_id.body["data"]["secret_id"],
        })),
    )
    .await?;
    match login.body["auth"]["client_token"].as_str() {
        Some(token) if login.status == 200 => Ok(Token(token.to_owned())),
        _ => bail!(
            "AppRole login as {role} answered {}: {}",
            login.status,
            login.body["errors"]
        ),
    }
}

/// KV v2 API path of a key's record: `<mount>/<data|metadata>/<group>/<selector>`.
pub fn kv_path(kind: &str, group: &str, selector: &str) -> String {
    format!("{}/{kind}/{group}/{selector}", env().kv_mount)
}

/// Issues a key the way the API portal does: a fresh key, its record written
/// with the portal's own AppRole token.
pub async fn issue_key(group: &str, record: impl FnOnce(KeyRecord) -> KeyRecord) -> Result<ApiKey> {
    let key = ApiKey::generate();
    let record = record(KeyRecord::for_key(&key, "e2e-owner"));
    store_record(group, &key, &record).await?;
    await_delivery(group, key.expose()).await?;
    Ok(key)
}

pub async fn store_record(group: &str, key: &ApiKey, record: &KeyRecord) -> Result<()> {
    let portal = portal_token().await?;
    let reply = vault(
        "POST",
        &kv_path("data", group, key.selector().as_str()),
        &portal,
        Some(json!({ "data": record })),
    )
    .await?;
    if reply.status != 200 {
        bail!(
            "writing the record of {:?} answered {}: {}",
            key.selector(),
            reply.status,
            reply.body["errors"]
        );
    }
    Ok(())
}

/// One api-portal token for the whole test binary.
pub async fn portal_token() -> Result<Token> {
    static TOKEN: tokio::sync::OnceCell<Token> = tokio::sync::OnceCell::const_new();
    TOKEN
        .get_or_try_init(|| login_as("api-portal"))
        .await
        .cloned()
}

/// What the client saw from the gateway.
#[derive(Debug)]
pub struct GatewayReply {
    pub status: u16,
    /// keygate's `x-keyrig-reason` on a denial.
    pub reason: Option<String>,
    /// The upstream's echo (method, path, headers) when the request got through.
    pub body: Value,
}

impl GatewayReply {
    /// A header the upstream received, from its echo.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }
}

/// GET `path` at the gateway, with `x-api-key` when given.
pub async fn gateway_get(path: &str, api_key: Option<&str>) -> Result<GatewayReply> {
    gateway_get_at(&env().gateway_url, path, api_key).await
}

/// GET `path` at the gateway listening at `base` (e.g. the keys-file one).
pub async fn gateway_get_at(base: &str, path: &str, api_key: Option<&str>) -> Result<GatewayReply> {
    let url = format!("{base}{path}");
    let mut request = http().get(&url);
    if let Some(key) = api_key {
        request = request.header("x-api-key", key);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("GET {url}: the gateway did not answer"))?;
    let status = response.status().as_u16();
    let reason = response
        .headers()
        .get("x-keyrig-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(GatewayReply {
        status,
        reason,
        body,
    })
}

/// A path under a group's route that its OpenAPI document declares.
pub fn api_path(group: &str) -> String {
    let prefix = env().route(group).expect("group from env.json");
    match group {
        "animal-rescue-api" => format!("{prefix}animals"),
        "billing-api" => format!("{prefix}invoices"),
        other => panic!("no known path for group {other}: add one to api_path()"),
    }
}

/// keygate's readiness report: its Vault token accessor and policies.
pub async fn keygate_readyz() -> Result<Value> {
    let url = format!("{}/readyz", env().keygate_url);
    let response = http()
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("keygate is not ready: {status} {body}");
    }
    Ok(body)
}

/// How long a change in Vault may take to reach the gateway: the positive
/// cache TTL plus slack for the poll.
/// In keys-file mode, the render deadline instead.
pub fn cache_deadline() -> Duration {
    if keys_file_mode() {
        return render_deadline();
    }
    Duration::from_millis(env().cache.positive_ttl_ms) + Duration::from_secs(5)
}

/// The owner the upstream sees for a key issued with `owner`: the keys file
/// carries no owner, so in keys-file mode it is empty.
pub fn expected_owner(owner: &str) -> &str {
    if keys_file_mode() { "" } else { owner }
}
