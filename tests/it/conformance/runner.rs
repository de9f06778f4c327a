//! Runs conformance cases against the real proxy: one private
//! redis-server and one proxy per run, a recording backend per case (each
//! case routes its own host), cases run concurrently, every failure
//! reported at the end with the case's name.
//!
//! The exchange is generic over the client stream (`exchange_h1`,
//! `exchange_h2`), so a TLS listener (HTTP/1.1 or h2 by ALPN) can reuse it
//! by handing in its own stream: see `Transport`.

use super::case::{judge, Case, Route, Seen, Step, Want};
use super::recorder::{ConnLog, Recorder, Reply};
use super::wire::{self, Parsed};
use crate::support::refusing_addr;
use crate::support::*;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use switchyard::config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a case's client reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.x on plain TCP, raw bytes.
    H1,
    /// HTTP/2 with prior knowledge on plain TCP (h2c): each request of
    /// the case translated, on one connection.
    H2c,
}

/// Cases running at once.
const CONCURRENCY: usize = 16;
/// All the answers of one case must arrive within this.
const ANSWER_TIME: Duration = Duration::from_secs(6);
/// How long a connection that must stay open is watched (a negative
/// check: a correct proxy passes at once, whatever the machine's speed).
const OPEN_WATCH: Duration = Duration::from_millis(150);

/// The config the suite's proxy runs with: quick backend timeouts so that
/// a stalled backend costs a case two seconds, not sixty.
pub fn suite_config(redis_url: &str) -> Config {
    let mut config = test_config(redis_url);
    config.proxy.connect_timeout = Duration::from_secs(1);
    config.proxy.response_header_timeout = Duration::from_secs(2);
    config.server.worker_threads = 2;
    config
}

/// Runs `cases` (those whose name contains `SWITCHYARD_CONFORMANCE_CASE`
/// when set) over `transport` and panics listing every failure.
pub async fn run_suite(cases: Vec<Case>, transport: Transport) {
    let filter = std::env::var("SWITCHYARD_CONFORMANCE_CASE").unwrap_or_default();
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| c.name.contains(&filter))
        .filter(|c| transport == Transport::H1 || c.h2)
        .collect();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name.clone()), "two cases named {:?}", c.name);
    }
    let redis = RedisServer::start();
    let mut bound = Vec::new();
    let mut hset = String::new();
    for (i, case) in cases.iter().enumerate() {
        let host = format!("c{i}.conformance.test");
        let other = format!("nowhere{i}.conformance.test");
        let case = case.bind(&host, &other);
        let case = if transport == Transport::H1 {
            case
        } else {
            for_h2(&case)
        };
        let recorder = match case.route {
            Route::Recorder => {
                let default = case
                    .default_reply
                    .clone()
                    .unwrap_or_else(|| Reply::ok("ok"));
                let r = Recorder::start_with_default(case.replies.clone(), default).await;
                hset.push_str(&format!("HSET routes {host} {}\n", r.target()));
                Some(r)
            }
            Route::Dead => {
                hset.push_str(&format!("HSET routes {host} {}\n", refusing_addr()));
                None
            }
            Route::Missing => None,
        };
        bound.push((case, recorder));
    }
    let routed = bound
        .iter()
        .filter(|(c, _)| c.route != Route::Missing)
        .count();
    if !hset.is_empty() {
        redis.pipe(&hset);
    }
    let proxy = ProxyHandle::start(suite_config(&redis.url())).await;
    assert_eventually!(
        proxy.ready().await && proxy.metric("switchyard_route_table_routes").await == routed as f64,
        "the proxy never loaded the suite's {routed} routes"
    );
    let addr = proxy.addr;
    let total = bound.len();
    let results: Vec<(String, Vec<String>)> = futures_util::stream::iter(bound)
        .map(|(case, recorder)| async move {
            let seen = match transport {
                Transport::H1 => match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        exchange_h1(s, &case).await
                    }
                    Err(e) => Seen {
                        trouble: vec![format!("connect: {e}")],
                        ..Seen::default()
                    },
                },
                Transport::H2c => exchange_h2(TcpStream::connect(addr).await.unwrap(), &case).await,
            };
            let log = match &recorder {
                Some(r) => settled(r).await,
                None => Vec::new(),
            };
            let problems = judge(&case, &seen, &log, transport != Transport::H1);
            (case.name.clone(), problems)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut failed: Vec<_> = results.into_iter().filter(|(_, p)| !p.is_empty()).collect();
    failed.sort();
    for (name, problems) in &failed {
        eprintln!("FAIL {name}");
        for p in problems {
            eprintln!("      {p}");
        }
    }
    eprintln!(
        "conformance over {transport:?}: {} of {total} case(s) pass",
        total - failed.len()
    );
    proxy.shutdown().await;
    assert!(
        failed.is_empty(),
        "{} of {total} conformance case(s) failed over {transport:?}: {:?}",
        failed.len(),
        failed.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
}

/// The backend's log once nothing has arrived for a moment (a forwarded
/// extra request lands after the client's answer, if it lands at all).
async fn settled(recorder: &Recorder) -> Vec<ConnLog> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut last = recorder.total_received();
    loop {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = recorder.total_received();
        if now == last || tokio::time::Instant::now() >= deadline {
            return recorder.connections();
        }
        last = now;
    }
}

/// Reads answers into `seen` until it holds `count` of them; false when
/// the connection ended or broke first.
async fn read_answers<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    eof: &mut bool,
    wants: &[Want],
    count: usize,
    seen: &mut Seen,
) -> bool {
    let deadline = tokio::time::Instant::now() + ANSWER_TIME;
    while seen.responses.len() < count {
        let to_head = wants.get(seen.responses.len()).is_some_and(|w| w.to_head);
        match wire::parse_response(buf, to_head, *eof) {
            Ok(Parsed::Done(resp, n)) => {
                buf.drain(..n);
                seen.responses.push(resp);
                continue;
            }
            Ok(Parsed::Partial) if *eof => {
                let may_break = wants.get(seen.responses.len()).is_some_and(|w| w.may_break);
                if !buf.is_empty() && may_break {
                    seen.broken_at = Some(seen.responses.len());
                } else if !buf.is_empty() {
                    seen.trouble.push(format!(
                        "closed inside answer {}: {:?}",
                        seen.responses.len(),
                        String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    ));
                }
                seen.closed = Some(true);
                return false;
            }
            Ok(Parsed::Partial) => {}
            Err(e) => {
                seen.trouble.push(format!(
                    "answer {} does not read: {e}: {:?}",
                    seen.responses.len(),
                    String::from_utf8_lossy(&buf[..buf.len().min(200)])
                ));
                return false;
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => {
                seen.trouble.push(format!(
                    "no answer {} within {ANSWER_TIME:?} (have {:?})",
                    seen.responses.len(),
                    String::from_utf8_lossy(&buf[..buf.len().min(200)])
                ));
                return false;
            }
            Ok(Ok(0)) | Ok(Err(_)) => *eof = true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Plays `case` as a raw HTTP/1 client on `stream`.
pub async fn exchange_h1<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, case: &Case) -> Seen {
    let mut seen = Seen::default();
    let mut buf = Vec::new();
    let mut eof = false;
    let mut read = 0;
    for step in &case.steps {
        match step {
            // A proxy may refuse and close before the client has written
            // everything: a failed write is not a failure by itself.
            Step::Send(bytes) => {
                let _ = stream.write_all(bytes).await;
            }
            Step::Read(n) => {
                read += n;
                if !read_answers(
                    &mut stream,
                    &mut buf,
                    &mut eof,
                    &case.wants,
                    read,
                    &mut seen,
                )
                .await
                {
                    return seen;
                }
            }
        }
    }
    let all = case.wants.len().max(read).max(1);
    if !read_answers(&mut stream, &mut buf, &mut eof, &case.wants, all, &mut seen).await {
        return seen;
    }
    // After the last answer: nothing more may come (an extra answer is a
    // desync), and the connection closes or stays open as wanted.
    let watch = if case.closes == Some(true) {
        ANSWER_TIME
    } else {
        OPEN_WATCH
    };
    let deadline = tokio::time::Instant::now() + watch;
    loop {
        if eof {
            seen.closed = Some(true);
            break;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => {
                seen.closed = Some(false);
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => eof = true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if !buf.is_empty() {
        seen.trouble.push(format!(
            "{} byte(s) after the last answer: {:?}",
            buf.len(),
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        ));
    }
    seen
}

/// Headers HTTP/2 does not carry (RFC 9113 §8.2.2) or that become
/// pseudo-headers.
const NOT_IN_H2: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Plays `case` as an HTTP/2 client: each request of the case's bytes,
/// translated (authority from the absolute target or Host), sent in turn
/// on one connection.
pub async fn exchange_h2<S>(stream: S, case: &Case) -> Seen
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut seen = Seen::default();
    let requests = match wire::parse_all_requests(&case.client_bytes()) {
        Ok(r) => r,
        Err(e) => {
            seen.trouble.push(format!("BROKEN CASE for HTTP/2: {e}"));
            return seen;
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    {
        Ok(h) => h,
        Err(e) => {
            seen.trouble.push(format!("HTTP/2 handshake: {e}"));
            return seen;
        }
    };
    tokio::spawn(conn);
    for req in requests {
        let authority = if req.target.starts_with('/') || req.target == "*" {
            req.header("host").unwrap_or_default()
        } else {
            let rest = req.target.split_once("://").map_or("", |(_, r)| r);
            rest[..rest.find(['/', '?']).unwrap_or(rest.len())].to_owned()
        };
        let path = super::case::expected_forward(&req).target;
        let mut builder = http::Request::builder()
            .method(req.method.as_str())
            .uri(format!("http://{authority}{path}"));
        for (name, value) in &req.headers {
            if !NOT_IN_H2.contains(&name.to_ascii_lowercase().as_str()) {
                builder = builder.header(name.as_str(), value.as_slice());
            }
        }
        let request = match builder.body(Full::new(Bytes::from(req.body.clone()))) {
            Ok(r) => r,
            Err(e) => {
                seen.trouble.push(format!("BROKEN CASE for HTTP/2: {e}"));
                return seen;
            }
        };
        let answer = tokio::time::timeout(ANSWER_TIME, async {
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((parts, body))
        })
        .await;
        match answer {
            Err(_) => {
                seen.trouble
                    .push(format!("no HTTP/2 answer within {ANSWER_TIME:?}"));
                return seen;
            }
            Ok(Err(e)) => {
                seen.trouble.push(format!("HTTP/2 request failed: {e}"));
                return seen;
            }
            Ok(Ok((parts, body))) => seen.responses.push(wire::Response {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect(),
                body: body.to_vec(),
                trailers: Vec::new(),
            }),
        }
    }
    seen
}

/// The case as it applies over HTTP/2: interim answers are not surfaced
/// by an HTTP/2 client, and `to_head` does not matter.
pub fn for_h2(case: &Case) -> Case {
    let mut c = case.clone();
    c.wants.retain(|w| match w.status {
        super::case::Status::Is(s) => !(100..200).contains(&s),
        super::case::Status::OneOf(_) => true,
    });
    c.closes = None;
    c
}
