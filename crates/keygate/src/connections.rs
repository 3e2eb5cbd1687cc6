//! keygate's listening ports: how many connections each holds and how long
//! a client may take.
//!
//! Each port accepts at most `limits.{http,grpc}_connections` at once: a
//! slot is taken before `accept`, so connections beyond the limit wait in
//! the kernel's backlog instead of costing keygate memory, and get served as
//! slots free. On the HTTP port, [`Guarded`] closes a connection
//! - whose request headers have not all arrived within
//!   `limits.header_read_timeout`, counted from the connection's accept for
//!   its first request and from the first byte of each later one;
//! - on which nothing was read or written for `limits.idle_timeout` (a
//!   kept-alive connection between requests, a stalled body, a client that
//!   does not read its answer).
//!
//! **A kept-alive connection waiting for its next request is closed by the
//! idle timeout, never by the header timeout.** hyper's own header timer
//! starts when it begins waiting for a request, so it would close every
//! kept-alive connection idle for 10 s, and a gateway sending on it in that
//! instant loses the request. It is off; [`Guarded`] keeps the header timer
//! instead, told by the service when a request's head has been read
//! ([`RequestPhase`]).
//!
//! The gRPC port gets no timeouts: Envoy keeps one HTTP/2 connection open,
//! and cutting it under a request would fail that request.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tracing::{debug, warn};

/// A listener that holds at most `limit` connections at once.
pub struct GuardedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limit: usize,
    idle_timeout: Option<Duration>,
}

impl GuardedListener {
    /// `idle_timeout`: close connections idle that long (`None`: never).
    /// The header timeout is [`serve_http`]'s: it needs the service to say
    /// when a head has been read.
    pub fn new(listener: TcpListener, limit: usize, idle_timeout: Option<Duration>) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            idle_timeout,
        }
    }

    /// The next connection, once a slot is free. Errors on one connection
    /// (reset before accept) are skipped; others (out of file descriptors)
    /// are logged and retried after a pause, as axum and hyper do.
    pub async fn accept(&self) -> (Guarded, SocketAddr) {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    // A decision answer is not held for Nagle.
                    if let Err(err) = stream.set_nodelay(true) {
                        debug!(error = %err, "TCP_NODELAY not set");
                    }
                    return (Guarded::new(stream, slot, self.idle_timeout), peer);
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(err) => {
                    warn!(error = %err, "accepting a connection failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Connections as a stream, for tonic.
    pub fn into_incoming(self) -> impl futures_util::Stream<Item = io::Result<Guarded>> {
        futures_util::stream::unfold(self, |listener| async move {
            let (conn, _peer) = listener.accept().await;
            Some((Ok(conn), listener))
        })
    }

    /// Resolves once every connection has ended.
    async fn drained(&self) {
        let all = u32::try_from(self.limit).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }
}

/// Serves `router` over HTTP/1.1 on `listener` until `shutdown`, then lets
/// open connections finish their requests (the caller bounds how long).
/// A request's headers must all arrive within `header_read_timeout` (the
/// module's doc says from when).
pub async fn serve_http(
    listener: GuardedListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (mut conn, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        conn.time_heads(header_read_timeout);
        let phase = conn.phase.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            // hyper calls the service once a request's head is read, and
            // drops the answer's body once it has written it.
            let answering = phase.head_read();
            let answer = router.clone().oneshot(request.map(Body::new));
            async move {
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(|body| AnswerBody {
                    body,
                    _answering: answering,
                }))
            }
        });
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            // `Guarded` keeps the header timer (the module's doc says why);
            // hyper would otherwise start its own, 30 s by default.
            builder.timer(TokioTimer::new()).header_read_timeout(None);
            let connection = builder.serve_connection(TokioIo::new(conn), service);
            let mut connection = std::pin::pin!(connection);
            // `changed` rather than `wait_for`: its guard must not live
            // across the await below (it is not Send).
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                // Timeouts and clients that hang up land here; not keygate's
                // problem, and no request data is in the message.
                debug!(%peer, error = %err, "HTTP connection ended with an error");
            }
        });
    }
    let _ = stop.send(true);
    listener.drained().await;
}

/// Where a connection's requests are, as the HTTP service tells it: how many
/// heads have been read, and whether an answer is being written. Atomics
/// only to be shared: the service, the answer body and the connection's
/// I/O all run on the connection's one task, so `Relaxed` is enough.
#[derive(Debug, Default)]
struct RequestPhase {
    heads_read: AtomicU64,
    answering: AtomicBool,
}

impl RequestPhase {
    /// A request's head has been read; its answer is being written until
    /// the returned guard drops.
    fn head_read(self: &Arc<Self>) -> Answering {
        self.heads_read.fetch_add(1, Ordering::Relaxed);
        self.answering.store(true, Ordering::Relaxed);
        Answering(self.clone())
    }
}

/// Held by an answer's body: dropped once hyper has written it all (or
/// given up on it).
struct Answering(Arc<RequestPhase>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.store(false, Ordering::Relaxed);
    }
}

/// The router's answer body, and the guard that says it is being written.
struct AnswerBody {
    body: Body,
    _answering: Answering,
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The header timer of one connection: runs from accept until the first
/// head is read, then from the first byte of each later request until its
/// head is read. Not between requests: that is the idle timeout's.
struct HeadTimer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Running for the head after this many heads; `None`: stopped.
    running_after: Option<u64>,
    /// Bytes came while an answer was being written, after this many
    /// heads: the next head's start, if no head is read before the answer
    /// ends (a client that sends its next request early).
    early_after: Option<u64>,
}

/// An accepted connection: holds its listener's slot until dropped, fails
/// reads and writes once it has been idle for the idle timeout, and reads
/// once it has not delivered a request's head within the header timeout.
pub struct Guarded {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    head: Option<HeadTimer>,
    phase: Arc<RequestPhase>,
}

impl Guarded {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, idle_timeout: Option<Duration>) -> Self {
        Self {
            stream,
            _slot: slot,
            idle: idle_timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
            head: None,
            phase: Arc::default(),
        }
    }

    /// Times request heads (see [`HeadTimer`]): the first from now. Only
    /// for a connection [`serve_http`] serves, whose service counts heads;
    /// elsewhere the first head would never be seen and the connection
    /// would be closed `timeout` after this.
    fn time_heads(&mut self, timeout: Duration) {
        self.head = Some(HeadTimer {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            running_after: Some(0),
            early_after: None,
        });
    }

    /// Bytes arrived: between requests, they start the next head's timer.
    /// Bytes that come while an answer is written (a client sending its
    /// next request early) start it once the answer is written, unless
    /// they made a whole head by then. The rest of a body the handler did
    /// not read, drained after the answer, starts it too: the connection
    /// then gets header_read_timeout for its next request, as it did under
    /// hyper's timer (no gateway sends keygate a body).
    ///
    /// Not seen: the start of a head in the same read as the end of the
    /// one before (pipelining); hyper holds those bytes, and the idle
    /// timeout bounds them.
    fn received(&mut self) {
        let Some(head) = &mut self.head else { return };
        if head.running_after.is_some() {
            return;
        }
        let heads = self.phase.heads_read.load(Ordering::Relaxed);
        if self.phase.answering.load(Ordering::Relaxed) {
            head.early_after.get_or_insert(heads);
        } else {
            head.start(heads);
        }
    }

    /// While waiting for bytes: an error once the head the timer runs for
    /// is late. A head read since the timer started stops it.
    fn check_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(head) = &mut self.head else {
            return Poll::Pending;
        };
        let heads = self.phase.heads_read.load(Ordering::Relaxed);
        if head.running_after.is_some_and(|after| after != heads) {
            head.running_after = None;
        }
        if let Some(early) = head.early_after {
            if early != heads {
                // They made a whole head.
                head.early_after = None;
            } else if head.running_after.is_none() && !self.phase.answering.load(Ordering::Relaxed)
            {
                head.early_after = None;
                head.start(heads);
            }
        }
        if head.running_after.is_none() {
            return Poll::Pending;
        }
        match head.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "request headers not complete within {:?} (limits.header_read_timeout)",
                    head.timeout
                ),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// After progress: the connection is not idle; restart the clock.
    fn active(&mut self) {
        if let Some((timeout, sleep)) = &mut self.idle {
            sleep.as_mut().reset(Instant::now() + *timeout);
        }
    }

    /// While waiting: an error once the connection has been idle too long.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((timeout, sleep)) = &mut self.idle else {
            return Poll::Pending;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("idle for {timeout:?} (limits.idle_timeout)"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl HeadTimer {
    fn start(&mut self, after: u64) {
        self.running_after = Some(after);
        self.sleep.as_mut().reset(Instant::now() + self.timeout);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.active();
                if buf.filled().len() > before {
                    self.received();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.check_head(cx) {
                Poll::Ready(late) => Poll::Ready(Err(late)),
                Poll::Pending => self.check_idle(cx).map(Err),
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                self.active();
                Poll::Ready(result)
            }
            Poll::Pending => self.check_idle(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    /// Turns a hang into a failure; never the thing asserted. Well under
    /// the idle timeout the connections get here (60 s).
    const GUARD: Duration = Duration::from_secs(20);

    async fn serving(router: Router, header_read_timeout: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = GuardedListener::new(listener, 8, Some(Duration::from_secs(60)));
        tokio::spawn(serve_http(
            listener,
            router,
            header_read_timeout,
            std::future::pending(),
        ));
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_begun_while_the_last_answer_was_written_gets_the_header_timer() {
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let router = Router::new().route(
            "/slow",
            get({
                let (entered, release) = (entered.clone(), release.clone());
                move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "done"
                }
            }),
        );
        let addr = serving(router, Duration::from_millis(300)).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /slow HTTP/1.1\r\nHost: keygate\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(GUARD, entered.notified())
            .await
            .expect("the first request never reached the handler");
        // The next request's start, sent while the first is answered, and
        // never finished.
        conn.write_all(b"GET /slow HTTP/1.1\r\nX-Trickle: a")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        release.notify_one();

        let mut answer = Vec::new();
        tokio::time::timeout(GUARD, conn.read_to_end(&mut answer))
            .await
            .expect("the unfinished second head was not timed: the connection stayed open")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.contains("done"), "{answer:?}");
    }
}
