//! The client-facing listener: accept loop, thread-per-core workers,
//! HTTP/1.x (the proxy's own [`h1`] driver) and HTTP/2 (cleartext, prior
//! knowledge, hyper) on one port, connection limits and timeouts, and
//! graceful shutdown (stop accepting, let in-flight requests finish up to
//! the deadline, then close what is left).
//!
//! With one worker thread, connections are served on the caller's runtime.
//! With more, each worker is an OS thread running its own current-thread
//! runtime and its own [`Proxy`] (so its own backend connection pool, whose
//! connection tasks run on the thread that uses them); the caller's runtime
//! only accepts and hands each socket to the worker with the fewest open
//! connections. Nothing of a connection ever moves between threads after
//! the handoff: no work stealing, no cross-thread wakeups on the request
//! path.
//!
//! The seam for other transports: [`Connections::serve`] serves any client
//! stream that implements [`Socket`] with its [`ConnInfo`] (peer after the
//! PROXY protocol, TLS or not, ALPN `h2` or not). A TLS listener hands its
//! handshaken streams to it on the worker's thread; nothing else changes.

use crate::config::{ProxyConfig, ServerConfig};
use crate::proxy::idle::{silence, Counted};
use crate::proxy::io::Socket;
use crate::proxy::{h1, h2, proxy_protocol, ConnInfo, Proxy};
use crate::state::SharedState;
use crate::tls::acceptor::Alpn;
use crate::tls::TlsAcceptor;
use bytes::{Buf, BytesMut};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// The TLS listener and the acceptor that runs its handshakes.
pub struct TlsListener {
    pub listener: TcpListener,
    pub acceptor: Arc<TlsAcceptor>,
}

/// Serves `listener` (and `tls`'s, when given) until `shutdown` resolves,
/// then drains. Both listeners share the workers and the connection cap.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsListener>,
    state: Arc<SharedState>,
    proxy_config: ProxyConfig,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limit =
        (config.max_connections > 0).then(|| Arc::new(Semaphore::new(config.max_connections)));
    let (tls_listener, acceptor) = match tls {
        Some(TlsListener { listener, acceptor }) => (Some(listener), Some(acceptor)),
        None => (None, None),
    };
    let listeners = Listeners {
        cleartext: listener,
        tls: tls_listener,
    };
    if config.worker_threads <= 1 {
        let worker = Worker::new(Proxy::new(state.clone(), proxy_config), &config, acceptor);
        accept_until(&listeners, &state, limit.as_ref(), shutdown, |accepted| {
            worker.serve(
                accepted.stream,
                accepted.peer,
                accepted.tls,
                accepted.permit,
            );
            true
        })
        .await;
        drop(listeners);
        worker.drain(config.shutdown_timeout).await;
        return;
    }

    let mut workers = Vec::with_capacity(config.worker_threads);
    for index in 0..config.worker_threads {
        let spawned = WorkerThread::spawn(
            index,
            state.clone(),
            proxy_config.clone(),
            config.clone(),
            acceptor.clone(),
        );
        match spawned {
            Ok(worker) => workers.push(worker),
            // Fewer workers is still a working proxy; none is handled below.
            Err(e) => warn!(index, error = %e, "cannot start worker thread"),
        }
    }
    if workers.is_empty() {
        warn!("no worker thread could start; not serving");
        return;
    }
    let mut next = 0;
    accept_until(&listeners, &state, limit.as_ref(), shutdown, |accepted| {
        // Least loaded by open connections; ties go round-robin so that a
        // burst of new connections spreads evenly.
        let count = workers.len();
        let chosen = (0..count)
            .map(|i| (next + i) % count)
            .min_by_key(|&i| workers[i].open_connections.load(Ordering::Relaxed))
            .unwrap_or(0);
        next = (chosen + 1) % count;
        workers[chosen].hand_over(accepted)
    })
    .await;
    drop(listeners);
    let threads: Vec<_> = workers
        .into_iter()
        .map(|worker| worker.close_handoff())
        .collect();
    // Each worker drains on its own thread, with its own copy of the
    // deadline; joining is blocking, so it goes to the blocking pool.
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            if thread.join().is_err() {
                warn!("a worker thread panicked");
            }
        }
    })
    .await;
}

/// The proxy's listening sockets.
struct Listeners {
    cleartext: TcpListener,
    tls: Option<TcpListener>,
}

impl Listeners {
    /// The next connection from either listener, and whether it came from
    /// the TLS one.
    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr, bool)> {
        let Some(tls) = &self.tls else {
            let (stream, peer) = self.cleartext.accept().await?;
            return Ok((stream, peer, false));
        };
        tokio::select! {
            accepted = self.cleartext.accept() => accepted.map(|(s, p)| (s, p, false)),
            accepted = tls.accept() => accepted.map(|(s, p)| (s, p, true)),
        }
    }
}

/// A socket accepted by the acceptor, on its way to a worker.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    /// From the TLS listener: the worker runs the handshake first.
    tls: bool,
    /// The slot this connection takes under `--max-connections`.
    permit: Option<OwnedSemaphorePermit>,
}

/// Accepts until `shutdown` resolves, enforcing the connection cap, and
/// gives every accepted socket to `dispatch` (which returns false when the
/// socket could not be placed).
async fn accept_until(
    listeners: &Listeners,
    state: &SharedState,
    limit: Option<&Arc<Semaphore>>,
    shutdown: impl Future<Output = ()>,
    mut dispatch: impl FnMut(Accepted) -> bool,
) {
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer, tls) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listeners.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match limit {
            None => None,
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    // Closing at once tells the client (and a load balancer)
                    // to go elsewhere; queueing would hide the overload.
                    state.metrics.connections_refused.inc();
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if !dispatch(Accepted {
            stream,
            peer,
            tls,
            permit,
        }) {
            warn!(%peer, "no worker took the connection; closed");
        }
    }
    info!("stopped accepting; draining connections");
}

/// A socket between the acceptor's reactor and a worker's: a plain std
/// socket, registered again on the worker's runtime.
struct HandedOver {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    tls: bool,
    permit: Option<OwnedSemaphorePermit>,
}

/// A worker running on its own OS thread, as the acceptor sees it.
struct WorkerThread {
    handoff: mpsc::UnboundedSender<HandedOver>,
    /// Counted up by the acceptor at handoff and down by the worker when the
    /// connection ends: what "least loaded" compares.
    open_connections: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl WorkerThread {
    fn spawn(
        index: usize,
        state: Arc<SharedState>,
        proxy_config: ProxyConfig,
        config: ServerConfig,
        acceptor: Option<Arc<TlsAcceptor>>,
    ) -> io::Result<WorkerThread> {
        let (handoff, mut sockets) = mpsc::unbounded_channel::<HandedOver>();
        let open_connections = Arc::new(AtomicUsize::new(0));
        let open = open_connections.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("switchyard-worker-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut worker =
                        Worker::new(Proxy::new(state, proxy_config), &config, acceptor);
                    worker.open_connections = Some(open);
                    // Ends when the acceptor drops its sender (shutdown), after
                    // every socket already handed over has been received.
                    while let Some(HandedOver {
                        stream,
                        peer,
                        tls,
                        permit,
                    }) = sockets.recv().await
                    {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => worker.serve(stream, peer, tls, permit),
                            Err(e) => {
                                worker.connection_closed();
                                warn!(%peer, error = %e, "cannot register connection");
                            }
                        }
                    }
                    worker.drain(config.shutdown_timeout).await;
                });
            })?;
        Ok(WorkerThread {
            handoff,
            open_connections,
            thread,
        })
    }

    fn hand_over(&self, accepted: Accepted) -> bool {
        // The socket leaves this runtime's reactor and joins the worker's.
        let stream = match accepted.stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                debug!(peer = %accepted.peer, error = %e, "cannot hand over connection");
                return false;
            }
        };
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        let handed_over = HandedOver {
            stream,
            peer: accepted.peer,
            tls: accepted.tls,
            permit: accepted.permit,
        };
        if self.handoff.send(handed_over).is_err() {
            self.open_connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Tells the worker no more sockets are coming (it then drains) and
    /// returns its thread to join.
    fn close_handoff(self) -> std::thread::JoinHandle<()> {
        drop(self.handoff);
        self.thread
    }
}

/// What every connection of a worker shares, and how one is served.
#[derive(Clone)]
pub struct Connections {
    http2: Arc<http2::Builder<TokioExecutor>>,
    limits: Arc<h1::Limits>,
    proxy: Arc<Proxy>,
    /// Raised at shutdown: every connection then shuts down gracefully.
    stop: Arc<h1::Stop>,
    idle_timeout: Duration,
}

impl Connections {
    /// Serves one client connection until it ends: HTTP/2 from the first
    /// byte when ALPN chose it, else the HTTP/1 driver, which hands back a
    /// connection that opens with the HTTP/2 preface.
    pub async fn serve<S: Socket>(&self, stream: S, info: ConnInfo) {
        if info.h2 {
            let io = Prefixed {
                read: BytesMut::new(),
                inner: stream,
            };
            return serve_http2(self, io, info).await;
        }
        if let h1::Ended::Http2 { stream, read } =
            h1::serve(&self.proxy, stream, &info, &self.limits, &self.stop).await
        {
            serve_http2(
                self,
                Prefixed {
                    read,
                    inner: stream,
                },
                info,
            )
            .await;
        }
    }
}

/// The connections of one event loop and the proxy they use.
struct Worker {
    shared: Connections,
    connections: TaskTracker,
    /// Every connection starts with a PROXY protocol header.
    proxy_protocol: bool,
    header_read_timeout: Duration,
    /// Set on worker threads: the acceptor's view of this worker's load.
    open_connections: Option<Arc<AtomicUsize>>,
    /// Handshakes for connections from the TLS listener.
    tls: Option<Arc<TlsAcceptor>>,
}

impl Worker {
    fn new(proxy: Proxy, config: &ServerConfig, tls: Option<Arc<TlsAcceptor>>) -> Worker {
        Worker {
            shared: Connections {
                http2: Arc::new(http2_builder(config)),
                limits: Arc::new(h1::Limits {
                    header_read_timeout: config.header_read_timeout,
                    idle_timeout: config.idle_timeout,
                    max_header_size: config.max_header_size,
                }),
                proxy: Arc::new(proxy),
                stop: Arc::new(h1::Stop::default()),
                idle_timeout: config.idle_timeout,
            },
            connections: TaskTracker::new(),
            proxy_protocol: config.proxy_protocol,
            header_read_timeout: config.header_read_timeout,
            open_connections: None,
            tls,
        }
    }

    fn serve(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        tls: bool,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let shared = self.shared.clone();
        let acceptor = if tls { self.tls.clone() } else { None };
        let open_connections = self.open_connections.clone();
        let proxy_protocol = self.proxy_protocol;
        let header_read_timeout = self.header_read_timeout;
        self.connections.spawn(async move {
            let _permit = permit;
            let gauge = &shared.proxy.metrics().client_connections;
            gauge.inc();
            let mut info = ConnInfo::plain(peer);
            let accepted = if proxy_protocol {
                // The balancer sends its header at once; the head timeout
                // bounds a connection that never does.
                let header = proxy_protocol::read_header(&mut stream);
                match tokio::time::timeout(header_read_timeout, header).await {
                    Ok(Ok(source)) => {
                        info.peer = source.unwrap_or(peer);
                        true
                    }
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "closed: no valid PROXY protocol header");
                        false
                    }
                    Err(_) => {
                        debug!(%peer, "closed: no PROXY protocol header in time");
                        false
                    }
                }
            } else {
                true
            };
            if accepted {
                match acceptor {
                    None => shared.serve(stream, info).await,
                    // The handshake is bounded by its own timeout and runs
                    // here, on the worker: the acceptor never waits on a
                    // client.
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok((stream, tls)) => {
                            info.tls = true;
                            info.h2 = tls.alpn == Alpn::H2;
                            shared.serve(stream, info).await;
                        }
                        Err(e) => debug!(%peer, error = %e, "closed: TLS handshake"),
                    },
                }
            }
            gauge.dec();
            if let Some(open) = open_connections {
                open.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }

    /// For a handed-over socket that never became a connection.
    fn connection_closed(&self) {
        if let Some(open) = &self.open_connections {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Lets in-flight requests finish up to `timeout`, then closes what is
    /// left, upgraded tunnels included.
    async fn drain(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        debug!(in_flight = self.connections.len(), "draining connections");
        self.shared.stop.cancel();
        self.connections.close();
        if tokio::time::timeout_at(deadline, self.connections.wait())
            .await
            .is_err()
        {
            warn!(
                left = self.connections.len(),
                "shutdown deadline passed; closing remaining connections"
            );
        }
        // Upgraded tunnels get what is left of the same deadline.
        self.shared
            .proxy
            .drain_tunnels(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
    }
}

fn http2_builder(config: &ServerConfig) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_size as u32)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves an HTTP/2 connection with hyper, closing it gracefully once no
/// byte moved for the idle timeout or at shutdown. Its requests go through
/// the same policy and backend connections as HTTP/1's ([`h2::handle`]).
async fn serve_http2<S: Socket>(shared: &Connections, stream: Prefixed<S>, info: ConnInfo) {
    let peer = info.peer;
    let stop: &CancellationToken = shared.stop.token();
    let idle_timeout = shared.idle_timeout;
    let activity = AtomicU64::new(0);
    let io = TokioIo::new(Counted::new(stream, &activity));
    let proxy = shared.proxy.clone();
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(h2::handle(proxy, req, info).await) }
    });
    let mut conn = pin!(shared.http2.serve_connection(io, service));
    let mut idle = pin!(silence(&activity, idle_timeout));
    let mut closing = false;
    loop {
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
            _ = idle.as_mut(), if !closing => {
                debug!(%peer, "closing idle connection");
                closing = true;
                // Graceful: a request still in flight is allowed to finish.
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A stream whose first bytes were already read (the HTTP/2 preface, read
/// while telling HTTP/2 from HTTP/1): they are read again first.
struct Prefixed<S> {
    read: BytesMut,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
