//! Keep-alive connections to backends for the HTTP/1 path: plain sockets,
//! one pool per worker thread, reused most-recent-first.
//!
//! A socket goes back to the pool only after a whole response was read
//! from it and nothing more (a clean message boundary); anything else
//! (abandoned bodies, `Connection: close`, bytes past the end) closes it.
//! Before reuse a pooled socket is checked for readability without a
//! syscall in the common case: an idle backend connection has nothing to
//! say, so readable means closed (or broken) and it is dropped. A request
//! that may not be replayed (see `proxy::policy`) asks for more: a
//! connection used less than [`KNOWN_GOOD_IDLE`] ago that a non-blocking
//! read finds silent, else a new one.

use crate::metrics::UpstreamErrorKind;
use http::uri::Authority;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept per backend (per worker); more are closed.
const MAX_IDLE_PER_BACKEND: usize = 512;

/// A pooled connection idle longer than this is not trusted with a request
/// that may not be replayed: backends close idle keep-alive connections
/// after a timeout of their own (gunicorn 2 s, Node and uvicorn 5 s), and
/// a request sent as the close crosses it would have to be answered `502`.
pub const KNOWN_GOOD_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// TCP keepalive probes on backend sockets find dead peers.
    pub tcp_keepalive: Duration,
}

/// Why a backend exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connection closed before a response")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed response head")]
    Protocol,
}

impl UpstreamError {
    /// The metric label, and what a retry elsewhere may assume.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            UpstreamError::ConnectTimeout => UpstreamErrorKind::ConnectTimeout,
            // Refused, unreachable, unresolvable: the request never left.
            UpstreamError::Connect(_) => UpstreamErrorKind::Refused,
            UpstreamError::Closed => UpstreamErrorKind::Reset,
            UpstreamError::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => UpstreamErrorKind::Reset,
                _ => UpstreamErrorKind::Other,
            },
            UpstreamError::Protocol => UpstreamErrorKind::Other,
        }
    }
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

struct Shared {
    /// Keyed by the authority's text: `Authority`'s own hash lowercases
    /// byte by byte, and route values are lowercased already.
    idle: Mutex<HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>>,
    config: PoolConfig,
}

/// A worker's backend sockets. The lock is only ever taken by that
/// worker's own tasks, so it is never contended.
pub struct Pool {
    shared: Arc<Shared>,
    sweeper: std::sync::Once,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                idle: Mutex::new(HashMap::default()),
                config,
            }),
            sweeper: std::sync::Once::new(),
        }
    }

    /// An idle connection to `backend` that still looks open, if any
    /// (`now`: the request's clock reading). `known_good`: only one used
    /// within [`KNOWN_GOOD_IDLE`] and found silent by a read syscall (for a
    /// request that may not be replayed).
    pub fn checkout(
        &self,
        backend: &Authority,
        now: Instant,
        known_good: bool,
    ) -> Option<TcpStream> {
        let mut idle = self.shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(backend.as_str())?;
        while let Some(conn) = list.pop() {
            let age = now.saturating_duration_since(conn.since);
            if age >= self.shared.config.idle_timeout || !looks_open(&conn.stream) {
                continue;
            }
            if known_good && (age >= KNOWN_GOOD_IDLE || !silent(&conn.stream)) {
                continue;
            }
            return Some(conn.stream);
        }
        None
    }

    /// Returns a connection that sits at a clean message boundary (`now`:
    /// when its last response ended).
    pub fn put_back(&self, backend: &Authority, stream: TcpStream, now: Instant) {
        let mut idle = self.shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = match idle.get_mut(backend.as_str()) {
            Some(list) => list,
            None => idle.entry(backend.as_str().into()).or_default(),
        };
        if list.len() >= MAX_IDLE_PER_BACKEND {
            // The oldest goes; it is the likeliest to be closed anyway.
            list.remove(0);
        }
        list.push(Idle { stream, since: now });
    }

    /// A new connection, within the connect timeout.
    pub async fn connect(&self, backend: &Authority) -> Result<TcpStream, UpstreamError> {
        self.sweeper.call_once(|| {
            let idle = self.shared.config.idle_timeout;
            start_sweeper(Arc::downgrade(&self.shared), idle, Shared::sweep)
        });
        Ok(dial(backend, &self.shared.config).await?)
    }
}

/// Why a backend could not be connected to.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Refused, unreachable, unresolvable: nothing was sent.
    #[error("connect: {0}")]
    Refused(#[source] io::Error),
    #[error("connect timed out")]
    Timeout,
}

impl From<DialError> for UpstreamError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::Refused(e) => UpstreamError::Connect(e),
            DialError::Timeout => UpstreamError::ConnectTimeout,
        }
    }
}

/// Opens a backend connection as both request paths want it: within the
/// connect timeout, Nagle off (heads are written whole), TCP keepalive on.
pub async fn dial(backend: &Authority, config: &PoolConfig) -> Result<TcpStream, DialError> {
    // An IPv6 authority keeps its brackets; the resolver wants them off.
    let host = backend.host().trim_start_matches('[').trim_end_matches(']');
    let port = backend.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| DialError::Timeout)?
        .map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                DialError::Timeout
            } else {
                DialError::Refused(e)
            }
        })?;
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(config.tcp_keepalive);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    Ok(stream)
}

impl Shared {
    /// Drops idle connections past the timeout or closed by their backend,
    /// and forgets backends with none left.
    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = self.config.idle_timeout;
        idle.retain(|_, list| {
            list.retain(|c| c.since.elapsed() < timeout && looks_open(&c.stream));
            !list.is_empty()
        });
    }
}

/// An idle backend connection has nothing to read; readable means the
/// backend closed it (or sent what it should not have). The reactor's
/// readiness is consulted first, so the usual answer costs no syscall.
fn looks_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// Asks the socket itself (a non-blocking `recv` with `MSG_PEEK`, not the
/// reactor's cached readiness, which may not have seen a close that just
/// arrived) whether the backend closed or sent anything unasked.
fn silent(stream: &TcpStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(stream).peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Runs `sweep` on the pool every idle timeout / 4 (at least every
/// 100 ms), until the pool is gone. Both backend pools use it.
pub fn start_sweeper<P: Send + Sync + 'static>(
    pool: Weak<P>,
    idle_timeout: Duration,
    sweep: fn(&P),
) {
    let period = (idle_timeout / 4).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(pool) => sweep(&pool),
                None => return,
            }
        }
    });
}
