//! The backend's answer: its head awaited (interim answers relayed), parsed
//! ([`head::inspect_response`]) and rewritten for the client, then its body
//! relayed by its framing, the backend connection going back to the pool
//! only at a clean message boundary.

use super::chunked::{ChunkedDecoder, ChunkedRelay, Segment};
use super::exchange::{ClientFault, Failure};
use super::head::{self, Downstream, Framing, ResponseFacts, MAX_HEADERS};
use super::request::Prepared;
use super::upload::Streams;
use super::wait::{bounded, write_bounded};
use super::{Conn, Dialer, Next, Socket, Stop, BODY_CHUNK, COALESCE_LIMIT, READ_CHUNK};
use crate::proxy::upstream::UpstreamError;
use crate::proxy::ProxyError;
use bytes::{Buf, BytesMut};
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A parsed response head, its downstream head already in `Conn::out`.
pub(super) struct ResponseHead {
    pub(super) len: usize,
    pub(super) facts: ResponseFacts,
    pub(super) close: bool,
    /// Relay a chunked body without its framing (HTTP/1.0 client).
    pub(super) dechunk: bool,
    /// Only for 101: the backend agreed to the requested protocol.
    pub(super) upgrade_agreed: bool,
}

/// A response relay that broke.
pub(super) struct Relayed {
    pub(super) error: io::Error,
    /// Bytes written to the client, head included.
    pub(super) wrote: u64,
    /// Of which body bytes.
    pub(super) body: u64,
}

/// Waits for the final response head from `upstream` (relaying interim
/// 1xx answers to the client), parses it and writes the client's head into
/// `out`. While waiting, the client is watched: if it leaves, the exchange
/// is abandoned; pipelined bytes are kept in `inbuf`. `answered` is set
/// once an interim answer came.
#[allow(clippy::too_many_arguments)]
pub(super) async fn wait_head<C: Socket, U: Socket>(
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

/// `wait_head` while the body goes up (the client is read by the body
/// copy, not watched).
#[allow(clippy::too_many_arguments)]
pub(super) async fn wait_head_split<C: Socket, U: Socket>(
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

pub(super) enum Parsed {
    Final(ResponseHead),
    /// An interim answer of this many bytes; its rewritten head is in `out`.
    Interim(usize),
    Partial,
}

/// Parses a response head; a final one gets its client head written into
/// `out`, an interim one its rewritten self. `request_body_done`: the
/// request body was all sent (else the client connection closes after
/// this answer).
pub(super) fn parse_response(
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

impl<'a, C: Socket, D: Dialer> Conn<'a, C, D> {
    /// Relays the response whose head `wait_head` parsed: the head (already
    /// rewritten into `out`), then the body as it arrives.
    pub(super) async fn relay(
        &mut self,
        mut upstream: D::Stream,
        response: ResponseHead,
        p: &Prepared,
        request_body_done: bool,
        backend: &crate::routes::BackendAddr,
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
    pub(super) async fn relay_body(
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
    pub(super) async fn relay_framed(
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
    pub(super) async fn read_upstream(&mut self, upstream: &mut D::Stream) -> io::Result<()> {
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
}
