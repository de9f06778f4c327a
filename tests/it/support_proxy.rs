//! Helpers for `tests/proxy.rs` (kept out of `tests/support/`, which other
//! test binaries share): backends that misbehave on purpose (scripted
//! hyper backends, raw TCP backends, a WebSocket echo, a listener whose
//! accept queue is full), an HTTP/1.1 client that takes any request, and a
//! raw TCP client for requests no well-behaved client would send.
#![allow(dead_code)]

use crate::support::HttpResponse;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Cap on every client call here: a hang is a failure, never a stuck test.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Body type of scripted backends (full or streamed).
pub type TestBody = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// A backend listening on a free loopback port; its accept loop and every
/// connection it serves stop when it is dropped.
pub struct TestBackend {
    pub addr: SocketAddr,
    /// Requests (scripted backends) or connections (raw backends) seen.
    pub count: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl TestBackend {
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_each<F, Fut>(on_connection: F) -> TestBackend
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    {
        let count = count.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                };
                let conn = on_connection(stream, count.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
    }
    TestBackend { addr, count, stop }
}

/// A hyper backend speaking HTTP/1.1 only (so a proxy that spoke HTTP/2 to
/// it would fail) whose answers `handler` computes; `count` is bumped as
/// each request arrives, before the handler runs.
pub async fn scripted_backend<F, Fut>(handler: F) -> TestBackend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_each(move |stream, count| {
        let handler = handler.clone();
        async move {
            let service = service_fn(move |req| {
                count.fetch_add(1, Ordering::SeqCst);
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        }
    })
    .await
}

/// A backend that gets the raw socket of each connection; `count` is the
/// number of connections accepted.
pub async fn raw_backend<F, Fut>(on_connection: F) -> TestBackend
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_each(move |stream, count| {
        count.fetch_add(1, Ordering::SeqCst);
        on_connection(stream)
    })
    .await
}

/// A WebSocket echo server: greets each client with `"welcome"`, then
/// sends back every text and binary message it receives.
pub async fn websocket_echo_backend() -> TestBackend {
    raw_backend(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        if ws.send(Message::text("welcome")).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                return;
            }
        }
    })
    .await
}

/// Reads until the end of a request head (`\r\n\r\n`) and returns every
/// byte read so far (the head and whatever of the body came with it).
pub async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !contains(&buf, b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

/// Reads until `needle` has been received (or the peer closes).
pub async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !contains(&buf, needle) {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An address where nothing listens: connecting is refused at once.
///
/// The port stays bound (without `listen`, so a SYN gets a RST) until the
/// test binary exits. A port only looked up and let go can be handed to the
/// next `bind(0)`, of this test or of one running beside it; if that is the
/// proxy's own listener, the "refusing" backend answers by proxying the
/// request to the route's next backend, and a refusal test sees no refusal.
pub fn refusing_addr() -> SocketAddr {
    static RESERVED: std::sync::Mutex<Vec<socket2::Socket>> = std::sync::Mutex::new(Vec::new());
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    RESERVED.lock().unwrap().push(socket);
    addr
}

/// True while something accepts TCP connections on `addr`.
pub async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// A listener whose accept queue is full, so that the kernel drops new
/// SYNs and a connect attempt hangs until the client gives up: the only
/// deterministic way to get a connect timeout on loopback. Keep the value
/// alive for as long as the address must stay unanswered.
pub struct FullBacklog {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

pub async fn full_backlog() -> FullBacklog {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    // Backlog 0: Linux queues one finished handshake, then drops SYNs.
    let listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(50), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(e)) => panic!("filling the accept queue failed: {e}"),
            // The SYN went unanswered: the queue is full.
            Err(_) => {
                return FullBacklog {
                    addr,
                    _listener: listener,
                    _fillers: fillers,
                }
            }
        }
    }
    panic!("the kernel kept accepting on a backlog-0 listener; cannot produce a connect timeout");
}

/// Sends `req` (its URI a path: the proxy address is filled in) with a
/// fresh HTTP/1.1 client; `Err` for a transport error.
pub async fn try_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<HttpResponse, String> {
    let (mut parts, body) = req.into_parts();
    parts.uri = format!(
        "http://{addr}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    )
    .parse()
    .unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let call = async {
        let resp = client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| format!("request failed: {e:?}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body failed: {e:?}"))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| "timed out".to_owned())?
}

pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> HttpResponse {
    try_send(addr, req).await.unwrap()
}

/// A request with `Host: host` and the given extra headers.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).unwrap()
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (head, then `Content-Length` bytes, or everything up
/// to EOF without one). `None` when the connection closes or errs before a
/// whole head arrives, or nothing comes within `CALL_TIMEOUT`.
pub async fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    let read = async {
        let mut buf = read_head(stream).await;
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let mut body = buf.split_off(end);
        let length = head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        });
        let mut chunk = [0u8; 4096];
        while length.is_none_or(|n| body.len() < n) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        Some(RawResponse { status, head, body })
    };
    tokio::time::timeout(CALL_TIMEOUT, read).await.ok()?
}

/// Opens a connection, writes `bytes` as they are, reads one response.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may answer and close before reading everything (431):
    // a failed write is not the test's business, the answer is.
    let _ = stream.write_all(bytes).await;
    read_response(&mut stream).await
}

/// Waits until the peer closes `stream` (EOF or error); `false` if it is
/// still open after `within`. Bytes received meanwhile are ignored.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let wait = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}
