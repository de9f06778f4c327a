//! The PROXY protocol header (v1 text or v2 binary, HAProxy's spec) that a
//! load balancer puts before a connection's first byte with `--proxy-protocol`:
//! parsed by the `ppp` crate, read off the socket exactly (never a byte
//! past it, so whatever follows, HTTP or a TLS handshake, is untouched).

use std::io;
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature (12 bytes), then version/command, family, length.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Enough for a v2 header with the addresses and common TLVs at once.
const PEEK: usize = 536;

/// Reads the header at the start of `stream`: `Some(source)` for a proxied
/// TCP connection, `None` for a `LOCAL` (v2) or `UNKNOWN` (v1) one (the
/// balancer's own health check: the TCP peer is the client). An absent or
/// malformed header is an error: the connection must be closed, since
/// whoever sent it may be trying to pose as the balancer's client.
pub async fn read_header(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut peeked = [0u8; PEEK];
    let n = stream.peek(&mut peeked).await?;
    let have = &peeked[..n];
    let len = if have.starts_with(V2_SIGNATURE) && n >= 16 {
        let len = 16 + usize::from(u16::from_be_bytes([have[14], have[15]]));
        (n >= len).then_some(len)
    } else if have.starts_with(b"PROXY ") {
        have.windows(2)
            .take(V1_MAX - 1)
            .position(|w| w == b"\r\n")
            .map(|at| at + 2)
    } else if V2_SIGNATURE.starts_with(&have[..n.min(12)])
        || b"PROXY ".starts_with(&have[..n.min(6)])
    {
        None
    } else {
        return Err(malformed("no PROXY protocol header"));
    };
    let header = match len {
        // The usual case: the whole header came in one segment.
        Some(len) => {
            let mut header = vec![0u8; len];
            stream.read_exact(&mut header).await?;
            header
        }
        None => read_split_header(stream).await?,
    };
    source(&header)
}

/// A header that did not come whole in the first segment: read exactly,
/// by its length (v2) or up to its CRLF a byte at a time (v1, at most 107).
async fn read_split_header(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut header = vec![0u8; 16.min(V1_MAX)];
    stream.read_exact(&mut header[..6]).await?;
    if header.starts_with(b"PROXY ") {
        header.truncate(6);
        while !header.ends_with(b"\r\n") {
            if header.len() >= V1_MAX {
                return Err(malformed("PROXY v1 line too long"));
            }
            header.push(stream.read_u8().await?);
        }
        return Ok(header);
    }
    stream.read_exact(&mut header[6..16]).await?;
    if !header.starts_with(V2_SIGNATURE) {
        return Err(malformed("no PROXY protocol header"));
    }
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    header.resize(16 + len, 0);
    stream.read_exact(&mut header[16..]).await?;
    Ok(header)
}

/// The source address a whole header names.
fn source(header: &[u8]) -> io::Result<Option<SocketAddr>> {
    match ppp::HeaderResult::parse(header) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
            ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
            ppp::v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => Some((a.source_address, a.source_port).into()),
            (_, ppp::v2::Addresses::IPv6(a)) => Some((a.source_address, a.source_port).into()),
            _ => None,
        }),
        _ => Err(malformed("malformed PROXY protocol header")),
    }
}

fn malformed(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Writes `pieces` to a fresh connection (a pause between them, so they
    /// arrive apart) and reads the header on the accepting side; returns
    /// its result and the bytes left after it.
    async fn through(pieces: &[&[u8]]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.set_nodelay(true).unwrap();
            for piece in pieces {
                client.write_all(&piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let result = read_header(&mut stream).await;
        writer.await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        (result, rest)
    }

    #[tokio::test]
    async fn v1_and_v2_headers_give_the_source_and_leave_the_rest() {
        let (source, rest) =
            through(&[b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\nGET / HTTP/1.1\r\n"]).await;
        assert_eq!(source.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        let (source, rest) =
            through(&[b"PROXY TCP6 2001:db8::1 ", b"2001:db8::2 4000 443\r\nX"]).await;
        assert_eq!(source.unwrap(), Some("[2001:db8::1]:4000".parse().unwrap()));
        assert_eq!(rest, b"X");

        let (source, _) = through(&[b"PROXY UNKNOWN\r\n"]).await;
        assert_eq!(source.unwrap(), None);

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0, 80,
        ]);
        for split in [v2.len(), 13, 17] {
            let mut first = v2[..split].to_vec();
            let mut second = v2[split..].to_vec();
            second.extend_from_slice(b"\x16\x03\x01");
            if second.len() == 3 {
                first.extend_from_slice(&second);
                second.clear();
            }
            let (source, rest) = through(&[&first, &second]).await;
            assert_eq!(
                source.unwrap(),
                Some("198.51.100.9:8080".parse().unwrap()),
                "split {split}"
            );
            assert_eq!(
                rest, b"\x16\x03\x01",
                "a TLS handshake after it is untouched"
            );
        }
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 and a line far too long for a v1 header to be, \
              since a v1 header is at most one hundred and seven bytes long\r\n",
        ] {
            let (source, _) = through(&[bad]).await;
            assert!(source.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
