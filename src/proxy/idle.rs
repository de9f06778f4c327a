//! Idle detection without a clock read per socket operation: [`Counted`],
//! a stream that bumps an activity counter whenever bytes move, and
//! [`silence`], which resolves once that counter has not moved for a whole
//! idle period. The HTTP/2 server's idle timeout and the tunnels'
//! (`--tunnel-idle-timeout`) are both this pair.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// [`silence`] looks at the activity counter this many times per idle
/// period: a silent stream is noticed between 1 and 1 + 1/CHECKS_PER_PERIOD
/// periods after its last byte.
const CHECKS_PER_PERIOD: u32 = 4;

/// Resolves once `activity` has not moved for a whole `idle` period. The
/// counter is compared between ticks instead of reading the clock on every
/// socket operation.
pub async fn silence(activity: &AtomicU64, idle: Duration) {
    let tick = (idle / CHECKS_PER_PERIOD).max(Duration::from_millis(1));
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = activity.load(Ordering::Relaxed);
    let mut quiet = 0;
    loop {
        checks.tick().await;
        let now = activity.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            quiet = 0;
            continue;
        }
        quiet += 1;
        if quiet >= CHECKS_PER_PERIOD {
            return;
        }
    }
}

/// A stream that bumps `activity` on every read or write that moved bytes.
///
/// Every `Counted` sharing a counter must be polled by one task (an HTTP/2
/// connection's own IO; a tunnel's two sides, copied by one future): the
/// bump is then a plain load and store, no locked read-modify-write on every
/// socket operation. Only the counter's changes matter, never its value.
pub struct Counted<'a, T> {
    inner: T,
    activity: &'a AtomicU64,
}

impl<'a, T> Counted<'a, T> {
    pub fn new(inner: T, activity: &'a AtomicU64) -> Self {
        Counted { inner, activity }
    }

    fn touch(&self) {
        let count = self.activity.load(Ordering::Relaxed);
        self.activity
            .store(count.wrapping_add(1), Ordering::Relaxed);
    }

    fn moved(&self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.touch();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.moved(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.moved(&result);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn only_operations_that_move_bytes_count() {
        let activity = AtomicU64::new(0);
        let (near, mut far) = tokio::io::duplex(64);
        let mut counted = Counted::new(near, &activity);
        counted.write_all(b"ab").await.unwrap();
        assert_eq!(activity.load(Ordering::Relaxed), 1);
        counted.flush().await.unwrap();
        assert_eq!(activity.load(Ordering::Relaxed), 1, "a flush moves nothing");
        far.write_all(b"c").await.unwrap();
        let mut got = [0u8; 1];
        counted.read_exact(&mut got).await.unwrap();
        assert_eq!(activity.load(Ordering::Relaxed), 2);
        drop(far);
        assert_eq!(counted.read(&mut got).await.unwrap(), 0);
        assert_eq!(
            activity.load(Ordering::Relaxed),
            2,
            "end of stream moves nothing"
        );
    }
}
