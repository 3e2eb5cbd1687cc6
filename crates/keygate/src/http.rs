//! The HTTP side: forward-auth for gateways that ask over plain HTTP
//! (Traefik forwardAuth, nginx auth_request, Caddy forward_auth, APISIX
//! forward-auth, Envoy HTTP ext_authz with `path_prefix: /auth`), plus
//! `/healthz`, `/readyz`, `/metrics` and `/v1/invalidations` (the
//! invalidation feed, `crate::feed`, for the Envoy dynamic module).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::boxed_future::BoxFuture;
use crate::decision::Validator;
use crate::feed::{FeedEvent, PING_LINE};
use crate::outcome::Outcome;
use crate::protocol::Protocol;
use crate::vault::{Readiness, Vault};

// The forward-auth request's parsing (original URI, presented key) is in
// keygate-config, beside the routes it feeds: the fuzz targets build it
// without keygate's server stack.
pub use keygate_config::forward_auth::{API_KEY_HEADER, forward_auth_request};
use keygate_config::forward_auth::{api_key, original_uri};
pub const OWNER_HEADER: &str = "x-keyrig-owner";
pub const GROUP_HEADER: &str = "x-keyrig-group";
pub const REASON_HEADER: &str = "x-keyrig-reason";
/// On an allowed forward-auth answer for a key whose record has `expires`:
/// that moment, in Unix seconds, so a follower that caches the answer (the
/// Envoy module) lets it lapse then. Gateways ignore it.
pub const EXPIRES_HEADER: &str = "x-keyrig-expires";

/// How often a follower of `/v1/invalidations` gets a ping line when
/// nothing happens, unless the router is given another interval: well
/// inside the HTTP port's default idle timeout (60 s), which would
/// otherwise close a quiet feed.
pub const FEED_PING: Duration = Duration::from_secs(10);

/// What `/readyz` asks; Vault in production, a stub in tests.
pub trait ReadinessSource: Send + Sync + 'static {
    fn readiness(&self) -> BoxFuture<'_, Readiness>;
}

impl ReadinessSource for Vault {
    fn readiness(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(Vault::readiness(self))
    }
}

#[derive(Clone)]
struct AppState {
    validator: Arc<Validator>,
    readiness: Arc<dyn ReadinessSource>,
    /// `gateway_group_file`: `/readyz` reports its content as `gateway_group`.
    group_file: Option<Arc<std::path::PathBuf>>,
    /// Ping interval of `/v1/invalidations`.
    feed_ping: Duration,
    /// Places for followers of `/v1/invalidations`
    /// (`limits.invalidation_feed_followers`).
    followers: Arc<Semaphore>,
}

pub fn router(validator: Arc<Validator>, readiness: Arc<dyn ReadinessSource>) -> Router {
    router_with_group(
        validator,
        readiness,
        None,
        FEED_PING,
        keygate_config::limits::Limits::default().invalidation_feed_followers,
    )
}

/// The router, with `/readyz` also reporting the gateway group read from
/// `group_file` (unreadable or empty: not ready, since the delivery broke),
/// and `/v1/invalidations` pinging every `feed_ping` (keep it below
/// `limits.idle_timeout`) to at most `max_followers` followers at once.
pub fn router_with_group(
    validator: Arc<Validator>,
    readiness: Arc<dyn ReadinessSource>,
    group_file: Option<std::path::PathBuf>,
    feed_ping: Duration,
    max_followers: usize,
) -> Router {
    Router::new()
        .route("/auth", any(forward_auth))
        .route("/auth/{*rest}", any(forward_auth))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/invalidations", get(invalidations))
        // `/auth/` (Envoy appending the root path) is not matched by the
        // wildcard route; it still deserves a decision rather than a 404.
        .fallback(fallback)
        .with_state(AppState {
            validator,
            readiness,
            group_file: group_file.map(Arc::new),
            feed_ping,
            followers: Arc::new(Semaphore::new(max_followers)),
        })
}

async fn fallback(state: State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    if uri.path().starts_with("/auth/") {
        forward_auth(state, uri, headers).await
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn forward_auth(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let original = original_uri(&headers, &uri);
    let outcome = state
        .validator
        .decide(Protocol::Http, &original, api_key(&headers))
        .await;
    let extra = match outcome {
        Outcome::Allow { .. } => state.validator.upstream_headers().await,
        Outcome::Deny(_) => Vec::new(),
    };
    match outcome {
        Outcome::Allow {
            owner,
            group,
            expires,
        } => {
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            // Names and plain values are checked at load, referenced
            // values when resolved (`refs`), so none is left out here.
            for (name, value) in extra {
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    headers.insert(name, value);
                }
            }
            // Owners with control characters are refused as corrupt records
            // by `decision`, so these conversions do not fail in practice;
            // if one did, an empty value still overwrites a client's own.
            headers.insert(
                OWNER_HEADER,
                HeaderValue::from_bytes(owner.as_bytes()).unwrap_or(HeaderValue::from_static("")),
            );
            headers.insert(
                GROUP_HEADER,
                HeaderValue::from_bytes(group.as_bytes()).unwrap_or(HeaderValue::from_static("")),
            );
            if let Some(expires) = expires {
                headers.insert(EXPIRES_HEADER, HeaderValue::from(expires.unix_timestamp()));
            }
            response
        }
        Outcome::Deny(reason) => {
            let status =
                StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::FORBIDDEN);
            (
                status,
                [
                    (REASON_HEADER, reason.code()),
                    (CONTENT_TYPE.as_str(), "application/json"),
                ],
                reason.json_body(),
            )
                .into_response()
        }
    }
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let group = match state.group_file.as_deref() {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
            Ok(_) => {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "ready": false, "reason": format!("gateway_group_file {} is empty", path.display()) }),
                );
            }
            Err(err) => {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "ready": false, "reason": format!("gateway_group_file {} cannot be read: {err}", path.display()) }),
                );
            }
        },
    };
    match state.readiness.readiness().await {
        Readiness::Ready(info) => {
            let mut body = json!({ "ready": true, "vault_token_accessor": info.accessor, "policies": info.policies });
            if let Some(group) = group {
                body["gateway_group"] = json!(group);
            }
            json_response(StatusCode::OK, body)
        }
        Readiness::NotReady(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "reason": reason }),
        ),
    }
}

/// `GET /v1/invalidations`: the invalidation feed (`crate::feed`), one JSON
/// line per event, starting with a `stale` line (what happened before this
/// follower connected went unseen), a `stale` line whenever it fell behind,
/// and a ping every `feed_ping`. The response never ends on its own; the
/// follower reconnects when it does (keygate restarting, the idle timeout).
/// Each follower holds one of the port's `limits.http_connections` for as
/// long as it follows, so there are at most
/// `limits.invalidation_feed_followers` at once; beyond, 503.
async fn invalidations(State(state): State<AppState>) -> Response {
    let Some(feed) = state.validator.invalidation_feed() else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({ "reason": "no invalidation feed: keygate caches nothing with keys.source: file" }),
        );
    };
    let Ok(place) = state.followers.clone().try_acquire_owned() else {
        debug!("GET /v1/invalidations refused: limits.invalidation_feed_followers are following");
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "reason": "too many followers of the invalidation feed (limits.invalidation_feed_followers); try again later" }),
        );
    };
    let follower = Follower {
        events: feed.subscribe(),
        ping: tokio::time::interval_at(
            tokio::time::Instant::now() + state.feed_ping,
            state.feed_ping,
        ),
        first: true,
        _count: FollowerCount::new(state.validator.clone()),
        _place: place,
    };
    let lines = futures_util::stream::unfold(follower, |mut follower| async move {
        let line = follower.next_line().await?;
        Some((Ok::<_, Infallible>(line), follower))
    });
    (
        [
            (CONTENT_TYPE.as_str(), "application/x-ndjson"),
            ("cache-control", "no-store"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

/// One connected follower of the feed.
struct Follower {
    events: tokio::sync::broadcast::Receiver<FeedEvent>,
    ping: tokio::time::Interval,
    first: bool,
    _count: FollowerCount,
    /// One of `limits.invalidation_feed_followers`, given back on hang-up.
    _place: OwnedSemaphorePermit,
}

impl Follower {
    /// The next line to send; `None` once the feed is gone (shutdown).
    async fn next_line(&mut self) -> Option<String> {
        use tokio::sync::broadcast::error::RecvError;
        if std::mem::take(&mut self.first) {
            return Some(FeedEvent::Stale { why: "connected" }.line());
        }
        tokio::select! {
            event = self.events.recv() => match event {
                Ok(event) => Some(event.line()),
                // Lines were lost, any of them a revocation.
                Err(RecvError::Lagged(_)) => Some(FeedEvent::Stale { why: "lagged" }.line()),
                Err(RecvError::Closed) => None,
            },
            _ = self.ping.tick() => Some(PING_LINE.to_owned()),
        }
    }
}

/// Counts a follower in `keygate_invalidation_feed_followers` while alive.
struct FollowerCount(Arc<Validator>);

impl FollowerCount {
    fn new(validator: Arc<Validator>) -> Self {
        validator.metrics().invalidation_feed_follower(true);
        Self(validator)
    }
}

impl Drop for FollowerCount {
    fn drop(&mut self) {
        self.0.metrics().invalidation_feed_follower(false);
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.validator.metrics().encode(),
    )
        .into_response()
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use apikey::{ApiKey, KeyRecord};

    use super::*;
    use crate::cache::RecordCache;
    use crate::cache::tests::FakeSource;
    use crate::config::CacheConfig;
    use crate::metrics::Metrics;
    use crate::routes::Routes;
    use crate::vault::TokenInfo;

    struct Ready(bool);

    impl ReadinessSource for Ready {
        fn readiness(&self) -> BoxFuture<'_, Readiness> {
            let answer = if self.0 {
                Readiness::Ready(TokenInfo {
                    accessor: "acc".into(),
                    policies: vec!["default".into(), "gateway-policy".into()],
                    ttl: Duration::from_secs(60),
                    renewable: true,
                })
            } else {
                Readiness::NotReady("cannot reach Vault".into())
            };
            Box::pin(async move { answer })
        }
    }

    /// Serves the router on an ephemeral port; returns its base URL.
    async fn serve(source: Arc<FakeSource>, ready: bool) -> String {
        serve_with_ping(source, ready, FEED_PING).await.0
    }

    /// The same, with the feed's ping interval, and the cache's invalidator.
    async fn serve_with_ping(
        source: Arc<FakeSource>,
        ready: bool,
        feed_ping: Duration,
    ) -> (String, crate::cache::Invalidator) {
        let doc = "groupId: billing\nservers: [{url: /billing}]\npaths: {/invoices: {}, /: {}}\n";
        let routes = Routes::from_documents([("b.yaml", doc, false)]).unwrap();
        let metrics = Arc::new(Metrics::new());
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(1),
            resurrect_ttl: Duration::ZERO,
        };
        let records = RecordCache::new(source, config, metrics.clone());
        let invalidator = records.invalidator();
        let validator = Arc::new(Validator::new(routes, records, metrics, "api-portal-keys"));
        let app = router_with_group(validator, Arc::new(Ready(ready)), None, feed_ping, 2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, invalidator)
    }

    /// A streamed response read line by line.
    struct Lines {
        response: reqwest::Response,
        text: String,
    }

    impl Lines {
        /// The next `count` complete lines.
        async fn next(&mut self, count: usize) -> Vec<String> {
            while self.text.matches('\n').count() < count {
                let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("no further line within 5 s; got so far: {:?}", self.text)
                    })
                    .unwrap()
                    .expect("the feed ended");
                self.text.push_str(std::str::from_utf8(&chunk).unwrap());
            }
            let mut lines = Vec::new();
            for _ in 0..count {
                let end = self.text.find('\n').unwrap();
                lines.push(self.text[..end].to_owned());
                self.text.drain(..=end);
            }
            lines
        }
    }

    #[tokio::test]
    async fn the_invalidation_feed_starts_stale_then_streams_drops_stale_marks_and_pings() {
        let source = Arc::new(FakeSource::default());
        let (base, invalidator) = serve_with_ping(source, true, Duration::from_millis(200)).await;
        let response = reqwest::get(format!("{base}/v1/invalidations"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        let mut feed = Lines {
            response,
            text: String::new(),
        };
        assert_eq!(
            feed.next(1).await,
            [r#"{"type":"stale","why":"connected"}"#]
        );
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("keygate_invalidation_feed_followers 1"),
            "{metrics}"
        );

        let key = ApiKey::generate();
        invalidator.drop_key("billing", &key.selector()).await;
        invalidator.all_stale("audit stream ended");
        let events: Vec<serde_json::Value> = feed
            .next(2)
            .await
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            events,
            [
                json!({"type": "drop", "group": "billing", "selector": key.selector().as_str()}),
                json!({"type": "stale", "why": "audit stream ended"}),
            ]
        );
        // Nothing more happens: pings keep the connection busy.
        assert_eq!(feed.next(1).await, [r#"{"type":"ping"}"#]);

        drop(feed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let metrics = reqwest::get(format!("{base}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metrics.contains("keygate_invalidation_feed_followers 0") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the follower that hung up is still counted:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each follower holds a connection for as long as it follows: beyond
    /// `limits.invalidation_feed_followers` (2 here) they are refused with
    /// 503 and a reason, and a place freed is taken again.
    #[tokio::test]
    async fn followers_beyond_the_limit_are_refused_with_503() {
        let source = Arc::new(FakeSource::default());
        let (base, _invalidator) = serve_with_ping(source, true, FEED_PING).await;
        let follow = || reqwest::get(format!("{base}/v1/invalidations"));
        let mut followers = Vec::new();
        for _ in 0..2 {
            let response = follow().await.unwrap();
            assert_eq!(response.status(), 200);
            let mut feed = Lines {
                response,
                text: String::new(),
            };
            feed.next(1).await;
            followers.push(feed);
        }
        let refused = follow().await.unwrap();
        assert_eq!(refused.status(), 503);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("limits.invalidation_feed_followers"),
            "{body}"
        );
        // Forward-auth is answered meanwhile.
        let auth = reqwest::get(format!("{base}/auth/billing/invoices"))
            .await
            .unwrap();
        assert_eq!(auth.headers()["x-keyrig-reason"], "missing");

        drop(followers.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let response = follow().await.unwrap();
            if response.status() == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the place of a follower that hung up was not given back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn an_allowed_key_with_an_expiry_carries_it_in_unix_seconds() {
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        let expires = time::OffsetDateTime::now_utc() + Duration::from_secs(3600);
        source.put(
            "billing",
            &key,
            KeyRecord::for_key(&key, "user-1").with_expiry(expires),
        );
        let lasting = ApiKey::generate();
        source.put("billing", &lasting, KeyRecord::for_key(&lasting, "user-2"));
        let base = serve(source, true).await;
        let ask = |key: String| {
            let base = base.clone();
            async move {
                reqwest::Client::new()
                    .get(format!("{base}/auth/billing/invoices"))
                    .header("x-api-key", key)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let allowed = ask(key.expose().to_owned()).await;
        assert_eq!(allowed.status(), 200);
        assert_eq!(
            allowed.headers()[EXPIRES_HEADER],
            expires.unix_timestamp().to_string().as_str()
        );
        let allowed = ask(lasting.expose().to_owned()).await;
        assert_eq!(allowed.status(), 200);
        assert!(allowed.headers().get(EXPIRES_HEADER).is_none());
    }

    #[tokio::test]
    async fn forward_auth_allows_and_denies_with_reason() {
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        source.put("billing", &key, KeyRecord::for_key(&key, "user-1"));
        let base = serve(source, true).await;
        let client = reqwest::Client::new();

        // Traefik style: X-Forwarded-Uri, any method.
        let allowed = client
            .post(format!("{base}/auth"))
            .header("X-Forwarded-Uri", "/billing/invoices?page=2")
            .header("X-API-Key", key.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(allowed.status(), 200);
        assert_eq!(allowed.headers()["x-keyrig-owner"], "user-1");
        assert_eq!(allowed.headers()["x-keyrig-group"], "billing");
        assert_eq!(allowed.text().await.unwrap(), "");

        // nginx style: X-Original-URI.
        let nginx = client
            .get(format!("{base}/auth"))
            .header("X-Original-URI", "/billing/invoices")
            .header("x-api-key", key.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(nginx.status(), 200);

        // Envoy HTTP ext_authz style: the original path after /auth.
        let envoy = client
            .get(format!("{base}/auth/billing/invoices"))
            .header("x-api-key", key.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(envoy.status(), 200);

        let missing = client
            .get(format!("{base}/auth/billing/invoices"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.headers()["x-keyrig-reason"], "missing");
        assert_eq!(missing.headers()["content-type"], "application/json");
        assert_eq!(missing.text().await.unwrap(), r#"{"reason":"missing"}"#);

        let unknown = client
            .get(format!("{base}/auth/billing/invoices"))
            .header("x-api-key", ApiKey::generate().expose())
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.headers()["x-keyrig-reason"], "unknown");

        for path in ["/auth/billing/nope", "/auth/", "/auth"] {
            let response = client
                .get(format!("{base}{path}"))
                .header("x-api-key", key.expose())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 403, "{path}");
            assert_eq!(response.headers()["x-keyrig-reason"], "no-route", "{path}");
        }

        let twice = client
            .get(format!("{base}/auth/billing/invoices"))
            .header("x-api-key", key.expose())
            .header("x-api-key", key.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(twice.headers()["x-keyrig-reason"], "malformed");

        assert_eq!(
            client
                .get(format!("{base}/authx"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );

        // A client adding the header its gateway does not set cannot pick
        // another route: disagreeing sources route nowhere.
        let spoofed = client
            .get(format!("{base}/auth"))
            .header("X-Original-URI", "/billing/nope")
            .header("X-Forwarded-Uri", "/billing/invoices")
            .header("x-api-key", key.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(spoofed.headers()["x-keyrig-reason"], "no-route");
        let spoofed_envoy = client
            .get(format!("{base}/auth/billing/nope"))
            .header("X-Forwarded-Uri", "/billing/invoices")
            .header("x-api-key", key.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(spoofed_envoy.headers()["x-keyrig-reason"], "no-route");
        // Agreeing sources are fine, queries aside.
        let agreeing = client
            .get(format!("{base}/auth/billing/invoices"))
            .header("X-Forwarded-Uri", "/billing/invoices?page=3")
            .header("x-api-key", key.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(agreeing.status(), 200);

        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("keygate_decisions_total{outcome=\"allow\",protocol=\"http\"} 4"),
            "{metrics}"
        );
        assert!(
            metrics.contains("keygate_decisions_total{outcome=\"no-route\",protocol=\"http\"} 5"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn vault_outage_is_503_on_forward_auth() {
        let source = Arc::new(FakeSource::default());
        source.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let base = serve(source, false).await;
        let response = reqwest::Client::new()
            .get(format!("{base}/auth/billing/invoices"))
            .header("x-api-key", ApiKey::generate().expose())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-keyrig-reason"], "vault-unavailable");
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let up = serve(Arc::new(FakeSource::default()), true).await;
        let down = serve(Arc::new(FakeSource::default()), false).await;
        let get = |url: String| async move { reqwest::get(url).await.unwrap() };

        assert_eq!(get(format!("{down}/healthz")).await.status(), 200);

        let ready = get(format!("{up}/readyz")).await;
        assert_eq!(ready.status(), 200);
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(
            body,
            json!({"ready": true, "vault_token_accessor": "acc", "policies": ["default", "gateway-policy"]})
        );

        let not_ready = get(format!("{down}/readyz")).await;
        assert_eq!(not_ready.status(), 503);
        let body: serde_json::Value = not_ready.json().await.unwrap();
        assert_eq!(body["ready"], false);
        assert_eq!(body["reason"], "cannot reach Vault");
    }
}
