//! Shared fixtures for the e2e assertions. Everything here goes through public
//! endpoints named by `env.json`: the gateway, the Vault HTTP API and
//! keygate's health endpoint. Tokens live in memory and are never printed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use apikey::{ApiKey, KeyRecord};
use reqwest::Method;
use rig::contract::env::Environment;
use rig::vault::client::{Secret, VaultClient};
use serde_json::{Value, json};

pub use rig::contract::case::CaseGuard;

#[path = "shared/hostile.rs"]
pub mod hostile;

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
    CaseGuard::start(&pass_group(group), name)
}

/// Starts a case that needs an env.json section only some profiles write
/// (`workload_identity`, `environments`, `references`: local only). Without
/// it the case is recorded as skipped, with the reason, and `None` returned.
pub fn case_with_section(
    group: &str,
    name: &str,
    section: &str,
    present: bool,
) -> Option<CaseGuard> {
    let mut guard = case(group, name);
    if present {
        return Some(guard);
    }
    guard.skip(format!(
        "env.json has no `{section}`: the {} profile does not set it up (local profile only)",
        env().profile
    ));
    None
}

/// `group`, or `<group>@keys-file` in the keys-file pass.
fn pass_group(group: &str) -> String {
    if keys_file_mode() {
        format!("{group}@keys-file")
    } else {
        group.to_owned()
    }
}

/// Whether `gateway_url` validates from keys files rendered by a Vault
/// Agent (Spring Cloud Gateway's way) instead of reading Vault per key.
/// What differs there: the file holds `<selector>,<hash>` only, so the
/// upstream gets an empty `x-keyrig-owner`, expiry is unknown (an expired
/// key is accepted until it is deleted), and a change lands within the
/// render interval plus keygate's poll instead of the cache TTL.
pub fn keys_file_mode() -> bool {
    env().key_source == rig::contract::env::KEY_SOURCE_FILE
}

/// What the validator the user runs does (env.json `validator`), when no
/// keygate runs (`cargo xtask up --no-keygate`, then `e2e --gateway-url`):
/// its declared propagation time, whether it forwards the owner, whether
/// it knows expiry. `None`: keygate is the validator.
pub fn external_validator() -> Option<rig::contract::env::ValidatorTraits> {
    let env = env();
    if env.key_source != rig::contract::env::KEY_SOURCE_EXTERNAL {
        return None;
    }
    Some(env.validator.unwrap_or_default())
}

/// The validator behind the gateway knows a key's expiry (keygate reading
/// Vault does; the keys file holds none; a validator the user runs says).
pub fn enforces_expiry() -> bool {
    match external_validator() {
        Some(traits) => traits.enforces_expiry,
        None => !keys_file_mode(),
    }
}

/// How long a change in Vault may take to reach a validator the user
/// runs: what it declares, plus slack for the request that shows it.
fn external_deadline(traits: rig::contract::env::ValidatorTraits) -> Duration {
    Duration::from_millis(traits.propagation_ms) + Duration::from_secs(2)
}

/// The longest a rendered change may take to reach the keys-file gateway:
/// render interval + keygate's poll + slack for the agent's own work.
///
/// The slack is wide because of the other cases of the same environment:
/// each deletes the keys it issued when it ends, and the agent's template
/// (list the group, then read each key) stalls while a listed key is gone
/// by the time it is read: the read fails, is retried with backoff (250
/// ms, 500 ms, 1 s, ...), and no file is rendered until a listing without
/// it. Under the suite's deletions that held renders back for 7 s once
/// (docs/delivery.md). The wait ends at the first answer that shows the
/// change, and the time it took is recorded either way.
pub fn render_deadline() -> Duration {
    let side = env()
        .keys_file
        .as_ref()
        .expect("this environment has no keys-file gateway (env.json keys_file)");
    Duration::from_millis(side.render_interval_ms + side.poll_interval_ms) + Duration::from_secs(15)
}

/// In keys-file mode a key written to Vault exists at the gateway only once
/// the agent rendered it: wait until the gateway stops calling it `unknown`.
/// In Vault mode, the negative cache is the only delay and a fresh selector
/// has never been looked up, so there is nothing to wait for.
/// A validator the user runs may also take time to see a new key: the
/// same wait, within its declared propagation time.
pub async fn await_delivery(group: &str, key: &str) -> Result<()> {
    let (what, deadline) = match external_validator() {
        Some(traits) => (
            "your validator to see the new key",
            external_deadline(traits),
        ),
        // A precondition of the case, not what it asserts (how fast a
        // render lands is keys_file_rotation's and the bench's): three
        // render deadlines, since with every mode's suite running at once
        // the agent's renders of a keys file that grows with each case
        // fall behind.
        None if keys_file_mode() => (
            "the agent to render the new key into the keys file",
            render_deadline() * 3,
        ),
        None => return Ok(()),
    };
    let path = api_path(group);
    rig::base::wait::wait_until(what, deadline, async || {
        let reply = gateway_get(&path, Some(key)).await?;
        Ok(match reply.reason.as_deref() {
            Some("unknown") => rig::base::wait::Probe::seen(format!("{} unknown", reply.status)),
            _ => rig::base::wait::Probe::Ready(()),
        })
    })
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

/// A Vault token for a test's requests, or none (logins): rig's `Secret`,
/// whose `Debug` hides it so a failed assertion cannot print it.
#[derive(Clone, Debug)]
pub struct Token(Option<Secret>);

impl Token {
    /// No token, for logins.
    pub fn none() -> Self {
        Token(None)
    }

    /// The client token of a login answer.
    pub fn from_login(body: &Value) -> Result<Self> {
        match body["auth"]["client_token"].as_str() {
            Some(token) => Ok(Token(Some(Secret::new(token)))),
            None => bail!("the login answer carries no token: {}", body["errors"]),
        }
    }
}

/// A Vault answer: status and JSON body (Null when empty).
#[derive(Debug)]
pub struct VaultReply {
    pub status: u16,
    pub body: Value,
}

/// Calls the Vault HTTP API (`path` is below `/v1/`) with `token`: rig's
/// `VaultClient` for env.json's address, so tests and harness speak to
/// Vault through one client (https with `VAULT_CACERT` included).
pub async fn vault(
    method: &str,
    path: &str,
    token: &Token,
    body: Option<Value>,
) -> Result<VaultReply> {
    let method = Method::from_bytes(method.as_bytes())?;
    let client = VaultClient::from_env_addr(&env().vault_addr)?;
    let client = match &token.0 {
        Some(secret) => client.with_token(secret.clone()),
        None => client,
    };
    let (status, body) = client.request(method, path, body.as_ref()).await?;
    Ok(VaultReply {
        status: status.as_u16(),
        body,
    })
}

pub fn root_token() -> Token {
    Token(Some(Secret::new(
        env()
            .root_token()
            .expect("reading the root token file named by env.json"),
    )))
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
        &Token::none(),
        Some(json!({
            "role_id": role_id.body["data"]["role_id"],
            "secret_id": secret_id.body["data"]["secret_id"],
        })),
    )
    .await?;
    if let Some(secret_id) = secret_id.body["data"]["secret_id"].as_str() {
        rig::base::redact::register_secret(secret_id);
    }
    match login.body["auth"]["client_token"].as_str() {
        Some(token) if login.status == 200 => {
            rig::base::redact::register_secret(token);
            Ok(Token(Some(Secret::new(token))))
        }
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
    // Registered before use, so no report or failure message can show it.
    rig::base::redact::register_secret(key.expose());
    let record = record(KeyRecord::for_key(&key, "e2e-owner"));
    store_record(group, &key, &record).await?;
    // Inside a matrix case: deleted when the case ends (`for_each_gateway`).
    let _outside_a_matrix_case = ISSUED.try_with(|issued| {
        issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((group.to_owned(), key.selector().as_str().to_owned()));
    });
    await_delivery(group, key.expose()).await?;
    Ok(key)
}

tokio::task_local! {
    /// The (group, selector) of every key a matrix case issued, so the
    /// case deletes them when it ends: a keys-file bao agent re-reads every
    /// key of its groups at each render (once a second here), so keys left
    /// behind made each render longer for the rest of the run (about 80 %
    /// of Vault's requests in a run were those re-reads), and on the
    /// cluster profile they would be left in your Vault.
    static ISSUED: Arc<std::sync::Mutex<Vec<(String, String)>>>;
}

/// Deletes the records of the keys a case issued (already revoked ones
/// answer 204 too). A failure is printed, not asserted: the case's own
/// verdict is already recorded, and the environment's teardown removes
/// the rest.
async fn delete_issued(issued: Vec<(String, String)>) {
    for (group, selector) in issued {
        if let Err(err) = delete_record(&group, &selector).await {
            eprintln!("cleanup: the record of selector {selector} in {group} stays: {err:#}");
        }
    }
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

/// Revokes a key the way the portal does: deletes its record, all versions,
/// with the portal's token.
pub async fn revoke_key(group: &str, key: &ApiKey) -> Result<()> {
    delete_record(group, key.selector().as_str()).await
}

async fn delete_record(group: &str, selector: &str) -> Result<()> {
    let portal = portal_token().await?;
    let deleted = vault(
        "DELETE",
        &kv_path("metadata", group, selector),
        &portal,
        None,
    )
    .await?;
    if deleted.status != 204 {
        bail!(
            "deleting the record of selector {selector} answered {}: {}",
            deleted.status,
            deleted.body
        );
    }
    Ok(())
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
    /// The reply of a gateway's response: status, keygate's reason, and the
    /// body as JSON (a string when it is not JSON).
    pub async fn read(response: reqwest::Response) -> Result<Self> {
        let status = response.status().as_u16();
        let reason = response
            .headers()
            .get("x-keyrig-reason")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Self {
            status,
            reason,
            body,
        })
    }

    /// A header the upstream received, from its echo.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }

    /// Let through to the upstream (any 2xx).
    pub fn allowed(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Status and keygate's reason, for messages.
    pub fn short(&self) -> String {
        format!("{} {}", self.status, self.reason.as_deref().unwrap_or("-"))
    }
}

/// GET `path` at the gateway, with `x-api-key` when given.
pub async fn gateway_get(path: &str, api_key: Option<&str>) -> Result<GatewayReply> {
    gateway_get_at(&env().gateway_url, path, api_key).await
}

/// GET `path` at the gateway listening at `base` (e.g. the keys-file one).
pub async fn gateway_get_at(base: &str, path: &str, api_key: Option<&str>) -> Result<GatewayReply> {
    let headers: Vec<(&str, &str)> = api_key.map(|k| ("x-api-key", k)).into_iter().collect();
    get_at(base, path, &headers).await
}

/// GET `base` + `path` with these request headers.
async fn get_at(base: &str, path: &str, headers: &[(&str, &str)]) -> Result<GatewayReply> {
    let url = format!("{base}{path}");
    let mut request = http().get(&url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("GET {url}: the gateway did not answer"))?;
    GatewayReply::read(response).await
}

/// A test of the gateway matrix: the function, whose first parameter is
/// `<name>: &str`, runs once per gateway of this run's environment (env.json
/// `gateways` and `skipped_gateways`, so a gateway added to the catalog is in
/// the matrix with no code change), all of them at once. Each gateway's run
/// records its own case (`case_on`); the test fails when any of them
/// panicked, naming them. Further parameters are rstest's (`#[case] ..`);
/// attributes (`#[case(..)]`, `#[tokio::test]`) go inside, as on the
/// function.
#[macro_export]
macro_rules! gateway_matrix {
    ($(#[$attr:meta])* async fn $name:ident($gateway:ident: &str $(, $($params:tt)*)?) $body:block) => {
        #[rstest::rstest]
        $(#[$attr])*
        async fn $name($($($params)*)?) {
            $crate::for_each_gateway(stringify!($name), async |$gateway: &str| $body).await;
        }
    };
}

/// The name a matrix case is recorded under when the environment names no
/// gateway at all (it is skipped, saying so).
pub const NO_GATEWAY: &str = "(none)";

/// Every gateway this run's environment names, running or skipped, in the
/// catalog's order (by name).
pub fn matrix_gateways() -> Vec<String> {
    let env = env();
    let names: std::collections::BTreeSet<&String> = env
        .gateways
        .keys()
        .chain(env.skipped_gateways.keys())
        .collect();
    names.into_iter().cloned().collect()
}

/// Runs `each` for every gateway of [`matrix_gateways`] at once, on this
/// test's task, and fails naming each gateway whose run panicked. A panic
/// is caught where that gateway's future is polled, so the others run on;
/// it unwinds through the future first, so its case guard records it as
/// failed with the panic's message (printed where it happened). Polled by
/// hand rather than spawned: the cases borrow their rstest parameters.
pub async fn for_each_gateway(test: &str, each: impl AsyncFn(&str)) {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    let gateways = matrix_gateways();
    if gateways.is_empty() {
        // No gateway at all: the case still records itself, as skipped
        // with the reason (`case_on`), never as nothing.
        each(NO_GATEWAY).await;
        return;
    }
    type Running<'a> = Option<Pin<Box<dyn Future<Output = ()> + 'a>>>;
    let mut running: Vec<(&str, Running<'_>)> = gateways
        .iter()
        .map(|g| {
            let run: Pin<Box<dyn Future<Output = ()> + '_>> = Box::pin(each(g));
            (g.as_str(), Some(run))
        })
        .collect();
    let mut failed = Vec::new();
    let issued = Arc::new(std::sync::Mutex::new(Vec::new()));
    ISSUED
        .scope(
            issued.clone(),
            std::future::poll_fn(|cx| {
                for (gateway, slot) in running.iter_mut() {
                    let Some(run) = slot else { continue };
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run.as_mut().poll(cx)
                    })) {
                        Ok(Poll::Pending) => {}
                        Ok(Poll::Ready(())) => *slot = None,
                        Err(_) => {
                            failed.push(gateway.to_string());
                            *slot = None;
                        }
                    }
                }
                if running.iter().all(|(_, slot)| slot.is_none()) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }),
        )
        .await;
    drop(running);
    let issued = std::mem::take(&mut *issued.lock().unwrap_or_else(|p| p.into_inner()));
    delete_issued(issued).await;
    assert!(
        failed.is_empty(),
        "{test} failed through {} of {} gateways: {} (each one's panic is above)",
        failed.len(),
        gateways.len(),
        failed.join(", ")
    );
}

/// One gateway of this run.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub name: String,
    pub url: String,
}

/// Starts a case of the gateway matrix. `Some` when the gateway runs; a
/// gateway of this run's selection that does not run (its binary is absent)
/// records the case as skipped with the reason and gives `None`; a gateway
/// outside the selection (`cargo xtask e2e --gateway ...`) gives `None` and
/// records nothing.
pub fn case_on(gateway: &str, group: &str, name: &str) -> Option<(CaseGuard, Gateway)> {
    let env = env();
    if let Some(url) = env.gateways.get(gateway) {
        let guard = CaseGuard::start_on(&pass_group(group), name, gateway);
        return Some((
            guard,
            Gateway {
                name: gateway.to_owned(),
                url: url.clone(),
            },
        ));
    }
    let mut guard = CaseGuard::start_on(&pass_group(group), name, gateway);
    guard.skip(not_run_reason(env, gateway));
    None
}

/// Why a gateway case has nothing behind it. Every such case is recorded
/// as skipped with this reason, never as nothing (a silent pass).
pub fn not_run_reason(env: &rig::contract::env::Environment, gateway: &str) -> String {
    if let Some(reason) = env.skipped_gateways.get(gateway) {
        return format!("gateway {gateway} does not run: {reason}");
    }
    if env.gateways.is_empty() {
        return format!(
            "no gateway runs in this environment (env.json `gateways` is empty, profile {})",
            env.profile
        );
    }
    format!(
        "gateway {gateway} is not in this run's selection (it runs {})",
        env.gateways.keys().cloned().collect::<Vec<_>>().join(", ")
    )
}

impl Gateway {
    /// GET `path` with `x-api-key` when given.
    pub async fn get(&self, path: &str, api_key: Option<&str>) -> Result<GatewayReply> {
        let headers: Vec<(&str, &str)> = api_key.map(|k| ("x-api-key", k)).into_iter().collect();
        get_at(&self.url, path, &headers).await
    }

    /// GET `path` with these request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<GatewayReply> {
        get_at(&self.url, path, headers).await
    }

    /// `host:port` of the listener, for requests written by hand.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Sends a request written by hand (HTTP/1.1, `Connection: close`), for
    /// what an HTTP client would change first: header-name case, dot
    /// segments. `target` goes into the request line as is.
    pub async fn raw_get(&self, target: &str, headers: &[(&str, &str)]) -> Result<RawReply> {
        use std::io::Write;
        let authority = self.authority().to_owned();
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        let text = tokio::task::spawn_blocking(move || -> Result<String> {
            let mut stream = std::net::TcpStream::connect(&authority)
                .with_context(|| format!("connecting to the gateway at {authority}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.write_all(request.as_bytes())?;
            let response = read_response(&mut stream)?;
            Ok(String::from_utf8_lossy(&response).into_owned())
        })
        .await??;
        RawReply::parse(&text)
    }
}

/// One HTTP/1.1 response, read until it is complete: its head, then the
/// `Content-Length` bytes of its body, or its chunks to the last one, or
/// (neither) to the end of the stream. Not to the end in every case: after
/// a local reply, Envoy holds the closing connection open for its
/// `delayed_close_timeout` (1 s), which a client reading to the end waits
/// out on every denial.
pub fn read_response(stream: &mut impl std::io::Read) -> Result<Vec<u8>> {
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let complete = |response: &[u8]| -> bool {
        let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
        let body = &response[end + 4..];
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if let Some(length) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
            return body.len() >= length;
        }
        if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            return body.ends_with(b"0\r\n\r\n");
        }
        false
    };
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            // A timeout or reset: say what had arrived, which is what the
            // failure is about (a head without its body, or nothing).
            Err(err) => {
                let seen = String::from_utf8_lossy(&response[..response.len().min(1024)]);
                return Err(anyhow::Error::new(err).context(format!(
                    "reading the response failed after {} bytes: {seen:?}",
                    response.len()
                )));
            }
        };
        if n == 0 {
            return Ok(response);
        }
        response.extend_from_slice(&buf[..n]);
        if complete(&response) {
            return Ok(response);
        }
    }
}

/// A response read off the socket.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawReply {
    fn parse(text: &str) -> Result<Self> {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no HTTP status line in the answer: {status_line:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Self {
            status,
            headers,
            body: body.to_owned(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A path under a group's route that its OpenAPI document declares.
pub fn api_path(group: &str) -> String {
    let env = env();
    env.route(group).expect("group from env.json");
    match env.api_paths.get(group) {
        Some(path) => path.clone(),
        None => panic!(
            "env.json has no api_paths entry for {group}: give its OpenAPI document in scenarios/apis/ a GET path without parameters"
        ),
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

/// The sum of every series of counter `name` (e.g. `keygate_vault_reads_total`)
/// on keygate's `/metrics`, whatever the labels.
pub async fn keygate_counter(name: &str) -> Result<f64> {
    let url = format!("{}/metrics", env().keygate_url);
    let text = http()
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .text()
        .await?;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue; // another metric whose name starts the same
        }
        let value = rest.rsplit(' ').next().unwrap_or_default();
        sum += value
            .parse::<f64>()
            .with_context(|| format!("{url}: `{line}` does not end in a number"))?;
    }
    Ok(sum)
}

/// How long a change in Vault may take to reach the gateway: the positive
/// cache TTL plus slack for the poll.
/// In keys-file mode, the render deadline instead.
/// For a validator the user runs, its declared propagation time.
pub fn cache_deadline() -> Duration {
    if let Some(traits) = external_validator() {
        return external_deadline(traits);
    }
    if keys_file_mode() {
        return render_deadline();
    }
    Duration::from_millis(env().cache.positive_ttl_ms) + Duration::from_secs(5)
}

/// Whether Vault's audit stream reaches the validator behind the gateways
/// (keygate's invalidation listener, env.json `cache.invalidation_addr`);
/// `Err` says why not, for a case that needs it to record as its skip.
pub fn audit_stream() -> Result<(), String> {
    if external_validator().is_some() {
        Err("a validator you run: it declares its own propagation deadline, keygate's audit stream is not asked of it".into())
    } else if keys_file_mode() {
        Err("keys-file mode: the gateway reads the rendered keys file, which no audit stream reaches".into())
    } else if env().cache.invalidation_addr.is_none() {
        Err(format!(
            "no audit stream in this environment (profile {}: env.json has no `cache.invalidation_addr`)",
            env().profile
        ))
    } else {
        Ok(())
    }
}

/// What a poll of the gateway may add to a refusal: the waits poll every
/// 100 ms or so, and a request takes a few ms.
const REFUSAL_POLL_SLACK: Duration = Duration::from_millis(500);

/// How long, from now, a key revoked now may take to be refused, for a key
/// first read through the gateway (so cached) no earlier than `cached_at`,
/// and which bound that is, for the case's message.
///
/// With the audit stream: until the record cached by that first read could
/// expire (`cached_at` + the positive TTL, less the poll's slack). The cache
/// cannot refuse the key before then, so a refusal within it is the
/// invalidation's, while a loaded machine keeps seconds of headroom (a
/// fifth of the TTL, the bound until session 20, was 1 s, and refusals took
/// up to 938 ms during a full `cargo xtask test`). Without the stream: the
/// cache's (or the render's, or a validator's declared) deadline.
pub fn revocation_deadline_since(cached_at: std::time::Instant) -> (Duration, &'static str) {
    match audit_stream() {
        Ok(()) => (
            Duration::from_millis(env().cache.positive_ttl_ms)
                .saturating_sub(cached_at.elapsed())
                .saturating_sub(REFUSAL_POLL_SLACK),
            "before its first read's cache entry could expire (the audit stream)",
        ),
        Err(_) if external_validator().is_some() => {
            (cache_deadline(), "the cache deadline (a validator you run)")
        }
        Err(_) if keys_file_mode() => (
            cache_deadline(),
            "the render deadline (keys-file: no audit stream)",
        ),
        Err(_) => (
            cache_deadline(),
            "the cache deadline (no audit stream in this environment)",
        ),
    }
}

/// The owner the upstream sees for a key issued with `owner`: the keys file
/// carries no owner, so in keys-file mode it is empty; a validator the
/// user runs says whether it forwards it.
pub fn expected_owner(owner: &str) -> &str {
    let forwarded = match external_validator() {
        Some(traits) => traits.forwards_owner,
        None => !keys_file_mode(),
    };
    if forwarded { owner } else { "" }
}

/// Valid requests in `workers` loops against the gateway at `base` until
/// stopped; counts failures and remembers the last one.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_failure: Arc<std::sync::Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Valid requests for `path` with `key` at the gateway at `base`.
    pub fn start(workers: usize, base: String, path: String, key: String) -> Self {
        Self::start_with(workers, Duration::ZERO, move || {
            let (base, path, key) = (base.clone(), path.clone(), key.clone());
            async move {
                let reply = gateway_get_at(&base, &path, Some(&key)).await?;
                Ok((reply.status, format!("{} {:?}", reply.status, reply.reason)))
            }
        })
    }

    /// `workers` loops of `request` (answering the status and how to show
    /// it), `pause` apart; a status other than 200 or an error is a failure.
    pub fn start_with<F, Fut>(workers: usize, pause: Duration, request: F) -> Self
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Result<(u16, String)>> + Send,
    {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            last_failure: Arc::new(std::sync::Mutex::new(None)),
            tasks: Vec::new(),
        };
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed, last) = (
                    load.stop.clone(),
                    load.ok.clone(),
                    load.failed.clone(),
                    load.last_failure.clone(),
                );
                let request = request.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match request().await {
                            Ok((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let seen = match other {
                                    Ok((_, shown)) => shown,
                                    Err(err) => format!("{err:#}"),
                                };
                                *last.lock().unwrap() = Some(seen);
                            }
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    /// Stops the loops; `(ok, failed, last failure)`.
    pub async fn finish(self) -> (u64, u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let last = self.last_failure.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            last,
        )
    }
}
