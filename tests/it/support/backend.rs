//! Real backends on free loopback ports, one type for every kind: the JSON
//! echo most tests route to, backends scripted per request (hyper, HTTP/1.1
//! only), backends handed the raw socket, a WebSocket echo. Also addresses
//! that refuse connections or never complete them.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Body type of scripted backends (full or streamed).
pub type TestBody = BoxBody<Bytes, Infallible>;

/// A whole body for a scripted answer.
pub fn full_body(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// A backend listening on a free loopback port; its accept loop and every
/// connection it serves stop when it is dropped (or [`Backend::stop`]ped).
pub struct Backend {
    /// What the echo backend answers as `backend` (empty for other kinds).
    pub name: String,
    pub addr: SocketAddr,
    /// Requests (echo, scripted) or connections (raw, WebSocket) seen.
    count: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Backend {
    /// Answers every request `200` with `x-backend: name` and a JSON body
    /// of what it received: `{"backend", "method", "path", "headers": {..},
    /// "body_len"}`. Speaks HTTP/1.1 and HTTP/2 (prior knowledge).
    pub async fn echo(name: &str) -> Backend {
        let answer_as = name.to_owned();
        let mut backend = Backend::serve(move |stream, count| {
            let name = answer_as.clone();
            async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    let name = name.clone();
                    async move { Ok::<_, Infallible>(echo(&name, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await;
        backend.name = name.to_owned();
        backend
    }

    /// A hyper backend speaking HTTP/1.1 only (a proxy that spoke HTTP/2 to
    /// it would fail) whose answers `handler` computes; counted as each
    /// request arrives, before the handler runs.
    pub async fn scripted<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Backend::serve(move |stream, count| {
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

    /// A backend handed the raw socket of each connection it accepts
    /// (counted as accepted).
    pub async fn raw<F, Fut>(on_connection: F) -> Backend
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Backend::serve(move |stream, count| {
            count.fetch_add(1, Ordering::SeqCst);
            on_connection(stream)
        })
        .await
    }

    /// [`Backend::raw`] with a value every connection and the test share
    /// (a record of the bytes that arrived, a counter): `on_connection`
    /// gets the socket and its own clone of `shared`.
    pub async fn raw_sharing<S, F, Fut>(shared: S, on_connection: F) -> Backend
    where
        S: Clone + Send + Sync + 'static,
        F: Fn(TcpStream, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Backend::raw(move |stream| on_connection(stream, shared.clone())).await
    }

    /// A WebSocket echo: greets each client with `"welcome"`, then sends
    /// back every text and binary message it receives.
    pub async fn websocket_echo() -> Backend {
        Backend::raw(|stream| async move {
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

    /// The accept loop every kind shares.
    async fn serve<F, Fut>(on_connection: F) -> Backend
    where
        F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (accepted, stopped) = (count.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stopped.cancelled() => return,
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                };
                let conn = on_connection(stream, accepted.clone());
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.cancelled() => {}
                    }
                });
            }
        });
        Backend {
            name: String::new(),
            addr,
            count,
            stop,
        }
    }

    /// `ip:port`, the form a route value takes.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Requests (echo, scripted) or connections (raw, WebSocket) so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes the listener (the port then refuses).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The echo backend's answer to `req`.
async fn echo(name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "backend": name, "method": method, "path": path,
        "headers": headers, "body_len": body.len(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut()
        .insert("x-backend", name.parse().unwrap());
    resp
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
