//! A conformance case as data: the bytes a client sends, the raw answers
//! its backend gives, what the client must get and what the backend must
//! receive, plus the check that compares what happened with it.
//!
//! Bytes may hold `{host}` (the case's routed host) and `{other}` (a host
//! with no route); both are filled in when the case runs.

use super::recorder::{ConnLog, Reply};
use super::wire::{self, Field, Request, Response};

/// Where the case's host routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the case's own recording backend.
    Recorder,
    /// To an address that refuses connections.
    Dead,
    /// No route at all (the host is unknown).
    Missing,
}

/// A client action, in order.
#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    /// Read this many answers (interim ones count) before going on.
    Read(usize),
}

#[derive(Debug, Clone, Copy)]
pub enum Status {
    Is(u16),
    OneOf(&'static [u16]),
}

impl Status {
    fn matches(self, status: u16) -> bool {
        match self {
            Status::Is(s) => s == status,
            Status::OneOf(set) => set.contains(&status),
        }
    }
}

/// What one answer the client reads must be.
#[derive(Debug, Clone)]
pub struct Want {
    pub status: Status,
    /// The request was HEAD: the answer has no body.
    pub to_head: bool,
    pub present: Vec<&'static str>,
    pub absent: Vec<&'static str>,
    pub equals: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
    /// The answer may instead be cut short (head sent, then the
    /// connection closed mid-body): what a proxy does when a backend's
    /// answer breaks after its head went out.
    pub may_break: bool,
}

impl Want {
    pub fn status(status: u16) -> Want {
        Want {
            status: Status::Is(status),
            to_head: false,
            present: Vec::new(),
            absent: Vec::new(),
            equals: Vec::new(),
            body: None,
            may_break: false,
        }
    }

    /// An answer the proxy made itself: it carries `X-Request-Id`.
    pub fn generated(status: Status) -> Want {
        Want {
            status,
            present: vec!["x-request-id"],
            ..Want::status(0)
        }
    }

    pub fn body(mut self, body: impl AsRef<[u8]>) -> Want {
        self.body = Some(body.as_ref().to_vec());
        self
    }

    pub fn head(mut self) -> Want {
        self.to_head = true;
        self
    }

    pub fn has(mut self, name: &'static str) -> Want {
        self.present.push(name);
        self
    }

    pub fn lacks(mut self, name: &'static str) -> Want {
        self.absent.push(name);
        self
    }

    pub fn eq(mut self, name: &'static str, value: &str) -> Want {
        self.equals.push((name, value.to_owned()));
        self
    }

    pub fn may_break(mut self) -> Want {
        self.may_break = true;
        self
    }
}

/// An answer of one of `statuses`; `body` and `eq` checks then apply to a
/// 2xx answer only (the other statuses being the proxy's refusals).
pub fn either(statuses: &'static [u16]) -> Want {
    Want {
        status: Status::OneOf(statuses),
        ..Want::status(0)
    }
}

/// Checks on every request the backend received, beyond the derived ones.
#[derive(Debug, Clone, Default)]
pub struct ReqChecks {
    pub absent: Vec<&'static str>,
    pub equals: Vec<(&'static str, String)>,
    /// Trailer fields that must not arrive.
    pub trailers_absent: Vec<&'static str>,
}

/// What the backend must receive.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// Not one byte (a refusal).
    Nothing,
    /// No whole request: a refusal found late (in a streamed body), when
    /// the head may have gone out already. What did go out must read as
    /// the start of a request, never as something else.
    NoWholeRequest,
    /// Exactly the requests of these bytes (the client's own bytes when
    /// `None`), as a careful proxy forwards them: same method, origin-form
    /// target, end-to-end headers and de-framed body; nothing more.
    AsSent(Option<Vec<u8>>),
    /// Either refused with one of these statuses and nothing forwarded, or
    /// forwarded as `AsSent` would say (where the RFCs allow both).
    RefusedOrAsSent(&'static [u16], Option<Vec<u8>>),
    /// Not checked (the case is about the answer).
    Any,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub route: Route,
    pub steps: Vec<Step>,
    pub replies: Vec<Reply>,
    pub default_reply: Option<Reply>,
    pub wants: Vec<Want>,
    /// `Some(true)`: the proxy must close the client connection after the
    /// answers; `Some(false)`: it must keep it open.
    pub closes: Option<bool>,
    pub upstream: Upstream,
    pub checks: ReqChecks,
    /// Backend connections the proxy must have used (reuse or not).
    pub backend_connections: Option<usize>,
    /// Also run over HTTP/2 (the request is translated; see `runner`).
    pub h2: bool,
}

/// Starts a case whose client sends `request`.
pub fn case(name: &str, request: impl AsRef<[u8]>) -> Case {
    Case {
        name: name.to_owned(),
        route: Route::Recorder,
        steps: vec![Step::Send(request.as_ref().to_vec())],
        replies: Vec::new(),
        default_reply: None,
        wants: Vec::new(),
        closes: None,
        upstream: Upstream::Any,
        checks: ReqChecks::default(),
        backend_connections: None,
        h2: false,
    }
}

/// A case whose steps are given one by one.
pub fn steps(name: &str, steps: Vec<Step>) -> Case {
    Case {
        steps,
        ..case(name, b"")
    }
}

impl Case {
    /// Refused with `status` (one of `statuses`), answered by the proxy
    /// itself, nothing forwarded.
    pub fn refused(self, status: u16) -> Case {
        self.refused_any(std::slice::from_ref(leak(status)))
    }

    pub fn refused_any(mut self, statuses: &'static [u16]) -> Case {
        self.wants = vec![Want::generated(Status::OneOf(statuses))];
        self.upstream = Upstream::Nothing;
        self
    }

    /// Refused once the body shows the fault: the client gets `status`
    /// (or the connection closes on it), the backend no whole request.
    pub fn refused_late(mut self, statuses: &'static [u16]) -> Case {
        self.wants = vec![Want::generated(Status::OneOf(statuses)).may_break()];
        self.upstream = Upstream::NoWholeRequest;
        self
    }

    /// Forwarded as sent; the client gets the backend's default `200 ok`.
    pub fn forwarded(mut self) -> Case {
        self.upstream = Upstream::AsSent(None);
        if self.wants.is_empty() {
            self.wants = vec![Want::status(200).body("ok")];
        }
        self
    }

    /// Forwarded as these (well-formed) bytes say.
    pub fn forwarded_as(mut self, canonical: impl AsRef<[u8]>) -> Case {
        self.upstream = Upstream::AsSent(Some(canonical.as_ref().to_vec()));
        if self.wants.is_empty() {
            self.wants = vec![Want::status(200).body("ok")];
        }
        self
    }

    /// Either refused (a generated answer with one of `statuses`, nothing
    /// forwarded) or forwarded as `canonical` says.
    pub fn refused_or_forwarded_as(
        mut self,
        statuses: &'static [u16],
        canonical: impl AsRef<[u8]>,
    ) -> Case {
        self.upstream = Upstream::RefusedOrAsSent(statuses, Some(canonical.as_ref().to_vec()));
        self.wants.clear();
        self
    }

    pub fn route(mut self, route: Route) -> Case {
        self.route = route;
        self
    }

    pub fn reply(mut self, reply: Reply) -> Case {
        self.replies.push(reply);
        self
    }

    /// The backend answers every request with these bytes.
    pub fn answers(mut self, bytes: impl AsRef<[u8]>) -> Case {
        self.default_reply = Some(Reply::new(bytes));
        self
    }

    /// Replaces the wanted answers.
    pub fn wants(mut self, wants: Vec<Want>) -> Case {
        self.wants = wants;
        self
    }

    pub fn closes(mut self) -> Case {
        self.closes = Some(true);
        self
    }

    pub fn stays_open(mut self) -> Case {
        self.closes = Some(false);
        self
    }

    pub fn upstream(mut self, upstream: Upstream) -> Case {
        self.upstream = upstream;
        self
    }

    pub fn up_lacks(mut self, name: &'static str) -> Case {
        self.checks.absent.push(name);
        self
    }

    pub fn up_eq(mut self, name: &'static str, value: &str) -> Case {
        self.checks.equals.push((name, value.to_owned()));
        self
    }

    pub fn trailer_dropped(mut self, name: &'static str) -> Case {
        self.checks.trailers_absent.push(name);
        self
    }

    pub fn backend_connections(mut self, n: usize) -> Case {
        self.backend_connections = Some(n);
        self
    }

    pub fn h2(mut self) -> Case {
        self.h2 = true;
        self
    }

    /// The case with `{host}` and `{other}` filled in.
    pub fn bind(&self, host: &str, other: &str) -> Case {
        let fill = |b: &[u8]| fill(b, host, other);
        let mut c = self.clone();
        for step in &mut c.steps {
            if let Step::Send(bytes) = step {
                *bytes = fill(bytes);
            }
        }
        for r in c.replies.iter_mut().chain(c.default_reply.iter_mut()) {
            r.bytes = fill(&r.bytes);
            r.interim = fill(&r.interim);
        }
        match &mut c.upstream {
            Upstream::AsSent(Some(b)) | Upstream::RefusedOrAsSent(_, Some(b)) => *b = fill(b),
            _ => {}
        }
        for (_, v) in c.checks.equals.iter_mut() {
            *v = String::from_utf8(fill(v.as_bytes())).unwrap();
        }
        for w in &mut c.wants {
            for (_, v) in w.equals.iter_mut() {
                *v = String::from_utf8(fill(v.as_bytes())).unwrap();
            }
        }
        c
    }

    /// Everything the client sends, in order.
    pub fn client_bytes(&self) -> Vec<u8> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(b) => Some(b.as_slice()),
                Step::Read(_) => None,
            })
            .flatten()
            .copied()
            .collect()
    }
}

fn leak(status: u16) -> &'static u16 {
    Box::leak(Box::new(status))
}

fn fill(bytes: &[u8], host: &str, other: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"{host}") {
            out.extend_from_slice(host.as_bytes());
            i += 6;
        } else if bytes[i..].starts_with(b"{other}") {
            out.extend_from_slice(other.as_bytes());
            i += 7;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// What the client saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub responses: Vec<Response>,
    /// The proxy closed the connection after them (`None`: not observed).
    pub closed: Option<bool>,
    /// Bytes after the last expected answer, or a reading error.
    pub trouble: Vec<String>,
    /// The answer at this index was cut short by a close.
    pub broken_at: Option<usize>,
}

/// A request as the backend must receive it.
#[derive(Debug, Clone)]
pub struct WantReq {
    pub method: String,
    pub target: String,
    pub host: String,
    /// End-to-end headers as a sorted multiset (lower-case names).
    pub e2e: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub request_id: Option<Vec<u8>>,
}

/// Headers the proxy manages itself on the way up: checked on their own,
/// left out of the end-to-end comparison.
const MANAGED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    // Not this suite's business either way.
    "via",
    "expect",
    "proxy-authorization",
];

/// Hop-by-hop (RFC 9110 §7.6.1) and forwarding headers a client must not
/// get to pass upstream: dropped, or (X-Forwarded-*) rewritten.
const DROPPED: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "trailer",
    "proxy-authenticate",
    "x-real-ip",
    "forwarded",
];

/// Fields a trailer section may not carry (RFC 9110 §6.5.1): framing,
/// routing, request modifiers, authentication, content metadata.
pub const NOT_IN_TRAILERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "authorization",
    "proxy-authorization",
    "cache-control",
    "max-forwards",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "content-encoding",
    "content-type",
    "content-range",
    "set-cookie",
    "cookie",
];

fn connection_tokens(headers: &[Field]) -> Vec<String> {
    wire::values(headers, "connection")
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The reference model: what a careful proxy forwards for `req`.
pub fn expected_forward(req: &Request) -> WantReq {
    let named = connection_tokens(&req.headers);
    let (host, target) = if req.target.starts_with('/') || req.target == "*" {
        (
            req.header("host").unwrap_or_default().trim().to_owned(),
            req.target.clone(),
        )
    } else {
        let rest = req.target.split_once("://").map_or("", |(_, r)| r);
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        (authority.to_owned(), path)
    };
    let mut e2e: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| {
            !MANAGED.contains(&n.as_str())
                && !DROPPED.contains(&n.as_str())
                && !named.contains(n)
                && !n.contains('_')
        })
        .collect();
    e2e.sort();
    WantReq {
        method: req.method.clone(),
        target,
        host,
        e2e,
        body: req.body.clone(),
        request_id: req.header("x-request-id").map(String::into_bytes),
    }
}

/// Compares one forwarded request with what it must be.
pub fn check_request(got: &Request, want: &WantReq, checks: &ReqChecks, out: &mut Vec<String>) {
    let mut fail = |s: String| out.push(s);
    if got.version != 1 {
        fail(format!("forwarded as HTTP/1.{}", got.version));
    }
    if got.method != want.method {
        fail(format!("method {:?}, want {:?}", got.method, want.method));
    }
    if got.target != want.target {
        fail(format!("target {:?}, want {:?}", got.target, want.target));
    }
    let one = |name: &str| -> Result<String, String> {
        let v = wire::values(&got.headers, name);
        match v.as_slice() {
            [one] => Ok(String::from_utf8_lossy(one).into_owned()),
            _ => Err(format!("{} `{name}` headers upstream, want one", v.len())),
        }
    };
    let is = |name: &str, value: &str| match one(name) {
        Ok(v) if v == value => None,
        Ok(v) => Some(format!("upstream `{name}: {v}`, want `{value}`")),
        Err(e) => Some(e),
    };
    for problem in [
        is("host", &want.host),
        is("x-forwarded-host", &want.host),
        is("x-forwarded-proto", "http"),
        // No trusted proxy is configured: the client's own address only.
        is("x-forwarded-for", "127.0.0.1"),
    ]
    .into_iter()
    .flatten()
    {
        fail(problem);
    }
    match (one("x-request-id"), &want.request_id) {
        (Err(e), _) => fail(e),
        (Ok(v), Some(sent)) if v.as_bytes() != sent.as_slice() => fail(format!(
            "request id {v:?} replaced {:?}",
            String::from_utf8_lossy(sent)
        )),
        _ => {}
    }
    let mut e2e: Vec<(String, Vec<u8>)> = got
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| !MANAGED.contains(&n.as_str()))
        .collect();
    e2e.sort();
    if e2e != want.e2e {
        let show = |v: &[(String, Vec<u8>)]| {
            v.iter()
                .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
        };
        let extra: Vec<_> = e2e
            .iter()
            .filter(|h| !want.e2e.contains(h))
            .cloned()
            .collect();
        let missing: Vec<_> = want
            .e2e
            .iter()
            .filter(|h| !e2e.contains(h))
            .cloned()
            .collect();
        fail(format!(
            "end-to-end headers differ: extra upstream {:?}, missing {:?}",
            show(&extra),
            show(&missing)
        ));
    }
    for token in connection_tokens(&got.headers) {
        if !["keep-alive", "close", "upgrade"].contains(&token.as_str()) {
            fail(format!("upstream Connection names {token:?}"));
        }
    }
    for te in wire::values(&got.headers, "te") {
        if !te.eq_ignore_ascii_case(b"trailers") {
            fail(format!("upstream TE: {:?}", String::from_utf8_lossy(te)));
        }
    }
    if got.body != want.body {
        fail(format!(
            "body upstream {:?} ({} bytes), want {:?} ({} bytes)",
            String::from_utf8_lossy(&got.body[..got.body.len().min(80)]),
            got.body.len(),
            String::from_utf8_lossy(&want.body[..want.body.len().min(80)]),
            want.body.len()
        ));
    }
    for (name, _) in &got.trailers {
        if NOT_IN_TRAILERS.contains(&name.to_ascii_lowercase().as_str())
            || checks
                .trailers_absent
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
        {
            fail(format!("trailer field {name:?} forwarded"));
        }
    }
    for name in &checks.absent {
        if got.header(name).is_some() {
            fail(format!(
                "upstream has {name}: {:?}",
                got.header(name).unwrap()
            ));
        }
    }
    for (name, value) in &checks.equals {
        if got.header(name).as_deref() != Some(value.as_str()) {
            fail(format!(
                "upstream {name}: {:?}, want {value:?}",
                got.header(name)
            ));
        }
    }
}

fn check_response(got: &Response, want: &Want, i: usize, out: &mut Vec<String>) {
    for (name, _) in &got.trailers {
        if NOT_IN_TRAILERS.contains(&name.to_ascii_lowercase().as_str()) {
            out.push(format!("answer {i}: trailer field {name:?} relayed"));
        }
    }
    if !want.status.matches(got.status) {
        out.push(format!(
            "answer {i}: status {}, want {:?} (body {:?})",
            got.status,
            want.status,
            String::from_utf8_lossy(&got.body[..got.body.len().min(120)])
        ));
        return;
    }
    for name in &want.present {
        if got.header(name).is_none() {
            out.push(format!("answer {i} ({}) lacks {name}", got.status));
        }
    }
    for name in &want.absent {
        if let Some(v) = got.header(name) {
            out.push(format!("answer {i} ({}) has {name}: {v:?}", got.status));
        }
    }
    let content_checked = matches!(want.status, Status::Is(_)) || (200..300).contains(&got.status);
    if !content_checked {
        return;
    }
    for (name, value) in &want.equals {
        if got.header(name).as_deref() != Some(value.as_str()) {
            out.push(format!(
                "answer {i}: {name}: {:?}, want {value:?}",
                got.header(name)
            ));
        }
    }
    if let Some(body) = &want.body {
        if &got.body != body {
            out.push(format!(
                "answer {i}: body {:?}, want {:?}",
                String::from_utf8_lossy(&got.body[..got.body.len().min(120)]),
                String::from_utf8_lossy(body)
            ));
        }
    }
}

/// The requests the backend must receive, or `None` for "nothing"; an
/// `Err` when the case's own bytes do not read (a broken case).
fn wanted_requests(case: &Case, canonical: &Option<Vec<u8>>) -> Result<Vec<WantReq>, String> {
    let bytes = canonical.clone().unwrap_or_else(|| case.client_bytes());
    let reqs = wire::parse_all_requests(&bytes).map_err(|e| format!("BROKEN CASE: {e}"))?;
    Ok(reqs.iter().map(expected_forward).collect())
}

/// Everything wrong with a run of `case` (empty: it passed).
/// `protocol_close`: whether connection closing is observable.
pub fn judge(case: &Case, seen: &Seen, backend: &[ConnLog], h2: bool) -> Vec<String> {
    let mut out = seen.trouble.clone();
    let received: usize = backend.iter().map(|c| c.received.len()).sum();
    let nothing_sent = received == 0;
    let mut upstream = case.upstream.clone();
    let mut wants = case.wants.clone();
    if let Upstream::RefusedOrAsSent(statuses, canonical) = &upstream {
        if nothing_sent {
            wants = vec![Want::generated(Status::OneOf(statuses))];
            upstream = Upstream::Nothing;
        } else {
            if wants.is_empty() {
                wants = vec![Want::status(200).body("ok")];
            }
            upstream = Upstream::AsSent(canonical.clone());
        }
    }
    let broken_ok = seen
        .broken_at
        .is_some_and(|i| i == seen.responses.len() && wants.get(i).is_some_and(|w| w.may_break));
    if seen.responses.len() + usize::from(broken_ok) < wants.len() {
        out.push(format!(
            "client got {} answer(s), want {}",
            seen.responses.len(),
            wants.len()
        ));
    }
    for (i, (got, want)) in seen.responses.iter().zip(&wants).enumerate() {
        check_response(got, want, i, &mut out);
    }
    if !h2 {
        if let (Some(want), Some(got)) = (case.closes, seen.closed) {
            if want != got {
                out.push(if want {
                    "client connection left open, want closed".into()
                } else {
                    "client connection closed, want kept open".into()
                });
            }
        }
    }
    match &upstream {
        Upstream::Any => {}
        Upstream::NoWholeRequest => {
            for (i, c) in backend.iter().enumerate() {
                match wire::parse_request(&c.received) {
                    _ if c.received.is_empty() => {}
                    Ok(wire::Parsed::Partial) => {}
                    Ok(wire::Parsed::Done(r, _)) => out.push(format!(
                        "backend connection {i} got a whole request ({} {}, body {:?})",
                        r.method,
                        r.target,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(80)])
                    )),
                    Err(e) => out.push(format!(
                        "backend connection {i} got bytes that do not read as a request: {e}"
                    )),
                }
            }
        }
        Upstream::Nothing => {
            if !nothing_sent {
                out.push(format!(
                    "refusal forwarded {received} byte(s): {:?}",
                    String::from_utf8_lossy(
                        &backend
                            .iter()
                            .find(|c| !c.received.is_empty())
                            .unwrap()
                            .received[..received.min(200)]
                    )
                ));
            }
        }
        Upstream::AsSent(canonical) | Upstream::RefusedOrAsSent(_, canonical) => {
            match wanted_requests(case, canonical) {
                Err(e) => out.push(e),
                Ok(wanted) => {
                    let mut got = Vec::new();
                    for (i, c) in backend.iter().enumerate() {
                        match wire::parse_all_requests(&c.received) {
                            Ok(reqs) => got.extend(reqs),
                            Err(e) => out.push(format!("backend connection {i}: {e}")),
                        }
                    }
                    if got.len() != wanted.len() {
                        out.push(format!(
                            "backend got {} request(s), want {}: {:?}",
                            got.len(),
                            wanted.len(),
                            got.iter()
                                .map(|r| format!("{} {}", r.method, r.target))
                                .collect::<Vec<_>>()
                        ));
                    }
                    for (g, w) in got.iter().zip(&wanted) {
                        check_request(g, w, &case.checks, &mut out);
                    }
                }
            }
        }
    }
    if let Some(n) = case.backend_connections {
        if backend.len() != n {
            out.push(format!("{} backend connection(s), want {n}", backend.len()));
        }
    }
    out
}
