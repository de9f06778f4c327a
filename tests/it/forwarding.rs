//! Who the client is and what the backend is told about it: forwarding
//! headers from trusted proxies (`--trusted-proxies`) and from anyone else,
//! the PROXY protocol on the listener (`--proxy-protocol`), `X-Request-Id`
//! on every answer the proxy makes itself, and HTTP/2 requests going
//! through the same backend connections and rules as HTTP/1.

use crate::hardening::{capturing_backend, next_capture};
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const SPOOFED: &str = "GET / HTTP/1.1\r\nHost: fw.test\r\nX-Forwarded-For: 203.0.113.7\r\n\
    X-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\n\
    Connection: close\r\n\r\n";

/// From a client that is not a trusted proxy, X-Forwarded-For is replaced
/// by the client alone, X-Forwarded-Proto is the proxy's, and X-Real-IP
/// and Forwarded are removed; from a trusted one they are kept (and
/// X-Forwarded-For appended to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_kept_only_from_trusted_proxies() {
    let redis = RedisServer::start();
    let (backend, mut rx) = capturing_backend().await;
    redis.hset("fw.test", &backend.target());

    let proxy = ProxyHandle::start_ready(test_config(&redis.url())).await;
    let r = raw_request(proxy.addr, SPOOFED.as_bytes()).await.unwrap();
    assert_eq!(r.status, 200);
    let head = next_capture(&mut rx).await;
    assert_eq!(header_values(&head, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header_values(&head, "x-forwarded-proto"), vec!["http"]);
    assert!(header_values(&head, "x-real-ip").is_empty(), "{head}");
    assert!(header_values(&head, "forwarded").is_empty(), "{head}");
    proxy.shutdown().await;

    let mut config = test_config(&redis.url());
    config.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let proxy = ProxyHandle::start_ready(config).await;
    let r = raw_request(proxy.addr, SPOOFED.as_bytes()).await.unwrap();
    assert_eq!(r.status, 200);
    let head = next_capture(&mut rx).await;
    assert_eq!(
        header_values(&head, "x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(header_values(&head, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(header_values(&head, "x-real-ip"), vec!["203.0.113.7"]);
    assert_eq!(header_values(&head, "forwarded"), vec!["for=203.0.113.7"]);
    proxy.shutdown().await;
}

/// With `--proxy-protocol`, the address in the balancer's PROXY header (v1
/// or v2) is the client; a connection without a valid header is closed
/// unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_names_the_client() {
    let redis = RedisServer::start();
    let (backend, mut rx) = capturing_backend().await;
    redis.hset("fw.test", &backend.target());
    let mut config = test_config(&redis.url());
    config.server.proxy_protocol = true;
    let proxy = ProxyHandle::start_ready(config).await;

    let v1 = b"PROXY TCP4 198.51.100.20 10.0.0.1 40000 80\r\n".to_vec();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 21, 10, 0, 0, 1, 0x9c, 0x40, 0, 80,
    ]);
    for (header, client) in [(v1, "198.51.100.20"), (v2, "198.51.100.21")] {
        let mut bytes = header;
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: fw.test\r\nConnection: close\r\n\r\n");
        let r = raw_request(proxy.addr, &bytes).await.unwrap();
        assert_eq!(r.status, 200);
        let head = next_capture(&mut rx).await;
        assert_eq!(
            header_values(&head, "x-forwarded-for"),
            vec![client],
            "{head}"
        );
    }
    // No header: closed without an answer, nothing forwarded.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: fw.test\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until(&mut stream, b"\r\n\r\n").await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(rx.try_recv().is_err());
    proxy.shutdown().await;
}

/// Every answer the proxy makes itself carries `X-Request-Id`: the
/// client's when it sent one, a fresh one otherwise, on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_proxy_carries_a_request_id() {
    let redis = RedisServer::start();
    redis.hset("dead.test", &refusing_addr().to_string());
    redis.hset("bad.test", "not a backend");
    let proxy = ProxyHandle::start_ready(test_config(&redis.url())).await;
    for (raw, status) in [
        (&b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"[..], 404),
        (b"GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n", 502),
        (b"GET / HTTP/1.1\r\nHost: bad.test\r\n\r\n", 502),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"\x01garbage\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
    ] {
        let r = raw_request(proxy.addr, raw).await.unwrap();
        assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(raw));
        let id = r.header("x-request-id").unwrap_or_default();
        assert_eq!(id.len(), 32, "{}", r.head);
    }
    let r = raw_request(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nX-Request-Id: mine-1\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.header("x-request-id"), Some("mine-1"));

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (uri, status) in [("http://nowhere.test/", 404), ("http://dead.test/", 502)] {
        let req = http::Request::builder()
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), status, "{uri}");
        assert_eq!(resp.headers()["x-request-id"].len(), 32, "{uri}");
    }
    proxy.shutdown().await;
}

/// HTTP/2 requests go through the HTTP/1 backend layer: pooled keep-alive
/// connections (one for a run of sequential requests), the proxy's own
/// framing (a body of unknown length goes up chunked), forwarding headers
/// by the same rules, and streamed answers of any length.
#[tokio::test]
async fn http2_requests_share_the_http1_backend_connections() {
    let redis = RedisServer::start();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let backend = Backend::raw(move |mut stream| {
        let tx = tx.clone();
        async move {
            loop {
                let head = read_head(&mut stream).await;
                if head.is_empty() {
                    return;
                }
                let mut got = head;
                if find(&got, b"chunked").is_some() {
                    while !got.ends_with(b"0\r\n\r\n") {
                        let more = read_until(&mut stream, b"0\r\n\r\n").await;
                        if more.is_empty() {
                            return;
                        }
                        got.extend_from_slice(&more);
                    }
                }
                let _ = tx.send(got);
                let big = vec![b'x'; 100_000];
                let mut answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len())
                        .into_bytes();
                answer.extend_from_slice(&big);
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    redis.hset("h2.test", &backend.target());
    let mut config = test_config(&redis.url());
    config.server.worker_threads = 1;
    let proxy = ProxyHandle::start_ready(config).await;

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for i in 0..5 {
        let req = http::Request::builder()
            .uri(format!("http://h2.test/{i}"))
            .header("x-forwarded-for", "203.0.113.7")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 100_000);
        let head = String::from_utf8(rx.recv().await.unwrap()).unwrap();
        assert!(
            head.starts_with(&format!("GET /{i} HTTP/1.1\r\n")),
            "{head}"
        );
        assert_eq!(header_values(&head, "x-forwarded-for"), vec!["127.0.0.1"]);
        assert_eq!(header_values(&head, "cookie"), vec!["a=1; b=2"]);
        assert_eq!(header_values(&head, "host"), vec!["h2.test"]);
    }
    assert_eq!(backend.count(), 1, "one pooled backend connection");

    // A streamed body of unknown length goes up chunked.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (body_tx, body_rx) =
        mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(2);
    let req = http::Request::builder()
        .method("POST")
        .uri("http://h2.test/upload")
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(body_rx),
        ))
        .unwrap();
    let sending = tokio::spawn(async move {
        for part in ["hello ", "world"] {
            body_tx
                .send(Ok(hyper::body::Frame::data(Bytes::from_static(
                    part.as_bytes(),
                ))))
                .await
                .unwrap();
        }
    });
    let resp = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    sending.await.unwrap();
    let head = String::from_utf8(rx.recv().await.unwrap()).unwrap();
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert!(
        head.ends_with("6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"),
        "{head}"
    );
    proxy.shutdown().await;
}
