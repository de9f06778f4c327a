//! Issue 25's request-path bugs on the wire, each with the bytes the issue
//! names: replay of a request that reached a backend, Transfer-Encoding
//! smuggling, response splitting, slow uploads, stalled relays and
//! tunnels, `_` header names, interim answers, bad status codes, targets
//! and Host, huge lengths, trailers, unsolicited bytes on pooled
//! connections, HTTP/2 `host` against `:authority`, and delayed ACKs.
//! Clients and most backends are raw sockets: the bytes are under test.

use crate::support::*;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub(crate) const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A keep-alive raw backend answering every request with `200 ok`, and
/// the receiver of each request head as it arrived ([`next_capture`]).
pub(crate) async fn capturing_backend() -> (Backend, mpsc::UnboundedReceiver<Vec<u8>>) {
    let (capture, received) = mpsc::unbounded_channel();
    let backend = Backend::raw_sharing(capture, |mut stream, capture| async move {
        loop {
            let head = read_head(&mut stream).await;
            if head.is_empty() {
                return;
            }
            let _ = capture.send(head);
            if stream.write_all(OK).await.is_err() {
                return;
            }
        }
    })
    .await;
    (backend, received)
}

pub(crate) async fn next_capture(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> String {
    let bytes = tokio::time::timeout(CALL_TIMEOUT, rx.recv())
        .await
        .expect("the backend received nothing in time")
        .expect("capture channel closed");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads one whole request off a raw backend socket: the head, then a body
/// of `Content-Length` bytes (none without one). `carry` keeps bytes read
/// past it. `None` once the peer closed.
async fn read_request(stream: &mut TcpStream, carry: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(carry, b"\r\n\r\n").map(|at| at + 4) {
            let head = String::from_utf8_lossy(&carry[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if carry.len() >= end + len {
                return Some(carry.drain(..end + len).collect());
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => carry.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Every byte a raw backend connection received until the proxy closed it.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(CALL_TIMEOUT, stream.read_to_end(&mut all)).await;
    all
}

// ---------------------------------------------------------------------------
// 1. A request that may have reached a backend is replayed only if its
//    method is idempotent, and never once an answer began.
// ---------------------------------------------------------------------------

/// Issue 25, bug 1. A pooled backend connection takes `POST /pay` whole,
/// answers `HTTP/1.1 2` (or nothing) and closes. Sending it again on a new
/// connection would pay twice: the client gets 502, the backend sees it
/// once. A GET whose answer had begun is not replayed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_that_reached_a_dying_pooled_connection_is_not_sent_twice() {
    for (request, answer) in [
        (
            &b"POST /pay HTTP/1.1\r\nHost: pay.test\r\nContent-Length: 10\r\n\r\namount=100"[..],
            &b"HTTP/1.1 2"[..],
        ),
        (
            b"POST /pay HTTP/1.1\r\nHost: pay.test\r\nContent-Length: 10\r\n\r\namount=100",
            b"",
        ),
        (
            b"GET /pay HTTP/1.1\r\nHost: pay.test\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Le",
        ),
    ] {
        let redis = RedisServer::start();
        let seen = Arc::new(AtomicUsize::new(0));
        let backend = Backend::raw_sharing(seen.clone(), move |mut stream, seen| async move {
            let mut carry = Vec::new();
            while let Some(req) = read_request(&mut stream, &mut carry).await {
                if find(&req, b" /pay ").is_some() {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(answer).await;
                    return;
                }
                if stream.write_all(OK).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let proxy = ProxyHandle::start_routing(&redis, "pay.test", &backend).await;

        let mut client = RawClient::connect(proxy.addr).await;
        // A first exchange leaves a pooled backend connection behind.
        client
            .send(b"GET / HTTP/1.1\r\nHost: pay.test\r\n\r\n")
            .await;
        assert_eq!(client.response(false).await.status, 200);
        client.send(request).await;
        let r = client.response(false).await;
        let what = String::from_utf8_lossy(request).into_owned();
        assert_eq!(r.status, 502, "{what}");
        // The proxy answers only after its last attempt: a replay would
        // have been counted by now.
        assert_eq!(seen.load(Ordering::SeqCst), 1, "{what}");
        proxy.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// 2. Transfer-Encoding: exactly `chunked`, else refused, never forwarded.
// ---------------------------------------------------------------------------

/// Issue 25, bug 2: every list shape and repeated line is 400, a single
/// unknown coding 501, and nothing reaches the backend (gunicorn 21.2 read
/// such bodies as a second request). A plain `chunked` is forwarded with
/// the proxy's own `Transfer-Encoding: chunked` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_other_than_exactly_chunked_is_refused() {
    let redis = RedisServer::start();
    let (backend, mut rx) = capturing_backend().await;
    let proxy = ProxyHandle::start_routing(&redis, "te.test", &backend).await;

    let body = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: te.test\r\n\r\n";
    for (te, status) in [
        ("Transfer-Encoding: identity, chunked\r\n", 400),
        ("Transfer-Encoding: gzip, chunked\r\n", 400),
        ("Transfer-Encoding: ,chunked\r\n", 400),
        ("Transfer-Encoding: chunked,\r\n", 400),
        ("Transfer-Encoding: chunked, chunked\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("Transfer-Encoding: gzip\r\n", 501),
        ("Transfer-Encoding: x-unknown\r\n", 501),
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: te.test\r\n{te}\r\n{body}");
        let r = raw_request(proxy.addr, raw.as_bytes())
            .await
            .unwrap_or_else(|| panic!("no answer to {te:?}"));
        assert_eq!(r.status, status, "{te:?}");
        assert_eq!(r.header("connection"), Some("close"), "{te:?}");
    }
    assert_eq!(backend.count(), 0, "a refused request reached the backend");

    let r = raw_request(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: te.test\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let head = next_capture(&mut rx).await;
    assert_eq!(
        header_values(&head, "transfer-encoding"),
        vec!["chunked"],
        "{head}"
    );
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. Response framing from sloppy backends.
// ---------------------------------------------------------------------------

/// A raw backend answering `GET <path>` with the bytes `answers` maps the
/// path to (then closing when the answer says so), `200 ok` otherwise.
async fn scripted_raw_backend(answers: &'static [(&'static str, &'static [u8], bool)]) -> Backend {
    Backend::raw(move |mut stream| async move {
        let mut carry = Vec::new();
        while let Some(req) = read_request(&mut stream, &mut carry).await {
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            match answers.iter().find(|(p, _, _)| *p == path) {
                Some((_, answer, close)) => {
                    if stream.write_all(answer).await.is_err() || *close {
                        return;
                    }
                }
                None => {
                    if stream.write_all(OK).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

/// Issue 25, bug 3: `Transfer-Encoding: gzip` with `Content-Length: 5`
/// and more bytes after: the proxy must not tell the client 5 while
/// reading to the close, or a pipelining client takes the rest for its
/// next answer. Codings the client did not ask for are 502; agreeing
/// duplicate lengths are normalised to one `Content-Length`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_response_framing_is_normalised_or_refused() {
    const SPLIT: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";
    static ANSWERS: &[(&str, &[u8], bool)] = &[
        ("/gzip", SPLIT, true),
        (
            "/chunked-gzip",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
        ),
        (
            "/cl-list",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
            false,
        ),
        (
            "/cl-twice",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            false,
        ),
        (
            "/cl-differ",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\nhello",
            true,
        ),
    ];
    let redis = RedisServer::start();
    let backend = scripted_raw_backend(ANSWERS).await;
    let proxy = ProxyHandle::start_routing(&redis, "frame.test", &backend).await;

    let mut client = RawClient::connect(proxy.addr).await;
    for (path, status) in [
        ("/gzip", 502),
        ("/next", 200),
        ("/chunked-gzip", 502),
        ("/cl-list", 200),
        ("/cl-twice", 200),
        ("/cl-differ", 502),
        ("/last", 200),
    ] {
        client
            .send(format!("GET {path} HTTP/1.1\r\nHost: frame.test\r\n\r\n").as_bytes())
            .await;
        let r = client.response(false).await;
        assert_eq!(r.status, status, "{path}: {}", r.head);
        assert_ne!(r.body, b"evil", "{path}: another answer's bytes");
        if status == 200 {
            assert_eq!(
                header_values(&r.head, "content-length").len(),
                1,
                "{path}: {}",
                r.head
            );
            if path.starts_with("/cl") {
                assert_eq!(r.header("content-length"), Some("5"), "{path}");
                assert_eq!(r.body, b"hello", "{path}");
            } else {
                assert_eq!(r.body, b"ok", "{path}");
            }
        }
    }
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Slow uploads: --body-read-timeout.
// ---------------------------------------------------------------------------

/// Issue 25, bug 4: `Content-Length: 65536` and one byte, then silence.
/// On a route with two backends the body is read whole for replay; it now
/// has a deadline: 408 and the connection closes. The same after `100
/// Continue`, for a streamed body, and over HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_408_and_closes() {
    let redis = RedisServer::start();
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    redis.hset("slow.test", &format!("{},{}", a.target(), b.target()));
    redis.hset("slow1.test", &a.target());
    let mut config = test_config(&redis.url());
    config.proxy.body_read_timeout = Duration::from_millis(300);
    let proxy = ProxyHandle::start_ready(config).await;

    for (raw, interim) in [
        (
            &b"POST / HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 65536\r\n\r\nx"[..],
            false,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 65536\r\nExpect: 100-continue\r\n\r\n",
            true,
        ),
        // Streamed: one backend, a body too large to buffer.
        (
            b"POST / HTTP/1.1\r\nHost: slow1.test\r\nContent-Length: 1000000\r\n\r\nxxxx",
            false,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: slow1.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nxx",
            false,
        ),
    ] {
        let what = String::from_utf8_lossy(raw).into_owned();
        let mut client = RawClient::connect(proxy.addr).await;
        client.send(raw).await;
        if interim {
            assert_eq!(client.response(false).await.status, 100, "{what}");
        }
        let r = client.response(false).await;
        assert_eq!(r.status, 408, "{what}");
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        assert!(
            client.rest_until_close().await.is_some(),
            "{what}: connection left open"
        );
    }

    // HTTP/2: a declared 65536-byte body of which one byte comes.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (body_tx, body_rx) = mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(1);
    body_tx
        .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"x"))))
        .await
        .unwrap();
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(body_rx));
    let req = http::Request::builder()
        .method("POST")
        .uri("http://slow.test/")
        .header("content-length", "65536")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(req))
        .await
        .expect("HTTP/2 upload left hanging")
        .unwrap();
    assert_eq!(resp.status(), 408);
    drop(body_tx);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. Idle limits while relaying a body and in tunnels.
// ---------------------------------------------------------------------------

/// Issue 25, bug 5: a backend sends a head and 10 of 100 body bytes, then
/// stalls. The client connection closes after `--idle-timeout` instead of
/// staying open for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_cut_after_the_idle_timeout() {
    let redis = RedisServer::start();
    let backend = Backend::raw(|mut stream| async move {
        let mut carry = Vec::new();
        if read_request(&mut stream, &mut carry).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await;
            // Never another byte, never a close.
            let _ = read_to_close(&mut stream).await;
        }
    })
    .await;
    redis.hset("stall.test", &backend.target());
    let mut config = test_config(&redis.url());
    config.server.idle_timeout = Duration::from_millis(400);
    let proxy = ProxyHandle::start_ready(config).await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: stall.test\r\n\r\n")
        .await;
    let rest = client.rest_until_close().await;
    let got = rest.expect("the proxy kept a stalled relay open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n0123456789"), "{text}");
    proxy.shutdown().await;
}

/// A WebSocket tunnel in which nothing moves for `--tunnel-idle-timeout`
/// is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_tunnel_is_closed_after_its_idle_limit() {
    let redis = RedisServer::start();
    let echo = Backend::websocket_echo().await;
    redis.hset("ws.test", &echo.target());
    let mut config = test_config(&redis.url());
    config.proxy.tunnel_idle_timeout = Duration::from_millis(400);
    let proxy = ProxyHandle::start_ready(config).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let req = "ws://ws.test/chat".into_client_request().unwrap();
    let (mut ws, _) =
        tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::client_async(req, stream))
            .await
            .unwrap()
            .expect("WebSocket handshake through the proxy");
    let welcome = ws.next().await.unwrap().unwrap();
    assert_eq!(welcome.into_text().unwrap().as_str(), "welcome");
    let started = Instant::now();
    let ended = tokio::time::timeout(CALL_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "a silent tunnel stayed open");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed early"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6-8. Header names with `_`, interim answers, status codes.
// ---------------------------------------------------------------------------

/// Issue 25, bug 6: `X_Forwarded_Host` and `X_Forwarded_Proto` never reach
/// the backend (some frameworks merge them with the real ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_are_dropped() {
    let redis = RedisServer::start();
    let (backend, mut rx) = capturing_backend().await;
    let proxy = ProxyHandle::start_routing(&redis, "u.test", &backend).await;
    let r = raw_request(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: u.test\r\nX_Forwarded_Host: evil.test\r\nX_Forwarded_Proto: https\r\nX-Kept: 1\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let head = next_capture(&mut rx).await;
    assert!(!head.contains('_'), "{head}");
    assert!(head.contains("X-Kept: 1\r\n"), "{head}");
    assert_eq!(header_values(&head, "x-forwarded-proto"), vec!["http"]);
    proxy.shutdown().await;
}

/// Issue 25, bug 7: a 1xx with bare LF line ends and hop-by-hop headers
/// reaches the client parsed and rewritten: CRLF, no hop-by-hop headers.
/// Bug 8: a status outside 100-999 is 502, not relayed as `99` or `0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_answers_are_rewritten_and_bad_status_codes_are_502() {
    static ANSWERS: &[(&str, &[u8], bool)] = &[
        (
            "/hints",
            b"HTTP/1.1 103 Early Hints\nLink: </a.css>; rel=preload\nConnection: X-Hop\nX-Hop: 1\nKeep-Alive: timeout=5\n\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        ("/low", b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok", true),
        ("/zero", b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok", true),
    ];
    let redis = RedisServer::start();
    let backend = scripted_raw_backend(ANSWERS).await;
    let proxy = ProxyHandle::start_routing(&redis, "s.test", &backend).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET /hints HTTP/1.1\r\nHost: s.test\r\n\r\n")
        .await;
    let interim = client.response(false).await;
    assert_eq!(
        interim.head,
        "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    );
    let r = client.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    for path in ["/low", "/zero"] {
        client
            .send(format!("GET {path} HTTP/1.1\r\nHost: s.test\r\n\r\n").as_bytes())
            .await;
        let r = client.response(false).await;
        assert_eq!(r.status, 502, "{path}: {}", r.head);
    }
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 9-10. Request targets, Host, huge lengths.
// ---------------------------------------------------------------------------

/// Issue 25, bug 9: a fragment that hides the real authority, userinfo, a
/// `+80` port, and an absolute-form target with no Host, two Hosts or an
/// invalid one are all 400, routed nowhere. An absolute-form authority
/// decides the route and replaces Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_and_host_follow_rfc_9112() {
    let redis = RedisServer::start();
    let (app, mut app_rx) = capturing_backend().await;
    let (other, _other_rx) = capturing_backend().await;
    redis.hset("app.test", &app.target());
    let proxy = ProxyHandle::start_routing(&redis, "other.test", &other).await;

    for raw in [
        "GET http://other.test#@app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        "GET /x#frag HTTP/1.1\r\nHost: app.test\r\n\r\n",
        "GET http://user@app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        "GET http://user:pw@app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: app.test:+80\r\n\r\n",
        "GET http://app.test:+80/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
        "GET http://app.test/x HTTP/1.1\r\n\r\n",
        "GET http://app.test/x HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
        "GET http://app.test/x HTTP/1.1\r\nHost: a b\r\n\r\n",
    ] {
        let r = raw_request(proxy.addr, raw.as_bytes())
            .await
            .unwrap_or_else(|| panic!("no answer to {raw:?}"));
        assert_eq!(r.status, 400, "{raw:?}");
    }
    assert_eq!(
        app.count() + other.count(),
        0,
        "a refused target was routed"
    );

    let r = raw_request(
        proxy.addr,
        b"GET http://app.test/x?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let head = next_capture(&mut app_rx).await;
    assert!(head.starts_with("GET /x?q=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(header_values(&head, "host"), vec!["app.test"], "{head}");
    assert_eq!(other.count(), 0);
    proxy.shutdown().await;
}

/// Issue 25, bug 10: `Content-Length: 9999999999999999999` is 400 and
/// never forwarded; a chunk size of `fffffffffffffff0` is 400 and never
/// reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_lengths_and_chunk_sizes_are_400() {
    let redis = RedisServer::start();
    let received = Arc::new(Mutex::new(Vec::new()));
    let backend = Backend::raw_sharing(received.clone(), |mut stream, received| async move {
        let all = read_to_close(&mut stream).await;
        received.lock().unwrap().extend_from_slice(&all);
    })
    .await;
    let proxy = ProxyHandle::start_routing(&redis, "big.test", &backend).await;
    let r = raw_request(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: big.test\r\nContent-Length: 9999999999999999999\r\n\r\nx",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(backend.count(), 0);
    let r = raw_request(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: big.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff0\r\nxx",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    // The backend connection is dropped once the proxy refused the body.
    assert_eventually!(
        received.lock().unwrap().ends_with(b"\r\n\r\n"),
        "backend connection not closed after the head"
    );
    let got = received.lock().unwrap().clone();
    assert!(
        find(&got, b"fffffffffffffff0").is_none(),
        "the chunk size reached the backend: {:?}",
        String::from_utf8_lossy(&got)
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 11. Trailers.
// ---------------------------------------------------------------------------

/// Issue 25, bug 11: trailer sections are checked and fields a trailer may
/// not carry (framing, Host, cookies, ...) dropped, both ways; a malformed
/// section (obs-fold) is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_are_checked_and_filtered_both_ways() {
    let redis = RedisServer::start();
    let received = Arc::new(Mutex::new(Vec::new()));
    let backend = Backend::raw_sharing(received.clone(), |mut stream, received| async move {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        // The head, then a chunked body up to its empty last line.
        while !(got.ends_with(b"\r\n\r\n")
            && find(&got, b"\r\n0\r\n").is_some())
        {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        *received.lock().unwrap() = got;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 2\r\nSet-Cookie: s=1\r\nContent-Length: 9\r\n\r\n")
            .await;
        let _ = read_to_close(&mut stream).await;
    })
    .await;
    let proxy = ProxyHandle::start_routing(&redis, "tr.test", &backend).await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"POST / HTTP/1.1\r\nHost: tr.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\nContent-Length: 5\r\nHost: evil.test\r\n\r\n")
        .await;
    let end = b"\r\n0\r\nX-Sum: 2\r\n\r\n";
    let answer = tokio::time::timeout(CALL_TIMEOUT, read_until(&mut client.stream, end))
        .await
        .expect("no whole answer in time");
    assert!(
        answer.ends_with(end),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("Set-Cookie"), "{text}");
    let got = received.lock().unwrap().clone();
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.ends_with("\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"),
        "{got}"
    );

    let r = raw_request(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: tr.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: 1\r\n folded\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 12. Unsolicited bytes on a pooled connection.
// ---------------------------------------------------------------------------

/// Issue 25, bug 12: a backend that announces a body on a HEAD or 204
/// answer and sends it late would hand those bytes to the next client on
/// that connection. Such a connection is never reused: the next request
/// goes on a new one and gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_announced_a_body_where_none_may_follow_is_not_reused() {
    /// What the sloppy backend sends late: the 42 bytes its bodiless
    /// answer announced, which read as a whole answer of their own.
    const LATE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";
    for first in [
        "HEAD / HTTP/1.1\r\nHost: late.test\r\n\r\n",
        "DELETE / HTTP/1.1\r\nHost: late.test\r\n\r\n",
    ] {
        let redis = RedisServer::start();
        let backend = Backend::raw(|mut stream| async move {
            let mut carry = Vec::new();
            let mut owes = false;
            while let Some(req) = read_request(&mut stream, &mut carry).await {
                let answer: &[u8] = if req.starts_with(b"HEAD") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"
                } else if req.starts_with(b"DELETE") {
                    b"HTTP/1.1 204 No Content\r\nContent-Length: 42\r\n\r\n"
                } else {
                    OK
                };
                // The body it owes goes out late, just before its next answer.
                if owes && stream.write_all(LATE).await.is_err() {
                    return;
                }
                owes = answer != OK;
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let proxy = ProxyHandle::start_routing(&redis, "late.test", &backend).await;
        let mut client = RawClient::connect(proxy.addr).await;
        client.send(first.as_bytes()).await;
        let r = client.response(first.starts_with("HEAD")).await;
        assert!(r.status == 200 || r.status == 204, "{first:?}: {}", r.head);
        client
            .send(b"GET /next HTTP/1.1\r\nHost: late.test\r\n\r\n")
            .await;
        let r = client.response(false).await;
        assert_eq!(r.body, b"ok", "{first:?}: another answer's bytes");
        assert_eq!(backend.count(), 2, "{first:?}: the connection was reused");
        proxy.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// 13. HTTP/2: `host` against `:authority`.
// ---------------------------------------------------------------------------

/// Issue 25, bug 13: an HTTP/2 request whose `host` header names another
/// host than `:authority` is malformed (RFC 9113 §8.3.1): 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_host_differing_from_authority_is_400() {
    let redis = RedisServer::start();
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    redis.hset("a.test", &a.target());
    let proxy = ProxyHandle::start_routing(&redis, "b.test", &b).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (host, status) in [("b.test", 400), ("A.TEST", 200)] {
        let req = http::Request::builder()
            .uri("http://a.test/")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), status, "host {host}");
        let _ = resp.into_body().collect().await;
    }
    assert_eq!(b.count(), 0);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 14. Delayed ACKs.
// ---------------------------------------------------------------------------

/// Issue 25, bug 14: a backend that writes its head and its body in two
/// writes without `TCP_NODELAY` (Python's `http.server`) holds the body
/// until its head is acknowledged; a proxy that delays that ACK (40 ms on
/// Linux) makes every pooled exchange take 40 ms. The proxy acknowledges
/// at once while an answer is incomplete: the median stays far below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_writing_head_and_body_apart_is_not_stalled_by_delayed_acks() {
    let redis = RedisServer::start();
    let backend = Backend::raw(|mut stream| async move {
        // Nagle stays on, as in Python's http.server.
        let _ = stream.set_nodelay(false);
        let mut carry = Vec::new();
        while read_request(&mut stream, &mut carry).await.is_some() {
            if stream
                .write_all(b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\nConnection: keep-alive\r\nContent-Length: 12\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            if stream.write_all(b"hello world\n").await.is_err() {
                return;
            }
        }
    })
    .await;
    let proxy = ProxyHandle::start_routing(&redis, "nagle.test", &backend).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let mut took = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        client
            .send(b"GET / HTTP/1.1\r\nHost: nagle.test\r\n\r\n")
            .await;
        let r = client.response(false).await;
        assert_eq!(r.body, b"hello world\n");
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median {median:?}: exchanges wait on delayed ACKs ({took:?})"
    );
    assert_eq!(backend.count(), 1, "one pooled connection throughout");
    proxy.shutdown().await;
}
