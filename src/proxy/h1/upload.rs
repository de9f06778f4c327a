//! A streamed request body: copied from the client to the backend while the
//! answer head is awaited (a backend may answer, or ask with `100
//! Continue`, before the body is all sent), within `--body-read-timeout`
//! per read.

use super::chunked::ChunkedRelay;
use super::exchange::{ClientFault, Failure};
use super::head::Framing;
use super::request::Prepared;
use super::response::{wait_head_split, ResponseHead};
use super::wait::{bounded, write_all_two, Deadline};
use super::{Socket, Stop, BODY_CHUNK, READ_CHUNK};
use crate::proxy::io::Shared;
use crate::proxy::upstream::UpstreamError;
use bytes::{Buf, BytesMut};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Both streams of an exchange whose request body is streamed.
pub(super) struct Streams<'s, C, U> {
    pub(super) upstream: Shared<'s, U>,
    pub(super) client: Shared<'s, C>,
}

/// Streams the request body from the client to the backend while waiting
/// for the response head: a backend may answer (or ask for the body with
/// `100 Continue`) before the body is all sent. Ok carries whether the
/// body was all sent; if the answer came first, the rest is left unread
/// (and the client connection will close).
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_body_and_wait<C: Socket, U: Socket>(
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

pub(super) fn answered_with(
    head: Result<ResponseHead, UpstreamError>,
    body_done: &AtomicBool,
) -> Result<(ResponseHead, bool), Failure> {
    head.map(|h| (h, body_done.load(Ordering::Relaxed)))
        .map_err(Failure::from)
}

/// Where a request body copy failed.
#[derive(Debug)]
pub(super) enum BodyError {
    /// The client's side: gone, stalled (`TimedOut`), or malformed chunked
    /// framing (`InvalidData`).
    Client(io::Error),
    Upstream(io::Error),
}

/// Copies the request body (`framing`) from the client to the backend,
/// starting with what is already in `inbuf`. Chunks pass as they came, the
/// trailer section is checked and rewritten ([`ChunkedRelay`]).
pub(super) async fn send_body<C: Socket, W: AsyncWrite + Unpin>(
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
pub(super) async fn read_more<C: Socket>(
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
