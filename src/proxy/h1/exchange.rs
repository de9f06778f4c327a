//! One request forwarded: the attempts on the route's backends (the retry
//! and replay rules are [`policy`]'s), a body read whole when it may have to
//! be sent again, the exchange on one connection up to the answer head, and
//! the proxy's own answer when every attempt failed.

use super::head::{self, Framing};
use super::request::Prepared;
use super::response::{wait_head, ResponseHead};
use super::upload::{stream_body_and_wait, Streams};
use super::wait::write_all_two;
use super::{Conn, Dialer, Next, Socket};
use crate::proxy::io::Shared;
use crate::proxy::policy::{self, Failed, Reached};
use crate::proxy::upstream::UpstreamError;
use crate::proxy::ProxyError;
use crate::routes::{ms_at, Backend};
use bytes::{Buf, Bytes};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend exchange that did not produce a response head.
pub(super) enum Failure {
    /// How far the attempt got decides whether it may be replayed.
    Upstream(UpstreamError, Reached),
    /// No response head within the response header timeout.
    TimedOut,
    /// The client's side failed: the exchange is abandoned, the backend is
    /// not to blame.
    Client(ClientFault),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientFault {
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

/// How the request body reaches the backend.
pub(super) enum RequestBody<'b> {
    /// No body, or all of it in memory: can be sent again.
    Replay(&'b Bytes),
    /// Streamed from the client as the backend takes it.
    Stream,
}

impl<'a, C: Socket, D: Dialer> Conn<'a, C, D> {
    /// Forwards one request (retrying on another backend when the policy
    /// allows) and relays the answer.
    pub(super) async fn forward(&mut self, mut p: Prepared) -> Next<D::Stream> {
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
    pub(super) async fn read_whole_body(
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
    pub(super) async fn exchange(
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
    pub(super) async fn send(
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

    /// Answers an exchange that failed; the connection closes if some of the
    /// request body may still be unread.
    pub(super) async fn fail(
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
}
