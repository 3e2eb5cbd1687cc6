//! Revocation in milliseconds: Vault's socket audit device streams every
//! request and response to keygate as JSON lines, and any write to one of a
//! key's paths drops everything the cache holds for that key.
//!
//! Only what OpenBao and HashiCorp Vault both write is read: `type`
//! (`request` or `response`), `request.operation` and `request.path`, which
//! audit devices log in plain text (values are HMAC-ed, and keygate needs
//! none). Both entries of a write count: the request entry is written before
//! Vault applies it and the response entry after, so a read that raced the
//! first is outdated by the second.
//!
//! Vault must never wait for keygate (a socket audit device that blocks
//! stalls all of Vault), so each connection is read as fast as it delivers
//! into a bounded queue; a line that does not fit (or is absurdly long) is
//! dropped and counted, and the whole cache is marked stale, since the
//! dropped line may have been a revocation. A (re)connection or a connection
//! ending marks it stale too: lines may have been lost in between. The
//! positive TTL stays the backstop when no stream is connected at all.
//!
//! A line can only remove cached state (see `cache::Invalidator`): a forged
//! one costs a Vault read, never an allowed request. The listener is not
//! authenticated, so it belongs on loopback or a Unix socket (the config
//! refuses another address without `invalidation.allow_non_loopback`), and
//! what a stranger who connects can do is bounded: the stream marks
//! everything stale at most once a second (a mark due sooner is applied
//! when the second is up, never dropped), a connection nothing arrives on
//! for `invalidation.idle_timeout` is closed, and with every place taken a
//! new connection closes the idlest one rather than being refused, so
//! connections left open cannot lock Vault's device out.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apikey::Selector;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::Invalidator;
use crate::config::{AuditListen, InvalidationConfig};
use crate::metrics::Metrics;

/// Longer lines are dropped (and count as lost): a KV write of an API key
/// is a few KiB at most, and an unbounded line would be unbounded memory.
pub const MAX_LINE: usize = 1 << 20;
/// Vault opens one connection per socket device (HA standbys forward to
/// the active node); more than this at once is not Vault, and a new one
/// closes the idlest.
const MAX_CONNECTIONS: usize = 16;
/// The stream marks every cached answer stale at most this often; a mark
/// due sooner (a connection, its end, a dropped line, a policy change) is
/// applied when the interval is up. A connect loop would otherwise make
/// keygate, and every follower of its feed, read every key again each time.
const STALE_MARK_INTERVAL: Duration = Duration::from_secs(1);
/// The queue's bound in bytes, beside its bound in lines
/// (`invalidation.queue`): 4096 lines of up to [`MAX_LINE`] would be 4 GiB.
/// A line that does not fit is dropped like one over the line count.
const QUEUE_BYTES: usize = 64 << 20;
/// A longer group segment in a key's path is no API group keygate serves
/// (groupIds are short names); such a line marks everything stale rather
/// than be carried whole to the feed's followers.
const MAX_GROUP: usize = 256;
/// The KV v2 endpoints under which a key's path appears.
const KEY_ENDPOINTS: [&str; 5] = ["data", "metadata", "delete", "undelete", "destroy"];
/// Operations that change nothing; keygate's own reads are among them.
const READ_ONLY: [&str; 7] = [
    "read",
    "list",
    "scan",
    "help",
    "header",
    "alias-lookahead",
    "resolve-role",
];

/// What an audit line asks of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A key's path was written: drop what is held for it.
    DropKey {
        group: String,
        selector: Selector,
    },
    /// The mount or a policy changed: every cached answer may be wrong.
    AllStale,
    None,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: Option<String>,
    request: Option<Request>,
}

#[derive(Deserialize)]
struct Request {
    operation: Option<String>,
    path: Option<String>,
}

/// What `line` means for a cache of keys under `kv_mount`. Lines that are
/// not audit entries mean nothing.
pub fn effect(line: &[u8], kv_mount: &str) -> Effect {
    let Ok(entry) = serde_json::from_slice::<Entry>(line) else {
        return Effect::None;
    };
    if !matches!(entry.kind.as_deref(), Some("request" | "response")) {
        return Effect::None;
    }
    let Some(Request {
        operation: Some(operation),
        path: Some(path),
    }) = entry.request
    else {
        return Effect::None;
    };
    if READ_ONLY.contains(&operation.as_str()) {
        return Effect::None;
    }
    let path = path.trim_start_matches('/');
    if let Some(rest) = path
        .strip_prefix(kv_mount)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        let mut parts = rest.split('/');
        return match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(endpoint), Some(group), Some(_), None)
                if KEY_ENDPOINTS.contains(&endpoint) && group.len() > MAX_GROUP =>
            {
                Effect::AllStale
            }
            (Some(endpoint), Some(group), Some(selector), None)
                if KEY_ENDPOINTS.contains(&endpoint) && !group.is_empty() =>
            {
                match Selector::parse(selector) {
                    Some(selector) => Effect::DropKey {
                        group: group.to_owned(),
                        selector,
                    },
                    None => Effect::None,
                }
            }
            _ => Effect::None,
        };
    }
    // The mount itself disabled, moved or retuned, or a policy changed
    // (keygate may have lost `read`): nothing cached can be trusted.
    let mount_changed = path
        .strip_prefix("sys/mounts/")
        .is_some_and(|m| m.trim_end_matches('/').split("/tune").next() == Some(kv_mount))
        || path == "sys/remount";
    let policy_changed = path.starts_with("sys/policy/") || path.starts_with("sys/policies/acl/");
    if mount_changed || policy_changed {
        return Effect::AllStale;
    }
    Effect::None
}

/// The bound audit listener; [`AuditListener::serve`] runs it.
pub struct AuditListener {
    listener: Listener,
    queue: usize,
    idle_timeout: Duration,
    max_connections: usize,
    stale_interval: Duration,
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl AuditListener {
    /// Binds `invalidation.listen`; a Unix socket file left by an earlier
    /// run is replaced.
    pub async fn bind(config: &InvalidationConfig) -> std::io::Result<Self> {
        let listener = match &config.listen {
            AuditListen::Tcp(addr) => Listener::Tcp(tokio::net::TcpListener::bind(addr).await?),
            #[cfg(unix)]
            AuditListen::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(path)?;
                }
                Listener::Unix(tokio::net::UnixListener::bind(path)?)
            }
            #[cfg(not(unix))]
            AuditListen::Unix(_) => {
                return Err(std::io::Error::other(
                    "Unix sockets need a Unix system: use a loopback TCP address",
                ));
            }
        };
        Ok(Self {
            listener,
            queue: config.queue,
            idle_timeout: config.idle_timeout,
            max_connections: MAX_CONNECTIONS,
            stale_interval: STALE_MARK_INTERVAL,
        })
    }

    /// The TCP address bound (tests bind port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.listener {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            #[cfg(unix)]
            Listener::Unix(_) => None,
        }
    }

    /// Accepts Vault's connections and applies their lines to the cache,
    /// forever.
    pub async fn serve(self, kv_mount: String, invalidator: Invalidator, metrics: Arc<Metrics>) {
        let (lines, mut queued) = line_queue(self.queue, QUEUE_BYTES);
        let marks = StaleMarks::new(invalidator.clone(), metrics.clone(), self.stale_interval);
        let apply = {
            let (invalidator, metrics, marks) =
                (invalidator.clone(), metrics.clone(), marks.clone());
            async move {
                while let Some(line) = queued.recv().await {
                    match effect(&line, &kv_mount) {
                        Effect::DropKey { group, selector } => {
                            invalidator.drop_key(&group, &selector).await;
                            metrics.invalidated();
                            debug!(group, %selector, "audit stream: key written, cache entry dropped");
                        }
                        Effect::AllStale => {
                            marks.mark("the key mount or a policy changed");
                            info!(
                                "audit stream: the key mount or a policy changed; every cached answer is stale"
                            );
                        }
                        Effect::None => {}
                    }
                }
            }
        };
        tokio::spawn(apply);
        let open = Arc::new(OpenConnections::new(self.max_connections));
        loop {
            let accepted: std::io::Result<(Box<dyn AsyncRead + Send + Unpin>, String)> =
                match &self.listener {
                    Listener::Tcp(listener) => listener
                        .accept()
                        .await
                        .map(|(stream, peer)| (Box::new(stream) as _, peer.to_string())),
                    #[cfg(unix)]
                    Listener::Unix(listener) => listener
                        .accept()
                        .await
                        .map(|(stream, _)| (Box::new(stream) as _, "unix socket".to_owned())),
                };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    warn!(error = %err, "audit stream: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Full: the idlest goes, not the newcomer. Refusing newcomers
            // let connections left open (by anyone who can reach the
            // port) lock Vault's device out; Vault reconnects with its next
            // entry should its own connection be the one closed.
            let (place, evicted) = open.admit(&peer);
            if let Some(evicted) = evicted {
                warn!(
                    %peer,
                    closed = %evicted.peer,
                    idle = ?evicted.idle(),
                    max = self.max_connections,
                    "audit stream: every connection place taken; closing the idlest for this one"
                );
                evicted.close.notify_one();
            }
            let connection = Connection {
                lines: lines.clone(),
                marks: marks.clone(),
                metrics: metrics.clone(),
                idle_timeout: self.idle_timeout,
            };
            let open = open.clone();
            tokio::spawn(async move {
                connection.run(stream, &peer, &place).await;
                open.leave(&place);
            });
        }
    }
}

/// The open audit connections, for closing the idlest when all places are
/// taken.
struct OpenConnections {
    max: usize,
    next: AtomicU64,
    places: Mutex<HashMap<u64, Arc<Place>>>,
}

/// One open connection's place.
struct Place {
    id: u64,
    peer: String,
    /// When a byte last arrived (or the connection was accepted).
    last_read: Mutex<Instant>,
    /// Notified to close the connection.
    close: Notify,
}

impl Place {
    fn new(id: u64, peer: &str) -> Self {
        Self {
            id,
            peer: peer.to_owned(),
            last_read: Mutex::new(Instant::now()),
            close: Notify::new(),
        }
    }

    fn touch(&self) {
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_read(&self) -> Instant {
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle(&self) -> Duration {
        self.last_read().elapsed()
    }

    /// Resolves once nothing has arrived for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let due = self.last_read() + timeout;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

impl OpenConnections {
    fn new(max: usize) -> Self {
        Self {
            max,
            next: AtomicU64::new(0),
            places: Mutex::new(HashMap::new()),
        }
    }

    /// A place for a new connection from `peer`, and the connection that
    /// must close for it (the idlest, the oldest of equals) when all are
    /// taken. That one leaves the count at once.
    fn admit(&self, peer: &str) -> (Arc<Place>, Option<Arc<Place>>) {
        let place = Arc::new(Place::new(self.next.fetch_add(1, Ordering::Relaxed), peer));
        let mut places = self.places.lock().unwrap_or_else(|e| e.into_inner());
        let evicted = if places.len() >= self.max {
            let idlest = places
                .values()
                .min_by_key(|p| (p.last_read(), p.id))
                .map(|p| p.id);
            idlest.and_then(|id| places.remove(&id))
        } else {
            None
        };
        places.insert(place.id, place.clone());
        (place, evicted)
    }

    fn leave(&self, place: &Place) {
        self.places
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&place.id);
    }
}

/// The stream's "every cached answer is stale" marks, at most one per
/// `interval`. One due sooner is held and applied when the interval is up
/// (one for all held meanwhile): a mark outdates every answer read before
/// it, so a later one covers the events of an earlier one.
struct StaleMarks {
    invalidator: Invalidator,
    metrics: Arc<Metrics>,
    interval: Duration,
    state: Mutex<MarkState>,
}

#[derive(Default)]
struct MarkState {
    last: Option<Instant>,
    /// A mark waiting for the interval, and why.
    held: Option<&'static str>,
}

impl StaleMarks {
    fn new(invalidator: Invalidator, metrics: Arc<Metrics>, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            invalidator,
            metrics,
            interval,
            state: Mutex::default(),
        })
    }

    fn mark(self: &Arc<Self>, why: &'static str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.last {
            Some(last) if now < last + self.interval => {
                if state.held.is_none() {
                    let marks = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(last + marks.interval).await;
                        marks.apply_held();
                    });
                }
                state.held = Some(why);
            }
            _ => {
                state.last = Some(now);
                drop(state);
                self.apply(why);
            }
        }
    }

    fn apply_held(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = state.held.take() {
            state.last = Some(Instant::now());
            drop(state);
            self.apply(why);
        }
    }

    fn apply(&self, why: &'static str) {
        self.invalidator.all_stale(why);
        self.metrics.invalidation_stale_mark();
        debug!(why, "audit stream: every cached answer marked stale");
    }
}

/// The queue between the connections and the task that applies their
/// lines, bounded in lines and in bytes.
#[derive(Clone)]
struct LineQueue {
    sender: mpsc::Sender<Vec<u8>>,
    bytes: Arc<AtomicUsize>,
    budget: usize,
}

struct LineReceiver {
    receiver: mpsc::Receiver<Vec<u8>>,
    bytes: Arc<AtomicUsize>,
}

fn line_queue(lines: usize, budget: usize) -> (LineQueue, LineReceiver) {
    let (sender, receiver) = mpsc::channel(lines);
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        LineQueue {
            sender,
            bytes: bytes.clone(),
            budget,
        },
        LineReceiver { receiver, bytes },
    )
}

impl LineQueue {
    /// Queues `line` unless the queue is full in lines or bytes; never waits.
    fn try_send(&self, line: Vec<u8>) -> bool {
        let size = line.len();
        if self.bytes.fetch_add(size, Ordering::SeqCst) + size > self.budget {
            self.bytes.fetch_sub(size, Ordering::SeqCst);
            return false;
        }
        if self.sender.try_send(line).is_err() {
            self.bytes.fetch_sub(size, Ordering::SeqCst);
            return false;
        }
        true
    }
}

impl LineReceiver {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let line = self.receiver.recv().await?;
        self.bytes.fetch_sub(line.len(), Ordering::SeqCst);
        Some(line)
    }
}

/// One audit stream connection, feeding the shared queue.
struct Connection {
    lines: LineQueue,
    marks: Arc<StaleMarks>,
    metrics: Arc<Metrics>,
    idle_timeout: Duration,
}

impl Connection {
    /// Reads the connection until it ends, nothing arrives on it for the
    /// idle timeout, or `place` is told to close (a newer connection
    /// needs it).
    async fn run(&self, stream: impl AsyncRead + Unpin, peer: &str, place: &Place) {
        // Writes made while no stream was connected went unseen.
        self.stale("audit stream connected");
        self.metrics.invalidation_stream(true);
        info!(%peer, "audit stream connected: revocations now land in milliseconds");
        let stream = Touching {
            inner: stream,
            place,
        };
        let result = tokio::select! {
            result = read_lines(stream, |line| self.offer(line)) => result,
            () = place.idle_for(self.idle_timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing arrived for {:?} (invalidation.idle_timeout); closed", self.idle_timeout),
            )),
            () = place.close.notified() => Err(io::Error::other(
                "closed for a newer connection: every place was taken and this one was the idlest",
            )),
        };
        self.metrics.invalidation_stream(false);
        // What Vault wrote into the dying connection may be lost.
        self.stale("audit stream ended");
        match result {
            Ok(()) => {
                info!(%peer, "audit stream ended; revocation waits for the positive TTL until Vault reconnects")
            }
            Err(err) => {
                warn!(%peer, error = %err, "audit stream failed; revocation waits for the positive TTL until Vault reconnects")
            }
        }
    }

    /// Queues a line, or drops it when the queue is full: Vault is never
    /// made to wait.
    fn offer(&self, line: Option<Vec<u8>>) {
        let queued = match line {
            Some(line) => self.lines.try_send(line),
            None => false,
        };
        if !queued {
            self.metrics.invalidation_line_dropped();
            self.stale("audit line dropped");
        }
    }

    fn stale(&self, why: &'static str) {
        self.marks.mark(why);
    }
}

/// A connection's stream, telling its place when bytes arrive.
struct Touching<'a, S> {
    inner: S,
    place: &'a Place,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touching<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.place.touch();
        }
        polled
    }
}

/// Calls `each` with every newline-terminated line of `input` as it
/// arrives (without the newline; empty lines skipped), or with `None` for
/// a line longer than [`MAX_LINE`], whose bytes are skipped unkept.
pub async fn read_lines(
    input: impl AsyncRead + Unpin,
    mut each: impl FnMut(Option<Vec<u8>>),
) -> std::io::Result<()> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let mut line = Vec::new();
    let mut overlong = false;
    loop {
        let buffer = input.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(());
        }
        let (chunk, ends_line) = match buffer.iter().position(|b| *b == b'\n') {
            Some(at) => (&buffer[..at], true),
            None => (buffer, false),
        };
        let used = chunk.len() + usize::from(ends_line);
        if !overlong {
            if line.len() + chunk.len() > MAX_LINE {
                overlong = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        input.consume(used);
        if ends_line {
            if overlong {
                each(None);
            } else if !line.is_empty() {
                each(Some(std::mem::take(&mut line)));
            }
            overlong = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use apikey::{ApiKey, KeyRecord};
    use rstest::rstest;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::cache::RecordCache;
    use crate::cache::tests::FakeSource;
    use crate::config::CacheConfig;

    const SELECTOR: &str = "57b81d89804a48128f3bf3e73307a3e6";

    fn line(kind: &str, operation: &str, path: &str) -> Vec<u8> {
        // Shaped like an OpenBao 2.7 entry: HMAC-ed values beside the
        // plain operation and path.
        serde_json::json!({
            "time": "2026-12-02T05:00:00.123Z",
            "type": kind,
            "auth": {"client_token": "hmac-sha256:1f2e", "policies": ["portal"]},
            "request": {
                "id": "5d0c", "operation": operation, "mount_type": "kv",
                "path": path, "data": {"data": {"key": "hmac-sha256:9a8b"}},
                "remote_address": "127.0.0.1"
            }
        })
        .to_string()
        .into_bytes()
    }

    fn dropped(group: &str) -> Effect {
        Effect::DropKey {
            group: group.into(),
            selector: Selector::parse(SELECTOR).unwrap(),
        }
    }

    #[rstest]
    #[case::create("request", "create", "api-portal-keys/data/billing-api/SEL")]
    #[case::update_response("response", "update", "api-portal-keys/data/billing-api/SEL")]
    #[case::metadata_delete("request", "delete", "api-portal-keys/metadata/billing-api/SEL")]
    #[case::soft_delete("response", "delete", "api-portal-keys/data/billing-api/SEL")]
    #[case::versions_delete("request", "update", "api-portal-keys/delete/billing-api/SEL")]
    #[case::undelete("request", "update", "api-portal-keys/undelete/billing-api/SEL")]
    #[case::destroy("request", "update", "api-portal-keys/destroy/billing-api/SEL")]
    #[case::patch("request", "patch", "api-portal-keys/data/billing-api/SEL")]
    fn a_write_to_a_key_path_drops_that_key(
        #[case] kind: &str,
        #[case] operation: &str,
        #[case] path: &str,
    ) {
        let path = path.replace("SEL", SELECTOR);
        assert_eq!(
            effect(&line(kind, operation, &path), "api-portal-keys"),
            dropped("billing-api")
        );
    }

    #[rstest]
    #[case::a_read("request", "read", "api-portal-keys/data/billing-api/SEL")]
    #[case::a_list("request", "list", "api-portal-keys/metadata/billing-api/")]
    #[case::another_mount("request", "delete", "secret/data/billing-api/SEL")]
    #[case::a_mount_prefix("request", "delete", "api-portal-keys-old/data/billing-api/SEL")]
    #[case::not_a_selector("request", "delete", "api-portal-keys/data/billing-api/SEL0")]
    #[case::deeper("request", "delete", "api-portal-keys/data/billing-api/SEL/x")]
    #[case::config("request", "update", "api-portal-keys/config")]
    #[case::not_an_entry("audit-test", "update", "api-portal-keys/data/billing-api/SEL")]
    fn other_lines_change_nothing(#[case] kind: &str, #[case] operation: &str, #[case] path: &str) {
        let path = path.replace("SEL", SELECTOR);
        assert_eq!(
            effect(&line(kind, operation, &path), "api-portal-keys"),
            Effect::None
        );
        for garbage in [&b"not json"[..], b"{}", b"[1,2]", b"{\"type\":\"request\"}"] {
            assert_eq!(effect(garbage, "api-portal-keys"), Effect::None);
        }
    }

    #[rstest]
    #[case::mount_disabled("delete", "sys/mounts/api-portal-keys")]
    #[case::mount_tuned("update", "sys/mounts/api-portal-keys/tune")]
    #[case::remount("update", "sys/remount")]
    #[case::policy("update", "sys/policies/acl/gateway-policy")]
    #[case::old_policy_path("delete", "sys/policy/gateway-policy")]
    fn a_mount_or_policy_change_makes_everything_stale(
        #[case] operation: &str,
        #[case] path: &str,
    ) {
        assert_eq!(
            effect(&line("request", operation, path), "api-portal-keys"),
            Effect::AllStale
        );
    }

    #[test]
    fn a_nested_mount_is_matched_whole() {
        let path = format!("teams/keys/metadata/g/{SELECTOR}");
        assert_eq!(
            effect(&line("request", "delete", &path), "teams/keys"),
            dropped("g")
        );
        assert_eq!(
            effect(&line("request", "delete", &path), "teams"),
            Effect::None
        );
    }

    #[tokio::test]
    async fn lines_are_split_as_they_come_and_overlong_ones_skipped() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        let reading = tokio::spawn(async move {
            let mut seen = Vec::new();
            read_lines(reader, |line| seen.push(line)).await.unwrap();
            seen
        });
        writer.write_all(b"one\n\ntw").await.unwrap();
        writer.write_all(b"o\n").await.unwrap();
        writer.write_all(&vec![b'x'; MAX_LINE + 1]).await.unwrap();
        writer.write_all(b"\nthree\nunterminated").await.unwrap();
        drop(writer);
        let seen = reading.await.unwrap();
        assert_eq!(
            seen,
            [
                Some(b"one".to_vec()),
                Some(b"two".to_vec()),
                None,
                Some(b"three".to_vec())
            ]
        );
    }

    /// A cache with one cached key, and a listener on a free port feeding it.
    async fn listening(
        queue: usize,
    ) -> (
        Arc<FakeSource>,
        RecordCache,
        ApiKey,
        std::net::SocketAddr,
        Arc<Metrics>,
    ) {
        listening_with(queue, |_| {}).await
    }

    /// [`listening`], with the listener changed by `tune` first.
    async fn listening_with(
        queue: usize,
        tune: impl FnOnce(&mut AuditListener),
    ) -> (
        Arc<FakeSource>,
        RecordCache,
        ApiKey,
        std::net::SocketAddr,
        Arc<Metrics>,
    ) {
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let metrics = Arc::new(Metrics::new());
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(600),
            resurrect_ttl: Duration::from_secs(600),
        };
        let cache = RecordCache::new(source.clone(), config, metrics.clone());
        let listener = AuditListener::bind(&InvalidationConfig {
            listen: AuditListen::Tcp("127.0.0.1:0".parse().unwrap()),
            queue,
            idle_timeout: Duration::from_secs(600),
            allow_non_loopback: false,
        })
        .await
        .unwrap();
        let mut listener = listener;
        tune(&mut listener);
        let addr = listener.local_addr().unwrap();
        tokio::spawn(listener.serve("kv".into(), cache.invalidator(), metrics.clone()));
        (source, cache, key, addr, metrics)
    }

    /// Waits until the metrics show `line` (or 5 s).
    async fn metric(metrics: &Metrics, line: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !metrics.encode().contains(line) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{line}` within 5 s:\n{}",
                metrics.encode()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The value of counter or gauge `name`.
    fn value(metrics: &Metrics, name: &str) -> u64 {
        let text = metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Whether `conn` is closed by the other side within 5 s.
    async fn closed(conn: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Connections left open by someone other than Vault take every place:
    /// Vault's device connecting then closes the idlest of them, and its
    /// lines are read (refusing it left revocation to the TTL).
    #[tokio::test]
    async fn with_every_place_taken_a_new_connection_closes_the_idlest() {
        let (_source, _cache, key, addr, metrics) =
            listening_with(64, |l| l.stale_interval = Duration::ZERO).await;
        let mut squatters = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            squatters.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            // Accepted one by one, so the first is the idlest.
            metric(
                &metrics,
                &format!("keygate_invalidation_stream_connected {}", squatters.len()),
            )
            .await;
        }
        // The later ones show some life.
        for squatter in &mut squatters[1..] {
            squatter.write_all(b"\n").await.unwrap();
        }
        let mut vault = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut text = line(
            "request",
            "delete",
            &format!("kv/metadata/g/{}", key.selector()),
        );
        text.push(b'\n');
        vault.write_all(&text).await.unwrap();
        metric(&metrics, "keygate_invalidations_total 1").await;
        assert!(closed(&mut squatters[0]).await, "the idlest was left open");
        metric(
            &metrics,
            &format!("keygate_invalidation_stream_connected {MAX_CONNECTIONS}"),
        )
        .await;
        // The others are open still.
        let mut open = squatters.pop().unwrap();
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(
                Duration::from_millis(200),
                tokio::io::AsyncReadExt::read(&mut open, &mut byte)
            )
            .await
            .is_err(),
            "a busier connection was closed"
        );
    }

    /// A connection nothing arrives on is closed after the idle timeout,
    /// one that keeps sending is not.
    #[tokio::test]
    async fn a_connection_idle_for_the_idle_timeout_is_closed() {
        let (_source, _cache, _key, addr, metrics) =
            listening_with(64, |l| l.idle_timeout = Duration::from_millis(300)).await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
        metric(&metrics, "keygate_invalidation_stream_connected 2").await;
        let talking = tokio::spawn(async move {
            for _ in 0..12 {
                busy.write_all(b"{}\n").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            busy
        });
        assert!(closed(&mut idle).await, "an idle connection was kept open");
        let mut busy = talking.await.unwrap();
        metric(&metrics, "keygate_invalidation_stream_connected 1").await;
        assert!(closed(&mut busy).await);
        metric(&metrics, "keygate_invalidation_stream_connected 0").await;
    }

    /// Connecting and hanging up in a loop marks everything stale at most
    /// once a second, not twice per connection; a mark held back is
    /// applied when the second is up, not lost.
    #[tokio::test]
    async fn a_connect_loop_marks_everything_stale_at_most_once_a_second() {
        let (source, cache, key, addr, metrics) = listening(64).await;
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        metric(&metrics, "keygate_invalidation_stream_connected 1").await;
        assert_eq!(value(&metrics, "keygate_invalidation_stale_marks_total"), 1);
        // Read after the first mark: fresh.
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        drop(first);
        for _ in 0..20 {
            drop(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let marks = value(&metrics, "keygate_invalidation_stale_marks_total");
        assert!(
            marks <= 3,
            "{marks} stale marks for 21 connections in 300 ms"
        );
        // The held mark comes: the key is read again.
        assert!(
            read_again(&cache, &source, &key, 1).await,
            "the held stale mark was lost"
        );
        assert!(value(&metrics, "keygate_invalidation_stale_marks_total") <= 4);
    }

    /// Polls `cache` until it reads `key` from the source again (or 5 s).
    async fn read_again(
        cache: &RecordCache,
        source: &FakeSource,
        key: &ApiKey,
        reads: usize,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            cache.get("g", &key.selector()).await.unwrap();
            if source.reads.load(Ordering::SeqCst) > reads {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_deletion_on_the_stream_drops_the_cached_key() {
        let (source, cache, key, addr, metrics) = listening(64).await;
        let mut vault = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Connected: wait for the connect's stale mark, then cache the key.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !metrics
            .encode()
            .contains("keygate_invalidation_stream_connected 1")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                metrics.encode()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);

        source.records.lock().unwrap().clear();
        let path = format!("kv/metadata/g/{}", key.selector());
        let mut text = line("request", "delete", &path);
        text.push(b'\n');
        vault.write_all(&text).await.unwrap();
        assert!(
            read_again(&cache, &source, &key, 1).await,
            "the deletion never reached the cache"
        );
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
        // Vault down now, the absence stale: the revoked key is not resurrected.
        source.down.store(true, Ordering::SeqCst);
        cache.invalidator().all_stale("test");
        assert!(cache.get("g", &key.selector()).await.is_err());
        assert!(
            metrics.encode().contains("keygate_invalidations_total 1"),
            "{}",
            metrics.encode()
        );
        assert!(
            metrics
                .encode()
                .contains("keygate_invalidation_lines_dropped_total 0")
        );
    }

    #[tokio::test]
    async fn a_reconnect_makes_what_was_cached_stale() {
        let (source, cache, key, addr, metrics) = listening(64).await;
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
        // A write may have been lost while no stream was connected.
        let vault = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            read_again(&cache, &source, &key, 1).await,
            "connecting did not mark the cache stale"
        );
        let reads = source.reads.load(Ordering::SeqCst);
        drop(vault);
        assert!(
            read_again(&cache, &source, &key, reads).await,
            "disconnecting did not mark the cache stale"
        );
        assert!(
            metrics
                .encode()
                .contains("keygate_invalidation_stream_connected 0")
        );
    }

    #[tokio::test]
    async fn a_line_that_does_not_fit_the_queue_is_dropped_counted_and_marks_stale() {
        let (writer, reader) = tokio::io::duplex(64 * 1024);
        let metrics = Arc::new(Metrics::new());
        let source = Arc::new(FakeSource::default());
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(600),
            resurrect_ttl: Duration::ZERO,
        };
        let cache = RecordCache::new(source.clone(), config, metrics.clone());
        // Nobody drains this queue of one: the second line must be dropped
        // at once, not wait.
        let (lines, _queued) = line_queue(1, QUEUE_BYTES);
        let connection = Connection {
            lines,
            marks: StaleMarks::new(cache.invalidator(), metrics.clone(), Duration::ZERO),
            metrics: metrics.clone(),
            idle_timeout: Duration::from_secs(600),
        };
        let key = ApiKey::generate();
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
        let mut writer = writer;
        writer.write_all(b"{\"a\":1}\n{\"b\":2}\n").await.unwrap();
        drop(writer);
        let place = Place::new(0, "test");
        tokio::time::timeout(
            Duration::from_secs(5),
            connection.run(reader, "test", &place),
        )
        .await
        .expect("a full queue must not block the reader");
        let text = metrics.encode();
        assert!(
            text.contains("keygate_invalidation_lines_dropped_total 1"),
            "{text}"
        );
        assert!(cache.get("g", &key.selector()).await.unwrap().is_none());
        assert_eq!(
            source.reads.load(Ordering::SeqCst),
            2,
            "the negative entry was not marked stale"
        );
    }

    /// The queue is bounded in bytes too: lines that would take it past its
    /// budget are dropped, however few are queued, and room comes back as
    /// lines are taken.
    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_as_well_as_lines() {
        let (queue, mut taken) = line_queue(1000, 100);
        assert!(queue.try_send(vec![b'a'; 60]));
        assert!(
            !queue.try_send(vec![b'b'; 60]),
            "160 bytes in a budget of 100"
        );
        assert!(queue.try_send(vec![b'c'; 40]));
        assert_eq!(taken.recv().await.unwrap().len(), 60);
        assert!(queue.try_send(vec![b'd'; 60]));
        assert!(!queue.try_send(vec![b'e'; 1]));
    }

    /// A key path whose group segment is longer than any API group marks
    /// everything stale (it may still have been a write keygate should
    /// see) instead of carrying the segment to the feed.
    #[test]
    fn an_absurdly_long_group_marks_everything_stale() {
        let group = "g".repeat(MAX_GROUP + 1);
        let path = format!("api-portal-keys/data/{group}/{SELECTOR}");
        assert_eq!(
            effect(&line("request", "update", &path), "api-portal-keys"),
            Effect::AllStale
        );
        let path = format!("api-portal-keys/data/{}/{SELECTOR}", "g".repeat(MAX_GROUP));
        assert_eq!(
            effect(&line("request", "update", &path), "api-portal-keys"),
            dropped(&"g".repeat(MAX_GROUP))
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_unix_socket_listener_works_the_same_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sock");
        // A socket file left by an earlier run.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let source = Arc::new(FakeSource::default());
        let key = ApiKey::generate();
        source.put("g", &key, KeyRecord::for_key(&key, "o"));
        let metrics = Arc::new(Metrics::new());
        let config = CacheConfig {
            positive_ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(600),
            resurrect_ttl: Duration::ZERO,
        };
        let cache = RecordCache::new(source.clone(), config, metrics.clone());
        let listener = AuditListener::bind(&InvalidationConfig {
            listen: AuditListen::Unix(path.clone()),
            queue: 8,
            idle_timeout: Duration::from_secs(600),
            allow_non_loopback: false,
        })
        .await
        .unwrap();
        tokio::spawn(listener.serve("kv".into(), cache.invalidator(), metrics.clone()));
        let mut vault = tokio::net::UnixStream::connect(&path).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !metrics
            .encode()
            .contains("keygate_invalidation_stream_connected 1")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                metrics.encode()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(cache.get("g", &key.selector()).await.unwrap().is_some());
        let mut text = line(
            "response",
            "delete",
            &format!("kv/metadata/g/{}", key.selector()),
        );
        text.push(b'\n');
        vault.write_all(&text).await.unwrap();
        assert!(
            read_again(&cache, &source, &key, 1).await,
            "the deletion never reached the cache"
        );
    }
}
