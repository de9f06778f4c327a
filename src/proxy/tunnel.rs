//! Upgraded connections (WebSocket and other `101 Switching Protocols`
//! answers): the byte copy both ways and its idle limit
//! (`--tunnel-idle-timeout`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The idle check looks at the activity counter this many times per idle
/// period: a silent tunnel closes between 1 and 1 + 1/CHECKS periods after
/// its last byte.
const CHECKS_PER_PERIOD: u32 = 4;

/// Writes what each side sent past the handshake to the other, then copies
/// both ways until either side closes, or no byte moved for `idle`.
pub async fn run<A, B>(
    client: A,
    client_rest: &[u8],
    upstream: B,
    upstream_rest: &[u8],
    idle: Duration,
) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = AtomicU64::new(0);
    let mut client = Counted {
        inner: client,
        activity: &activity,
    };
    let mut upstream = Counted {
        inner: upstream,
        activity: &activity,
    };
    let copy = async {
        upstream.write_all(client_rest).await?;
        client.write_all(upstream_rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    };
    tokio::select! {
        result = copy => result.map(|_| ()),
        _ = silence(&activity, idle) => {
            Err(io::Error::new(io::ErrorKind::TimedOut, "tunnel idle"))
        }
    }
}

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
struct Counted<'a, T> {
    inner: T,
    activity: &'a AtomicU64,
}

impl<T> Counted<'_, T> {
    fn touch(&self) {
        // Only its changes matter, never its value: a relaxed add is plenty.
        self.activity.fetch_add(1, Ordering::Relaxed);
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
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
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
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_silent_tunnel_is_closed_after_the_idle_limit() {
        let idle = Duration::from_secs(1);
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let tunnel = tokio::spawn(async move { run(client, b"hello", upstream, b"", idle).await });
        let mut got = [0u8; 5];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        // Traffic every 100 ms keeps it open for twice the limit.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client_peer.write_all(b"x").await.unwrap();
            upstream_peer.read_exact(&mut got[..1]).await.unwrap();
        }
        assert!(!tunnel.is_finished(), "closed while busy");
        let ended = tokio::time::timeout(Duration::from_secs(10), tunnel)
            .await
            .expect("a silent tunnel stays open")
            .unwrap();
        assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
