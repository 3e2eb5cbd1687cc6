//! keygate's listening ports: how many connections each holds and how long
//! a client may take.
//!
//! Each port accepts at most `limits.{http,grpc}_connections` at once: a
//! slot is taken before `accept`, so connections beyond the limit wait in
//! the kernel's backlog instead of costing keygate memory, and get served as
//! slots free. On the HTTP port, hyper closes a connection whose request
//! headers have not all arrived within `limits.header_read_timeout` (which
//! hyper counts from when it starts waiting for a request, so a kept-alive
//! connection idle that long between requests is closed too; gateways open
//! a new one), and [`Guarded`] closes one on which nothing was read or
//! written for `limits.idle_timeout` (a stalled body, a client that does not
//! read its answer). The gRPC port gets no timeouts: Envoy keeps one HTTP/2
//! connection open, and cutting it under a request would fail that request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
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
pub async fn serve_http(
    listener: GuardedListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (conn, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
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

/// An accepted connection: holds its listener's slot until dropped, and
/// fails reads and writes once it has been idle for the idle timeout.
pub struct Guarded {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Guarded {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, idle_timeout: Option<Duration>) -> Self {
        Self {
            stream,
            _slot: slot,
            idle: idle_timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
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

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.active();
                Poll::Ready(result)
            }
            Poll::Pending => self.check_idle(cx).map(Err),
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
