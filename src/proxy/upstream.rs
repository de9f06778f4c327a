//! The backend layer both protocols share: keep-alive HTTP/1.1
//! connections to backends, one pool per worker thread, reused
//! most-recent-first, and the one error type of a backend exchange.
//!
//! A connection goes back to the pool only after a whole response was read
//! from it and nothing more (a clean message boundary); anything else
//! (abandoned bodies, `Connection: close`, bytes past the end) closes it.
//! Before reuse a pooled connection is checked for readability without a
//! syscall in the common case ([`BackendSocket::looks_open`]): an idle
//! backend connection has nothing to say, so readable means closed (or
//! broken) and it is dropped. A request that may not be replayed (see
//! `proxy::policy`) asks for more: a connection used less than
//! [`KNOWN_GOOD_IDLE`] ago that a read syscall finds silent, else a new one.

use super::io::{BackendSocket, DialError, Dialer};
use crate::metrics::UpstreamErrorKind;
use crate::routes::BackendAddr;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

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
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
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

struct Idle<S> {
    stream: S,
    since: Instant,
}

struct Shared<S> {
    /// Keyed by the backend's `host:port` text.
    idle: Mutex<HashMap<Box<str>, Vec<Idle<S>>, foldhash::fast::RandomState>>,
    config: PoolConfig,
}

/// A worker's backend connections. The lock is only ever taken by that
/// worker's own tasks, so it is never contended.
pub struct Pool<D: Dialer> {
    shared: Arc<Shared<D::Stream>>,
    dialer: D,
    sweeper: std::sync::Once,
}

impl<D: Dialer> Pool<D> {
    pub fn new(dialer: D, config: PoolConfig) -> Pool<D> {
        Pool {
            shared: Arc::new(Shared {
                idle: Mutex::new(HashMap::default()),
                config,
            }),
            dialer,
            sweeper: std::sync::Once::new(),
        }
    }

    /// An idle connection to `backend` that still looks open, if any
    /// (`now`: the request's clock reading). `known_good`: only one used
    /// within [`KNOWN_GOOD_IDLE`] and found silent by a read syscall (for a
    /// request that may not be replayed).
    pub fn checkout(
        &self,
        backend: &BackendAddr,
        now: Instant,
        known_good: bool,
    ) -> Option<D::Stream> {
        let mut idle = self.shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(backend.as_str())?;
        while let Some(conn) = list.pop() {
            let age = now.saturating_duration_since(conn.since);
            if age >= self.shared.config.idle_timeout || !conn.stream.looks_open() {
                continue;
            }
            if known_good && (age >= KNOWN_GOOD_IDLE || !conn.stream.is_silent()) {
                continue;
            }
            return Some(conn.stream);
        }
        None
    }

    /// Returns a connection that sits at a clean message boundary (`now`:
    /// when its last response ended).
    pub fn put_back(&self, backend: &BackendAddr, stream: D::Stream, now: Instant) {
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
    pub async fn connect(&self, backend: &BackendAddr) -> Result<D::Stream, UpstreamError> {
        self.sweeper.call_once(|| {
            start_sweeper(
                Arc::downgrade(&self.shared),
                self.shared.config.idle_timeout,
            )
        });
        Ok(self
            .dialer
            .dial(backend, self.shared.config.connect_timeout)
            .await?)
    }
}

impl From<DialError> for UpstreamError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::Refused(e) => UpstreamError::Connect(e),
            DialError::Timeout => UpstreamError::ConnectTimeout,
        }
    }
}

impl<S: BackendSocket> Shared<S> {
    /// Drops idle connections past the timeout or closed by their backend,
    /// and forgets backends with none left.
    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = self.config.idle_timeout;
        idle.retain(|_, list| {
            list.retain(|c| c.since.elapsed() < timeout && c.stream.looks_open());
            !list.is_empty()
        });
    }
}

/// Sweeps the pool every idle timeout / 4 (at least every 100 ms), until
/// the pool is gone.
fn start_sweeper<S: BackendSocket>(pool: Weak<Shared<S>>, idle_timeout: Duration) {
    let period = (idle_timeout / 4).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(pool) => pool.sweep(),
                None => return,
            }
        }
    });
}
