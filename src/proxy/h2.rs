//! HTTP/2 requests (served by hyper) forwarded over the same keep-alive
//! HTTP/1.1 backend connections, pool, error type and policy as the
//! HTTP/1 driver: the upstream head is written from the request's
//! `HeaderMap` by the same rules ([`super::headers`]), the answer head is
//! parsed and judged by the same code ([`super::h1::head`]), and its body is
//! read by a [`BackendBody`] that gives the connection back to the pool
//! once the answer is whole.
//!
//! HTTP/2 has no `Upgrade`: a request is one exchange, and a `101` from a
//! backend is a protocol error (`502`).

use super::h1::chunked::{trailer_allowed, write_trailer_section, ChunkedDecoder, Segment};
use super::h1::head::{self, Forwarding, Framing, ResponseFacts, MAX_HEADERS};
use super::io::{Dialer, Shared, Socket};
use super::policy::{self, Access, Failed, Reached};
use super::upstream::UpstreamError;
use super::{headers, ConnInfo, Proxy, ProxyError, REPLAY_BUFFER_LIMIT};
use crate::routes::{ms_at, Backend};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

/// Backend reads take this much buffer at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The body of an answer to an HTTP/2 client: the backend's, streamed, or
/// a short one of the proxy's own.
pub type ResponseBody<D> = Either<BackendBody<D>, Full<Bytes>>;

/// What the access log needs at the end of an answer.
struct Record {
    access: Option<Access>,
    request_id: Box<[u8]>,
    started: Instant,
}

impl Record {
    fn log<D: Dialer>(&self, proxy: &Proxy<D>, status: u16, bytes: u64) {
        let elapsed = self.started.elapsed();
        proxy
            .state
            .metrics
            .observe_request(status, elapsed.as_secs_f64());
        if let Some(a) = &self.access {
            a.log(status, bytes, elapsed, &self.request_id);
        }
    }
}

/// Serves one request of an HTTP/2 client; never fails (errors become
/// answers of the proxy's own).
pub async fn handle<D: Dialer>(
    proxy: Arc<Proxy<D>>,
    req: Request<Incoming>,
    info: ConnInfo,
) -> Response<ResponseBody<D>> {
    let started = Instant::now();
    let request_id: Box<[u8]> = match req.headers().get("x-request-id") {
        Some(id) => id.as_bytes().into(),
        None => headers::request_id_hex().into(),
    };
    let access = proxy.config.access_log.then(|| Access {
        client: headers::client_ip(info.peer.ip()),
        method: req.method().to_string(),
        host: req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            })
            .unwrap_or_else(|| "-".into()),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".into(), |p| p.as_str().to_owned()),
        version: Version::HTTP_2,
        user_agent: req.headers().get(http::header::USER_AGENT).map_or_else(
            || "-".into(),
            |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ),
        backend: None,
        backend_time: None,
    });
    let mut record = Record {
        access,
        request_id,
        started,
    };
    let hsts = info.tls.then_some(proxy.config.hsts).flatten();
    if let Some(key_authorization) = policy::acme_challenge(
        &proxy.state.challenges,
        info.tls,
        req.method().as_str(),
        req.uri().path(),
    ) {
        record.log(&proxy, 200, key_authorization.len() as u64);
        let mut response = Response::new(Either::Right(Full::new(key_authorization)));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        if let Ok(id) = HeaderValue::from_bytes(&record.request_id) {
            headers.insert("x-request-id", id);
        }
        return response;
    }
    match forward(&proxy, req, &info, &mut record).await {
        Ok(answer) => {
            let mut response = answer.into_response(proxy, record);
            if let Some(value) = hsts.and_then(|age| {
                HeaderValue::from_maybe_shared(Bytes::from(super::h1::hsts_value(age))).ok()
            }) {
                // A backend's own policy is kept: the flag is the default.
                response
                    .headers_mut()
                    .entry(http::header::STRICT_TRANSPORT_SECURITY)
                    .or_insert(value);
            }
            response
        }
        Err(error) => {
            let response = error_response(error, &record.request_id);
            record.log(&proxy, error.status().as_u16(), error.body().len() as u64);
            response
        }
    }
}

/// The proxy's own short answer, with the request's id.
pub fn error_response<D: Dialer>(
    error: ProxyError,
    request_id: &[u8],
) -> Response<ResponseBody<D>> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        error.body().as_bytes(),
    ))));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(id) = HeaderValue::from_bytes(request_id) {
        headers.insert("x-request-id", id);
    }
    if error == ProxyError::NotReady {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A backend's answer head, and the connection its body comes on.
struct Answer<D: Dialer> {
    upstream: D::Stream,
    backend: crate::routes::BackendAddr,
    /// What was read past the head.
    rest: BytesMut,
    status: StatusCode,
    headers: HeaderMap,
    facts: ResponseFacts,
    /// The whole request body went up (else the connection is not reused).
    request_done: bool,
}

impl<D: Dialer> Answer<D> {
    fn into_response(self, proxy: Arc<Proxy<D>>, record: Record) -> Response<ResponseBody<D>> {
        let Answer {
            upstream,
            backend,
            rest,
            status,
            headers,
            facts,
            request_done,
        } = self;
        let state = match facts.framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default(), Vec::new()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let request_id = HeaderValue::from_bytes(&record.request_id).ok();
        let mut body = BackendBody {
            idle: proxy.config.idle_timeout,
            proxy,
            upstream: Some(upstream),
            backend,
            buf: rest,
            state,
            reusable: facts.reusable && request_done,
            status: status.as_u16(),
            record: Some(record),
            sent: 0,
            timer: None,
        };
        if matches!(body.state, BodyState::Done) {
            body.finish();
        }
        let mut response = Response::new(Either::Left(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        if let Some(id) = request_id {
            response.headers_mut().insert("x-request-id", id);
        }
        response
    }
}

/// How the request body goes up.
enum UpBody {
    /// None, or all of it in memory: can be sent again.
    Replay(Bytes),
    /// Streamed from the client (`Length` or chunked framing).
    Stream(Incoming),
}

async fn forward<D: Dialer>(
    proxy: &Arc<Proxy<D>>,
    req: Request<Incoming>,
    info: &ConnInfo,
    record: &mut Record,
) -> Result<Answer<D>, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::ConnectRefused);
    }
    if headers::has_conflicting_framing(req.headers()) {
        return Err(ProxyError::BadFraming);
    }
    let host = headers::request_host(&req).map_err(|_| ProxyError::BadHost)?;
    let route = policy::route(&proxy.state, &host)?;
    drop(host);
    let authority = match req.uri().authority() {
        Some(a) => a.as_str().as_bytes().to_vec(),
        None => req
            .headers()
            .get(http::header::HOST)
            .map(|h| h.as_bytes().to_vec())
            .unwrap_or_default(),
    };
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let idempotent = parts.method.is_idempotent();
    let is_head = parts.method == Method::HEAD;

    // The body: none, buffered (several backends, a known length up to
    // 64 KiB, so a refused attempt can go elsewhere), or streamed.
    let (framing, mut up_body) = if body.is_end_stream() {
        (Framing::Empty, UpBody::Replay(Bytes::new()))
    } else {
        match body.size_hint().exact() {
            Some(n) if n > head::MAX_BODY_LENGTH => return Err(ProxyError::BadFraming),
            Some(n) if n <= REPLAY_BUFFER_LIMIT && route.backends.len() > 1 => {
                let collect = Limited::new(body, REPLAY_BUFFER_LIMIT as usize).collect();
                let collected = tokio::time::timeout(proxy.config.body_read_timeout, collect)
                    .await
                    .map_err(|_| ProxyError::BodyTimeout)?
                    .map_err(|_| ProxyError::BadFraming)?;
                let bytes = collected.to_bytes();
                (Framing::Length(bytes.len() as u64), UpBody::Replay(bytes))
            }
            Some(n) => (Framing::Length(n), UpBody::Stream(body)),
            None => (Framing::Chunked, UpBody::Stream(body)),
        }
    };

    let client_text = head::client_text(info.peer.ip());
    let mut out = Vec::with_capacity(1024);
    headers::write_upstream_head(
        &mut out,
        &parts.method,
        &target,
        &parts.headers,
        &authority,
        &Forwarding {
            client: &client_text,
            proto: if info.tls { b"https" } else { b"http" },
            trusted: proxy.trusts(info.peer.ip()),
            request_id: &record.request_id,
            drop_expect: true,
        },
        framing,
    );

    let deadline =
        tokio::time::Instant::from_std(record.started) + proxy.config.response_header_timeout;
    let now = ms_at(record.started);
    let attempts = route.backends.len();
    let mut body_started = false;
    let mut answer = ProxyError::Upstream(crate::metrics::UpstreamErrorKind::Other);
    for (attempt, backend) in policy::backends(&route, now).enumerate() {
        if let Some(a) = record.access.as_mut() {
            a.backend = Some(backend.authority.clone());
        }
        let exchange = exchange(
            proxy,
            backend,
            &out,
            &mut up_body,
            framing,
            idempotent,
            is_head,
            record.started,
            &mut body_started,
        );
        let result = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => return Err(policy::response_timed_out(&proxy.state.metrics)),
        };
        match result {
            Ok(found) => {
                policy::attempt_answered(backend, now);
                if let Some(a) = record.access.as_mut() {
                    a.backend_time = Some(record.started.elapsed());
                }
                return Ok(found);
            }
            Err(Failure::Client(error)) => return Err(error),
            Err(Failure::Upstream(error, reached)) => {
                let failed = Failed {
                    error: &error,
                    reached,
                    last: attempt + 1 == attempts,
                    idempotent,
                    resendable: matches!(up_body, UpBody::Replay(_)) || !body_started,
                };
                answer = ProxyError::Upstream(error.kind());
                let metrics = &proxy.state.metrics;
                if let Some(error) =
                    policy::attempt_failed(metrics, &proxy.config, backend, now, failed)
                {
                    return Err(error);
                }
            }
        }
    }
    Err(answer)
}

enum Failure {
    Upstream(UpstreamError, Reached),
    /// The client's side: its body stalled (408) or broke (400).
    Client(ProxyError),
}

impl From<UpstreamError> for Failure {
    fn from(error: UpstreamError) -> Self {
        let reached = Reached::of(&error);
        Failure::Upstream(error, reached)
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure::from(UpstreamError::Io(error))
    }
}

/// One attempt on one backend (a pooled connection replaced once by a new
/// one when the request may be replayed, as in the HTTP/1 driver).
#[allow(clippy::too_many_arguments)]
async fn exchange<D: Dialer>(
    proxy: &Arc<Proxy<D>>,
    backend: &Backend,
    head: &[u8],
    body: &mut UpBody,
    framing: Framing,
    idempotent: bool,
    is_head: bool,
    started: Instant,
    body_started: &mut bool,
) -> Result<Answer<D>, Failure> {
    let pool = &proxy.pool;
    let resendable = matches!(body, UpBody::Replay(_));
    let known_good = !policy::may_replay(Reached::Request, idempotent, resendable);
    let (mut upstream, mut reused) = match pool.checkout(&backend.authority, started, known_good) {
        Some(stream) => (stream, true),
        None => (pool.connect(&backend.authority).await?, false),
    };
    loop {
        let mut buf = BytesMut::new();
        let result = send(
            &mut upstream,
            &mut buf,
            head,
            body,
            framing,
            is_head,
            proxy,
            body_started,
        )
        .await;
        match result {
            Ok((status, headers, facts, request_done)) => {
                return Ok(Answer {
                    upstream,
                    backend: backend.authority.clone(),
                    rest: buf,
                    status,
                    headers,
                    facts,
                    request_done,
                })
            }
            Err(Failure::Upstream(error, Reached::Request)) if !buf.is_empty() => {
                return Err(Failure::Upstream(error, Reached::Response));
            }
            Err(Failure::Upstream(error, reached))
                if reused
                    && error.kind() == crate::metrics::UpstreamErrorKind::Reset
                    && policy::may_replay(reached, idempotent, resendable || !*body_started) =>
            {
                tracing::debug!(backend = %backend.authority, "pooled connection was closed; reconnecting");
                upstream = pool.connect(&backend.authority).await?;
                reused = false;
            }
            Err(failure) => return Err(failure),
        }
    }
}

type Head = (StatusCode, HeaderMap, ResponseFacts, bool);

/// Writes the request and reads the answer head; a streamed body goes up
/// meanwhile (a backend may answer before it is all sent: the rest is then
/// not sent, and the connection not reused).
#[allow(clippy::too_many_arguments)]
async fn send<D: Dialer>(
    upstream: &mut D::Stream,
    buf: &mut BytesMut,
    head: &[u8],
    body: &mut UpBody,
    framing: Framing,
    is_head: bool,
    proxy: &Proxy<D>,
    body_started: &mut bool,
) -> Result<Head, Failure> {
    match body {
        UpBody::Replay(bytes) => {
            upstream.write_all(head).await?;
            if !bytes.is_empty() {
                upstream.write_all(bytes).await?;
            }
            let (status, headers, facts) = read_head(upstream, buf, is_head).await?;
            Ok((status, headers, facts, true))
        }
        UpBody::Stream(incoming) => {
            upstream.write_all(head).await?;
            let shared = Shared::new(upstream);
            let mut reader = &shared;
            let mut writer = &shared;
            let limit = proxy.config.body_read_timeout;
            let send = send_body(&mut writer, incoming, framing, limit, body_started);
            let wait = read_head_shared(&mut reader, &shared, buf, is_head);
            tokio::pin!(send, wait);
            tokio::select! {
                biased;
                head = &mut wait => {
                    let (status, headers, facts) = head?;
                    Ok((status, headers, facts, false))
                }
                sent = &mut send => {
                    sent?;
                    let (status, headers, facts) = wait.await?;
                    Ok((status, headers, facts, true))
                }
            }
        }
    }
}

/// Sends a streamed request body, frame by frame, each within `limit` of
/// the last (`--body-read-timeout`): as it is for a known length, chunked
/// (trailers checked and filtered) otherwise.
async fn send_body<W: tokio::io::AsyncWrite + Unpin>(
    upstream: &mut W,
    body: &mut Incoming,
    framing: Framing,
    limit: Duration,
    started: &mut bool,
) -> Result<(), Failure> {
    let chunked = framing == Framing::Chunked;
    let mut line = Vec::with_capacity(32);
    loop {
        let frame = match tokio::time::timeout(limit, body.frame()).await {
            Err(_) => return Err(Failure::Client(ProxyError::BodyTimeout)),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(Failure::Client(ProxyError::BadRequest)),
            Ok(Some(Ok(frame))) => frame,
        };
        *started = true;
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) if chunked => {
                line.clear();
                line.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                upstream.write_all(&line).await?;
                upstream.write_all(&data).await?;
                upstream.write_all(b"\r\n").await?;
            }
            Ok(data) => upstream.write_all(&data).await?,
            Err(frame) => {
                if let (Ok(trailers), true) = (frame.into_trailers(), chunked) {
                    line.clear();
                    line.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        if trailer_allowed(name.as_str()) {
                            head::put_header(&mut line, name.as_str().as_bytes(), value.as_bytes());
                        }
                    }
                    line.extend_from_slice(b"\r\n");
                    upstream.write_all(&line).await?;
                    return Ok(());
                }
            }
        }
    }
    if chunked {
        upstream.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// Reads the final answer head (interim ones are dropped: hyper answers
/// `100 Continue` itself), leaving what follows it in `buf`.
async fn read_head<R: AsyncRead + Socket>(
    upstream: &mut R,
    buf: &mut BytesMut,
    is_head: bool,
) -> Result<(StatusCode, HeaderMap, ResponseFacts), UpstreamError> {
    loop {
        if let Some(head) = parse_head(buf, is_head)? {
            return Ok(head);
        }
        if !buf.is_empty() {
            upstream.quickack();
        }
        buf.reserve(READ_CHUNK);
        if upstream.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// [`read_head`] while the body goes up on the same stream.
async fn read_head_shared<S: Socket>(
    reader: &mut &Shared<'_, S>,
    shared: &Shared<'_, S>,
    buf: &mut BytesMut,
    is_head: bool,
) -> Result<(StatusCode, HeaderMap, ResponseFacts), Failure> {
    loop {
        if let Some(head) = parse_head(buf, is_head)? {
            return Ok(head);
        }
        if !buf.is_empty() {
            shared.quickack();
        }
        buf.reserve(READ_CHUNK);
        if reader.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Closed.into());
        }
    }
}

/// A final answer head at the start of `buf` (consumed), or `None` when it
/// is not all there yet (interim answers are consumed and skipped).
fn parse_head(
    buf: &mut BytesMut,
    is_head: bool,
) -> Result<Option<(StatusCode, HeaderMap, ResponseFacts)>, UpstreamError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= 64 * 1024 => {
                return Err(UpstreamError::Protocol)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(UpstreamError::Protocol),
        };
        let facts = head::inspect_response(&resp, is_head).map_err(|_| UpstreamError::Protocol)?;
        if (100..200).contains(&facts.status) {
            if facts.status == 101 {
                // No upgrade was asked for; HTTP/2 has none.
                return Err(UpstreamError::Protocol);
            }
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(facts.status).map_err(|_| UpstreamError::Protocol)?;
        let mut headers = HeaderMap::with_capacity(resp.headers.len() + 2);
        for h in head::end_to_end(resp.headers) {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
        if let Some(n) = facts.length_header {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        buf.advance(len);
        return Ok(Some((status, headers, facts)));
    }
}

/// Where an answer's body stands.
enum BodyState {
    Length(u64),
    /// The decoder, and the trailer section as it arrives.
    Chunked(ChunkedDecoder, Vec<u8>),
    UntilClose,
    Done,
}

/// An answer body read from its backend connection as the client takes
/// it. At its end the connection goes back to the pool when it sits at a
/// clean message boundary, and the access log line is written (also when
/// the client goes away first). A backend silent for `--idle-timeout`
/// ends it with an error.
pub struct BackendBody<D: Dialer> {
    proxy: Arc<Proxy<D>>,
    upstream: Option<D::Stream>,
    backend: crate::routes::BackendAddr,
    buf: BytesMut,
    state: BodyState,
    reusable: bool,
    status: u16,
    record: Option<Record>,
    /// Body bytes handed to the client.
    sent: u64,
    idle: Duration,
    /// Armed while a read waits.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<D: Dialer> BackendBody<D> {
    /// The answer is whole: the connection goes back if it is in step, the
    /// line is logged.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(upstream) = self.upstream.take() {
            if self.reusable && self.buf.is_empty() {
                self.proxy
                    .pool
                    .put_back(&self.backend, upstream, Instant::now());
            }
        }
        self.log();
    }

    fn log(&mut self) {
        if let Some(record) = self.record.take() {
            record.log(&self.proxy, self.status, self.sent);
        }
    }

    /// Reads more from the backend into `buf`: Ready(Ok(0)) at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(upstream) = self.upstream.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        upstream.quickack();
        self.buf.reserve(READ_CHUNK);
        let read = std::pin::pin!(upstream.read_buf(&mut self.buf)).poll(cx);
        match read {
            Poll::Ready(Ok(n)) => {
                self.timer = None;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "backend idle")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<D: Dialer> Drop for BackendBody<D> {
    fn drop(&mut self) {
        self.log();
    }
}

impl<D: Dialer> Body for BackendBody<D> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !this.buf.is_empty() {
                        let n = (this.buf.len() as u64).min(*left) as usize;
                        let data = this.buf.split_to(n).freeze();
                        *left -= n as u64;
                        this.sent += n as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyState::Chunked(decoder, trailers) => {
                    let mut at = 0;
                    let mut data = None;
                    while at < this.buf.len() && !decoder.is_done() && data.is_none() {
                        match decoder.next(&this.buf[at..]).map_err(io::Error::other)? {
                            Segment::Data(n) => data = Some((at, n)),
                            Segment::Framing(n) => at += n,
                            Segment::Trailer(n) => {
                                trailers.extend_from_slice(&this.buf[at..at + n]);
                                at += n;
                            }
                        }
                    }
                    if let Some((start, n)) = data {
                        this.buf.advance(start);
                        let chunk = this.buf.split_to(n).freeze();
                        this.sent += n as u64;
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    this.buf.advance(at);
                    if decoder.is_done() {
                        let section = std::mem::take(trailers);
                        this.finish();
                        if let Some(map) = trailer_map(&section)? {
                            return Poll::Ready(Some(Ok(Frame::trailers(map))));
                        }
                        return Poll::Ready(None);
                    }
                }
                BodyState::UntilClose => {
                    if !this.buf.is_empty() {
                        let data = this.buf.split().freeze();
                        this.sent += data.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match this.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.state, BodyState::UntilClose) {
                        this.reusable = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    this.upstream = None;
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.upstream = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A checked trailer section as a `HeaderMap` (fields a trailer may not
/// carry dropped); `None` when it holds none.
fn trailer_map(section: &[u8]) -> io::Result<Option<HeaderMap>> {
    let mut kept = Vec::new();
    write_trailer_section(section, &mut kept).map_err(io::Error::other)?;
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(&kept, &mut fields)
    else {
        return Ok(None);
    };
    let mut map = HeaderMap::new();
    for f in fields {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) {
            map.append(name, value);
        }
    }
    Ok((!map.is_empty()).then_some(map))
}
