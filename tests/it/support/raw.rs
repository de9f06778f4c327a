//! The raw HTTP/1 client: exact bytes out, answers parsed off the socket
//! one by one (bytes past one answer stay buffered for the next, so
//! pipelining works), for requests no well-behaved client would send and
//! for tests where the bytes are what is under test. Also the byte helpers
//! raw backends use to read requests.

use super::client::CALL_TIMEOUT;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and headers, up to and including the empty line.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.head, name).first().copied()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Every value of header `name` in a request or response head, in order.
pub fn header_values<'h>(head: &'h str, name: &str) -> Vec<&'h str> {
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// Where `needle` first starts in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A client connection read answer by answer.
pub struct RawClient {
    pub stream: TcpStream,
    /// Received, not yet part of an answer.
    pub buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        // Each write goes out as written (split prefaces, heads before
        // bodies), not merged by Nagle.
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` as they are; panics if the write fails.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the proxy");
    }

    /// Reads more into `buf`; false at EOF (or a reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next answer; panics if the connection closes first or none
    /// comes whole within `CALL_TIMEOUT`. `to_head`: the request was HEAD,
    /// so the answer has no body whatever its headers say.
    pub async fn response(&mut self, to_head: bool) -> RawResponse {
        match self.try_response(to_head).await {
            Some(answer) => answer,
            None => panic!(
                "no whole answer (closed or timed out); received {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next answer: its body is `Content-Length` bytes, or everything
    /// up to EOF without one (a chunked answer is not decoded: no test
    /// expects one on a raw socket). `None` when the connection closes
    /// before a whole head, or nothing whole comes within `CALL_TIMEOUT`.
    pub async fn try_response(&mut self, to_head: bool) -> Option<RawResponse> {
        tokio::time::timeout(CALL_TIMEOUT, self.read_response(to_head))
            .await
            .ok()?
    }

    async fn read_response(&mut self, to_head: bool) -> Option<RawResponse> {
        let end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let answer = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        let bodiless = to_head || (100..200).contains(&status) || status == 204 || status == 304;
        if bodiless {
            return Some(answer);
        }
        assert!(
            answer.header("transfer-encoding").is_none(),
            "no test expects a chunked answer on a raw socket: {:?}",
            answer.head
        );
        let body = match answer.header("content-length") {
            Some(n) => {
                let n: usize = n.parse().expect("numeric Content-Length");
                while self.buf.len() < n {
                    assert!(self.fill().await, "closed inside a body: {:?}", answer.head);
                }
                self.buf.drain(..n).collect()
            }
            None => {
                while self.fill().await {}
                std::mem::take(&mut self.buf)
            }
        };
        Some(RawResponse { body, ..answer })
    }

    /// Waits for the peer to close the connection: `Some(bytes received
    /// meanwhile)`, or `None` if it is still open after `CALL_TIMEOUT`.
    pub async fn rest_until_close(&mut self) -> Option<Vec<u8>> {
        self.closed_within(CALL_TIMEOUT)
            .await
            .then(|| std::mem::take(&mut self.buf))
    }

    /// True if the peer closes the connection (EOF or error) within
    /// `within`; what arrives meanwhile is kept in `buf`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let wait = async { while self.fill().await {} };
        tokio::time::timeout(within, wait).await.is_ok()
    }
}

/// Opens a connection, writes `bytes` as they are, reads one answer.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Option<RawResponse> {
    let mut client = RawClient::connect(addr).await;
    // The proxy may answer and close before reading everything (431): a
    // failed write is not the test's business, the answer is.
    let _ = client.stream.write_all(bytes).await;
    client.try_response(false).await
}

/// Reads until the end of a request head (`\r\n\r\n`) and returns every
/// byte read so far (the head and whatever of the body came with it);
/// empty when the peer closed first.
pub async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    read_until(stream, b"\r\n\r\n").await
}

/// Reads until `needle` has been received (or the peer closes) and returns
/// every byte read.
pub async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&buf, needle).is_none() {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}
