//! Upgraded connections (WebSocket and other `101 Switching Protocols`
//! answers): the byte copy both ways and its idle limit
//! (`--tunnel-idle-timeout`, measured by [`super::idle`]).

use super::idle::{silence, Counted};
use std::io;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

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
    // Both sides bump one counter: they are copied by one future, so by
    // one task, as `Counted` requires.
    let mut client = Counted::new(client, &activity);
    let mut upstream = Counted::new(upstream, &activity);
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
