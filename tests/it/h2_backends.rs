//! The HTTP/2 request path against its backends (issue 25 sections 1.13,
//! 2 and 3): retries of idempotent requests on another backend, no replay
//! of a request whose bytes went out, dead-backend marks, pooled backend
//! connections, the body-read deadline and `host` against `:authority`.
//! Clients speak HTTP/2 with prior knowledge (h2c); backends are raw
//! recording backends (`conformance::recorder`).

use crate::conformance::deadlines::config_with_flags;
use crate::conformance::recorder::{Recorder, Reply, Then};
use crate::conformance::runner::suite_config;
use crate::conformance::wire;
use crate::support::refusing_addr;
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use std::time::Duration;
use switchyard::config::Config;
use tokio::net::TcpStream;

const HOST: &str = "h2b.test";

async fn proxy_with(redis: &RedisServer, targets: &[String], config: Config) -> ProxyHandle {
    redis.hset(HOST, &targets.join(","));
    let proxy = ProxyHandle::start(config).await;
    assert_eventually!(
        proxy.ready().await && proxy.metric("switchyard_route_table_routes").await == 1.0,
        "proxy never loaded the route"
    );
    proxy
}

async fn h2_client<B>(proxy: &ProxyHandle) -> SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

/// Sends `req` and returns (status, body, x-request-id present).
async fn call<B>(sender: &mut SendRequest<B>, req: http::Request<B>) -> (u16, String, bool)
where
    B: hyper::body::Body + Unpin + Send + 'static,
{
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("no HTTP/2 answer in time")
        .expect("HTTP/2 request failed");
    let status = resp.status().as_u16();
    let has_id = resp.headers().contains_key("x-request-id");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), has_id)
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri(format!("http://{HOST}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn post(path: &str, body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{HOST}{path}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Requests with this method and target that reached `recorders`,
/// counting one cut short if its head arrived.
fn seen(recorders: &[&Recorder], method: &str, target: &str) -> usize {
    let start = format!("{method} {target} HTTP/1.1\r\n");
    recorders
        .iter()
        .flat_map(|r| r.connections())
        .map(|c| match wire::parse_all_requests(&c.received) {
            Ok(reqs) => reqs
                .iter()
                .filter(|r| r.method == method && r.target == target)
                .count(),
            Err(_) => usize::from(c.received.starts_with(start.as_bytes())),
        })
        .sum()
}

/// A GET that a backend dropped without a byte of answer is retried on
/// the route's other backend; so is one whose backend refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_on_another_backend() {
    let redis = RedisServer::start();
    let dropping = Recorder::start_with_default(Vec::new(), Reply::new("").then(Then::Close)).await;
    let good = Recorder::start(Vec::new()).await;
    let proxy = proxy_with(
        &redis,
        &[
            dropping.target(),
            refusing_addr().to_string(),
            good.target(),
        ],
        suite_config(&redis.url()),
    )
    .await;
    let mut h2 = h2_client(&proxy).await;
    for i in 0..6 {
        let (status, body, _) = call(&mut h2, get(&format!("/get{i}"))).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "GET /get{i}");
        assert_eq!(seen(&[&good], "GET", &format!("/get{i}")), 1);
    }
    proxy.shutdown().await;
}

/// A POST read whole by a backend that then closes without answering is
/// not sent again, to that backend or another: the client gets a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_bytes_went_out_is_not_replayed_unless_idempotent() {
    let redis = RedisServer::start();
    let a = Recorder::start_with_default(Vec::new(), Reply::new("").then(Then::Close)).await;
    let b =
        Recorder::start_with_default(Vec::new(), Reply::new("HTTP/1.1 2").then(Then::Close)).await;
    let proxy = proxy_with(
        &redis,
        &[a.target(), b.target()],
        suite_config(&redis.url()),
    )
    .await;
    let mut h2 = h2_client(&proxy).await;
    for i in 0..2 {
        let path = format!("/pay{i}");
        let (status, _, has_id) = call(
            &mut h2,
            http::Request::builder()
                .method("POST")
                .uri(format!("http://{HOST}{path}"))
                .body(Full::new(Bytes::from_static(b"amount=100")))
                .unwrap(),
        )
        .await;
        assert_eq!(status, 502, "POST {path}");
        assert_eq!(
            seen(&[&a, &b], "POST", &path),
            1,
            "POST {path} reached a backend more than once"
        );
        assert!(has_id, "a generated 502 carries X-Request-Id");
    }
    proxy.shutdown().await;
}

/// A backend that refused is skipped for the dead-backend TTL: one
/// refused attempt, however many requests follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_skipped_for_the_ttl() {
    let redis = RedisServer::start();
    let good = Recorder::start(Vec::new()).await;
    let proxy = proxy_with(
        &redis,
        &[refusing_addr().to_string(), good.target()],
        suite_config(&redis.url()),
    )
    .await;
    let mut h2 = h2_client(&proxy).await;
    let refused = "switchyard_upstream_errors_total{kind=\"refused\"}";
    // Round-robin reaches the refusing backend within two requests.
    for i in 0..2 {
        let (status, _, _) = call(&mut h2, get(&format!("/warm{i}"))).await;
        assert_eq!(status, 200);
    }
    assert_eq!(proxy.metric(refused).await, 1.0);
    for i in 0..10 {
        let (status, _, _) = call(&mut h2, get(&format!("/after{i}"))).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        proxy.metric(refused).await,
        1.0,
        "the refusing backend was tried again within its TTL"
    );
    proxy.shutdown().await;
}

/// Sequential HTTP/2 requests reuse one pooled backend connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_pooled_across_h2_requests() {
    let redis = RedisServer::start();
    let backend = Recorder::start(Vec::new()).await;
    let mut config = suite_config(&redis.url());
    // One worker: every connection shares one pool.
    config.server.worker_threads = 1;
    let proxy = proxy_with(&redis, &[backend.target()], config).await;
    let mut h2 = h2_client(&proxy).await;
    for i in 0..10 {
        let (status, _, _) = call(&mut h2, get(&format!("/p{i}"))).await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = call(&mut h2, post("/post", "hello")).await;
    assert_eq!(status, 200);
    // A second client connection, same pool.
    let mut other = h2_client(&proxy).await;
    let (status, _, _) = call(&mut other, get("/other")).await;
    assert_eq!(status, 200);
    assert_eq!(
        backend.connections().len(),
        1,
        "12 sequential requests opened {} backend connections",
        backend.connections().len()
    );
    proxy.shutdown().await;
}

/// Item 4 over HTTP/2: a request body that stalls gets 408 once
/// `--body-read-timeout` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_h2_request_body_gets_408() {
    for backends in [1, 2] {
        let redis = RedisServer::start();
        let a = Recorder::start(Vec::new()).await;
        let b = Recorder::start(Vec::new()).await;
        let targets: Vec<String> = [&a, &b][..backends].iter().map(|r| r.target()).collect();
        let proxy = proxy_with(
            &redis,
            &targets,
            config_with_flags(&redis, &["--body-read-timeout", "500ms"]),
        )
        .await;
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut h2 = h2_client(&proxy).await;
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{HOST}/slow"))
            .header("content-length", "65536")
            .body(body)
            .unwrap();
        let started = std::time::Instant::now();
        let (status, _, has_id) = call(&mut h2, req).await;
        assert_eq!(status, 408, "{backends} backend(s)");
        assert!(has_id);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(tx);
        proxy.shutdown().await;
    }
}

/// Item 13: a `host` header that differs from `:authority` is a 400 and
/// nothing is forwarded; one that agrees is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_differing_from_authority_is_400() {
    let redis = RedisServer::start();
    let backend = Recorder::start(Vec::new()).await;
    let proxy = proxy_with(&redis, &[backend.target()], suite_config(&redis.url())).await;
    let mut h2 = h2_client(&proxy).await;
    let with_host = |host: &str, path: &str| {
        http::Request::builder()
            .uri(format!("http://{HOST}{path}"))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (status, _, _) = call(&mut h2, with_host(HOST, "/same")).await;
    assert_eq!(status, 200);
    let (status, _, has_id) = call(&mut h2, with_host("other.test", "/differs")).await;
    assert_eq!(status, 400);
    assert!(has_id);
    assert_eq!(seen(&[&backend], "GET", "/differs"), 0);
    proxy.shutdown().await;
}
