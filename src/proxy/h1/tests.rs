//! The HTTP/1 driver over in-memory pipes: the client is one end of a
//! `tokio::io::duplex`, every backend connection another (a dialer that
//! hands the far ends to the test, which plays the backend). Framing,
//! pipelining, early answers and linger, without a socket or a Redis.

use super::*;
use crate::config::Config;
use crate::proxy::io::DialError;
use crate::routes::BackendAddr;
use crate::routes::RouteTable;
use crate::state::SharedState;
use std::io;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// Backend connections are pipes; their far ends go to the test.
struct PipeDialer(mpsc::UnboundedSender<DuplexStream>);

impl Dialer for PipeDialer {
    type Stream = DuplexStream;

    async fn dial(&self, _: &BackendAddr, _: Duration) -> Result<DuplexStream, DialError> {
        let (ours, theirs) = duplex(256 * 1024);
        self.0
            .send(theirs)
            .map_err(|_| DialError::Refused(io::ErrorKind::ConnectionRefused.into()))?;
        Ok(ours)
    }
}

struct Harness {
    client: DuplexStream,
    backends: mpsc::UnboundedReceiver<DuplexStream>,
    driver: tokio::task::JoinHandle<()>,
}

/// A driver serving one client pipe, with `app.test` routed to one backend.
fn harness() -> Harness {
    let state = SharedState::new();
    let table = RouteTable::build(&[("app.test", "10.0.0.1:80")], &RouteTable::unloaded());
    state.swap_table(Arc::new(table));
    let mut config = Config::new("redis://127.0.0.1:1/0").unwrap().proxy;
    config.body_read_timeout = Duration::from_secs(5);
    let (tx, backends) = mpsc::unbounded_channel();
    let proxy = Proxy::with_dialer(state, config, PipeDialer(tx));
    let (client, ours) = duplex(256 * 1024);
    let driver = tokio::spawn(async move {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_header_size: 32 * 1024,
        };
        let info = ConnInfo::plain("192.0.2.1:5000".parse().unwrap());
        let _ = serve(&proxy, ours, &info, &limits, &Stop::default()).await;
    });
    Harness {
        client,
        backends,
        driver,
    }
}

/// Reads from `stream` until `buf` holds `needle` (within 5 s).
async fn read_until(stream: &mut DuplexStream, buf: &mut Vec<u8>, needle: &[u8]) {
    let wait = async {
        while !buf.windows(needle.len()).any(|w| w == needle) {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before {:?}: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no {:?} in {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(buf)
            )
        });
}

async fn next_backend(h: &mut Harness) -> DuplexStream {
    tokio::time::timeout(Duration::from_secs(5), h.backends.recv())
        .await
        .expect("no backend connection")
        .unwrap()
}

/// Two requests written in one go (the second with a body) are forwarded
/// one after the other on one backend connection, with the proxy's own
/// framing, and answered in order.
#[tokio::test]
async fn pipelined_requests_are_forwarded_in_turn_and_answered_in_order() {
    let mut h = harness();
    h.client
        .write_all(
            b"GET /1 HTTP/1.1\r\nHost: app.test\r\n\r\n\
              POST /2 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 5\r\n\r\nhello",
        )
        .await
        .unwrap();
    let mut backend = next_backend(&mut h).await;
    let mut seen = Vec::new();
    read_until(&mut backend, &mut seen, b"\r\n\r\n").await;
    let first = String::from_utf8(seen.clone()).unwrap();
    assert!(first.starts_with("GET /1 HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("X-Forwarded-For: 192.0.2.1\r\n"), "{first}");
    backend
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
        .await
        .unwrap();
    seen.clear();
    read_until(&mut backend, &mut seen, b"hello").await;
    let second = String::from_utf8(seen).unwrap();
    assert!(second.starts_with("POST /2 HTTP/1.1\r\n"), "{second}");
    assert!(
        second.ends_with("Content-Length: 5\r\n\r\nhello"),
        "{second}"
    );
    backend
        .write_all(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answers = Vec::new();
    read_until(&mut h.client, &mut answers, b"0\r\n\r\n").await;
    let answers = String::from_utf8(answers).unwrap();
    let one = answers.find("200 OK").unwrap();
    let two = answers.find("201 Created").unwrap();
    assert!(one < two, "{answers}");
    assert!(answers.contains("\r\n\r\none"), "{answers}");
    assert!(
        answers.ends_with("Transfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"),
        "{answers}"
    );
    assert!(
        h.backends.try_recv().is_err(),
        "one backend connection for both"
    );
    h.driver.abort();
}

/// A backend that answers before the request body is all sent gets its
/// answer relayed; the client connection then closes (the rest of the
/// body is never read as a request), after the proxy lingered to read
/// what the client still sends.
#[tokio::test]
async fn an_early_answer_is_relayed_then_the_connection_closes_after_lingering() {
    let mut h = harness();
    h.client
        .write_all(
            b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let mut backend = next_backend(&mut h).await;
    let mut seen = Vec::new();
    read_until(&mut backend, &mut seen, b"0123456789").await;
    backend
        .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    read_until(&mut h.client, &mut answer, b"\r\n\r\n").await;
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    // Lingering: what the client still sends is read and dropped, and the
    // proxy's side ends.
    h.client.write_all(&[b'x'; 4096]).await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), h.client.read_to_end(&mut rest)).await;
    assert!(matches!(ended, Ok(Ok(_))), "the connection stayed open");
    assert!(rest.is_empty(), "{rest:?}");
    // Nothing of the body's rest reached the backend as a request.
    let mut after = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(200), backend.read_to_end(&mut after)).await;
    assert!(
        !String::from_utf8_lossy(&after).contains("HTTP/1.1"),
        "{after:?}"
    );
    h.driver.await.unwrap();
}

/// A refused request (ambiguous framing) is answered 400 with `Connection:
/// close` and never reaches a backend; a malformed chunk in a forwarded
/// body is 400 too and the backend connection is dropped.
#[tokio::test]
async fn framing_refusals_never_reach_a_backend() {
    let mut h = harness();
    h.client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), h.client.read_to_end(&mut answer)).await;
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(
        h.backends.try_recv().is_err(),
        "a refused request was forwarded"
    );

    let mut h = harness();
    h.client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    read_until(&mut h.client, &mut answer, b"\r\n\r\n").await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let mut backend = next_backend(&mut h).await;
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), backend.read_to_end(&mut seen)).await;
    assert!(
        !seen.windows(5).any(|w| w == b"hello"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
}
