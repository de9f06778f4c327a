//! The client-facing listener: accept loop, HTTP/1.1 and HTTP/2 (cleartext,
//! prior knowledge) on one port, connection limits and timeouts, and
//! graceful shutdown (stop accepting, let in-flight requests finish up to
//! the deadline, then close what is left).

use crate::config::ServerConfig;
use crate::proxy::framing::FramingScanner;
use crate::proxy::Proxy;
use crate::routes::now_ms;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Serves `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(connection_builder(&config));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let limit =
        (config.max_connections > 0).then(|| Arc::new(Semaphore::new(config.max_connections)));
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match &limit {
            None => None,
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    // Closing at once tells the client (and a load balancer)
                    // to go elsewhere; queueing would hide the overload.
                    proxy_metrics(&proxy).connections_refused.inc();
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let proxy = proxy.clone();
        let stop = stop.clone();
        let idle_timeout = config.idle_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let gauge = &proxy_metrics(&proxy).client_connections;
            gauge.inc();
            serve_connection(&builder, stream, peer, proxy.clone(), stop, idle_timeout).await;
            proxy_metrics(&proxy).client_connections.dec();
        });
    }
    drop(listener);
    info!(
        in_flight = connections.len(),
        "stopped accepting; draining connections"
    );
    stop.cancel();
    connections.close();
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        warn!(
            left = connections.len(),
            "shutdown deadline passed; closing remaining connections"
        );
    }
    // Upgraded tunnels get what is left of the same deadline.
    proxy
        .drain_tunnels(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
}

fn proxy_metrics(proxy: &Proxy) -> &crate::metrics::Metrics {
    proxy.metrics()
}

fn connection_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slowloris: the head must be complete within this time. hyper's
        // timer also runs while a keep-alive connection waits for its next
        // request, so it bounds idle time too; --idle-timeout covers the rest.
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_size)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_size as u32)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

async fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    proxy: Arc<Proxy>,
    stop: CancellationToken,
    idle_timeout: Duration,
) {
    let last_activity = Arc::new(AtomicU64::new(now_ms()));
    let framing_conflict = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        last_activity: last_activity.clone(),
        framing: FramingScanner::default(),
        framing_conflict: framing_conflict.clone(),
    });
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let conflict = framing_conflict.load(Ordering::Relaxed);
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer, conflict).await) }
    });
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let idle_ms = idle_timeout.as_millis() as u64;
    let mut closing = false;
    loop {
        let idle_for = now_ms().saturating_sub(last_activity.load(Ordering::Relaxed));
        let idle_check = tokio::time::sleep(Duration::from_millis(
            idle_ms.saturating_sub(idle_for).max(1),
        ));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(%peer, error = %e, "connection ended with error");
                }
                return;
            }
            _ = stop.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle_check, if !closing => {
                if now_ms().saturating_sub(last_activity.load(Ordering::Relaxed)) >= idle_ms {
                    debug!(%peer, "closing idle connection");
                    closing = true;
                    // Graceful: a request still in flight is allowed to finish.
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A socket that remembers when bytes last moved (for the idle timeout)
/// and watches incoming heads for ambiguous framing.
struct ActivityIo<T> {
    inner: T,
    last_activity: Arc<AtomicU64>,
    framing: FramingScanner,
    framing_conflict: Arc<AtomicBool>,
}

impl<T> ActivityIo<T> {
    fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
            let this = &mut *self;
            if this.framing.feed(&buf.filled()[before..]) {
                this.framing_conflict.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
