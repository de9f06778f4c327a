//! HTTP/1.x on one client connection: read a head, route it, forward it on
//! a pooled backend connection, relay the answer, and again (keep-alive,
//! pipelining). Upgrades become tunnels; a connection that opens with the
//! HTTP/2 preface is handed back to the caller.
//!
//! The driver is generic over its streams: the client is any [`Socket`]
//! (plain TCP, TLS, an in-memory pipe in tests) and backends come from the
//! proxy's [`Dialer`]. What it needs beyond reading and writing (an
//! immediate ACK, pool checks) is in [`super::io`].
//!
//! Why not hyper here: a reverse proxy moves heads and bytes, and hyper's
//! server and client parse every head into a `HeaderMap`, build a
//! `Request`, run a service future, pass the request to a client task over
//! a channel and the response back over another. On a backend that answers
//! in microseconds that machinery was most of the user-space CPU per
//! request (bench/README.md). Here a head is parsed by httparse in place,
//! the backend's head is written straight from the parsed one, a small
//! answer goes out in one write, and nothing crosses a task boundary.
//!
//! Architecture invariant: the policy is [`super::policy`]'s, as for
//! HTTP/2 (route lookup, backend order, dead marks, the replay rule, the
//! access-log record), the header rules those of [`head`], and nothing
//! here awaits Redis.

pub mod chunked;
pub mod head;
#[cfg(test)]
mod tests;

use super::io::{Dialer, Shared, Socket};
use super::policy::{self, Access, Failed, Reached};
use super::upstream::UpstreamError;
use super::{ConnInfo, Proxy, ProxyError, REPLAY_BUFFER_LIMIT};
use crate::routes::{ms_at, Backend, Route};
use bytes::{Buf, Bytes, BytesMut};
use chunked::{ChunkedDecoder, ChunkedRelay, Segment};
use head::{Downstream, Forwarding, Framing, HeadError, ResponseFacts, MAX_HEADERS};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Read buffers start at this size and grow for large heads.
const READ_CHUNK: usize = 8 * 1024;
/// Bodies are copied through this much buffer at a time.
const BODY_CHUNK: usize = 64 * 1024;
/// A complete answer up to this size is written with its head in one go.
const COALESCE_LIMIT: usize = 16 * 1024;
/// How long, and how much, a closing connection reads and drops what the
/// client still sends (see `Conn::linger`).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Limits of a client connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head must be complete this long after the proxy starts
    /// waiting for it (also bounds a keep-alive wait).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed, and
    /// so is one whose response relay stalls this long.
    pub idle_timeout: Duration,
    pub max_header_size: usize,
}

/// A worker's shutdown signal as its connections see it: a flag checked
/// once per request (an atomic load; the token's check takes a lock) and
/// the token to wait on while idle.
#[derive(Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    stopping: AtomicBool,
}

impl Stop {
    pub fn cancel(&self) {
        self.stopping.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// How a connection ended, as far as its caller is concerned.
pub enum Ended<C> {
    Closed,
    /// The client spoke the HTTP/2 preface: these bytes were read already.
    Http2 {
        stream: C,
        read: BytesMut,
    },
}

/// Serves HTTP/1.x on `stream` until the client leaves, the connection
/// idles out, a request says close, or `stop` is cancelled (then the
/// request in flight finishes first).
pub async fn serve<C: Socket, D: Dialer>(
    proxy: &Proxy<D>,
    stream: C,
    info: &ConnInfo,
    limits: &Limits,
    stop: &Stop,
) -> Ended<C> {
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
    let conn = Conn {
        proxy,
        limits,
        stop,
        client: stream,
        client_text: head::client_text(info.peer.ip()),
        proto: if info.tls { b"https" } else { b"http" },
        trusted: proxy.trusts(info.peer.ip()),
        hsts: info
            .tls
            .then(|| proxy.config.hsts.map(|age| hsts_value(age).into()))
            .flatten(),
        info,
        inbuf: BytesMut::with_capacity(READ_CHUNK),
        upbuf: BytesMut::new(),
        out: Vec::with_capacity(1024),
        head_deadline: Deadline::new(far),
        response_deadline: Deadline::new(far),
        body_deadline: Deadline::new(far),
        stopped: Box::pin(stop.token.clone().cancelled_owned()),
        idle_since: Instant::now(),
    };
    conn.run().await
}

struct Conn<'a, C, D: Dialer> {
    proxy: &'a Proxy<D>,
    limits: &'a Limits,
    stop: &'a Stop,
    client: C,
    info: &'a ConnInfo,
    /// The client address as `X-Forwarded-For` spells it, formatted once.
    client_text: Vec<u8>,
    /// `X-Forwarded-Proto`: how the client reached us.
    proto: &'static [u8],
    /// The client is a trusted proxy (`--trusted-proxies`).
    trusted: bool,
    /// `Strict-Transport-Security` for every answer relayed on this
    /// connection: TLS with `--hsts`.
    hsts: Option<Arc<[u8]>>,
    /// Bytes from the client not yet used.
    inbuf: BytesMut,
    /// Bytes from the backend not yet relayed.
    upbuf: BytesMut,
    /// The head being written (the backend's request, then the client's
    /// response).
    out: Vec<u8>,
    /// One deadline per purpose, moved on every request (see [`Deadline`]):
    /// the request head; the response head, then each wait of the response
    /// relay; each wait for request body bytes.
    head_deadline: Deadline,
    response_deadline: Deadline,
    body_deadline: Deadline,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    /// When the connection started waiting for its next request (the end
    /// of the last answer): the clock is read twice per request, at its
    /// start and at its end, and every deadline derives from those.
    idle_since: Instant,
}

/// A deadline that moves later at no cost: moving it records the instant,
/// and the timer under it is re-armed only when it fires before that
/// instant. A connection moves its deadlines on every request; re-arming a
/// timer each time would cost a timer-wheel update each time.
struct Deadline {
    timer: Pin<Box<Sleep>>,
    at: tokio::time::Instant,
}

impl Deadline {
    fn new(at: tokio::time::Instant) -> Deadline {
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    fn set(&mut self, at: tokio::time::Instant) {
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
        self.at = at;
    }

    /// Resolves once the deadline has passed.
    async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            if tokio::time::Instant::now() >= self.at {
                return;
            }
            let at = self.at;
            self.timer.as_mut().reset(at);
        }
    }
}

/// Runs `op` until it completes or `deadline` passes (then `None`). The
/// deadline is set `limit` after the moment `op` first has to wait, so an
/// operation that completes at once (the usual case: a write to a socket
/// with room, a read of bytes already there) reads no clock and arms no
/// timer.
async fn bounded<F: Future>(op: F, deadline: &mut Deadline, limit: Duration) -> Option<F::Output> {
    let mut op = std::pin::pin!(op);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx))).await {
        return Some(out);
    }
    deadline.set(tokio::time::Instant::now() + limit);
    tokio::select! {
        biased;
        out = op => Some(out),
        _ = deadline.expired() => None,
    }
}

/// A request ready to go: its upstream head is in `Conn::out`.
struct Prepared {
    head_len: usize,
    route: Arc<Route>,
    framing: Framing,
    keep_alive: bool,
    http10: bool,
    is_head: bool,
    idempotent: bool,
    upgrade: Option<Box<[u8]>>,
    expect_continue: bool,
    /// The body is read whole before it is sent, so that it can be sent
    /// again to another backend.
    buffer_body: bool,
    request_id: RequestId,
    started: Instant,
    /// When the request starts going upstream: `started`, or later when
    /// its body was read whole first. The response header timeout counts
    /// from here.
    sent_at: Instant,
    access: Option<Access>,
    /// `Strict-Transport-Security` for the answer (TLS, `--hsts`).
    hsts: Option<Arc<[u8]>>,
}

/// The request id sent upstream and back: the client's, or a fresh one.
enum RequestId {
    Generated([u8; 32]),
    Client(Box<[u8]>),
}

impl RequestId {
    fn new(client: Option<&[u8]>) -> RequestId {
        match client {
            Some(id) => RequestId::Client(id.into()),
            None => RequestId::Generated(super::headers::request_id_hex()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Generated(b) => b,
            RequestId::Client(b) => b,
        }
    }
}

/// A request head that will not be forwarded.
struct Refusal {
    error: ProxyError,
    access: Option<Access>,
    /// Where the refused request ends, when the rest of the connection can
    /// still be read (a routing refusal of a body-less request).
    head_len: Option<usize>,
    request_id: RequestId,
    started: Instant,
    /// `Location` of a redirect.
    location: Option<Box<[u8]>>,
}

/// The key authorization of an ACME HTTP-01 challenge, answered from
/// memory ([`policy::acme_challenge`]).
struct ChallengeReply {
    key_authorization: Bytes,
    access: Option<Access>,
    /// Where the request ends, when the connection can go on.
    head_len: Option<usize>,
    request_id: RequestId,
    started: Instant,
}

enum Step {
    Ready(Box<Prepared>),
    Partial,
    Refuse(Box<Refusal>),
    Challenge(Box<ChallengeReply>),
}

/// What the connection does after an exchange.
enum Next<U> {
    KeepAlive,
    Close,
    /// A 101 was relayed: the two streams become a tunnel.
    Tunnel(U),
}

/// A backend exchange that did not produce a response head.
enum Failure {
    /// How far the attempt got decides whether it may be replayed.
    Upstream(UpstreamError, Reached),
    /// No response head within the response header timeout.
    TimedOut,
    /// The client's side failed: the exchange is abandoned, the backend is
    /// not to blame.
    Client(ClientFault),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientFault {
    /// Malformed chunked framing in the request body: 400.
    Malformed,
    /// The request body stalled past `--body-read-timeout`: 408.
    TimedOut,
    /// The client closed or reset the connection.
    Gone,
}

impl From<UpstreamError> for Failure {
    /// A failure as the error alone tells it (callers that saw response
    /// bytes say [`Reached::Response`]).
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

/// A parsed response head, its downstream head already in `Conn::out`.
struct ResponseHead {
    len: usize,
    facts: ResponseFacts,
    close: bool,
    /// Relay a chunked body without its framing (HTTP/1.0 client).
    dechunk: bool,
    /// Only for 101: the backend agreed to the requested protocol.
    upgrade_agreed: bool,
}

/// A response relay that broke.
struct Relayed {
    error: io::Error,
    /// Bytes written to the client, head included.
    wrote: u64,
    /// Of which body bytes.
    body: u64,
}

/// How the request body reaches the backend.
enum RequestBody<'b> {
    /// No body, or all of it in memory: can be sent again.
    Replay(&'b Bytes),
    /// Streamed from the client as the backend takes it.
    Stream,
}

impl<'a, C: Socket, D: Dialer> Conn<'a, C, D> {
    async fn run(mut self) -> Ended<C> {
        let mut first = true;
        'requests: loop {
            let wait = self
                .limits
                .header_read_timeout
                .min(self.limits.idle_timeout);
            let deadline = tokio::time::Instant::from_std(self.idle_since) + wait;
            self.head_deadline.set(deadline);
            let prepared = loop {
                if first
                    && H2_PREFACE.starts_with(&self.inbuf[..self.inbuf.len().min(H2_PREFACE.len())])
                {
                    if self.inbuf.len() >= H2_PREFACE.len() {
                        return Ended::Http2 {
                            stream: self.client,
                            read: self.inbuf,
                        };
                    }
                    // A prefix of the preface (or nothing yet): read on.
                } else if !self.inbuf.is_empty() {
                    match self.prepare() {
                        Step::Ready(p) => break p,
                        Step::Partial => {}
                        Step::Challenge(reply) => {
                            let keep = reply.head_len.filter(|_| !self.stop.is_stopping());
                            self.answer_challenge(&reply, keep.is_none()).await;
                            if let Some(len) = keep {
                                self.inbuf.advance(len);
                                first = false;
                                continue 'requests;
                            }
                            self.linger().await;
                            return Ended::Closed;
                        }
                        Step::Refuse(refusal) => {
                            let keep = refusal.head_len.is_some() && !self.stop.is_stopping();
                            self.answer_error(&refusal, !keep).await;
                            match refusal.head_len {
                                Some(len) if keep => {
                                    self.inbuf.advance(len);
                                    first = false;
                                    continue 'requests;
                                }
                                _ => {
                                    self.linger().await;
                                    return Ended::Closed;
                                }
                            }
                        }
                    }
                    if self.inbuf.len() >= self.limits.max_header_size {
                        let refusal = self.refusal(ProxyError::HeadersTooLarge, Instant::now());
                        self.answer_error(&refusal, true).await;
                        self.linger().await;
                        return Ended::Closed;
                    }
                }
                if !self.read_head_bytes().await {
                    return Ended::Closed;
                }
            };
            first = false;
            match self.forward(*prepared).await {
                Next::KeepAlive if !self.stop.is_stopping() => {}
                Next::KeepAlive | Next::Close => {
                    self.linger().await;
                    return Ended::Closed;
                }
                Next::Tunnel(upstream) => {
                    let Conn {
                        proxy,
                        client,
                        inbuf,
                        upbuf,
                        ..
                    } = self;
                    proxy.tunnel(client, inbuf.freeze(), upstream, upbuf.freeze());
                    return Ended::Closed;
                }
            }
        }
    }

    /// Reads more of a head; false when the connection should end (closed,
    /// timed out, or shutting down with no request begun).
    async fn read_head_bytes(&mut self) -> bool {
        let idle = self.inbuf.is_empty();
        self.inbuf.reserve(READ_CHUNK);
        tokio::select! {
            biased;
            read = self.client.read_buf(&mut self.inbuf) => matches!(read, Ok(n) if n > 0),
            _ = self.head_deadline.expired() => false,
            _ = self.stopped.as_mut(), if idle => false,
        }
    }

    /// `--redirect-https`: where a cleartext request for a host that has
    /// a certificate goes instead (same path and query), unless it is an
    /// ACME HTTP-01 challenge, which must be answered over cleartext.
    fn https_redirect(&self, facts: &head::RequestFacts<'_>) -> Option<Box<[u8]>> {
        let port = self.proxy.config.redirect_https?;
        if self.info.tls || facts.path.starts_with(crate::acme::challenges::PATH_PREFIX) {
            return None;
        }
        let authority = http::uri::Authority::try_from(facts.host.as_ref()).ok()?;
        let host = authority.host();
        if !self.proxy.state.certs.has_certificate_for(host) {
            return None;
        }
        let path = if facts.path.starts_with('/') {
            facts.path
        } else {
            "/"
        };
        let location = if port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}:{port}{path}")
        };
        Some(location.into_bytes().into_boxed_slice())
    }

    /// A refusal of a head that could not be read: only the client is
    /// known.
    fn refusal(&self, error: ProxyError, started: Instant) -> Box<Refusal> {
        Box::new(Refusal {
            error,
            access: self
                .proxy
                .config
                .access_log
                .then(|| Access::unreadable(self.client_ip())),
            head_len: None,
            request_id: RequestId::new(None),
            started,
            location: None,
        })
    }

    fn client_ip(&self) -> std::net::IpAddr {
        super::headers::client_ip(self.info.peer.ip())
    }

    /// Parses the head at the start of `inbuf` and, when it can be
    /// forwarded, routes it and writes the backend's head into `out`.
    fn prepare(&mut self) -> Step {
        let started = Instant::now();
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            &self.inbuf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Step::Partial,
            Err(e) => {
                let error = match HeadError::from(e) {
                    HeadError::TooLarge => ProxyError::HeadersTooLarge,
                    HeadError::Version => ProxyError::BadVersion,
                    HeadError::Malformed | HeadError::Framing => ProxyError::BadRequest,
                };
                return Step::Refuse(self.refusal(error, started));
            }
        };
        let logging = self.proxy.config.access_log;
        let access = |host: &str, path: &str, user_agent: Option<&[u8]>| {
            logging.then(|| Access {
                client: super::headers::client_ip(self.info.peer.ip()),
                method: req.method.unwrap_or("-").to_owned(),
                host: host.to_owned(),
                path: path.to_owned(),
                version: if req.version == Some(0) {
                    http::Version::HTTP_10
                } else {
                    http::Version::HTTP_11
                },
                user_agent: user_agent.map_or_else(
                    || "-".to_owned(),
                    |ua| String::from_utf8_lossy(ua).into_owned(),
                ),
                backend: None,
                backend_time: None,
            })
        };
        let facts = match head::inspect_request(&req) {
            Ok(facts) => facts,
            Err(error) => {
                let request_id = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
                    .map(|h| h.value);
                return Step::Refuse(Box::new(Refusal {
                    error,
                    access: access("-", req.path.unwrap_or("-"), None),
                    head_len: None,
                    request_id: RequestId::new(request_id),
                    started,
                    location: None,
                }));
            }
        };
        let access = access(&facts.host, facts.path, facts.user_agent);
        let request_id = RequestId::new(facts.request_id);
        if facts.framing == Framing::Empty {
            let method = req.method.unwrap_or_default();
            if let Some(key_authorization) = policy::acme_challenge(
                &self.proxy.state.challenges,
                self.info.tls,
                method,
                facts.path,
            ) {
                return Step::Challenge(Box::new(ChallengeReply {
                    key_authorization,
                    access,
                    head_len: facts.keep_alive.then_some(head_len),
                    request_id,
                    started,
                }));
            }
        }
        if let Some(location) = self.https_redirect(&facts) {
            let resumable =
                (facts.framing == Framing::Empty && facts.keep_alive).then_some(head_len);
            return Step::Refuse(Box::new(Refusal {
                error: ProxyError::RedirectHttps,
                access,
                head_len: resumable,
                request_id,
                started,
                location: Some(location),
            }));
        }
        let route = match policy::route(&self.proxy.state, &facts.host) {
            Ok(route) => route,
            Err(error) => {
                // A refusal of a request without a body leaves the
                // connection in step: the next request can be read.
                let resumable =
                    (facts.framing == Framing::Empty && facts.keep_alive).then_some(head_len);
                return Step::Refuse(Box::new(Refusal {
                    error,
                    access,
                    head_len: resumable,
                    request_id,
                    started,
                    location: None,
                }));
            }
        };
        let buffer_body = match facts.framing {
            Framing::Length(n) => {
                n <= REPLAY_BUFFER_LIMIT
                    && (route.backends.len() > 1 || self.inbuf.len() - head_len >= n as usize)
            }
            _ => false,
        };
        self.out.clear();
        head::write_request_head(
            &mut self.out,
            &req,
            &facts,
            &Forwarding {
                client: &self.client_text,
                proto: self.proto,
                trusted: self.trusted,
                request_id: request_id.as_bytes(),
                drop_expect: buffer_body,
            },
        );
        Step::Ready(Box::new(Prepared {
            head_len,
            route,
            framing: facts.framing,
            keep_alive: facts.keep_alive,
            http10: facts.http10,
            is_head: facts.is_head,
            idempotent: facts.idempotent,
            upgrade: facts.upgrade.map(Into::into),
            expect_continue: facts.expect_continue,
            buffer_body,
            request_id,
            started,
            sent_at: started,
            access,
            hsts: self.hsts.clone(),
        }))
    }

    /// Forwards one request (retrying on another backend when the policy
    /// allows) and relays the answer.
    async fn forward(&mut self, mut p: Prepared) -> Next<D::Stream> {
        self.inbuf.advance(p.head_len);
        let replay = match p.framing {
            Framing::Empty => Some(Bytes::new()),
            Framing::Length(n) if p.buffer_body => {
                // RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored
                // (it would take a 100 for the answer).
                let expect = p.expect_continue && !p.http10;
                match self.read_whole_body(n as usize, expect).await {
                    Ok(body) => Some(body),
                    Err(ClientFault::TimedOut) => {
                        return self.fail(&p, ProxyError::BodyTimeout, true).await;
                    }
                    Err(_) => return Next::Close,
                }
            }
            _ => None,
        };
        let route = p.route.clone();
        let attempts = route.backends.len();
        let mut body_started = false;
        // What to answer if the order yields fewer backends than the route
        // has (another thread moved a dead mark between its two passes).
        let mut answer = ProxyError::Upstream(crate::metrics::UpstreamErrorKind::Other);
        let now = ms_at(p.started);
        for (attempt, backend) in policy::backends(&route, now).enumerate() {
            if let Some(a) = p.access.as_mut() {
                a.backend = Some(backend.authority.clone());
            }
            let body = match &replay {
                Some(bytes) => RequestBody::Replay(bytes),
                None => RequestBody::Stream,
            };
            match self.exchange(backend, &p, body, &mut body_started).await {
                Ok((upstream, response, body_done)) => {
                    policy::attempt_answered(backend, now);
                    if let Some(a) = p.access.as_mut() {
                        a.backend_time = Some(p.sent_at.elapsed());
                    }
                    return self
                        .relay(upstream, response, &p, body_done, &backend.authority)
                        .await;
                }
                Err(Failure::Client(ClientFault::Gone)) => return Next::Close,
                Err(Failure::Client(ClientFault::Malformed)) => {
                    return self.fail(&p, ProxyError::BadChunking, true).await;
                }
                Err(Failure::Client(ClientFault::TimedOut)) => {
                    return self.fail(&p, ProxyError::BodyTimeout, true).await;
                }
                Err(Failure::TimedOut) => {
                    let error = policy::response_timed_out(&self.proxy.state.metrics);
                    return self.fail(&p, error, body_started).await;
                }
                Err(Failure::Upstream(error, reached)) => {
                    let failed = Failed {
                        error: &error,
                        reached,
                        last: attempt + 1 == attempts,
                        idempotent: p.idempotent,
                        resendable: replay.is_some() || !body_started,
                    };
                    let metrics = &self.proxy.state.metrics;
                    let config = &self.proxy.config;
                    answer = ProxyError::Upstream(error.kind());
                    if let Some(answer) =
                        policy::attempt_failed(metrics, config, backend, now, failed)
                    {
                        return self.fail(&p, answer, body_started).await;
                    }
                }
            }
        }
        self.fail(&p, answer, body_started).await
    }

    /// Reads a body of `len` bytes whole (answering `100 Continue` first if
    /// the client waits for it), within `--body-read-timeout` of starting.
    async fn read_whole_body(
        &mut self,
        len: usize,
        expect_continue: bool,
    ) -> Result<Bytes, ClientFault> {
        if self.inbuf.len() < len {
            let limit = self.proxy.config.body_read_timeout;
            self.body_deadline.set(tokio::time::Instant::now() + limit);
            if expect_continue {
                self.client
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .map_err(|_| ClientFault::Gone)?;
            }
            while self.inbuf.len() < len {
                self.inbuf.reserve(len - self.inbuf.len());
                self.client.quickack();
                tokio::select! {
                    biased;
                    read = self.client.read_buf(&mut self.inbuf) => match read {
                        Ok(n) if n > 0 => {}
                        _ => return Err(ClientFault::Gone),
                    },
                    _ = self.body_deadline.expired() => return Err(ClientFault::TimedOut),
                }
            }
        }
        Ok(self.inbuf.split_to(len).freeze())
    }

    /// One attempt on one backend: a connection (pooled or new), the
    /// request, the response head. A pooled connection that turns out to
    /// have been closed by the backend is replaced by a new one once, when
    /// the request may be replayed ([`policy::may_replay`]); a request that
    /// may not goes only on a pooled connection known to be good, else on
    /// a new one.
    async fn exchange(
        &mut self,
        backend: &Backend,
        p: &Prepared,
        body: RequestBody<'_>,
        body_started: &mut bool,
    ) -> Result<(D::Stream, ResponseHead, bool), Failure> {
        let pool = &self.proxy.pool;
        let resendable = matches!(body, RequestBody::Replay(_));
        let known_good = !policy::may_replay(Reached::Request, p.idempotent, resendable);
        let (mut upstream, mut reused) =
            match pool.checkout(&backend.authority, p.started, known_good) {
                Some(stream) => (stream, true),
                None => (pool.connect(&backend.authority).await?, false),
            };
        loop {
            self.upbuf.clear();
            let mut answered = false;
            let result = self
                .send(&mut upstream, p, &body, body_started, &mut answered)
                .await;
            match result {
                Ok((head, body_done)) => return Ok((upstream, head, body_done)),
                Err(Failure::Upstream(error, Reached::Request))
                    if answered || !self.upbuf.is_empty() =>
                {
                    // Bytes of an answer came back: the request was
                    // processed, whatever broke after.
                    return Err(Failure::Upstream(error, Reached::Response));
                }
                Err(Failure::Upstream(error, reached))
                    if reused
                        && error.kind() == crate::metrics::UpstreamErrorKind::Reset
                        && policy::may_replay(
                            reached,
                            p.idempotent,
                            resendable || !*body_started,
                        ) =>
                {
                    // The backend closed its idle connection as we took it.
                    tracing::debug!(backend = %backend.authority, "pooled connection was closed; reconnecting");
                    upstream = self.proxy.pool.connect(&backend.authority).await?;
                    reused = false;
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Writes the request to `upstream` and waits for the response head,
    /// within the response header timeout. Ok carries whether the request
    /// body was all sent; `answered` is set once an interim answer came.
    async fn send(
        &mut self,
        upstream: &mut D::Stream,
        p: &Prepared,
        body: &RequestBody<'_>,
        body_started: &mut bool,
        answered: &mut bool,
    ) -> Result<(ResponseHead, bool), Failure> {
        // From the request's start: the same bound for every attempt.
        let deadline =
            tokio::time::Instant::from_std(p.sent_at) + self.proxy.config.response_header_timeout;
        self.response_deadline.set(deadline);
        let exchange = async {
            match body {
                RequestBody::Replay(bytes) => {
                    write_all_two(upstream, &self.out, bytes).await?;
                    let head = wait_head(
                        upstream,
                        &mut self.upbuf,
                        &mut self.client,
                        &mut self.inbuf,
                        self.limits.max_header_size,
                        p,
                        &mut self.out,
                        self.stop,
                        answered,
                    )
                    .await?;
                    Ok((head, true))
                }
                RequestBody::Stream => {
                    upstream.write_all(&self.out).await?;
                    let streams = Streams {
                        upstream: Shared::new(upstream),
                        client: Shared::new(&mut self.client),
                    };
                    stream_body_and_wait(
                        &streams,
                        &mut self.inbuf,
                        &mut self.upbuf,
                        &mut self.out,
                        self.limits.max_header_size,
                        p,
                        body_started,
                        self.stop,
                        answered,
                        &mut self.body_deadline,
                        self.proxy.config.body_read_timeout,
                    )
                    .await
                }
            }
        };
        tokio::select! {
            biased;
            result = exchange => result,
            _ = self.response_deadline.expired() => Err(Failure::TimedOut),
        }
    }

    /// Relays the response whose head `wait_head` parsed: the head (already
    /// rewritten into `out`), then the body as it arrives.
    async fn relay(
        &mut self,
        mut upstream: D::Stream,
        response: ResponseHead,
        p: &Prepared,
        request_body_done: bool,
        backend: &http::uri::Authority,
    ) -> Next<D::Stream> {
        let status = response.facts.status;
        self.upbuf.advance(response.len);
        if status == 101 {
            if !response.upgrade_agreed {
                return self.fail(p, ProxyError::UpgradeMismatch, true).await;
            }
            if self.client.write_all(&self.out).await.is_err() {
                return Next::Close;
            }
            self.finish(p, status, 0);
            return Next::Tunnel(upstream);
        }
        let relayed = self.relay_body(&mut upstream, &response).await;
        match relayed {
            Err(Relayed {
                error, wrote: 0, ..
            }) => {
                // Broken before a byte reached the client (a malformed
                // chunk or trailer in the first read): a clean 502.
                tracing::debug!(%error, "backend answer refused before relaying it");
                let refused = ProxyError::Upstream(crate::metrics::UpstreamErrorKind::Other);
                self.proxy
                    .state
                    .metrics
                    .upstream_error(crate::metrics::UpstreamErrorKind::Other);
                self.out.clear();
                head::write_error(&mut self.out, refused, true, p.request_id.as_bytes(), None);
                let _ = self.client.write_all(&self.out).await;
                self.finish(p, 502, refused.body().len() as u64);
                Next::Close
            }
            Ok(bytes) => {
                self.finish(p, status, bytes);
                // Bytes past the end of the answer are unsolicited: that
                // connection is out of step and never reused.
                if response.facts.reusable && request_body_done && self.upbuf.is_empty() {
                    self.proxy.pool.put_back(backend, upstream, self.idle_since);
                }
                if response.close {
                    Next::Close
                } else {
                    Next::KeepAlive
                }
            }
            Err(Relayed { error, body, .. }) => {
                tracing::debug!(%error, "response relay ended early");
                self.finish(p, status, body);
                Next::Close
            }
        }
    }

    /// Relays the response body; Ok carries the body bytes sent to the
    /// client (for the access log).
    async fn relay_body(
        &mut self,
        upstream: &mut D::Stream,
        response: &ResponseHead,
    ) -> Result<u64, Relayed> {
        let mut sent = 0u64;
        let head = self.out.len() as u64;
        match self.relay_framed(upstream, response, &mut sent).await {
            Ok(()) => Ok(sent.saturating_sub(head)),
            Err(error) => Err(Relayed {
                error,
                wrote: sent,
                body: sent.saturating_sub(head),
            }),
        }
    }

    /// [`Conn::relay_body`] by framing; `sent` counts every byte written to
    /// the client, head included.
    async fn relay_framed(
        &mut self,
        upstream: &mut D::Stream,
        response: &ResponseHead,
        sent: &mut u64,
    ) -> io::Result<()> {
        let idle = self.limits.idle_timeout;
        macro_rules! write {
            ($a:expr, $b:expr) => {{
                let (a, b): (&[u8], &[u8]) = ($a, $b);
                write_bounded(&mut self.client, &mut self.response_deadline, idle, a, b).await?;
                *sent += (a.len() + b.len()) as u64;
            }};
        }
        match response.facts.framing {
            Framing::Empty => write!(&self.out, &[]),
            Framing::Length(n) => {
                let mut left = n;
                let have = (self.upbuf.len() as u64).min(left) as usize;
                if have as u64 == left && have <= COALESCE_LIMIT {
                    self.out.extend_from_slice(&self.upbuf[..have]);
                    self.upbuf.advance(have);
                    write!(&self.out, &[]);
                    return Ok(());
                }
                write!(&self.out, &self.upbuf[..have]);
                self.upbuf.advance(have);
                left -= have as u64;
                while left > 0 {
                    self.read_upstream(upstream).await?;
                    let take = (self.upbuf.len() as u64).min(left) as usize;
                    write!(&[], &self.upbuf[..take]);
                    self.upbuf.advance(take);
                    left -= take as u64;
                }
            }
            Framing::Chunked if response.dechunk => {
                let mut decoder = ChunkedDecoder::default();
                loop {
                    let mut at = 0;
                    while at < self.upbuf.len() && !decoder.is_done() {
                        let segment = decoder.next(&self.upbuf[at..]).map_err(io::Error::other)?;
                        if let Segment::Data(n) = segment {
                            self.out.extend_from_slice(&self.upbuf[at..at + n]);
                        }
                        at += segment.size();
                    }
                    write!(&self.out, &[]);
                    self.out.clear();
                    self.upbuf.advance(at);
                    if decoder.is_done() {
                        return Ok(());
                    }
                    self.read_upstream(upstream).await?;
                }
            }
            Framing::Chunked => {
                // Chunks pass as they came; the trailer section is checked
                // and rewritten ([`ChunkedRelay`]). `out` holds the head
                // until the first write.
                let mut relay = ChunkedRelay::default();
                loop {
                    let fed = relay.feed(&self.upbuf).map_err(io::Error::other)?;
                    if relay.is_done() && fed.pass <= COALESCE_LIMIT {
                        // The end of the answer: one write.
                        self.out.extend_from_slice(&self.upbuf[..fed.pass]);
                        relay
                            .write_trailers(&mut self.out)
                            .map_err(io::Error::other)?;
                        self.upbuf.advance(fed.used);
                        write!(&self.out, &[]);
                        return Ok(());
                    }
                    write!(&self.out, &self.upbuf[..fed.pass]);
                    self.out.clear();
                    self.upbuf.advance(fed.used);
                    if relay.is_done() {
                        relay
                            .write_trailers(&mut self.out)
                            .map_err(io::Error::other)?;
                        write!(&self.out, &[]);
                        return Ok(());
                    }
                    self.read_upstream(upstream).await?;
                }
            }
            Framing::UntilClose => {
                write!(&self.out, &self.upbuf[..]);
                self.upbuf.clear();
                loop {
                    match self.read_upstream(upstream).await {
                        Ok(()) => {
                            write!(&[], &self.upbuf[..]);
                            self.upbuf.clear();
                        }
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads more of a response body, watching the client: a client that
    /// leaves ends the relay (and the backend connection with it), and so
    /// does a backend that sends nothing for the idle timeout.
    async fn read_upstream(&mut self, upstream: &mut D::Stream) -> io::Result<()> {
        self.upbuf.reserve(BODY_CHUNK);
        upstream.quickack();
        let idle = self.limits.idle_timeout;
        let max_header_size = self.limits.max_header_size;
        let (client, inbuf, upbuf) = (&mut self.client, &mut self.inbuf, &mut self.upbuf);
        let wait = async {
            loop {
                let watching = inbuf.len() < max_header_size;
                if watching {
                    inbuf.reserve(READ_CHUNK);
                }
                tokio::select! {
                    biased;
                    read = upstream.read_buf(upbuf) => {
                        return match read? {
                            0 => Err(io::ErrorKind::UnexpectedEof.into()),
                            _ => Ok(()),
                        };
                    }
                    // Pipelined bytes stay in `inbuf`; a close ends it all.
                    read = client.read_buf(inbuf), if watching => {
                        if !matches!(read, Ok(n) if n > 0) {
                            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "client left"));
                        }
                    }
                }
            }
        };
        bounded(wait, &mut self.response_deadline, idle)
            .await
            .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::TimedOut, "backend idle")))
    }

    /// Metrics and the access log line of an answered request; the
    /// connection is idle from here on.
    fn finish(&mut self, p: &Prepared, status: u16, bytes: u64) {
        let request_id = p.request_id.as_bytes();
        self.record(p.started, p.access.as_ref(), status, bytes, request_id);
    }

    /// Counts an answer that left at `status`, logs it when access logging
    /// is on, and starts the connection's idle clock.
    fn record(
        &mut self,
        started: Instant,
        access: Option<&Access>,
        status: u16,
        bytes: u64,
        request_id: &[u8],
    ) {
        self.idle_since = Instant::now();
        let elapsed = self.idle_since.saturating_duration_since(started);
        self.proxy
            .state
            .metrics
            .observe_request(status, elapsed.as_secs_f64());
        if let Some(a) = access {
            a.log(status, bytes, elapsed, request_id);
        }
    }

    /// Answers an exchange that failed; the connection closes if some of the
    /// request body may still be unread.
    async fn fail(
        &mut self,
        p: &Prepared,
        error: ProxyError,
        body_started: bool,
    ) -> Next<D::Stream> {
        let body_unread = match p.framing {
            Framing::Empty => false,
            _ => !p.buffer_body || body_started,
        };
        let close = !p.keep_alive || body_unread || self.stop.is_stopping();
        self.out.clear();
        head::write_error(&mut self.out, error, close, p.request_id.as_bytes(), None);
        let written = self.client.write_all(&self.out).await;
        self.finish(p, error.status().as_u16(), error.body().len() as u64);
        if written.is_err() || close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// The proxy's own answer to a request it did not forward.
    async fn answer_error(&mut self, refusal: &Refusal, close: bool) {
        let error = refusal.error;
        let request_id = refusal.request_id.as_bytes();
        self.out.clear();
        head::write_error(
            &mut self.out,
            error,
            close,
            request_id,
            refusal.location.as_deref(),
        );
        let _ = self.client.write_all(&self.out).await;
        let (status, bytes) = (error.status().as_u16(), error.body().len() as u64);
        let access = refusal.access.as_ref();
        self.record(refusal.started, access, status, bytes, request_id);
    }

    /// The proxy's own `200` to an ACME HTTP-01 challenge.
    async fn answer_challenge(&mut self, reply: &ChallengeReply, close: bool) {
        let request_id = reply.request_id.as_bytes();
        self.out.clear();
        head::write_plain_ok(&mut self.out, &reply.key_authorization, close, request_id);
        let _ = self.client.write_all(&self.out).await;
        let bytes = reply.key_authorization.len() as u64;
        self.record(reply.started, reply.access.as_ref(), 200, bytes, request_id);
    }

    /// Closes a connection the proxy decided to end: the write side first
    /// (the client sees the end of our answer), then whatever the client
    /// still sends is read and dropped for a moment. Closing with unread
    /// bytes would make the kernel reset the connection, and a reset can
    /// destroy the answer before the client reads it.
    async fn linger(&mut self) {
        if self.client.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut drained = 0usize;
            while drained < LINGER_BYTES {
                self.inbuf.clear();
                self.inbuf.reserve(READ_CHUNK);
                match self.client.read_buf(&mut self.inbuf).await {
                    Ok(n) if n > 0 => drained += n,
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }
}

/// Waits for the final response head from `upstream` (relaying interim
/// 1xx answers to the client), parses it and writes the client's head into
/// `out`. While waiting, the client is watched: if it leaves, the exchange
/// is abandoned; pipelined bytes are kept in `inbuf`. `answered` is set
/// once an interim answer came.
#[allow(clippy::too_many_arguments)]
async fn wait_head<C: Socket, U: Socket>(
    upstream: &mut U,
    upbuf: &mut BytesMut,
    client: &mut C,
    inbuf: &mut BytesMut,
    max_header_size: usize,
    p: &Prepared,
    out: &mut Vec<u8>,
    stop: &Stop,
    answered: &mut bool,
) -> Result<ResponseHead, Failure> {
    loop {
        if !upbuf.is_empty() {
            match parse_response(upbuf, p, out, stop, true)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim(len) => {
                    *answered = true;
                    if !p.http10 && client.write_all(out).await.is_err() {
                        return Err(Failure::Client(ClientFault::Gone));
                    }
                    upbuf.advance(len);
                    continue;
                }
                Parsed::Partial if upbuf.len() >= max_header_size => {
                    return Err(UpstreamError::Protocol.into())
                }
                Parsed::Partial => upstream.quickack(),
            }
        }
        upbuf.reserve(READ_CHUNK);
        let watching = inbuf.len() < max_header_size;
        if watching {
            inbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            read = upstream.read_buf(upbuf) => {
                if read? == 0 {
                    return Err(UpstreamError::Closed.into());
                }
            }
            read = client.read_buf(inbuf), if watching => {
                if !matches!(read, Ok(n) if n > 0) {
                    return Err(Failure::Client(ClientFault::Gone));
                }
            }
        }
    }
}

/// The `Strict-Transport-Security` value for `--hsts SECONDS`.
pub fn hsts_value(max_age: u64) -> Vec<u8> {
    format!("max-age={max_age}").into_bytes()
}

enum Parsed {
    Final(ResponseHead),
    /// An interim answer of this many bytes; its rewritten head is in `out`.
    Interim(usize),
    Partial,
}

/// Parses a response head; a final one gets its client head written into
/// `out`, an interim one its rewritten self. `request_body_done`: the
/// request body was all sent (else the client connection closes after
/// this answer).
fn parse_response(
    upbuf: &[u8],
    p: &Prepared,
    out: &mut Vec<u8>,
    stop: &Stop,
    request_body_done: bool,
) -> Result<Parsed, UpstreamError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, upbuf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(UpstreamError::Protocol),
    };
    let facts = head::inspect_response(&resp, p.is_head).map_err(|_| UpstreamError::Protocol)?;
    out.clear();
    if (100..200).contains(&facts.status) && facts.status != 101 {
        head::write_interim_head(out, &resp);
        return Ok(Parsed::Interim(len));
    }
    let dechunk = p.http10 && facts.framing == Framing::Chunked;
    let close = !p.keep_alive
        || !request_body_done
        || facts.framing == Framing::UntilClose
        || dechunk
        || stop.is_stopping();
    let upgrade_agreed = facts.status == 101
        && p.upgrade
            .as_deref()
            .is_some_and(|wanted| head::upgrade_agreed(&resp, wanted));
    head::write_response_head(
        out,
        &resp,
        &facts,
        &Downstream {
            request_id: p.request_id.as_bytes(),
            close,
            http10: p.http10,
            hsts: p.hsts.as_deref(),
        },
    );
    Ok(Parsed::Final(ResponseHead {
        len,
        facts,
        close,
        dechunk,
        upgrade_agreed,
    }))
}

/// Both streams of an exchange whose request body is streamed.
struct Streams<'s, C, U> {
    upstream: Shared<'s, U>,
    client: Shared<'s, C>,
}

/// Streams the request body from the client to the backend while waiting
/// for the response head: a backend may answer (or ask for the body with
/// `100 Continue`) before the body is all sent. Ok carries whether the
/// body was all sent; if the answer came first, the rest is left unread
/// (and the client connection will close).
#[allow(clippy::too_many_arguments)]
async fn stream_body_and_wait<C: Socket, U: Socket>(
    streams: &Streams<'_, C, U>,
    inbuf: &mut BytesMut,
    upbuf: &mut BytesMut,
    out: &mut Vec<u8>,
    max_header_size: usize,
    p: &Prepared,
    body_started: &mut bool,
    stop: &Stop,
    answered: &mut bool,
    body_deadline: &mut Deadline,
    body_read_timeout: Duration,
) -> Result<(ResponseHead, bool), Failure> {
    // Read by the head parser: an answer that comes before the whole body
    // closes the client connection after it.
    let body_done = AtomicBool::new(false);
    let wait = wait_head_split(
        streams,
        upbuf,
        max_header_size,
        p,
        out,
        stop,
        &body_done,
        answered,
    );
    tokio::pin!(wait);
    // 1. The body goes up while the answer is awaited.
    {
        let mut upstream = &streams.upstream;
        let send = send_body(
            &streams.client,
            inbuf,
            &mut upstream,
            p.framing,
            body_started,
            body_deadline,
            body_read_timeout,
        );
        tokio::pin!(send);
        tokio::select! {
            biased;
            result = &mut send => match result {
                Ok(()) => body_done.store(true, Ordering::Relaxed),
                // The backend stopped reading; its answer may still come.
                Err(BodyError::Upstream(e)) => {
                    tracing::debug!(error = %e, "backend stopped reading the request body");
                }
                Err(BodyError::Client(e)) => {
                    let fault = match e.kind() {
                        io::ErrorKind::InvalidData => ClientFault::Malformed,
                        io::ErrorKind::TimedOut => ClientFault::TimedOut,
                        _ => ClientFault::Gone,
                    };
                    return Err(Failure::Client(fault));
                }
            },
            head = &mut wait => return answered_with(head, &body_done),
        }
    }
    // 2. The body is sent: the client is watched while the answer is
    //    awaited, as for a request without a body.
    let mut client = &streams.client;
    loop {
        let watching = inbuf.len() < max_header_size;
        inbuf.reserve(READ_CHUNK);
        tokio::select! {
            biased;
            head = &mut wait => return answered_with(head, &body_done),
            read = client.read_buf(inbuf), if watching => {
                if !matches!(read, Ok(n) if n > 0) {
                    return Err(Failure::Client(ClientFault::Gone));
                }
            }
        }
    }
}

fn answered_with(
    head: Result<ResponseHead, UpstreamError>,
    body_done: &AtomicBool,
) -> Result<(ResponseHead, bool), Failure> {
    head.map(|h| (h, body_done.load(Ordering::Relaxed)))
        .map_err(Failure::from)
}

/// Where a request body copy failed.
#[derive(Debug)]
enum BodyError {
    /// The client's side: gone, stalled (`TimedOut`), or malformed chunked
    /// framing (`InvalidData`).
    Client(io::Error),
    Upstream(io::Error),
}

/// Copies the request body (`framing`) from the client to the backend,
/// starting with what is already in `inbuf`. Chunks pass as they came, the
/// trailer section is checked and rewritten ([`ChunkedRelay`]).
async fn send_body<C: Socket, W: AsyncWrite + Unpin>(
    client: &Shared<'_, C>,
    inbuf: &mut BytesMut,
    upstream: &mut W,
    framing: Framing,
    started: &mut bool,
    deadline: &mut Deadline,
    limit: Duration,
) -> Result<(), BodyError> {
    match framing {
        Framing::Empty | Framing::UntilClose => Ok(()),
        Framing::Length(n) => {
            let mut left = n;
            loop {
                let take = (inbuf.len() as u64).min(left) as usize;
                if take > 0 {
                    *started = true;
                    upstream
                        .write_all(&inbuf[..take])
                        .await
                        .map_err(BodyError::Upstream)?;
                    inbuf.advance(take);
                    left -= take as u64;
                }
                if left == 0 {
                    return Ok(());
                }
                read_more(client, inbuf, deadline, limit).await?;
            }
        }
        Framing::Chunked => {
            let malformed = |e| BodyError::Client(io::Error::new(io::ErrorKind::InvalidData, e));
            let mut relay = ChunkedRelay::default();
            let mut end = Vec::new();
            loop {
                let fed = relay.feed(inbuf).map_err(malformed)?;
                if relay.is_done() {
                    relay.write_trailers(&mut end).map_err(malformed)?;
                }
                if fed.pass > 0 || !end.is_empty() {
                    *started = true;
                    write_all_two(upstream, &inbuf[..fed.pass], &end)
                        .await
                        .map_err(BodyError::Upstream)?;
                }
                inbuf.advance(fed.used);
                if relay.is_done() {
                    return Ok(());
                }
                read_more(client, inbuf, deadline, limit).await?;
            }
        }
    }
}

/// Reads more of a request body; the client must send something within
/// `limit` (`--body-read-timeout`).
async fn read_more<C: Socket>(
    client: &Shared<'_, C>,
    inbuf: &mut BytesMut,
    deadline: &mut Deadline,
    limit: Duration,
) -> Result<(), BodyError> {
    inbuf.reserve(BODY_CHUNK);
    client.quickack();
    let mut reader = client;
    match bounded(reader.read_buf(inbuf), deadline, limit).await {
        None => Err(BodyError::Client(io::ErrorKind::TimedOut.into())),
        Some(Ok(0)) => Err(BodyError::Client(io::ErrorKind::UnexpectedEof.into())),
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(BodyError::Client(e)),
    }
}

/// `wait_head` while the body goes up (the client is read by the body
/// copy, not watched).
#[allow(clippy::too_many_arguments)]
async fn wait_head_split<C: Socket, U: Socket>(
    streams: &Streams<'_, C, U>,
    upbuf: &mut BytesMut,
    max_header_size: usize,
    p: &Prepared,
    out: &mut Vec<u8>,
    stop: &Stop,
    body_done: &AtomicBool,
    answered: &mut bool,
) -> Result<ResponseHead, UpstreamError> {
    let (mut upstream, mut client) = (&streams.upstream, &streams.client);
    loop {
        if !upbuf.is_empty() {
            match parse_response(upbuf, p, out, stop, body_done.load(Ordering::Relaxed))? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim(len) => {
                    *answered = true;
                    if !p.http10 {
                        client.write_all(out).await?;
                    }
                    upbuf.advance(len);
                    continue;
                }
                Parsed::Partial if upbuf.len() >= max_header_size => {
                    return Err(UpstreamError::Protocol)
                }
                Parsed::Partial => upstream.quickack(),
            }
        }
        upbuf.reserve(READ_CHUNK);
        if upstream.read_buf(upbuf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// [`write_all_two`] to the client, failing when it cannot finish within
/// `idle` (a client that stopped reading).
async fn write_bounded<W: AsyncWrite + Unpin>(
    client: &mut W,
    deadline: &mut Deadline,
    idle: Duration,
    a: &[u8],
    b: &[u8],
) -> io::Result<()> {
    bounded(write_all_two(client, a, b), deadline, idle)
        .await
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            ))
        })
}

/// Writes `a` then `b` with as few syscalls as the stream allows.
async fn write_all_two<W: AsyncWrite + Unpin>(w: &mut W, a: &[u8], b: &[u8]) -> io::Result<()> {
    if b.is_empty() {
        return w.write_all(a).await;
    }
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = w
            .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    w.write_all(b).await
}
