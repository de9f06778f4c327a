//! The request path end to end (README.md, "Serving"): wildcards,
//! balancing and dead backends, header rules, status codes, limits and
//! timeouts, streaming, WebSockets, HTTP/2, metrics and graceful shutdown.
//! Every test starts its own redis-server, its own backends and the real
//! proxy on ephemeral ports.

use crate::support::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The scenario most tests here share: one echo backend, `b`, serving
/// `known.test`.
fn known_test() -> Scenario<1> {
    Scenario::new().backends(["b"]).route("known.test", "b")
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

/// `*.cloud.com` serves any depth of subdomain; the longest matching suffix
/// wins; an exact field beats every wildcard; the bare suffix is not
/// matched by its wildcard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_longest_suffix_and_exact_routes_win() {
    let (redis, proxy, [_wild, _eu, _exact]) = Scenario::new()
        .backends(["wild", "eu", "exact"])
        .route("*.cloud.com", "wild")
        .route("*.eu.cloud.com", "eu")
        .route("app.eu.cloud.com", "exact")
        .start()
        .await;

    assert_eq!(proxy.answered_by("x.cloud.com").await, Ok("wild".into()));
    assert_eq!(proxy.answered_by("a.b.cloud.com").await, Ok("wild".into()));
    assert_eq!(
        proxy.answered_by("X.Cloud.COM:8080").await,
        Ok("wild".into())
    );
    // Longest suffix: *.eu.cloud.com beats *.cloud.com, at any depth.
    assert_eq!(proxy.answered_by("x.eu.cloud.com").await, Ok("eu".into()));
    assert_eq!(proxy.answered_by("a.b.eu.cloud.com").await, Ok("eu".into()));
    // Exact beats both wildcards that also match it.
    assert_eq!(
        proxy.answered_by("app.eu.cloud.com").await,
        Ok("exact".into())
    );
    // `*.suffix` needs a label before the suffix.
    assert_eq!(proxy.answered_by("cloud.com").await, Err(404));
    assert_eq!(proxy.answered_by("x.notcloud.com").await, Err(404));

    // Removing the exact route falls back to the longest wildcard.
    redis.hdel("app.eu.cloud.com");
    assert_eventually!(
        proxy.answered_by("app.eu.cloud.com").await == Ok("eu".into()),
        "exact route removed"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Balancing and dead backends
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_over_every_backend() {
    let (_redis, proxy, [a, b]) = Scenario::new()
        .backends(["a", "b"])
        .route("rr.test", "a, b")
        .start()
        .await;
    for _ in 0..10 {
        assert_eq!(proxy.get("rr.test", "/").await.status, 200);
    }
    assert_eq!((a.count(), b.count()), (5, 5), "strict alternation");
    proxy.shutdown().await;
}

/// One backend of two refuses: no request fails, every one is served by the
/// live backend (the refused attempt is retried, then the dead backend is
/// skipped), and the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_is_skipped_without_a_single_failure() {
    let (_redis, proxy, [live, dead]) = Scenario::new()
        .backends(["live", "dead"])
        .route("pair.test", "dead,live")
        .start()
        .await;
    dead.stop();
    assert_eventually!(!accepts(dead.addr).await, "stopped backend still accepts");

    let mut failures = Vec::new();
    for i in 0..20 {
        match proxy.answered_by("pair.test").await {
            Ok(name) if name == "live" => {}
            other => failures.push((i, other)),
        }
    }
    assert!(failures.is_empty(), "failed GETs: {failures:?}");
    assert_eq!(live.count(), 20);
    assert_eq!(dead.count(), 0);
    assert!(
        proxy
            .metric("switchyard_upstream_errors_total{kind=\"refused\"}")
            .await
            >= 1.0
    );
    // Once marked down, the dead backend is not even tried any more: at
    // most the first request (and one per TTL) pays for a refused connect.
    assert!(
        proxy.metric("switchyard_upstream_retries_total").await <= 2.0,
        "the dead backend should be skipped, not retried on every request"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_refusing_is_a_fast_502() {
    let (_redis, proxy, []) = Scenario::new()
        .route(
            "dead.test",
            &format!("{},{}", refusing_addr(), refusing_addr()),
        )
        .route("dead1.test", &refusing_addr().to_string())
        .start()
        .await;
    for host in ["dead.test", "dead1.test", "dead.test"] {
        let started = Instant::now();
        let r = proxy.get(host, "/").await;
        let took = started.elapsed();
        assert_eq!(r.status, 502, "{host}: {r:?}");
        assert!(r.body.len() < 200, "short plain-text body: {:?}", r.body);
        // The issue asks for 50 ms; the bound is generous for noisy CI.
        assert!(took < Duration::from_secs(1), "{host}: 502 took {took:?}");
        println!("{host}: 502 in {took:?}");
    }
    proxy.shutdown().await;
}

/// A small POST whose first backend refuses the connection is retried on
/// the next one, body intact (it was buffered, never sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_post_is_retried_with_its_body_intact() {
    let echo = Backend::scripted(|req| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        hyper::Response::new(full_body(body))
    })
    .await;
    let (_redis, proxy, []) = Scenario::new()
        .route(
            "post.test",
            &format!("{},{}", refusing_addr(), echo.target()),
        )
        .start()
        .await;
    for i in 0..3 {
        let payload = format!("payload number {i}: {}", "x".repeat(1000));
        let r = send(
            proxy.addr,
            request("POST", "post.test", "/submit", &[], payload.clone()),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, payload, "body must arrive intact");
    }
    assert_eq!(echo.count(), 3);
    // The first POST meets the refusing backend first (round-robin starts
    // at the first backend), so at least one retry. Seen failing once in
    // ~45 suite runs with 0 retries and the cause not found: the message
    // carries what the next failure needs to explain itself.
    let retries = proxy.metric("switchyard_upstream_retries_total").await;
    if retries < 1.0 {
        let metrics = proxy.admin_get("/metrics").await.body;
        let upstream: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("switchyard_upstream"))
            .collect();
        panic!(
            "no retry after 3 POSTs; routes: {}; upstream metrics: {upstream:#?}",
            proxy.routes().await
        );
    }
    proxy.shutdown().await;
}

/// A backend that reads the whole request, then resets the connection. A
/// POST it received is not replayed elsewhere (it may have taken effect):
/// 502. A GET in the same situation is idempotent and is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_that_reached_a_resetting_backend_is_replayed_only_if_idempotent() {
    let resetter = Backend::raw(|mut stream| async move {
        read_until(&mut stream, b"END-OF-BODY").await;
        let _ = stream.set_zero_linger();
        drop(stream); // RST
    })
    .await;
    let (_redis, proxy, [live]) = Scenario::new()
        .backends(["live"])
        .route("reset.test", &format!("{},live", resetter.target()))
        .config(|c| {
            // Marks expire at once, so round-robin keeps offering the resetter.
            c.proxy.dead_backend_ttl = Duration::from_millis(1);
        })
        .start()
        .await;

    let mut post_checked = false;
    let mut get_checked = false;
    for _ in 0..10 {
        if post_checked && get_checked {
            break;
        }
        // Three per round: round-robin alternates, so both methods meet
        // the resetter first within two rounds.
        for method in ["POST", "GET", "GET"] {
            let (resets, lives) = (resetter.count(), live.count());
            let body = if method == "POST" {
                "order=1;END-OF-BODY"
            } else {
                ""
            };
            let headers: &[(&str, &str)] = if method == "GET" {
                &[("x-pad", "END-OF-BODY")]
            } else {
                &[]
            };
            let r = send(
                proxy.addr,
                request(method, "reset.test", "/", headers, body),
            )
            .await;
            if resetter.count() == resets {
                continue; // served by the live backend first: no information
            }
            if method == "POST" {
                assert_eq!(r.status, 502, "POST must not be replayed: {r:?}");
                assert_eq!(live.count(), lives, "POST reached the second backend");
                post_checked = true;
            } else {
                assert_eq!(r.status, 200, "GET should be replayed: {r:?}");
                assert_eq!(r.backend().as_deref(), Some("live"));
                get_checked = true;
            }
        }
    }
    assert!(
        post_checked && get_checked,
        "the resetter was never tried first"
    );
    assert!(
        proxy
            .metric("switchyard_upstream_errors_total{kind=\"reset\"}")
            .await
            >= 2.0
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Header rules
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_hop_by_hop_and_request_id() {
    let (_redis, proxy, [_backend]) = Scenario::new()
        .backends(["b"])
        .route("hdr.test", "b")
        .start()
        .await;

    let r = send(
        proxy.addr,
        request(
            "GET",
            "hdr.test",
            "/p?q=1",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("connection", "keep-alive, X-Secret"),
                ("x-secret", "named by Connection"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("x-kept", "end-to-end"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(seen["path"], "/p?q=1");
    assert_eq!(h["host"], "hdr.test", "Host is kept");
    // Not a trusted proxy (`--trusted-proxies`): its X-Forwarded-For is
    // replaced, not appended to (tests/it/forwarding.rs has the rest).
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "hdr.test");
    assert_eq!(h["x-kept"], "end-to-end");
    for hop in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(h.get(hop).is_none(), "{hop} reached the backend: {h}");
    }
    // A request id is generated, forwarded and returned.
    let generated = h["x-request-id"].as_str().expect("generated request id");
    assert!(generated.len() >= 16, "{generated}");
    assert_eq!(r.headers["x-request-id"], generated);

    // A client's request id is passed through unchanged.
    let r = send(
        proxy.addr,
        request(
            "GET",
            "hdr.test",
            "/",
            &[("x-request-id", "client-id-42")],
            "",
        ),
    )
    .await;
    assert_eq!(r.json()["headers"]["x-request-id"], "client-id-42");
    assert_eq!(r.headers["x-request-id"], "client-id-42");
    // Without a prior value X-Forwarded-For is just the client.
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "127.0.0.1");
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Status codes for bad requests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_host_is_400() {
    let (_redis, proxy, [backend]) = known_test().start().await;

    let cases: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: bad host.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: known.test:port\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: known.test\r\nHost: other.test\r\n\r\n",
    ];
    for case in cases {
        let r = raw_request(proxy.addr, case).await;
        let shown = String::from_utf8_lossy(case);
        assert_eq!(r.map(|r| r.status), Some(400), "{shown}");
    }
    assert_eq!(backend.count(), 0);
    proxy.shutdown().await;
}

/// Unknown hosts get a short 404; an absolute-form target is routed by its
/// authority and never to a host outside the table (not an open proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_404_and_absolute_form_is_routed_by_its_authority() {
    let (_redis, proxy, [backend]) = Scenario::new()
        .backends(["known"])
        .route("known.test", "known")
        .start()
        .await;

    let r = proxy.get("unknown.test", "/").await;
    assert_eq!(r.status, 404);
    assert!(r.body.len() < 100, "{:?}", r.body);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));

    // Absolute form for a host not in the table, even with a known Host.
    let r = raw_request(
        proxy.addr,
        b"GET http://unknown.example/ HTTP/1.1\r\nHost: known.test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    let r = raw_request(
        proxy.addr,
        b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(backend.count(), 0, "nothing unknown may be forwarded");

    // Absolute form for a known host: routed by the authority, and the
    // backend sees that host (RFC 9112 3.2.2: the target's host replaces
    // any Host header received with it).
    for raw in [
        &b"GET http://known.test/abs?q=1 HTTP/1.1\r\nHost: known.test\r\n\r\n"[..],
        b"GET http://known.test/abs?q=1 HTTP/1.1\r\nHost: unknown.test\r\n\r\n",
    ] {
        let r = raw_request(proxy.addr, raw).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(seen["path"], "/abs?q=1");
        assert_eq!(seen["headers"]["host"], "known.test", "{seen}");
        assert_eq!(seen["headers"]["x-forwarded-host"], "known.test");
    }
    // Userinfo is no part of a target a proxy accepts (and a lax parser
    // takes what follows `@` for the host): 400, never forwarded.
    let r = raw_request(
        proxy.addr,
        b"GET http://user:secret@known.test/abs?q=1 HTTP/1.1\r\nHost: known.test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(backend.count(), 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_never_forwarded() {
    let (_redis, proxy, [backend]) = known_test().start().await;
    let r = raw_request(
        proxy.addr,
        b"CONNECT known.test:80 HTTP/1.1\r\nHost: known.test:80\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(backend.count(), 0);
    proxy.shutdown().await;
}

/// Conflicting Content-Length values are rejected (by hyper's parser) and
/// never reach a backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_are_400_and_never_forwarded() {
    let (_redis, proxy, [backend]) = known_test().start().await;
    let cases: [&[u8]; 2] = [
        b"POST / HTTP/1.1\r\nHost: known.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: known.test\r\nContent-Length: 5, 6\r\n\r\nhello!",
    ];
    for case in cases {
        let r = raw_request(proxy.addr, case).await;
        let shown = String::from_utf8_lossy(case);
        assert_eq!(r.map(|r| r.status), Some(400), "{shown}");
    }
    assert_eq!(
        backend.count(),
        0,
        "an ambiguous request reached the backend"
    );
    assert_eq!(proxy.get("known.test", "/").await.status, 200);
    proxy.shutdown().await;
}

/// Content-Length together with Transfer-Encoding: chunked, the classic
/// request-smuggling shape, with a second request hidden after the chunked
/// body.
///
/// hyper's parser drops the Content-Length before the service sees the
/// request (TE wins, RFC 9112 6.3); the proxy's raw-byte scanner
/// (`proxy::framing`) still sees both headers and refuses the request with
/// 400: nothing reaches the backend, and the connection is closed, so the
/// smuggled request is never parsed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_400_and_never_forwarded() {
    let (_redis, proxy, [backend]) = known_test().start().await;
    for order in [
        "Content-Length: 48\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 48",
        "content-length: 48\r\ntransfer-encoding: chunked",
    ] {
        let raw = format!(
            "POST /front HTTP/1.1\r\nHost: known.test\r\n{order}\r\n\r\n\
             0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: known.test\r\n\r\n"
        );
        let mut stream = RawClient::connect(proxy.addr).await;
        stream.send(raw.as_bytes()).await;
        let r = stream.try_response(false).await.expect("a response");
        assert_eq!(r.status, 400, "{order}");
        assert!(
            stream.closed_within(Duration::from_secs(5)).await,
            "connection kept open after an ambiguous request"
        );
        assert_eq!(backend.count(), 0, "{order}: forwarded");
    }
    // A plain chunked request on its own is fine.
    let mut stream = RawClient::connect(proxy.addr).await;
    stream
        .send(b"POST /ok HTTP/1.1\r\nHost: known.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .await;
    let r = stream.try_response(false).await.expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(backend.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_route_value_is_502_and_harms_no_other_route() {
    let (_redis, proxy, [_backend]) = Scenario::new()
        .backends(["good"])
        .route("good.test", "good")
        .route("bad.com", "nonsense")
        .start()
        .await;
    let r = proxy.get("bad.com", "/").await;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("invalid"), "{:?}", r.body);
    assert_eq!(proxy.answered_by("good.test").await, Ok("good".into()));
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Limits and timeouts
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_431() {
    let (_redis, proxy, [backend]) = known_test()
        .config(|c| c.server.max_header_size = 16 * 1024)
        .start()
        .await;

    // Just under the limit passes.
    let r = send(
        proxy.addr,
        request(
            "GET",
            "known.test",
            "/",
            &[("x-big", &"a".repeat(12 * 1024))],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: known.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let r = raw_request(proxy.addr, big.as_bytes()).await;
    assert_eq!(r.map(|r| r.status), Some(431));
    assert_eq!(backend.count(), 1);
    proxy.shutdown().await;
}

/// Slowloris: a client that never finishes its head is cut off after the
/// header read timeout (and not long before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_off_by_the_header_read_timeout() {
    let (_redis, proxy, [backend]) = known_test()
        .config(|c| c.server.header_read_timeout = Duration::from_millis(400))
        .start()
        .await;

    let mut stream = RawClient::connect(proxy.addr).await;
    let started = Instant::now();
    stream
        .send(b"GET / HTTP/1.1\r\nHost: known.test\r\nX-Slow: 1")
        .await;
    assert!(
        stream.closed_within(Duration::from_secs(5)).await,
        "slow client still connected after 5 s"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );
    println!("slow client cut off after {took:?}");
    assert_eq!(backend.count(), 0);
    proxy.shutdown().await;
}

/// A keep-alive connection serves several requests, then is closed once
/// idle for the idle timeout (the header timeout is long here, so the idle
/// timer is what closes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let (_redis, proxy, [_backend]) = known_test()
        .config(|c| {
            c.server.header_read_timeout = Duration::from_secs(20);
            c.server.idle_timeout = Duration::from_millis(400);
        })
        .start()
        .await;

    let mut stream = RawClient::connect(proxy.addr).await;
    for _ in 0..2 {
        stream
            .send(b"GET / HTTP/1.1\r\nHost: known.test\r\n\r\n")
            .await;
        let r = stream.try_response(false).await.expect("response");
        assert_eq!(r.status, 200);
    }
    let idle_since = Instant::now();
    assert!(
        stream.closed_within(Duration::from_secs(5)).await,
        "idle connection still open after 5 s"
    );
    let took = idle_since.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );
    println!("idle connection closed after {took:?}");
    proxy.shutdown().await;
}

/// A backend that accepts and reads but never answers: 504 after the
/// response-header timeout, counted as a response timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_backend_is_504_after_the_response_header_timeout() {
    let silent = Backend::raw(|mut stream| async move {
        read_head(&mut stream).await;
        // Hold the connection open, answer nothing.
        std::future::pending::<()>().await;
    })
    .await;
    let (_redis, proxy, []) = Scenario::new()
        .route("silent.test", &silent.target())
        .config(|c| c.proxy.response_header_timeout = Duration::from_millis(400))
        .start()
        .await;

    let started = Instant::now();
    let r = proxy.get("silent.test", "/").await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(350),
        "504 too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "504 too late: {took:?}");
    assert_eq!(silent.count(), 1);
    assert!(
        proxy
            .metric("switchyard_upstream_errors_total{kind=\"response_timeout\"}")
            .await
            >= 1.0
    );
    proxy.shutdown().await;
}

/// A backend whose accept queue is full never completes the handshake:
/// 504 after the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_is_504_after_the_connect_timeout() {
    let blackhole = full_backlog().await;
    let (_redis, proxy, []) = Scenario::new()
        .route("blackhole.test", &blackhole.addr.to_string())
        .config(|c| c.proxy.connect_timeout = Duration::from_millis(300))
        .start()
        .await;

    let started = Instant::now();
    let r = proxy.get("blackhole.test", "/").await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(250),
        "504 too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "504 too late: {took:?}");
    assert!(
        proxy
            .metric("switchyard_upstream_errors_total{kind=\"connect_timeout\"}")
            .await
            >= 1.0
    );
    proxy.shutdown().await;
}

/// With `max_connections = 1`, a second concurrent connection is closed at
/// once while the first keeps being served; the slot frees when it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let (_redis, proxy, [_backend]) = known_test()
        .config(|c| c.server.max_connections = 1)
        .start()
        .await;
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: known.test\r\n\r\n";

    let mut first = RawClient::connect(proxy.addr).await;
    first.send(GET).await;
    assert_eq!(first.try_response(false).await.map(|r| r.status), Some(200));

    let mut second = RawClient::connect(proxy.addr).await;
    let started = Instant::now();
    let _ = second.stream.write_all(GET).await;
    assert!(
        second.try_response(false).await.is_none(),
        "the second connection was served"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the second connection was not closed at once"
    );
    assert!(
        proxy
            .metric("switchyard_client_connections_refused_total")
            .await
            >= 1.0
    );

    // The first connection is still served.
    first.send(GET).await;
    assert_eq!(first.try_response(false).await.map(|r| r.status), Some(200));
    drop(first);
    assert_eventually!(
        raw_request(proxy.addr, GET).await.map(|r| r.status) == Some(200),
        "the slot was not freed when the first connection closed"
    );
    proxy.shutdown().await;
}

/// A backend that dies in the middle of a (chunked) response: the client
/// sees a failed body, never a complete-looking one, and the proxy keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_response_fails_cleanly_and_the_proxy_carries_on() {
    let dying = Backend::raw(|mut stream| async move {
        read_head(&mut stream).await;
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n".to_vec();
        out.extend_from_slice(&[b'x'; 0x1000]);
        out.extend_from_slice(b"\r\n");
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Killed: the last chunk never comes.
    })
    .await;
    let dying_cl = Backend::raw(|mut stream| async move {
        read_head(&mut stream).await;
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        out.extend_from_slice(&[b'y'; 4096]);
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    })
    .await;
    let (_redis, proxy, [_good]) = Scenario::new()
        .backends(["good"])
        .route("dying.test", &dying.target())
        .route("dying-cl.test", &dying_cl.target())
        .route("good.test", "good")
        .start()
        .await;

    for host in ["dying.test", "dying-cl.test", "dying.test"] {
        match try_send(proxy.addr, request("GET", host, "/", &[], "")).await {
            Err(e) => println!("{host}: client saw {e}"),
            Ok(r) => panic!(
                "{host}: a truncated body looked complete: {} bytes",
                r.body.len()
            ),
        }
        assert_eq!(proxy.answered_by("good.test").await, Ok("good".into()));
    }
    assert!(proxy.ready().await);
    proxy.shutdown().await;
}

/// A keep-alive backend on raw sockets that counts connections, not
/// requests: `/` answers `ok`, `/empty` 204, HEAD a head only, and `/big`
/// sends the head and 64 KiB of a 1 MiB body, then stalls.
async fn keep_alive_backend() -> Backend {
    Backend::raw(|mut stream| async move {
        loop {
            let head = read_head(&mut stream).await;
            if head.is_empty() {
                return;
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let mut words = head.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let answer: Vec<u8> = match (method, path) {
                // No length: a HEAD answer that announces one is never
                // followed by another exchange on its connection (see
                // `tests/it/hardening.rs`).
                ("HEAD", _) => b"HTTP/1.1 200 OK\r\nX-Length: 2\r\n\r\n".to_vec(),
                (_, "/empty") => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                (_, "/big") => {
                    let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
                    out.extend_from_slice(&[b'x'; 65536]);
                    let _ = stream.write_all(&out).await;
                    // The rest never comes: the connection stays open until
                    // the proxy closes it (or the test drops the backend).
                    read_until(&mut stream, b"never sent").await;
                    return;
                }
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            };
            if stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Backend connections are kept alive and reused, whether the answer had a
/// body or none (HEAD, 204); a connection whose response was abandoned
/// halfway is never reused: the next request gets a new one and a clean
/// answer.
///
/// On a current-thread runtime, as every worker of the proxy runs: a
/// connection returns to its pool right after its response's last write to
/// the client, with no await between them, so on one thread the client's
/// next request always finds it. On a multi-threaded test runtime the next
/// request's task could run on the other thread in between and open a
/// second connection (it did, in one of seven runs of the suite).
#[tokio::test]
async fn backend_connections_are_reused_unless_a_response_was_abandoned() {
    let backend = keep_alive_backend().await;
    let (_redis, proxy, []) = Scenario::new()
        .route("pool.test", &backend.target())
        .config(|c| {
            // One worker, so one pool: every request can find the same connection.
            c.server.worker_threads = 1;
        })
        .start()
        .await;

    for _ in 0..3 {
        for (method, path, status, body) in [
            ("GET", "/", 200, "ok"),
            ("HEAD", "/", 200, ""),
            ("GET", "/empty", 204, ""),
            ("POST", "/", 200, "ok"),
        ] {
            let r = send(proxy.addr, request(method, "pool.test", path, &[], "")).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (status, body),
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        backend.count(),
        1,
        "12 requests in a row should share one backend connection"
    );

    // A client that reads the head of a long body and leaves.
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: pool.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut client, b"\r\n\r\n").await;
    assert!(
        find(&head, b"200 OK").is_some(),
        "{}",
        String::from_utf8_lossy(&head)
    );
    drop(client);
    assert_eq!(backend.count(), 1);

    // That connection still owes most of a body: it must not carry another
    // request, now or after the proxy noticed the client left.
    for _ in 0..3 {
        let r = send(proxy.addr, request("GET", "pool.test", "/", &[], "")).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    assert_eq!(backend.count(), 2, "one new connection, then reused");
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_body_reaches_the_backend_whole() {
    let (_redis, proxy, [_backend]) = Scenario::new()
        .backends(["b"])
        .route("upload.test", "b")
        .start()
        .await;
    const SIZE: usize = 8 * 1024 * 1024;
    let r = send(
        proxy.addr,
        request("POST", "upload.test", "/upload", &[], vec![7u8; SIZE]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], SIZE);

    // A chunked upload of unknown length streams through as well.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for _ in 0..64 {
            let chunk = Frame::data(Bytes::from(vec![1u8; 64 * 1024]));
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let client: hyper_util::client::legacy::Client<_, _> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/chunked", proxy.addr))
        .header("host", "upload.test")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(CALL_TIMEOUT, client.request(req))
        .await
        .unwrap()
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["body_len"], 64 * 64 * 1024);
    proxy.shutdown().await;
}

/// Server-sent events: the first chunk reaches the client while the
/// backend still holds the last one back (it sends it only when the test
/// has seen the first), so nothing buffers the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_chunks_arrive_before_the_response_ends() {
    let release = Arc::new(tokio::sync::Notify::new());
    let last_sent = Arc::new(AtomicBool::new(false));
    let sse = {
        let release = release.clone();
        let last_sent = last_sent.clone();
        Backend::scripted(move |_req| {
            let release = release.clone();
            let last_sent = last_sent.clone();
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Frame::data(Bytes::from("data: one\n\n")))).await;
                    release.notified().await;
                    last_sent.store(true, Ordering::SeqCst);
                    let _ = tx.send(Ok(Frame::data(Bytes::from("data: two\n\n")))).await;
                });
                let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
                let mut resp = hyper::Response::new(BodyExt::boxed(body));
                resp.headers_mut()
                    .insert("content-type", "text/event-stream".parse().unwrap());
                resp
            }
        })
        .await
    };
    let (_redis, proxy, []) = Scenario::new()
        .route("sse.test", &sse.target())
        .start()
        .await;

    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = request("GET", "sse.test", "/events", &[], "");
    let (mut parts, body) = req.into_parts();
    parts.uri = format!("http://{}/events", proxy.addr).parse().unwrap();
    let resp = tokio::time::timeout(
        CALL_TIMEOUT,
        client.request(http::Request::from_parts(parts, body)),
    )
    .await
    .expect("response head timed out")
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    while find(&received, b"data: one\n\n").is_none() {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("first event not delivered while the stream is open: buffered?")
            .expect("stream ended early")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
        }
    }
    assert!(
        !last_sent.load(Ordering::SeqCst),
        "the backend had already sent its last event"
    );
    release.notify_one();
    let rest = tokio::time::timeout(CALL_TIMEOUT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    received.extend_from_slice(&rest);
    assert_eq!(received, b"data: one\n\ndata: two\n\n");
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// WebSocket and HTTP/2
// ---------------------------------------------------------------------------

async fn next_message(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Message {
    tokio::time::timeout(CALL_TIMEOUT, ws.next())
        .await
        .expect("no message in time")
        .expect("stream ended")
        .expect("WebSocket error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_is_tunnelled_both_ways() {
    let echo = Backend::websocket_echo().await;
    let (_redis, proxy, []) = Scenario::new()
        .route("ws.test", &echo.target())
        .start()
        .await;

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The URL's host becomes the Host header; the socket goes to the proxy.
    let req = "ws://ws.test/chat".into_client_request().unwrap();
    let (mut ws, resp) =
        tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::client_async(req, stream))
            .await
            .unwrap()
            .expect("WebSocket handshake through the proxy");
    assert_eq!(resp.status(), 101);
    // Backend to client, unprompted.
    assert_eq!(next_message(&mut ws).await, Message::text("welcome"));
    // Client to backend and back, text and binary.
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(
            next_message(&mut ws).await,
            Message::text(format!("hello {i}"))
        );
    }
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::binary(blob));
    ws.close(None).await.unwrap();
    proxy.shutdown().await;
}

/// Upgraded connections are not tracked by hyper's graceful shutdown: the
/// proxy tracks them itself, lets them run until the shutdown deadline, then
/// closes them, and `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_are_closed_at_the_shutdown_deadline() {
    let echo = Backend::websocket_echo().await;
    let (_redis, mut proxy, []) = Scenario::new()
        .route("ws.test", &echo.target())
        .config(|c| c.server.shutdown_timeout = Duration::from_millis(400))
        .start()
        .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let req = "ws://ws.test/chat".into_client_request().unwrap();
    let (mut ws, _) =
        tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::client_async(req, stream))
            .await
            .unwrap()
            .expect("WebSocket handshake through the proxy");
    assert_eq!(next_message(&mut ws).await, Message::text("welcome"));

    let started = std::time::Instant::now();
    proxy.begin_shutdown();
    // Still open before the deadline: the tunnel keeps working.
    ws.send(Message::text("still there?")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("still there?"));
    // Then the proxy closes it and stops.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "tunnel left open after the shutdown deadline"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the deadline: {:?}",
        started.elapsed()
    );
    proxy.wait_stopped().await;
}

/// An HTTP/2 prior-knowledge client is routed by `:authority`; the backend
/// is spoken to in HTTP/1.1 and sees the public host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_client_is_served_and_backend_sees_http11() {
    let backend = Backend::scripted(|req| async move {
        let seen = serde_json::json!({
            "version": format!("{:?}", req.version()),
            "host": req.headers().get("host").and_then(|h| h.to_str().ok()),
            "xfh": req.headers().get("x-forwarded-host").and_then(|h| h.to_str().ok()),
            "path": req.uri().to_string(),
        });
        hyper::Response::new(full_body(seen.to_string()))
    })
    .await;
    let (_redis, proxy, []) = Scenario::new()
        .route("h2.test", &backend.target())
        .start()
        .await;

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    for path in ["/one", "/two?x=1"] {
        let req = http::Request::builder()
            .uri(format!("http://h2.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["version"], "HTTP/1.1");
        assert_eq!(seen["host"], "h2.test");
        assert_eq!(seen["xfh"], "h2.test");
        assert_eq!(seen["path"], path);
    }
    // An unknown :authority on the same connection is a 404.
    let req = http::Request::builder()
        .uri("http://nowhere.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(backend.count(), 2);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Metrics and shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let (_redis, proxy, [_backend]) = known_test()
        .route("refused.test", &refusing_addr().to_string())
        .start()
        .await;
    const OK: &str = "switchyard_requests_total{class=\"2xx\"}";
    const CLIENT_ERR: &str = "switchyard_requests_total{class=\"4xx\"}";
    const SERVER_ERR: &str = "switchyard_requests_total{class=\"5xx\"}";
    const REFUSED: &str = "switchyard_upstream_errors_total{kind=\"refused\"}";
    let (ok, client_err, server_err, refused) = (
        proxy.metric(OK).await,
        proxy.metric(CLIENT_ERR).await,
        proxy.metric(SERVER_ERR).await,
        proxy.metric(REFUSED).await,
    );

    for _ in 0..3 {
        assert_eq!(proxy.get("known.test", "/").await.status, 200);
    }
    assert_eq!(proxy.get("unknown.test", "/").await.status, 404);
    assert_eq!(proxy.get("refused.test", "/").await.status, 502);

    assert_eventually!(proxy.metric(OK).await == ok + 3.0, "2xx did not move by 3");
    assert_eventually!(
        proxy.metric(CLIENT_ERR).await == client_err + 1.0,
        "4xx did not move by 1"
    );
    assert_eventually!(
        proxy.metric(SERVER_ERR).await == server_err + 1.0,
        "5xx did not move by 1"
    );
    assert_eventually!(
        proxy.metric(REFUSED).await == refused + 1.0,
        "refused did not move by 1"
    );
    assert!(
        proxy
            .metric("switchyard_request_duration_seconds_count")
            .await
            >= 5.0
    );
    proxy.shutdown().await;
}

/// Shutdown with a slow request in flight: new connections are refused at
/// once, the in-flight response still completes, then `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    // The backend answers only once the test releases it, after shutdown
    // has begun: the request is in flight across shutdown by construction.
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let slow = Backend::scripted(move |_req| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            hyper::Response::new(full_body("slow but complete"))
        }
    })
    .await;
    let (_redis, mut proxy, []) = Scenario::new()
        .route("slow.test", &slow.target())
        .start()
        .await;

    let addr = proxy.addr;
    let in_flight =
        tokio::spawn(async move { send(addr, request("GET", "slow.test", "/", &[], "")).await });
    assert_eventually!(
        slow.count() == 1,
        "the slow request never reached the backend"
    );
    let started = Instant::now();
    proxy.begin_shutdown();
    assert_eventually!(!accepts(addr).await, "still accepting after shutdown began");
    assert!(
        !in_flight.is_finished(),
        "the response came before the release"
    );
    release.notify_one();

    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "slow but complete");
    proxy.wait_stopped().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    println!("drained and stopped in {took:?}");
}

/// Both serving models (one worker on the caller's runtime; several worker
/// threads, each with its own runtime and backend pool): connections
/// opened together are all served, and at shutdown the request in flight
/// on every connection, whichever worker holds it, still completes before
/// `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_serves_and_drains_its_connections() {
    const CONNECTIONS: usize = 6;
    for workers in [1, 3] {
        // Requests wait here until the test lets them go, so they are
        // surely in flight when shutdown begins.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let held = gate.clone();
        let slow = Backend::scripted(move |_req| {
            let gate = held.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                hyper::Response::new(full_body("done"))
            }
        })
        .await;
        let (_redis, mut proxy, [_quick]) = Scenario::new()
            .backends(["quick"])
            .route("slow.test", &slow.target())
            .route("quick.test", "quick")
            .config(move |c| c.server.worker_threads = workers)
            .start()
            .await;

        let addr = proxy.addr;
        let quick_calls: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                tokio::spawn(
                    async move { send(addr, request("GET", "quick.test", "/", &[], "")).await },
                )
            })
            .collect();
        for call in quick_calls {
            assert_eq!(call.await.unwrap().status, 200, "{workers} worker(s)");
        }

        let in_flight: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                tokio::spawn(
                    async move { send(addr, request("GET", "slow.test", "/", &[], "")).await },
                )
            })
            .collect();
        assert_eventually!(
            slow.count() == CONNECTIONS,
            "not every slow request reached the backend"
        );
        proxy.begin_shutdown();
        assert_eventually!(!accepts(addr).await, "still accepting after shutdown began");
        gate.add_permits(CONNECTIONS);
        for call in in_flight {
            let r = call.await.unwrap();
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, "done"),
                "{workers} worker(s)"
            );
        }
        proxy.wait_stopped().await;
    }
}
