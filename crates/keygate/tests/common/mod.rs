//! Fixtures shared by the integration tests: config files on disk and a fake
//! Vault that speaks just enough of the HTTP API for keygate.

#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const BILLING: &str = "\
openapi: 3.0.1
groupId: billing-api
servers:
  - url: /billing
paths:
  /invoices: {}
  /invoices/{invoiceId}: {}
";

pub const ANIMALS: &str = "\
openapi: 3.0.1
groupId: animal-rescue-api
servers:
  - url: http://gateway.local/animal-rescue
paths:
  /animals: {}
";

pub const ROLE_ID: &str = "role-1234";
pub const SECRET_ID: &str = "secret-5678";

/// A directory with `keygate.yaml`, two OpenAPI documents and AppRole
/// secret files.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Fixture {
    pub fn new(vault_address: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("apis")).unwrap();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("apis/billing.yaml"), BILLING).unwrap();
        std::fs::write(dir.path().join("apis/animals.yaml"), ANIMALS).unwrap();
        std::fs::write(dir.path().join("secrets/role-id"), format!("{ROLE_ID}\n")).unwrap();
        std::fs::write(
            dir.path().join("secrets/secret-id"),
            format!("{SECRET_ID}\n"),
        )
        .unwrap();
        let [grpc, http] = free_ports();
        let fixture = Self { dir, grpc, http };
        fixture.write_config(&fixture.config_text(vault_address));
        fixture
    }

    pub fn config_text(&self, vault_address: &str) -> String {
        format!(
            "\
listen:
  grpc: {grpc}
  http: {http}
vault:
  address: {vault_address}
  timeout: 1s
  auth:
    approle:
      role_id_file: secrets/role-id
      secret_id_file: secrets/secret-id
apis:
  - apis/billing.yaml
  - apis/animals.yaml
cache:
  positive_ttl: 0s
  negative_ttl: 0s
",
            grpc = self.grpc,
            http = self.http,
        )
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("keygate.yaml")
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Starts keygate on this fixture's config; it is killed on drop.
    pub fn start(&self) -> Running {
        self.start_with_env(&[])
    }

    /// [`Self::start`] with extra environment variables.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("--config")
            .arg(self.config())
            .env("RUST_LOG", "keygate=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running { child: Some(child) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

/// A keygate process, killed when dropped so a failing test leaves nothing
/// running.
pub struct Running {
    child: Option<Child>,
}

impl Running {
    /// Waits for the process to exit by itself; returns its status and stderr.
    pub fn wait(mut self, timeout: Duration) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Stops the process and returns everything it logged.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nothing listens on (at the moment of asking).
pub fn free_port() -> SocketAddr {
    let [port] = free_ports();
    port
}

/// `N` different ports nothing listens on (at the moment of asking): all
/// bound at once before any is let go, so the kernel cannot hand the same
/// one out twice (a CI run got grpc and http on one port that way).
pub fn free_ports<const N: usize>() -> [SocketAddr; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|listener| listener.local_addr().unwrap())
}

/// Polls `url` until it answers `status`, or panics with what it last saw.
pub async fn wait_for_status(url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::from("nothing yet");
    while Instant::now() < deadline {
        match reqwest::get(url).await {
            Ok(response) if response.status() == status => return,
            Ok(response) => last = format!("status {}", response.status()),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer {status} within 20s; last: {last}");
}

/// The fake Vault's state: issued tokens, records, and knobs for failures.
#[derive(Default)]
pub struct FakeVaultState {
    pub tokens: Vec<String>,
    /// `<group>/<selector>` -> record data.
    pub records: HashMap<String, Value>,
    pub root_policy: bool,
    pub logins: usize,
    /// Logins refused for their credentials.
    pub rejected_logins: usize,
}

#[derive(Clone)]
pub struct FakeVault {
    pub address: String,
    pub state: Arc<Mutex<FakeVaultState>>,
}

impl FakeVault {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeVaultState::default()));
        let app = Router::new()
            .route("/v1/auth/approle/login", post(login))
            .route("/v1/auth/token/lookup-self", get(lookup_self))
            .route("/v1/api-portal-keys/data/{group}/{selector}", get(read))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, state }
    }

    pub fn put(&self, group: &str, selector: &str, record: Value) {
        self.state
            .lock()
            .unwrap()
            .records
            .insert(format!("{group}/{selector}"), record);
    }

    /// Invalidates every token, as a revocation or a Vault restart would.
    pub fn revoke_all(&self) {
        self.state.lock().unwrap().tokens.clear();
    }
}

type Shared = State<Arc<Mutex<FakeVaultState>>>;

fn errors(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "errors": [message] }))).into_response()
}

fn authorised(state: &FakeVaultState, headers: &HeaderMap) -> bool {
    headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|token| state.tokens.iter().any(|t| t == token))
}

async fn login(State(state): Shared, Json(body): Json<Value>) -> Response {
    let mut state = state.lock().unwrap();
    if body["role_id"] != ROLE_ID || body["secret_id"] != SECRET_ID {
        state.rejected_logins += 1;
        return errors(StatusCode::BAD_REQUEST, "invalid role or secret ID");
    }
    state.logins += 1;
    let token = format!("fake-token-{}", state.logins);
    state.tokens.push(token.clone());
    Json(json!({ "auth": { "client_token": token, "accessor": "acc", "lease_duration": 3600 } }))
        .into_response()
}

async fn lookup_self(State(state): Shared, headers: HeaderMap) -> Response {
    let state = state.lock().unwrap();
    if !authorised(&state, &headers) {
        return errors(StatusCode::FORBIDDEN, "permission denied");
    }
    let policies = if state.root_policy {
        json!(["root"])
    } else {
        json!(["default", "gateway-policy"])
    };
    Json(json!({ "data": {
        "accessor": format!("accessor-{}", state.logins),
        "policies": policies,
        "ttl": 3600,
        "renewable": true,
    }}))
    .into_response()
}

async fn read(
    State(state): Shared,
    headers: HeaderMap,
    UrlPath((group, selector)): UrlPath<(String, String)>,
) -> Response {
    let state = state.lock().unwrap();
    if !authorised(&state, &headers) {
        return errors(StatusCode::FORBIDDEN, "permission denied");
    }
    match state.records.get(&format!("{group}/{selector}")) {
        Some(record) => Json(json!({ "data": {
            "data": record,
            "metadata": { "version": 1, "deletion_time": "", "destroyed": false },
        }}))
        .into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "errors": [] }))).into_response(),
    }
}

/// Writes `path` relative to `dir`, creating parents.
pub fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
