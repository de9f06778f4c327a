//! HTTP/1.x message heads: what the proxy reads out of a request or
//! response head (host, body framing, keep-alive, upgrade) and the head it
//! writes in its place. httparse does the parsing; everything here is a
//! pure function over the parsed head, tested beside it.
//!
//! Heads are rewritten, never re-parsed into maps: the headers a client
//! sent go to the backend in their order and spelling, minus the hop-by-hop
//! ones (RFC 9110 §7.6.1 and those `Connection` names), plus the forwarding
//! headers. The rules are the same as the HTTP/2 path's
//! ([`crate::proxy::headers`]).
//!
//! In parts: `fields` (the header fields acted on, and the framing they
//! give), `request` and `response` (each head's facts and the head
//! written in its place), `answer` (the proxy's own answers); this module
//! holds what they share.

mod answer;
mod fields;
mod request;
mod response;

pub use answer::{write_error, write_plain_ok};
pub use fields::MAX_BODY_LENGTH;
pub use request::{client_text, inspect_request, write_request_head, Forwarding, RequestFacts};
pub use response::{
    end_to_end, inspect_response, upgrade_agreed, write_interim_head, write_response_head,
    Downstream, ResponseFacts,
};

/// Header slots per head; more headers than this is a 431.
pub const MAX_HEADERS: usize = 128;

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Response only: the body runs until the backend closes.
    UntilClose,
}

/// Why a head cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400: a malformed head.
    Malformed,
    /// 431: too many headers (the byte limit is the caller's).
    TooLarge,
    /// 505: neither HTTP/1.0 nor HTTP/1.1.
    Version,
    /// 400: ambiguous body framing (request smuggling).
    Framing,
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooLarge,
            httparse::Error::Version => HeadError::Version,
            _ => HeadError::Malformed,
        }
    }
}

/// One header line.
pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The framing line of a request body forwarded upstream: the proxy's own
/// `Content-Length` or `Transfer-Encoding: chunked`, never the client's
/// (the same for both client protocols).
pub(crate) fn put_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
}

/// `HTTP/1.1 STATUS REASON` and its line end.
fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}
