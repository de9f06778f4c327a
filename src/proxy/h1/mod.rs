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

//! The driver in parts, one concept each: this module owns the connection
//! (its state, the request loop, closing); `request` reads and routes a
//! head, `exchange` forwards it to a backend, `upload` streams a body up
//! while the answer is awaited, `response` relays the answer, `wait`
//! holds the deadlines; [`head`] and [`chunked`] are the pure rules.

pub mod chunked;
mod exchange;
pub mod head;
mod request;
mod response;
#[cfg(test)]
mod tests;
mod upload;
mod wait;

use super::io::{Dialer, Socket};
use super::policy::Access;
use super::{ConnInfo, Proxy, ProxyError};
use bytes::{Buf, BytesMut};
use request::{ChallengeReply, Prepared, Refusal, Step};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wait::Deadline;

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

/// What the connection does after an exchange.
enum Next<U> {
    KeepAlive,
    Close,
    /// A 101 was relayed: the two streams become a tunnel.
    Tunnel(U),
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

/// The `Strict-Transport-Security` value for `--hsts SECONDS`.
pub fn hsts_value(max_age: u64) -> Vec<u8> {
    format!("max-age={max_age}").into_bytes()
}
