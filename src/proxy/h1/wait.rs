//! The HTTP/1 driver's waits: a [`Deadline`] that moves later at no cost,
//! [`bounded`], which arms it only when an operation has to wait, and the
//! client writes bounded by it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

/// A deadline that moves later at no cost: moving it records the instant,
/// and the timer under it is re-armed only when it fires before that
/// instant. A connection moves its deadlines on every request; re-arming a
/// timer each time would cost a timer-wheel update each time.
pub(super) struct Deadline {
    pub(super) timer: Pin<Box<Sleep>>,
    pub(super) at: tokio::time::Instant,
}

impl Deadline {
    pub(super) fn new(at: tokio::time::Instant) -> Deadline {
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    pub(super) fn set(&mut self, at: tokio::time::Instant) {
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
        self.at = at;
    }

    /// Resolves once the deadline has passed.
    pub(super) async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            if tokio::time::Instant::now() >= self.at {
                return;
            }
            let at = self.at;
            self.timer.as_mut().reset(at);
        }
    }
}

/// Runs `op` until it completes or `deadline` passes (then `None`). The
/// deadline is set `limit` after the moment `op` first has to wait, so an
/// operation that completes at once (the usual case: a write to a socket
/// with room, a read of bytes already there) reads no clock and arms no
/// timer.
pub(super) async fn bounded<F: Future>(
    op: F,
    deadline: &mut Deadline,
    limit: Duration,
) -> Option<F::Output> {
    let mut op = std::pin::pin!(op);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx))).await {
        return Some(out);
    }
    deadline.set(tokio::time::Instant::now() + limit);
    tokio::select! {
        biased;
        out = op => Some(out),
        _ = deadline.expired() => None,
    }
}

/// [`write_all_two`] to the client, failing when it cannot finish within
/// `idle` (a client that stopped reading).
pub(super) async fn write_bounded<W: AsyncWrite + Unpin>(
    client: &mut W,
    deadline: &mut Deadline,
    idle: Duration,
    a: &[u8],
    b: &[u8],
) -> io::Result<()> {
    bounded(write_all_two(client, a, b), deadline, idle)
        .await
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            ))
        })
}

/// Writes `a` then `b` with as few syscalls as the stream allows.
pub(super) async fn write_all_two<W: AsyncWrite + Unpin>(
    w: &mut W,
    a: &[u8],
    b: &[u8],
) -> io::Result<()> {
    if b.is_empty() {
        return w.write_all(a).await;
    }
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = w
            .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    w.write_all(b).await
}
