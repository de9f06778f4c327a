//! Keep-alive connections to backends: which connection a request goes
//! out on. One pool per worker thread; hyper's `client::conn::http1` speaks
//! the protocol.
//!
//! Why not hyper-util's legacy `Client`: for every response with a body it
//! spawns a task (plus a oneshot) that puts the connection back once the
//! body is read, races a pool checkout against a connect, and keys its pool
//! with SipHash under a lock. On the request path of a proxy whose backends
//! answer in microseconds that bookkeeping was the largest item left in the
//! profile (bench/README.md). Here a connection goes back to the pool from
//! the response body itself, when its last frame is read ([`PooledBody`]);
//! a body dropped halfway closes its connection instead.
//!
//! Idle connections are reused most-recent-first: the hot ones stay warm and
//! the rest age out. Ones idle past the idle timeout are dropped on the next
//! visit to their backend and by a sweep every few seconds (so a backend
//! that lost its routes does not keep sockets open forever).

pub use super::h1::upstream::PoolConfig;
use super::h1::upstream::{dial, start_sweeper, DialError};
use super::UpstreamBody;
use crate::metrics::UpstreamErrorKind;
use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

/// Idle connections kept per backend (per worker); more are closed.
const MAX_IDLE_PER_BACKEND: usize = 512;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// The metric label, and whether a retry elsewhere is safe.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            UpstreamError::ConnectTimeout => UpstreamErrorKind::ConnectTimeout,
            // Refused, unreachable, unresolvable: the request never left.
            UpstreamError::Connect(_) => UpstreamErrorKind::Refused,
            UpstreamError::Http(e) => classify_http(e),
        }
    }
}

fn classify_http(error: &hyper::Error) -> UpstreamErrorKind {
    if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        return UpstreamErrorKind::Reset;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => UpstreamErrorKind::Reset,
                _ => UpstreamErrorKind::Other,
            };
        }
        source = e.source();
    }
    UpstreamErrorKind::Other
}

type Sender = SendRequest<UpstreamBody>;

struct IdleConnection {
    sender: Sender,
    since: Instant,
}

struct Shared {
    idle: Mutex<HashMap<Authority, Vec<IdleConnection>, foldhash::fast::RandomState>>,
    config: PoolConfig,
}

impl From<DialError> for UpstreamError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::Refused(e) => UpstreamError::Connect(e),
            DialError::Timeout => UpstreamError::ConnectTimeout,
        }
    }
}

/// A worker's backend connections. Cheap to share: the state is behind an
/// `Arc`, and the lock is only ever contended by that worker's own tasks.
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

    /// Sends `request` to `backend` on an idle connection, or a new one.
    /// The request's URI should be in origin form (`/path?query`).
    ///
    /// Like hyper-util's client, a request is moved to a new connection only
    /// if nothing of it was sent; one that went out on a connection the
    /// backend was closing fails as a reset (and is retried on another
    /// backend by the caller when that is safe).
    pub async fn send(
        &self,
        backend: &Authority,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        if let Some(mut sender) = self.shared.checkout(backend) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.shared.wrap(backend, sender, response)),
                Err(mut e) => match e.take_message() {
                    // The idle connection closed before the request went out:
                    // nothing of it was sent, so a new connection takes it.
                    Some(unsent) => request = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(backend).await?;
        let response = sender.send_request(request).await?;
        Ok(self.shared.wrap(backend, sender, response))
    }

    async fn connect(&self, backend: &Authority) -> Result<Sender, UpstreamError> {
        self.sweeper.call_once(|| {
            let idle = self.shared.config.idle_timeout;
            start_sweeper(Arc::downgrade(&self.shared), idle, Shared::sweep)
        });
        let stream = dial(backend, &self.shared.config).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        // The connection task ends when the backend closes or the sender
        // (pooled or in use) is dropped. Upgrades (WebSocket) take the socket
        // over from it.
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "backend connection ended with error");
            }
        });
        Ok(sender)
    }
}

impl Shared {
    fn checkout(&self, backend: &Authority) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(backend)?;
        while let Some(conn) = list.pop() {
            if conn.sender.is_ready() && conn.since.elapsed() < self.config.idle_timeout {
                return Some(conn.sender);
            }
            // Closed by the backend, or idle too long: dropping the sender
            // ends its connection task.
        }
        None
    }

    fn put_back(&self, backend: &Authority, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = match idle.get_mut(backend) {
            Some(list) => list,
            None => idle.entry(backend.clone()).or_default(),
        };
        if list.len() >= MAX_IDLE_PER_BACKEND {
            // The oldest goes; it is the likeliest to be closed anyway.
            list.remove(0);
        }
        list.push(IdleConnection {
            sender,
            since: Instant::now(),
        });
    }

    /// Drops idle connections past the timeout or closed by their backend,
    /// and forgets backends with none left.
    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = self.config.idle_timeout;
        idle.retain(|_, list| {
            list.retain(|c| !c.sender.is_closed() && c.since.elapsed() < timeout);
            !list.is_empty()
        });
    }

    fn wrap(
        self: &Arc<Self>,
        backend: &Authority,
        sender: Sender,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        let mut lease = Some(Lease {
            pool: Arc::downgrade(self),
            backend: backend.clone(),
            sender,
        });
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // The socket now belongs to the upgrade.
            lease = None;
        } else if response.body().is_end_stream() {
            // Nothing to read (HEAD, 204, 304, empty body): free already.
            if let Some(lease) = lease.take() {
                lease.release();
            }
        }
        response.map(|body| PooledBody { body, lease })
    }
}

/// A connection in use: goes back to its pool when released.
struct Lease {
    pool: Weak<Shared>,
    backend: Authority,
    sender: Sender,
}

impl Lease {
    fn release(self) {
        let Lease {
            pool,
            backend,
            mut sender,
        } = self;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if sender.is_ready() {
            pool.put_back(&backend, sender);
        } else if !sender.is_closed() {
            // The connection task has not yet seen the end of the message
            // (rare: it normally reads the last frame before the body does).
            // Pool it once it is ready for another request.
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.put_back(&backend, sender);
                }
            });
        }
    }
}

/// A backend's response body; its connection returns to the pool when the
/// last frame has been read.
pub struct PooledBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            // An error leaves the connection unusable: the lease is dropped
            // with the body, closing it.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            Poll::Ready(None) => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            // A server writing a Content-Length body stops polling once the
            // length is reached, so the end is noticed here too.
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
