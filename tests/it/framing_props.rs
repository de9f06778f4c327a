//! A black-box property test of request framing (issue 25 section 3):
//! adversarial request streams (Transfer-Encoding and Content-Length
//! spellings and combinations, chunk sizes, extensions and line ends,
//! trailers, duplicated headers, bodies that look like requests,
//! pipelined requests) go through the real proxy to a recording backend.
//! Whatever the input, either a request is refused (a 4xx/5xx and no
//! whole copy of it upstream, nothing after it either), or what the
//! backend received reads strictly as exactly the requests the client
//! legitimately sent (by the strict reading of `conformance::wire`),
//! with identical bodies, and nothing more.
//!
//! Deterministic: a fixed-seed RNG, a bounded number of cases.

use crate::conformance::case::{check_request, expected_forward, ReqChecks};
use crate::conformance::recorder::Recorder;
use crate::conformance::replay::RawClient;
use crate::conformance::runner::suite_config;
use crate::conformance::wire::{self, Parsed, Request};
use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{
    Config as PropConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const HOST: &str = "props.test";

/// How a generated request frames its body.
#[derive(Debug, Clone)]
enum Framing {
    None,
    Length {
        value: LengthValue,
        twice: Option<bool>,
    },
    Chunked(Box<Chunked>),
    Both {
        length_first: bool,
        chunked: Box<Chunked>,
    },
}

#[derive(Debug, Clone, Copy)]
enum LengthValue {
    Exact,
    LeadingZeros,
    Plus,
    List,
    OneMore,
    OneLess,
    Huge,
    Negative,
}

#[derive(Debug, Clone)]
struct Chunked {
    te: &'static str,
    te_twice: bool,
    /// Lengths of the chunks the body is cut into (the rest is one more).
    cuts: Vec<usize>,
    size: SizeStyle,
    ext: &'static str,
    /// Line end after a size line.
    eol: &'static str,
    trailer: &'static str,
}

#[derive(Debug, Clone, Copy)]
enum SizeStyle {
    Lower,
    Upper,
    LeadingZeros,
    HexPrefix,
    Overflowing,
}

#[derive(Debug, Clone)]
struct GenRequest {
    method: &'static str,
    framing: Framing,
    body: Vec<u8>,
    extra: Vec<&'static str>,
    close: bool,
}

fn length_value() -> impl Strategy<Value = LengthValue> {
    prop_oneof![
        6 => Just(LengthValue::Exact),
        1 => Just(LengthValue::LeadingZeros),
        1 => Just(LengthValue::Plus),
        1 => Just(LengthValue::List),
        1 => Just(LengthValue::OneMore),
        1 => Just(LengthValue::OneLess),
        1 => Just(LengthValue::Huge),
        1 => Just(LengthValue::Negative),
    ]
}

fn chunked() -> impl Strategy<Value = Chunked> {
    (
        prop_oneof![
            8 => Just("chunked"),
            1 => Just("Chunked"),
            1 => Just(" chunked"),
            1 => Just("gzip, chunked"),
            1 => Just("chunked, chunked"),
            1 => Just(",chunked"),
            1 => Just("chunked,"),
            1 => Just("identity"),
            1 => Just("chunked, gzip"),
        ],
        prop::bool::weighted(0.08),
        prop::collection::vec(0usize..20, 0..4),
        prop_oneof![
            6 => Just(SizeStyle::Lower),
            1 => Just(SizeStyle::Upper),
            1 => Just(SizeStyle::LeadingZeros),
            1 => Just(SizeStyle::HexPrefix),
            1 => Just(SizeStyle::Overflowing),
        ],
        prop_oneof![
            6 => Just(""),
            1 => Just(";a=b"),
            1 => Just(";flag"),
            1 => Just(";q=\"x y\""),
            1 => Just(";a=\x01"),
        ],
        prop_oneof![12 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r")],
        prop_oneof![
            6 => Just(""),
            1 => Just("X-Sum: 1\r\n"),
            1 => Just("Content-Length: 99\r\n"),
            1 => Just("Transfer-Encoding: chunked\r\n"),
            1 => Just("X-T: a\r\n b\r\n"),
            1 => Just("GET /trailer HTTP/1.1\r\n"),
            1 => Just("X-T : 1\r\n"),
        ],
    )
        .prop_map(|(te, te_twice, cuts, size, ext, eol, trailer)| Chunked {
            te,
            te_twice,
            cuts,
            size,
            ext,
            eol,
            trailer,
        })
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        2 => Just(Framing::None),
        4 => (length_value(), prop::option::weighted(0.15, any::<bool>()))
            .prop_map(|(value, twice)| Framing::Length { value, twice }),
        4 => chunked().prop_map(|c| Framing::Chunked(Box::new(c))),
        1 => (any::<bool>(), chunked())
            .prop_map(|(length_first, c)| Framing::Both { length_first, chunked: Box::new(c) }),
    ]
}

/// Body pieces that look like framing or like a next request.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(&b"a"[..]),
            Just(&b"hello"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"0\r\n\r\n"[..]),
            Just(&b"5\r\nhello\r\n"[..]),
            Just(&b"GET /smuggled HTTP/1.1\r\nHost: props.test\r\n\r\n"[..]),
        ],
        0..5,
    )
    .prop_map(|parts| parts.concat())
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
        framing(),
        body(),
        prop::collection::vec(
            prop_oneof![
                4 => Just("X-A: 1"),
                1 => Just("X_Under: 1"),
                1 => Just("X-Dup: 1\r\nX-Dup: 2"),
                1 => Just("Content-Length : 3"),
                1 => Just("Transfer-Encoding : chunked"),
                1 => Just("Connection: x-a\r\nX-A: hop"),
            ],
            0..3,
        ),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(method, framing, body, extra, close)| GenRequest {
            method,
            framing,
            body,
            extra,
            close,
        })
}

fn size_line(n: usize, style: SizeStyle) -> String {
    match style {
        SizeStyle::Lower => format!("{n:x}"),
        SizeStyle::Upper => format!("{n:X}"),
        SizeStyle::LeadingZeros => format!("000{n:x}"),
        SizeStyle::HexPrefix => format!("0x{n:x}"),
        SizeStyle::Overflowing => format!("fffffffffffffff{n:x}"),
    }
}

fn chunked_body(body: &[u8], c: &Chunked) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut pieces = Vec::new();
    for &cut in &c.cuts {
        let n = cut.min(rest.len());
        if n > 0 {
            pieces.push(&rest[..n]);
            rest = &rest[n..];
        }
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    for piece in pieces {
        out.extend_from_slice(size_line(piece.len(), c.size).as_bytes());
        out.extend_from_slice(c.ext.as_bytes());
        out.extend_from_slice(c.eol.as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(c.trailer.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// The request's bytes; `index` names it in its target.
fn bytes_of(req: &GenRequest, case: usize, index: usize) -> Vec<u8> {
    let mut head = format!(
        "{} /c{case}/r{index} HTTP/1.1\r\nHost: {HOST}\r\n",
        req.method
    );
    for line in &req.extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    if req.close {
        head.push_str("Connection: close\r\n");
    }
    let n = req.body.len();
    let length = |v: LengthValue| match v {
        LengthValue::Exact => n.to_string(),
        LengthValue::LeadingZeros => format!("00{n}"),
        LengthValue::Plus => format!("+{n}"),
        LengthValue::List => format!("{n}, {n}"),
        LengthValue::OneMore => (n + 1).to_string(),
        LengthValue::OneLess => n.saturating_sub(1).to_string(),
        LengthValue::Huge => "99999999999999999999".into(),
        LengthValue::Negative => "-1".into(),
    };
    let te_lines = |c: &Chunked| {
        let mut s = format!("Transfer-Encoding: {}\r\n", c.te);
        if c.te_twice {
            s.push_str("Transfer-Encoding: chunked\r\n");
        }
        s
    };
    let body = match &req.framing {
        Framing::None => Vec::new(),
        Framing::Length { value, twice } => {
            head.push_str(&format!("Content-Length: {}\r\n", length(*value)));
            match twice {
                Some(true) => head.push_str(&format!("Content-Length: {}\r\n", length(*value))),
                Some(false) => head.push_str(&format!("Content-Length: {}\r\n", n + 2)),
                None => {}
            }
            req.body.clone()
        }
        Framing::Chunked(c) => {
            head.push_str(&te_lines(c));
            chunked_body(&req.body, c)
        }
        Framing::Both {
            length_first,
            chunked,
        } => {
            let cl = format!("Content-Length: {n}\r\n");
            if *length_first {
                head.push_str(&cl);
                head.push_str(&te_lines(chunked));
            } else {
                head.push_str(&te_lines(chunked));
                head.push_str(&cl);
            }
            chunked_body(&req.body, chunked)
        }
    };
    let mut out = head.into_bytes();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// How the client's stream ends after its whole, valid requests.
#[derive(Debug, PartialEq)]
enum Tail {
    Nothing,
    Incomplete,
    Invalid,
}

/// The requests a client legitimately sent: the longest run of whole,
/// strictly valid requests from the start; `Connection: close` ends it.
fn legitimate(mut bytes: &[u8]) -> (Vec<Request>, Tail) {
    let mut out = Vec::new();
    loop {
        // Empty lines before a request line may be skipped (RFC 9112
        // §2.2), and a bare LF may end a line.
        while let Some(rest) = bytes
            .strip_prefix(b"\r\n")
            .or_else(|| bytes.strip_prefix(b"\n"))
        {
            bytes = rest;
        }
        if bytes.is_empty() {
            break;
        }
        match parse_allowing_same_lengths(bytes) {
            Ok(Parsed::Done(req, n)) => {
                let close = req
                    .header("connection")
                    .is_some_and(|c| c.to_ascii_lowercase().contains("close"));
                out.push(req);
                bytes = &bytes[n..];
                if close {
                    return (out, Tail::Nothing);
                }
            }
            Ok(Parsed::Partial) => return (out, Tail::Incomplete),
            // A lone CR may start an empty line.
            Err(_) if bytes == b"\r" => return (out, Tail::Incomplete),
            Err(_) => return (out, Tail::Invalid),
        }
    }
    (out, Tail::Nothing)
}

/// A strict parse, except that repeated `Content-Length` values that all
/// agree read as one (RFC 9110 §8.6 lets a recipient do so; a proxy may
/// also refuse them, which the property allows for any request).
fn parse_allowing_same_lengths(bytes: &[u8]) -> wire::ParseResult<Request> {
    let strict = wire::parse_request(bytes);
    if strict.is_ok() {
        return strict;
    }
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return strict;
    };
    let head = &bytes[..end + 2];
    let mut lengths = Vec::new();
    let mut kept = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let is_length = line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:");
        if is_length {
            for v in line[15..].split(|&b| b == b',') {
                lengths.push(v.trim_ascii().to_vec());
            }
        } else if !line.is_empty() {
            kept.push(line);
        }
    }
    let agreed = lengths.first().filter(|first| {
        !first.is_empty()
            && first.iter().all(u8::is_ascii_digit)
            && lengths.iter().all(|l| l == *first)
    });
    let Some(agreed) = agreed.cloned() else {
        return strict;
    };
    if lengths.len() < 2 {
        return strict;
    }
    let mut rewritten = Vec::new();
    for line in kept {
        rewritten.extend_from_slice(line);
        rewritten.push(b'\n');
    }
    rewritten.extend_from_slice(b"Content-Length: ");
    rewritten.extend_from_slice(&agreed);
    rewritten.extend_from_slice(b"\r\n\r\n");
    let shift = rewritten.len() as isize - (end + 4) as isize;
    rewritten.extend_from_slice(&bytes[end + 4..]);
    match wire::parse_request(&rewritten)? {
        Parsed::Done(req, n) => Ok(Parsed::Done(req, (n as isize - shift) as usize)),
        Parsed::Partial => Ok(Parsed::Partial),
    }
}

struct Env {
    _redis: RedisServer,
    proxy: ProxyHandle,
    backend: Recorder,
}

/// Cases whose requests were all forwarded, and all cases: the test
/// would prove little if the proxy refused everything.
static FORWARDED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// Cases the strict reading finds wholly valid.
static VALID: AtomicUsize = AtomicUsize::new(0);

async fn one_case(env: &Env, case: usize, reqs: &[GenRequest]) -> Result<(), String> {
    let mut bytes = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        bytes.extend(bytes_of(r, case, i));
    }
    let (legit, tail) = legitimate(&bytes);
    if tail == Tail::Nothing {
        VALID.fetch_add(1, Ordering::Relaxed);
    }
    let before: Vec<usize> = env
        .backend
        .connections()
        .iter()
        .map(|c| c.received.len())
        .collect();

    let mut client = RawClient::connect(env.proxy.addr).await;
    client.send(&bytes).await;
    let mut answers = Vec::new();
    let mut closed = false;
    let most = legit.len() + usize::from(tail == Tail::Invalid);
    while answers.len() < most {
        // Every valid request is answered; the refusal of an invalid tail
        // may wait for bytes that never come (the proxy cannot always tell
        // yet), so its answer is awaited briefly and not required.
        let owed = answers.len() < legit.len();
        let wait = Duration::from_millis(if owed { 4000 } else { 1000 });
        match client.answer_within(wait).await {
            Ok(a) => {
                let refused = a.status >= 400;
                answers.push(a);
                if refused {
                    break;
                }
            }
            Err(e) if e.starts_with("closed") => {
                closed = true;
                break;
            }
            Err(_) if !owed => break,
            Err(e) => return Err(format!("client: {e}")),
        }
    }
    let refusal = answers.iter().position(|a| a.status >= 400);
    if refusal.is_some() && !closed && client.closed_within(Duration::from_secs(4)).await.is_none()
    {
        return Err("the connection stayed open after a refusal".into());
    }
    // What reached the backend for this case.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut last = env.backend.total_received();
    loop {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = env.backend.total_received();
        if now == last || tokio::time::Instant::now() >= deadline {
            break;
        }
        last = now;
    }
    let mut forwarded: BTreeMap<usize, Request> = BTreeMap::new();
    let mut partial_targets = Vec::new();
    for (i, c) in env.backend.connections().iter().enumerate() {
        let mut delta = &c.received[before.get(i).copied().unwrap_or(0)..];
        while !delta.is_empty() {
            match wire::parse_request(delta) {
                Ok(Parsed::Done(req, n)) => {
                    let index = target_index(&req.target, case).ok_or_else(|| {
                        format!(
                            "backend got a request the client never sent: {} {}",
                            req.method, req.target
                        )
                    })?;
                    if forwarded.insert(index, req).is_some() {
                        return Err(format!("request {index} reached the backend twice"));
                    }
                    delta = &delta[n..];
                }
                Ok(Parsed::Partial) => {
                    let head = String::from_utf8_lossy(&delta[..delta.len().min(60)]).into_owned();
                    partial_targets.push(head);
                    break;
                }
                Err(e) => {
                    return Err(format!(
                        "backend connection {i} got bytes that do not read strictly: {e}: {:?}",
                        String::from_utf8_lossy(&delta[..delta.len().min(200)])
                    ))
                }
            }
        }
    }
    for (i, answer) in answers.iter().enumerate() {
        if answer.status == 200 {
            let want = legit.get(i).ok_or_else(|| {
                format!("answer {i} is a 200 but the client sent no valid request {i}")
            })?;
            let got = forwarded.get(&i).ok_or_else(|| {
                format!("answer {i} is a 200 but request {i} never reached the backend")
            })?;
            let mut problems = Vec::new();
            check_request(
                got,
                &expected_forward(want),
                &ReqChecks::default(),
                &mut problems,
            );
            if !problems.is_empty() {
                return Err(format!("request {i} forwarded wrongly: {problems:?}"));
            }
        } else if answer.status < 400 {
            return Err(format!("answer {i}: status {}", answer.status));
        }
    }
    let answered_ok = answers.iter().take_while(|a| a.status == 200).count();
    if let Some(&extra) = forwarded.keys().find(|&&i| i >= answered_ok) {
        return Err(format!(
            "request {extra} reached the backend but the client got {} answer(s): {:?}",
            answers.len(),
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        ));
    }
    // A request cut short upstream is the one the proxy stopped at.
    if partial_targets.len() > 1 {
        return Err(format!(
            "several requests cut short upstream: {partial_targets:?}"
        ));
    }
    if refusal.is_some() || tail != Tail::Nothing || closed {
        REFUSED.fetch_add(1, Ordering::Relaxed);
    } else {
        FORWARDED.fetch_add(1, Ordering::Relaxed);
        if answers.len() != legit.len() {
            return Err(format!(
                "{} answer(s) to {} requests",
                answers.len(),
                legit.len()
            ));
        }
    }
    Ok(())
}

fn target_index(target: &str, case: usize) -> Option<usize> {
    target.strip_prefix(&format!("/c{case}/r"))?.parse().ok()
}

#[test]
fn whatever_the_framing_the_backend_reads_exactly_what_the_client_legitimately_sent() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(async {
        let redis = RedisServer::start();
        let backend = Recorder::start(Vec::new()).await;
        redis.hset(HOST, &backend.target());
        let mut config = suite_config(&redis.url());
        config.proxy.response_header_timeout = Duration::from_secs(1);
        let proxy = ProxyHandle::start(config).await;
        assert_eventually!(
            proxy.ready().await && proxy.metric("switchyard_route_table_routes").await == 1.0,
            "proxy never loaded the route"
        );
        Env {
            _redis: redis,
            proxy,
            backend,
        }
    });
    let config = PropConfig {
        cases: 96,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..PropConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let case_no = AtomicUsize::new(0);
    let result = runner.run(&prop::collection::vec(request(), 1..4), |reqs| {
        let case = case_no.fetch_add(1, Ordering::Relaxed);
        rt.block_on(one_case(&env, case, &reqs)).map_err(|e| {
            TestCaseError::fail(format!(
                "{e}\nclient bytes: {:?}",
                String::from_utf8_lossy(
                    &reqs
                        .iter()
                        .enumerate()
                        .flat_map(|(i, r)| bytes_of(r, case, i))
                        .collect::<Vec<_>>()
                )
            ))
        })
    });
    let forwarded = FORWARDED.load(Ordering::Relaxed);
    let refused = REFUSED.load(Ordering::Relaxed);
    let valid = VALID.load(Ordering::Relaxed);
    rt.block_on(env.proxy.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "framing properties: {forwarded} case(s) forwarded whole, {refused} refused or cut, {valid} wholly valid"
    );
    assert!(
        forwarded * 2 >= valid && valid >= 10,
        "{forwarded} case(s) went through whole of {valid} wholly valid ones: the generator or the proxy refuses too much"
    );
}
