//! The header fields a head's meaning comes from: which names the proxy
//! acts on ([`classify`]), list values and `Connection` tokens, and the body
//! framing that `Content-Length` and `Transfer-Encoding` give, refused where
//! a backend could read it differently.

use super::Framing;
use crate::proxy::ProxyError;

/// The headers whose meaning the proxy acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Te,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRealIp,
    Forwarded,
    XRequestId,
    UserAgent,
    /// Hop-by-hop and dropped: Keep-Alive, Proxy-Connection,
    /// Proxy-Authenticate, Proxy-Authorization, Trailer.
    OtherHop,
    Other,
}

pub(super) fn classify(name: &str) -> Name {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 if is("te") => Name::Te,
        4 if is("host") => Name::Host,
        6 if is("expect") => Name::Expect,
        7 if is("upgrade") => Name::Upgrade,
        9 if is("x-real-ip") => Name::XRealIp,
        9 if is("forwarded") => Name::Forwarded,
        7 if is("trailer") => Name::OtherHop,
        10 if is("connection") => Name::Connection,
        10 if is("keep-alive") => Name::OtherHop,
        10 if is("user-agent") => Name::UserAgent,
        12 if is("x-request-id") => Name::XRequestId,
        14 if is("content-length") => Name::ContentLength,
        15 if is("x-forwarded-for") => Name::XForwardedFor,
        16 if is("x-forwarded-host") => Name::XForwardedHost,
        16 if is("proxy-connection") => Name::OtherHop,
        17 if is("transfer-encoding") => Name::TransferEncoding,
        17 if is("x-forwarded-proto") => Name::XForwardedProto,
        18 if is("proxy-authenticate") => Name::OtherHop,
        19 if is("proxy-authorization") => Name::OtherHop,
        _ => Name::Other,
    }
}

/// Comma-separated list elements, trimmed, empty ones skipped.
pub(super) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// The tokens of every `Connection` header: `close`, `keep-alive`,
/// `upgrade` and the names of further hop-by-hop headers.
pub(super) struct ConnectionTokens<'b> {
    tokens: Vec<&'b [u8]>,
}

impl<'b> ConnectionTokens<'b> {
    pub(super) fn of(headers: &[httparse::Header<'b>]) -> Self {
        let mut tokens = Vec::new();
        for h in headers {
            if classify(h.name) == Name::Connection {
                tokens.extend(list(h.value));
            }
        }
        ConnectionTokens { tokens }
    }

    pub(super) fn has(&self, token: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// A header named by `Connection` is hop-by-hop (RFC 9110 §7.6.1).
    pub(super) fn names(&self, name: &str) -> bool {
        !self.tokens.is_empty()
            && self
                .tokens
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The largest body length accepted in a `Content-Length` or a chunk size:
/// 2^53 − 1 (8 PiB), the largest integer every common backend runtime reads
/// exactly (JavaScript's `Number.MAX_SAFE_INTEGER`). A larger value could
/// be read differently by a backend, so it is refused, never forwarded.
pub const MAX_BODY_LENGTH: u64 = (1 << 53) - 1;

/// One agreed Content-Length out of every value of every header: all must
/// be the same decimal number, at most [`MAX_BODY_LENGTH`].
pub(super) fn content_length<'b>(
    values: impl Iterator<Item = &'b [u8]>,
) -> Result<Option<u64>, ()> {
    let mut agreed = None;
    for value in values {
        for element in value.split(|&b| b == b',').map(|t| t.trim_ascii()) {
            if element.is_empty() || element.len() > 16 || !element.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n = element
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if n > MAX_BODY_LENGTH || agreed.is_some_and(|a| a != n) {
                return Err(());
            }
            agreed = Some(n);
        }
    }
    Ok(agreed)
}

/// A token (RFC 9110 §5.6.2): what a transfer coding's name must be.
pub(super) fn is_token(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The framing a request's `Transfer-Encoding` lines ask for. The rule is
/// stricter than RFC 9112 allows, on purpose: exactly one line whose value
/// is `chunked` (any case). Lists (`gzip, chunked`, `chunked, chunked`,
/// `,chunked`) and repeated lines are `400`, a single other coding `501`:
/// every shape a backend might read differently is refused, and the proxy
/// writes its own `Transfer-Encoding: chunked`, never the client's.
pub(super) fn request_coding(lines: usize, value: &[u8]) -> Result<Framing, ProxyError> {
    let value = value.trim_ascii();
    if lines != 1 {
        Err(ProxyError::BadFraming)
    } else if value.eq_ignore_ascii_case(b"chunked") {
        Ok(Framing::Chunked)
    } else if is_token(value) {
        Err(ProxyError::UnsupportedCoding)
    } else {
        Err(ProxyError::BadFraming)
    }
}

/// True when a response's `Transfer-Encoding` lines name exactly one
/// coding, `chunked`. Anything else (`gzip`, `chunked, gzip`, `gzip,
/// chunked`) the proxy cannot relay without leaving the client to decode a
/// coding it never asked for, so such answers are refused (`502`).
pub(super) fn response_chunked<'b>(values: impl Iterator<Item = &'b [u8]>) -> bool {
    let mut codings = values.flat_map(|v| v.split(|&b| b == b',').map(|t| t.trim_ascii()));
    codings
        .next()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}
