//! The proxy's own HTTP/1.x connection driver (`src/proxy/h1/`) on the
//! wire: pipelining, HTTP/1.0, `100 Continue`, early answers, departed
//! clients, stale pooled backend connections, chunked framing, header
//! order, close-delimited and HEAD answers, the HTTP/2 preface and bad
//! heads. Clients are raw TCP sockets writing exact bytes, because the
//! bytes are what is under test; every test starts its own redis-server,
//! its own backends and the real proxy on ephemeral ports.

use crate::support::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

// The capturing raw backend is the hardening module's (one copy).
use crate::hardening::{capturing_backend, next_capture, OK};

// ---------------------------------------------------------------------------
// Keep-alive, pipelining, HTTP/1.0
// ---------------------------------------------------------------------------

/// Three requests written in one go on one connection are answered in
/// order, on that connection, none lost and none answered twice. Pipelining
/// clients (and load balancers that pipeline) rely on answers matching
/// requests by position: an answer out of order hands one user another's
/// data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_redis, proxy, [backend]) = Scenario::new()
        .backends(["echo"])
        .route("pipe.test", "echo")
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(
            b"GET /one HTTP/1.1\r\nHost: pipe.test\r\n\r\n\
              GET /two HTTP/1.1\r\nHost: pipe.test\r\n\r\n\
              GET /three HTTP/1.1\r\nHost: pipe.test\r\n\r\n",
        )
        .await;
    for path in ["/one", "/two", "/three"] {
        let r = client.response(false).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.json()["path"], path, "answers out of order");
        assert_eq!(r.header("connection"), None, "{path}: {}", r.head);
    }
    assert!(client.buf.is_empty(), "bytes past the third answer");
    // Still open and in step after the three.
    client
        .send(b"GET /four HTTP/1.1\r\nHost: pipe.test\r\n\r\n")
        .await;
    assert_eq!(client.response(false).await.json()["path"], "/four");
    assert_eq!(backend.count(), 4);
    proxy.shutdown().await;
}

/// An HTTP/1.0 client without `Connection: keep-alive` gets its answer and
/// then the close it expects (HTTP/1.0 defaults to one request per
/// connection, and such clients may wait for the close); one that asks
/// for keep-alive is told `Connection: keep-alive` explicitly (HTTP/1.0
/// needs it said) and can send another request on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_connection_is_closed_unless_it_asks_for_keep_alive() {
    let (_redis, proxy, [backend]) = Scenario::new()
        .backends(["echo"])
        .route("old.test", "echo")
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET / HTTP/1.0\r\nHost: old.test\r\n\r\n")
        .await;
    let r = client.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/");
    assert_ne!(r.header("connection"), Some("keep-alive"), "{}", r.head);
    assert_eq!(
        client.rest_until_close().await,
        Some(Vec::new()),
        "an HTTP/1.0 connection without keep-alive must be closed after the answer"
    );

    let mut client = RawClient::connect(proxy.addr).await;
    for path in ["/first", "/second"] {
        client
            .send(
                format!("GET {path} HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        let r = client.response(false).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.json()["path"], path);
        assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
    }
    // The last request of the connection, without keep-alive: closed after.
    client
        .send(b"GET /last HTTP/1.0\r\nHost: old.test\r\n\r\n")
        .await;
    assert_eq!(client.response(false).await.json()["path"], "/last");
    assert_eq!(client.rest_until_close().await, Some(Vec::new()));
    assert_eq!(backend.count(), 4);
    proxy.shutdown().await;
}

/// HTTP/1.0 has no chunked coding: a chunked answer from the backend
/// reaches an HTTP/1.0 client as the bare body bytes, without
/// `Transfer-Encoding` (it would show the chunk framing as content), and
/// the body ends with the connection, even though the client asked for
/// keep-alive: without a length there is no other way to delimit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_answer_to_an_http10_client_is_unchunked_and_ends_with_the_close() {
    let chunker = Backend::raw(|mut stream| async move {
        while !read_head(&mut stream).await.is_empty() {
            let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
                           5\r\nhello\r\n7;ext=1\r\n, chunk\r\n1\r\ny\r\n0\r\nX-Trailer: t\r\n\r\n";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (_redis, proxy, []) = Scenario::new()
        .route("chunk10.test", &chunker.target())
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET / HTTP/1.0\r\nHost: chunk10.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    // No Content-Length: `response` reads the body up to the close, and
    // times out (failing) if the proxy keeps the connection open.
    let r = client.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("transfer-encoding"), None, "{}", r.head);
    assert_eq!(r.header("content-length"), None, "{}", r.head);
    assert_ne!(r.header("connection"), Some("keep-alive"), "{}", r.head);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "hello, chunky",
        "exactly the data, no framing, no trailer"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Expect: 100-continue and early answers
// ---------------------------------------------------------------------------

/// With one backend the proxy streams the body, so it does not answer
/// `Expect: 100-continue` itself: it forwards the expectation and relays
/// the backend's `100 Continue` (hyper's server sends it when the handler
/// first reads the body). A client that waits for the 100 (curl does, for
/// a while) must get it, or every upload stalls; and after the exchange
/// the connection is still in step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_relayed_from_the_backend_when_the_body_is_streamed() {
    let (_redis, proxy, [_backend]) = Scenario::new()
        .backends(["only"])
        .route("expect1.test", "only")
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(
            b"POST /upload HTTP/1.1\r\nHost: expect1.test\r\nContent-Length: 11\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await;
    let interim = client.response(false).await;
    assert_eq!(interim.status, 100, "{interim:?}");
    assert!(
        client.buf.is_empty(),
        "only the 100 before the body is sent"
    );
    client.send(b"hello world").await;
    let r = client.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.json();
    assert_eq!(seen["body_len"], 11);
    assert_eq!(
        seen["headers"]["expect"], "100-continue",
        "the expectation went to the backend, whose 100 was relayed"
    );
    client
        .send(b"GET /after HTTP/1.1\r\nHost: expect1.test\r\n\r\n")
        .await;
    assert_eq!(client.response(false).await.json()["path"], "/after");
    proxy.shutdown().await;
}

/// With two backends a small body is read whole before it is sent (so
/// that it can be sent again to the other backend on a retry). A client
/// that waits for `100 Continue` would then wait forever unless the proxy
/// says it itself: it gets exactly one 100 (the proxy's; the expectation is
/// not forwarded, so the backend sends none), then the final answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered_once_by_the_proxy_when_it_buffers_the_body() {
    let (_redis, proxy, [a, b]) = Scenario::new()
        .backends(["a", "b"])
        .route("expect2.test", "a,b")
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    for round in 0..2 {
        client
            .send(
                b"POST /upload HTTP/1.1\r\nHost: expect2.test\r\nContent-Length: 5\r\n\
                  Expect: 100-continue\r\n\r\n",
            )
            .await;
        let interim = client.response(false).await;
        assert_eq!(interim.status, 100, "round {round}: {interim:?}");
        assert!(client.buf.is_empty(), "round {round}: more than the 100");
        client.send(b"hello").await;
        // A second 100 (relayed from a backend that saw the expectation)
        // would come here instead of the 200.
        let r = client.response(false).await;
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        let seen = r.json();
        assert_eq!(seen["body_len"], 5);
        assert!(
            seen["headers"].get("expect").is_none(),
            "round {round}: Expect reached the backend: {seen}"
        );
    }
    assert_eq!((a.count(), b.count()), (1, 1));
    proxy.shutdown().await;
}

/// HTTP/1.0 has no 1xx answers: a server must ignore `Expect:
/// 100-continue` in an HTTP/1.0 request and must not send it a 1xx (RFC
/// 9110 §10.1.1, §15.2), because an HTTP/1.0 client takes the first
/// status line it reads for the final answer, and every answer after it on
/// the connection is then off by one.
///
/// With two backends the proxy reads the body whole before forwarding it;
/// that is where it would answer `100 Continue` itself (found by this test
/// and fixed: the relay of a backend's 1xx already checked the version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_client_gets_no_100_continue_when_the_proxy_buffers_the_body() {
    let (_redis, proxy, [_a, _b]) = Scenario::new()
        .backends(["a", "b"])
        .route("expect10.test", "a,b")
        .start()
        .await;

    // The POST head rides with the GET, so that the proxy has it (without
    // its body) when it turns to it; the body goes only after the GET's
    // answer: a 100 would have been written by then.
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(
            b"GET /first HTTP/1.0\r\nHost: expect10.test\r\nConnection: keep-alive\r\n\r\n\
              POST /upload HTTP/1.0\r\nHost: expect10.test\r\nContent-Length: 5\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await;
    let r = client.response(false).await;
    assert_eq!((r.status, r.json()["path"].clone()), (200, "/first".into()));
    client.send(b"hello").await;
    let r = client.response(false).await;
    assert_eq!(r.status, 200, "an HTTP/1.0 client got {r:?}");
    assert_eq!(r.json()["body_len"], 5);
    proxy.shutdown().await;
}

/// A backend may answer before reading the request body (413 for an
/// upload it will not take). The client, still sending, must get that
/// answer, not a 502; and since the rest of the body was never read, the
/// connection cannot carry another request: the proxy closes it. The
/// half-used backend connection is not pooled either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_before_the_request_body_is_relayed_then_the_connection_closes() {
    let refuser = Backend::raw(|mut stream| async move {
        loop {
            let head = read_head(&mut stream).await;
            if head.is_empty() {
                return;
            }
            if head.starts_with(b"POST") {
                let _ = stream
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
                    .await;
                // Reads (and drops) whatever comes until the proxy closes,
                // so that no reset races the answer.
                read_until(&mut stream, b"never sent").await;
                return;
            }
            if stream.write_all(OK).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (_redis, proxy, []) = Scenario::new()
        .route("upload.test", &refuser.target())
        .config(|c| {
            // One worker, so one pool: a wrongly pooled connection would be reused.
            c.server.worker_threads = 1;
        })
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    let mut bytes =
        b"POST /big HTTP/1.1\r\nHost: upload.test\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[b'x'; 1000]);
    client.send(&bytes).await;
    let r = client.response(false).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    assert_eq!(
        client.rest_until_close().await,
        Some(Vec::new()),
        "the body was left unread: the client connection must close"
    );

    let r = raw_request(proxy.addr, b"GET / HTTP/1.1\r\nHost: upload.test\r\n\r\n")
        .await
        .expect("an answer after the 413");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(
        refuser.count(),
        2,
        "the connection that owed most of a body was reused"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Departed clients and stale backend connections
// ---------------------------------------------------------------------------

/// A client that leaves while the backend is still working on its answer:
/// the proxy notices and closes the backend connection instead of holding
/// it (and a slot of the backend) for nobody until the response timeout.
/// Behind a reverse proxy, impatient clients retrying would otherwise pile
/// up abandoned work on the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_exchange_closes_the_backend_connection() {
    let got_head = Arc::new(AtomicBool::new(false));
    let saw_close = Arc::new(AtomicBool::new(false));
    let thinker = {
        let (got_head, saw_close) = (got_head.clone(), saw_close.clone());
        Backend::raw(move |mut stream| {
            let (got_head, saw_close) = (got_head.clone(), saw_close.clone());
            async move {
                loop {
                    let head = read_head(&mut stream).await;
                    if head.is_empty() {
                        return;
                    }
                    if head.starts_with(b"GET /slow ") {
                        got_head.store(true, Ordering::SeqCst);
                        // Never answers; waits for the proxy to close.
                        let mut chunk = [0u8; 1024];
                        loop {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(_) => {}
                            }
                        }
                        saw_close.store(true, Ordering::SeqCst);
                        return;
                    }
                    if stream.write_all(OK).await.is_err() {
                        return;
                    }
                }
            }
        })
        .await
    };
    let (_redis, proxy, []) = Scenario::new()
        .route("think.test", &thinker.target())
        .config(|c| {
            // Far beyond the test's patience: only the client leaving can end the
            // exchange in time.
            c.proxy.response_header_timeout = Duration::from_secs(3600);
        })
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET /slow HTTP/1.1\r\nHost: think.test\r\n\r\n")
        .await;
    assert_eventually!(
        got_head.load(Ordering::SeqCst),
        "the request never reached the backend"
    );
    drop(client);
    assert_eventually!(
        saw_close.load(Ordering::SeqCst),
        "the proxy kept the backend connection of a departed client"
    );

    let r = raw_request(proxy.addr, b"GET / HTTP/1.1\r\nHost: think.test\r\n\r\n")
        .await
        .expect("an answer after the departed client");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    proxy.shutdown().await;
}

/// A client that leaves after sending a streamed upload (a body too large
/// to buffer) while the backend is still working on it: as for a GET, the
/// proxy must notice and close the backend connection rather than hold it
/// for nobody until the response timeout. Uploads are where backends think
/// longest.
///
/// While a streamed body is copied, the client is read by the copy; once
/// the copy is done the proxy watches the client until the answer comes
/// (found by this test and fixed in `stream_body_and_wait`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_after_a_streamed_upload_closes_the_backend_connection() {
    const BODY: usize = 200 * 1024;
    let got_body = Arc::new(AtomicBool::new(false));
    let saw_close = Arc::new(AtomicBool::new(false));
    let thinker = {
        let (got_body, saw_close) = (got_body.clone(), saw_close.clone());
        Backend::raw(move |mut stream| {
            let (got_body, saw_close) = (got_body.clone(), saw_close.clone());
            async move {
                let head = read_head(&mut stream).await;
                let Some(end) = find(&head, b"\r\n\r\n") else {
                    return;
                };
                let mut body = head.len() - end - 4;
                let mut chunk = [0u8; 64 * 1024];
                // Takes the whole body, never answers, waits for the close.
                loop {
                    if body >= BODY {
                        got_body.store(true, Ordering::SeqCst);
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body += n,
                    }
                }
                saw_close.store(true, Ordering::SeqCst);
            }
        })
        .await
    };
    let (_redis, proxy, []) = Scenario::new()
        .route("upload-think.test", &thinker.target())
        .config(|c| {
            // Far beyond the test's patience: only the client leaving can end the
            // exchange in time.
            c.proxy.response_header_timeout = Duration::from_secs(3600);
        })
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    let mut bytes = format!(
        "POST /upload HTTP/1.1\r\nHost: upload-think.test\r\nContent-Length: {BODY}\r\n\r\n"
    )
    .into_bytes();
    bytes.resize(bytes.len() + BODY, b'u');
    client.send(&bytes).await;
    assert_eventually!(
        got_body.load(Ordering::SeqCst),
        "the body never reached the backend whole"
    );
    drop(client);
    assert_eventually!(
        saw_close.load(Ordering::SeqCst),
        "the proxy kept the backend connection of a client that left after its upload"
    );
    proxy.shutdown().await;
}

/// Backends close idle keep-alive connections whenever they like, without
/// saying `Connection: close`: right after an answer, or as the next
/// request arrives. A pooled connection closed that way must never turn
/// into a 502 for a request that can be sent again: the proxy drops it or
/// retries on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_backend_connections_never_cost_a_502() {
    // Closes each connection right after its first answer.
    let eager = Backend::raw(|mut stream| async move {
        if read_head(&mut stream).await.is_empty() {
            return;
        }
        let _ = stream.write_all(OK).await;
    })
    .await;
    // Answers the first request, and closes when the second one arrives
    // (an idle timeout firing as the request comes in).
    let dropped = Arc::new(AtomicUsize::new(0));
    let racy = {
        let dropped = dropped.clone();
        Backend::raw(move |mut stream| {
            let dropped = dropped.clone();
            async move {
                if read_head(&mut stream).await.is_empty() {
                    return;
                }
                if stream.write_all(OK).await.is_err() {
                    return;
                }
                if !read_head(&mut stream).await.is_empty() {
                    dropped.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .await
    };
    let (_redis, proxy, []) = Scenario::new()
        .route("eager.test", &eager.target())
        .route("racy.test", &racy.target())
        .config(|c| {
            // One worker, so one pool: every request can find the stale connection.
            c.server.worker_threads = 1;
        })
        .start()
        .await;

    for (host, backend) in [("eager.test", &eager), ("racy.test", &racy)] {
        let mut answers = Vec::new();
        for _ in 0..10 {
            let r = send(proxy.addr, request("GET", host, "/", &[], "")).await;
            answers.push((r.status, r.body));
        }
        let expected: Vec<_> = (0..10).map(|_| (200, "ok".to_owned())).collect();
        assert_eq!(answers, expected, "{host}");
        assert!(
            backend.count() > 1,
            "{host}: {} connections",
            backend.count()
        );
    }
    assert!(
        dropped.load(Ordering::SeqCst) >= 1,
        "no request ever met a connection closed under it: the retry path was not exercised"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Chunked request bodies and header fidelity
// ---------------------------------------------------------------------------

/// Malformed chunked framing in a request body (data longer than its
/// size, a bare LF ending a size line) is a 400 and the end of the
/// connection: the proxy cannot tell where such a body ends, and a backend
/// reading it differently is how requests get smuggled. No backend ever
/// receives the malformed message whole, and the proxy goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_request_body_is_400_and_closes_the_connection() {
    // Records everything each connection received, once the proxy closed it.
    let received = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let recorder = {
        let received = received.clone();
        Backend::raw(move |mut stream| {
            let received = received.clone();
            async move {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&chunk[..n]),
                    }
                }
                received.lock().unwrap().push(seen);
            }
        })
        .await
    };
    let (_redis, proxy, [_good]) = Scenario::new()
        .backends(["good"])
        .route("chunky.test", &recorder.target())
        .route("good.test", "good")
        .start()
        .await;

    for bad in [
        &b"5\r\nhelloXX\r\n0\r\n\r\n"[..],
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
    ] {
        let shown = String::from_utf8_lossy(bad);
        let mut client = RawClient::connect(proxy.addr).await;
        let mut bytes =
            b"POST / HTTP/1.1\r\nHost: chunky.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(bad);
        client.send(&bytes).await;
        let r = client.response(false).await;
        assert_eq!(r.status, 400, "{shown:?}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{shown:?}");
        assert_eq!(
            client.rest_until_close().await,
            Some(Vec::new()),
            "{shown:?}: connection kept open after malformed framing"
        );
    }
    // Every backend connection the proxy opened for them is closed, and
    // none carried a complete chunked message.
    assert_eventually!(
        received.lock().unwrap().len() == recorder.count(),
        "a backend connection of a refused request is still open"
    );
    for seen in received.lock().unwrap().iter() {
        assert!(
            find(seen, b"0\r\n\r\n").is_none(),
            "a malformed body reached the backend whole: {:?}",
            String::from_utf8_lossy(seen)
        );
    }

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"POST / HTTP/1.1\r\nHost: good.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await;
    let r = client.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 5);
    proxy.shutdown().await;
}

/// Headers reach the backend in the order and spelling the client sent
/// (some applications and signature schemes depend on either), repeated
/// headers stay separate lines in order, the request line is in origin
/// form even when the client used the absolute form, and there is exactly
/// one Host header, the one the proxy routed by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_order_and_spelling_reach_the_backend_unchanged() {
    let (backend, mut rx) = capturing_backend().await;
    let (_redis, proxy, []) = Scenario::new()
        .route("order.test", &backend.target())
        .start()
        .await;

    let r = raw_request(
        proxy.addr,
        b"GET /path?q HTTP/1.1\r\nHost: order.test\r\nX-Custom-B: 2\r\nx-custom-a: 1\r\n\
          X-Dup: first\r\nX-MiXeD-CaSe: v\r\nX-Dup: second\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    let head = next_capture(&mut rx).await;
    assert!(head.starts_with("GET /path?q HTTP/1.1\r\n"), "{head}");
    let b = head.find("\r\nX-Custom-B: 2\r\n").expect(&head);
    let a = head.find("\r\nx-custom-a: 1\r\n").expect(&head);
    assert!(b < a, "order changed: {head}");
    let first = head.find("\r\nX-Dup: first\r\n").expect(&head);
    let mixed = head.find("\r\nX-MiXeD-CaSe: v\r\n").expect(&head);
    let second = head.find("\r\nX-Dup: second\r\n").expect(&head);
    assert!(a < first && first < mixed && mixed < second, "{head}");
    assert_eq!(header_values(&head, "host"), ["order.test"], "{head}");

    // Absolute form: routed by its authority, sent in origin form, and the
    // client's (different) Host header does not travel along.
    let r = raw_request(
        proxy.addr,
        b"GET http://Order.Test:80/path?q HTTP/1.1\r\nHost: elsewhere.example\r\nX-Custom-B: 2\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    let head = next_capture(&mut rx).await;
    assert!(head.starts_with("GET /path?q HTTP/1.1\r\n"), "{head}");
    assert_eq!(header_values(&head, "host"), ["Order.Test:80"], "{head}");
    assert!(head.contains("\r\nX-Custom-B: 2\r\n"), "{head}");
    proxy.shutdown().await;
}

/// A chunked request body is forwarded as it came, chunk extensions and
/// trailer fields included: they are part of the message a backend may
/// use (trailers carry checksums and signatures), and re-framing a body
/// is exactly where a proxy and a backend start to disagree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_extensions_and_trailers_reach_the_backend_byte_for_byte() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let backend = Backend::raw(move |mut stream| {
        let tx = tx.clone();
        async move {
            // The message ends with the empty line after the last trailer.
            let seen = read_until(&mut stream, b"X-Other: 2\r\n\r\n").await;
            let _ = tx.send(seen);
            let _ = stream.write_all(OK).await;
            read_until(&mut stream, b"never sent").await;
        }
    })
    .await;
    let (_redis, proxy, []) = Scenario::new()
        .route("trailer.test", &backend.target())
        .start()
        .await;

    let body: &[u8] = b"5;name=value\r\nhello\r\n6;a;b=\"c d\"\r\n world\r\n\
                        0;last\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n";
    let mut client = RawClient::connect(proxy.addr).await;
    let mut bytes =
        b"POST /up HTTP/1.1\r\nHost: trailer.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    bytes.extend_from_slice(body);
    client.send(&bytes).await;
    let r = client.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{r:?}");

    let seen = tokio::time::timeout(CALL_TIMEOUT, rx.recv())
        .await
        .expect("the backend received nothing in time")
        .unwrap();
    let end = find(&seen, b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&seen[..end]);
    assert_eq!(
        header_values(&head, "transfer-encoding"),
        ["chunked"],
        "{head}"
    );
    assert!(header_values(&head, "content-length").is_empty(), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&seen[end..]),
        String::from_utf8_lossy(body),
        "the chunked body was changed on the way"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Answers delimited by the close, and HEAD
// ---------------------------------------------------------------------------

/// An answer with neither Content-Length nor chunked coding ends when the
/// backend closes. The client must get all of it, must be told
/// `Connection: close`, and the proxy must close the client connection
/// after it: the close is the only end-of-body marker the client can get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_answer_is_relayed_whole_then_the_connection_closes() {
    let body: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let backend = {
        let body = body.clone();
        Backend::raw(move |mut stream| {
            let body = body.clone();
            async move {
                if read_head(&mut stream).await.is_empty() {
                    return;
                }
                let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
                if stream.write_all(head).await.is_err() {
                    return;
                }
                for piece in body.chunks(16 * 1024) {
                    if stream.write_all(piece).await.is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown().await;
            }
        })
        .await
    };
    let (_redis, proxy, []) = Scenario::new()
        .route("eof.test", &backend.target())
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET /stream HTTP/1.1\r\nHost: eof.test\r\n\r\n")
        .await;
    // No Content-Length: read up to the close (a timeout if none comes).
    let r = client.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    assert_eq!(r.header("content-length"), None, "{}", r.head);
    assert_eq!(r.header("transfer-encoding"), None, "{}", r.head);
    assert_eq!(r.body.len(), body.len(), "truncated or padded");
    assert!(r.body == body, "the body bytes changed on the way");
    proxy.shutdown().await;
}

/// The answer to HEAD has no body, whatever its Content-Length says (it
/// describes the GET answer). The client gets the head with that length
/// and nothing after it, and the same connection then serves a GET: a
/// proxy that waited for (or relayed) 1000 body bytes would hang or
/// desynchronise every later answer on the connection. The backend
/// connection is not reused after such a HEAD answer: a sloppy backend
/// might send the body it announced, late, into the next exchange (issue
/// 25, bug 12); after the GET it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answer_has_no_body_and_the_connection_stays_in_step() {
    let backend = Backend::raw(|mut stream| async move {
        loop {
            let head = read_head(&mut stream).await;
            if head.is_empty() {
                return;
            }
            let answer: &[u8] = if head.starts_with(b"HEAD ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            };
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (_redis, proxy, []) = Scenario::new()
        .route("head.test", &backend.target())
        .config(|c| {
            // One worker, so one pool: the backend connection can be reused.
            c.server.worker_threads = 1;
        })
        .start()
        .await;

    let mut client = RawClient::connect(proxy.addr).await;
    for round in 0..2 {
        client
            .send(b"HEAD /doc HTTP/1.1\r\nHost: head.test\r\n\r\n")
            .await;
        let r = client.response(true).await;
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        assert_eq!(r.header("content-length"), Some("1000"), "{}", r.head);
        assert_eq!(r.header("connection"), None, "{}", r.head);
        client
            .send(b"GET /doc HTTP/1.1\r\nHost: head.test\r\n\r\n")
            .await;
        let r = client.response(false).await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"hello"[..]),
            "round {round}: {r:?}"
        );
        assert!(client.buf.is_empty(), "round {round}: stray bytes");
    }
    assert_eq!(
        backend.count(),
        3,
        "a new backend connection after each HEAD, the GET's reused"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// The HTTP/2 preface and bad heads
// ---------------------------------------------------------------------------

/// An HTTP/2 prior-knowledge client whose preface arrives in pieces (TCP
/// may split it anywhere) still gets HTTP/2: the proxy must not take the
/// first piece, `PRI * HTTP/2.0\r\n`, for an HTTP/1 head. The proof is the
/// server's first frame: SETTINGS (type 4), not an HTTP/1 error answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_preface_split_across_writes_is_still_http2() {
    let (_redis, proxy, [_backend]) = Scenario::new()
        .backends(["b"])
        .route("h2.test", "b")
        .start()
        .await;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let splits: [Vec<&[u8]>; 2] = [
        vec![&PREFACE[..16], &PREFACE[16..]],
        // Byte by byte: some read surely ends inside the preface.
        PREFACE.chunks(1).collect(),
    ];
    for pieces in splits {
        let mut client = RawClient::connect(proxy.addr).await;
        for piece in &pieces {
            client.send(piece).await;
            client.stream.flush().await.unwrap();
        }
        client.send(EMPTY_SETTINGS).await;
        let mut frame = [0u8; 9];
        tokio::time::timeout(CALL_TIMEOUT, client.stream.read_exact(&mut frame))
            .await
            .expect("no frame in time")
            .unwrap_or_else(|e| panic!("{} pieces: no frame: {e}", pieces.len()));
        assert_eq!(
            frame[3],
            0x04,
            "{} pieces: first frame is not SETTINGS: {:?}",
            pieces.len(),
            String::from_utf8_lossy(&frame)
        );
        assert_eq!(frame[4] & 0x01, 0, "the server's own SETTINGS, not an ACK");
        assert_eq!(&frame[5..9], &[0, 0, 0, 0], "SETTINGS is on stream 0");
    }
    proxy.shutdown().await;
}

/// A head that is not HTTP/1.x is refused and the connection closed: an
/// unsupported version (`HTTP/2.0` in an HTTP/1 request line) is 505, and
/// bytes that are no request line at all are 400. Neither is forwarded
/// (the host is routable, so a forwarded request would be a 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_version_is_505_and_garbage_is_400_both_closing() {
    let (_redis, proxy, [backend]) = Scenario::new()
        .backends(["b"])
        .route("a", "b")
        .start()
        .await;

    for (bytes, status) in [
        (&b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..], 505),
        (b"HELLO\r\n\r\n", 400),
    ] {
        let shown = String::from_utf8_lossy(bytes);
        let mut client = RawClient::connect(proxy.addr).await;
        client.send(bytes).await;
        let r = client.response(false).await;
        assert_eq!(r.status, status, "{shown:?}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{shown:?}");
        assert_eq!(
            client.rest_until_close().await,
            Some(Vec::new()),
            "{shown:?}: connection kept open after a bad head"
        );
    }
    assert_eq!(backend.count(), 0);
    let r = raw_request(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    proxy.shutdown().await;
}
