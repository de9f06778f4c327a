//! Item 1 of issue 25 on pooled backend connections: a request that may
//! have reached a backend is replayed only when idempotent and no answer
//! byte arrived; a connection the backend closed, or spoke on, while idle
//! in the pool is not used (and costs no 502).

use super::recorder::{Recorder, Reply, Then};
use super::wire::{self, Parsed, Response};
use crate::support::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw client on one connection, reading answers strictly.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
        }
    }

    /// The next answer within `within`; `Err` says what came instead.
    pub async fn answer_within(&mut self, within: Duration) -> Result<Response, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match wire::parse_response(&self.buf, false, self.eof)? {
                Parsed::Done(resp, n) => {
                    self.buf.drain(..n);
                    return Ok(resp);
                }
                Parsed::Partial if self.eof => {
                    return Err(format!(
                        "closed before a whole answer: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
                Parsed::Partial => {}
            }
            if tokio::time::timeout_at(deadline, self.fill())
                .await
                .is_err()
            {
                return Err(format!(
                    "no whole answer within {within:?}: {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                ));
            }
        }
    }

    pub async fn answer(&mut self) -> Response {
        self.answer_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for the proxy to close: the bytes that came first, or `None`
    /// if it is still open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + within;
        while !self.eof {
            if tokio::time::timeout_at(deadline, self.fill())
                .await
                .is_err()
            {
                return None;
            }
        }
        Some(std::mem::take(&mut self.buf))
    }
}

/// How many requests with this method and target reached `recorders`.
fn seen(recorders: &[&Recorder], method: &str, target: &str) -> usize {
    recorders
        .iter()
        .flat_map(|r| r.connections())
        .map(|c| match wire::parse_all_requests(&c.received) {
            Ok(reqs) => reqs
                .iter()
                .filter(|r| r.method == method && r.target == target)
                .count(),
            // A request cut short still counts if its head arrived.
            Err(_) => usize::from(
                c.received
                    .starts_with(format!("{method} {target} HTTP/1.1\r\n").as_bytes()),
            ),
        })
        .sum()
}

async fn proxy_for(redis: &RedisServer, host: &str, targets: &[String]) -> ProxyHandle {
    redis.hset(host, &targets.join(","));
    let proxy = ProxyHandle::start(super::runner::suite_config(&redis.url())).await;
    assert_eventually!(
        proxy.ready().await && proxy.metric("switchyard_route_table_routes").await == 1.0,
        "proxy never loaded the route"
    );
    proxy
}

const WARM: &[u8] = b"GET /warm HTTP/1.1\r\nHost: pay.test\r\n\r\n";
const PAY: &[u8] = b"POST /pay HTTP/1.1\r\nHost: pay.test\r\nContent-Length: 10\r\n\r\namount=100";

/// The bytes of issue 25 item 1, with one backend and with two: the POST
/// is read whole on a pooled connection, answered `HTTP/1.1 2` (or not at
/// all) and the connection closed. It must reach a backend once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_read_whole_on_a_pooled_connection_is_never_sent_twice() {
    for answer in ["HTTP/1.1 2", ""] {
        for backends in [1, 2] {
            let redis = RedisServer::start();
            let script = vec![Reply::ok("warm"), Reply::new(answer).then(Then::Close)];
            let a = Recorder::start(script.clone()).await;
            let b = Recorder::start(script).await;
            let targets: Vec<String> = [&a, &b][..backends].iter().map(|r| r.target()).collect();
            let proxy = proxy_for(&redis, "pay.test", &targets).await;
            let mut client = RawClient::connect(proxy.addr).await;
            // Warm every backend's pool (round-robin) on one client connection.
            for _ in 0..backends {
                client.send(WARM).await;
                assert_eq!(client.answer().await.status, 200);
            }
            client.send(PAY).await;
            let resp = client.answer().await;
            let posts = seen(&[&a, &b], "POST", "/pay");
            assert_eq!(
                (resp.status, posts),
                (502, 1),
                "answer {answer:?}, {backends} backend(s): the client must get 502 and the POST reach a backend once"
            );
            assert!(resp.header("x-request-id").is_some());
            proxy.shutdown().await;
        }
    }
}

/// The same situation with a GET and no answer byte: replayed, and the
/// client never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_get_on_a_pooled_connection_closed_without_answer_is_retried() {
    let redis = RedisServer::start();
    let a = Recorder::start(vec![
        Reply::ok("warm"),
        Reply::new("").then(Then::Close),
        Reply::ok("retried"),
    ])
    .await;
    let proxy = proxy_for(&redis, "pay.test", &[a.target()]).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.send(WARM).await;
    assert_eq!(client.answer().await.body, b"warm");
    client
        .send(b"GET /again HTTP/1.1\r\nHost: pay.test\r\n\r\n")
        .await;
    let resp = client.answer().await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"retried"[..]));
    assert_eq!(seen(&[&a], "GET", "/again"), 2);
    proxy.shutdown().await;
}

/// A GET whose answer broke after its first byte is not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_not_replayed_after_an_answer_byte() {
    let redis = RedisServer::start();
    let a = Recorder::start(vec![Reply::new("HTTP/1.1 2").then(Then::Close)]).await;
    let b = Recorder::start(vec![Reply::new("HTTP/1.1 2").then(Then::Close)]).await;
    let proxy = proxy_for(&redis, "pay.test", &[a.target(), b.target()]).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET /x HTTP/1.1\r\nHost: pay.test\r\n\r\n")
        .await;
    assert_eq!(client.answer().await.status, 502);
    assert_eq!(seen(&[&a, &b], "GET", "/x"), 1);
    proxy.shutdown().await;
}

/// A pooled connection the backend closed while idle is noticed before
/// use: the POST goes on a fresh connection, once, and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closed_while_idle_in_the_pool_costs_no_502() {
    let redis = RedisServer::start();
    let a = Recorder::start(vec![Reply::ok("warm").then(Then::Close), Reply::ok("paid")]).await;
    let proxy = proxy_for(&redis, "pay.test", &[a.target()]).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.send(WARM).await;
    assert_eq!(client.answer().await.body, b"warm");
    // On loopback a FIN is in the proxy's socket once shutdown returned.
    assert_eventually!(
        a.connections().first().is_some_and(|c| c.closed_by_backend),
        "the backend never closed its idle connection"
    );
    client.send(PAY).await;
    let resp = client.answer().await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"paid"[..]));
    assert_eq!(seen(&[&a], "POST", "/pay"), 1);
    assert_eq!(a.connections().len(), 2);
    proxy.shutdown().await;
}

/// Item 12 with timing a table cannot express: a pooled connection on
/// which the backend spoke while idle is never used again, so its bytes
/// never become anyone's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_backend_sent_while_idle_never_become_an_answer() {
    let redis = RedisServer::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let (spoke_tx, spoke_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(async move {
        let (mut first, _) = listener.accept().await.unwrap();
        read_one_head(&mut first).await;
        first
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            .await
            .unwrap();
        go_rx.await.unwrap();
        first
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
            .await
            .unwrap();
        spoke_tx.send(()).unwrap();
        let (mut second, _) = listener.accept().await.unwrap();
        read_one_head(&mut second).await;
        second
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
            .await
            .unwrap();
        // Keep both open until the test ends.
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            let mut sink = [0u8; 1024];
            while matches!(second.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        drop(first);
    });
    let proxy = proxy_for(&redis, "idle.test", &[backend_addr.to_string()]).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET /1 HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        .await;
    assert_eq!(client.answer().await.body, b"first");
    go_tx.send(()).unwrap();
    spoke_rx.await.unwrap();
    client
        .send(b"GET /2 HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        .await;
    let resp = client
        .answer_within(Duration::from_secs(10))
        .await
        .expect("an answer to the second request");
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        "good",
        "the idle connection's unsolicited bytes were taken as the answer"
    );
    proxy.shutdown().await;
    backend.abort();
}

async fn read_one_head(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the proxy closed before a whole head");
        buf.extend_from_slice(&chunk[..n]);
    }
}
