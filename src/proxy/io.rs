//! What the request path needs of a connection beyond `AsyncRead +
//! AsyncWrite`: the few socket tricks of the HTTP/1 driver and the backend
//! pool, behind traits so that the driver runs over any stream: plain TCP,
//! TLS (the listener wraps the socket and hands the stream over), or
//! in-memory pipes in unit tests.
//!
//! - [`Socket`]: a client or backend stream; can ask for an immediate ACK.
//! - [`BackendSocket`]: a backend stream; can tell whether an idle pooled
//!   connection is still usable.
//! - [`Dialer`]: opens backend streams ([`TcpDialer`] in production).

use crate::routes::BackendAddr;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

/// A stream the request path reads and writes.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Asks the kernel to acknowledge what it received at once
    /// (`TCP_QUICKACK`). Called while a message is incomplete: a peer that
    /// writes a head and then a body without `TCP_NODELAY` (Python's
    /// `http.server`, many small frameworks) holds the body back until its
    /// head is acknowledged (Nagle), and an acknowledgement our kernel
    /// delays (up to 40 ms on Linux) would stall every such exchange. Not
    /// permanent: callers re-arm it before each wait, and a message that
    /// arrives whole never pays the syscall. Streams without a TCP socket
    /// of their own do nothing.
    fn quickack(&self) {}
}

/// A backend stream, as the pool checks it before reuse.
pub trait BackendSocket: Socket + Sync {
    /// False once the reactor knows the backend closed the connection or
    /// sent something (an idle connection has nothing to say). No syscall
    /// in the common case.
    fn looks_open(&self) -> bool;
    /// A read syscall (not cached readiness, which may not have seen a
    /// close that just arrived) finds the connection silent.
    fn is_silent(&self) -> bool;
}

/// Opens backend connections.
pub trait Dialer: Send + Sync + 'static {
    type Stream: BackendSocket;
    fn dial(
        &self,
        backend: &BackendAddr,
        connect_timeout: Duration,
    ) -> impl Future<Output = Result<Self::Stream, DialError>> + Send;
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

impl Socket for TcpStream {
    fn quickack(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(self).set_tcp_quickack(true);
    }
}

impl BackendSocket for TcpStream {
    fn looks_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    fn is_silent(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        matches!(socket2::SockRef::from(self).peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// In-memory pipes (unit tests): no TCP tricks, and a pooled pipe is taken
/// as open.
impl Socket for DuplexStream {}

impl BackendSocket for DuplexStream {
    fn looks_open(&self) -> bool {
        true
    }

    fn is_silent(&self) -> bool {
        true
    }
}

/// Plain TCP to backends: within the connect timeout, Nagle off (heads are
/// written whole), TCP keepalive on (finds dead peers).
#[derive(Debug, Clone)]
pub struct TcpDialer {
    pub tcp_keepalive: Duration,
}

impl Dialer for TcpDialer {
    type Stream = TcpStream;

    async fn dial(
        &self,
        backend: &BackendAddr,
        connect_timeout: Duration,
    ) -> Result<TcpStream, DialError> {
        let (host, port) = (backend.host(), backend.port());
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect((host, port)))
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
        let keepalive = socket2::TcpKeepalive::new().with_time(self.tcp_keepalive);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(stream)
    }
}

/// One stream used by two futures of one task (the body going up while
/// the answer is awaited), polled in turn. The lock is taken only inside a
/// single poll, never across an await, so it is never contended; a `Mutex`
/// rather than a `RefCell` keeps the task `Send`.
pub struct Shared<'s, S>(Mutex<&'s mut S>);

impl<'s, S: Socket> Shared<'s, S> {
    pub fn new(stream: &'s mut S) -> Self {
        Shared(Mutex::new(stream))
    }

    fn lock(&self) -> MutexGuard<'_, &'s mut S> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn quickack(&self) {
        self.lock().quickack();
    }
}

impl<S: Socket> AsyncRead for &Shared<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.lock()).poll_read(cx, buf)
    }
}

impl<S: Socket> AsyncWrite for &Shared<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut **self.lock()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut **self.lock()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.lock().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.lock()).poll_shutdown(cx)
    }
}
