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

use super::super::ProxyError;
use crate::routes::HostError;
use std::borrow::Cow;
use std::net::IpAddr;

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

/// The headers whose meaning the proxy acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
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

pub(crate) fn classify(name: &str) -> Name {
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
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// The tokens of every `Connection` header: `close`, `keep-alive`,
/// `upgrade` and the names of further hop-by-hop headers.
struct ConnectionTokens<'b> {
    tokens: Vec<&'b [u8]>,
}

impl<'b> ConnectionTokens<'b> {
    fn of(headers: &[httparse::Header<'b>]) -> Self {
        let mut tokens = Vec::new();
        for h in headers {
            if classify(h.name) == Name::Connection {
                tokens.extend(list(h.value));
            }
        }
        ConnectionTokens { tokens }
    }

    fn has(&self, token: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// A header named by `Connection` is hop-by-hop (RFC 9110 §7.6.1).
    fn names(&self, name: &str) -> bool {
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
fn content_length<'b>(values: impl Iterator<Item = &'b [u8]>) -> Result<Option<u64>, ()> {
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
fn is_token(value: &[u8]) -> bool {
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
fn request_coding(lines: usize, value: &[u8]) -> Result<Framing, ProxyError> {
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
fn response_chunked<'b>(values: impl Iterator<Item = &'b [u8]>) -> bool {
    let mut codings = values.flat_map(|v| v.split(|&b| b == b',').map(|t| t.trim_ascii()));
    codings
        .next()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// What the proxy needs to know of a request once its head is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts<'b> {
    /// The host to route by, normalised.
    pub host: Cow<'b, str>,
    /// The host as the backend will see it in `Host` and
    /// `X-Forwarded-Host`: the absolute-form authority, or the Host header
    /// as sent.
    pub original_host: &'b [u8],
    /// The target in origin form (`/path?query`) or `*`.
    pub path: &'b str,
    pub framing: Framing,
    /// The client may send another request on this connection.
    pub keep_alive: bool,
    pub http10: bool,
    pub is_head: bool,
    /// RFC 9110 §9.2.2, as [`http::Method::is_idempotent`] says.
    pub idempotent: bool,
    /// `Upgrade` protocol of an HTTP/1.1 upgrade request.
    pub upgrade: Option<&'b [u8]>,
    pub expect_continue: bool,
    /// The client's `X-Request-Id`, passed through.
    pub request_id: Option<&'b [u8]>,
    pub user_agent: Option<&'b [u8]>,
}

/// Reads a parsed request head. `ProxyError` answers say what the client
/// gets: 400 for framing, host and target problems, 501 for a transfer
/// coding other than chunked, 405 for CONNECT.
pub fn inspect_request<'b>(
    req: &httparse::Request<'_, 'b>,
) -> Result<RequestFacts<'b>, ProxyError> {
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);
    if method == "CONNECT" {
        return Err(ProxyError::ConnectRefused);
    }
    let headers: &[httparse::Header<'b>] = req.headers;
    let connection = ConnectionTokens::of(headers);

    let mut host_header: Option<&'b [u8]> = None;
    let mut hosts = 0;
    let mut has_length = false;
    let mut codings = 0;
    let mut coding: &[u8] = b"";
    let mut upgrade = None;
    let mut expect_continue = false;
    let mut request_id = None;
    let mut user_agent = None;
    for h in headers {
        match classify(h.name) {
            Name::Host => {
                hosts += 1;
                host_header = Some(h.value);
            }
            Name::ContentLength => has_length = true,
            Name::TransferEncoding => {
                codings += 1;
                coding = h.value;
            }
            Name::Upgrade => upgrade = Some(h.value),
            Name::Expect => expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue"),
            Name::XRequestId => request_id = Some(h.value),
            Name::UserAgent => user_agent = Some(h.value),
            _ => {}
        }
    }

    // Framing (RFC 9112 §6.3): Content-Length with Transfer-Encoding, or
    // Transfer-Encoding in HTTP/1.0, are smuggling shapes: refused, never
    // guessed at.
    let framing = if codings > 0 {
        if has_length || http10 {
            return Err(ProxyError::BadFraming);
        }
        request_coding(codings, coding)?
    } else {
        let lengths = headers
            .iter()
            .filter(|h| classify(h.name) == Name::ContentLength)
            .map(|h| h.value);
        match content_length(lengths) {
            Err(()) => return Err(ProxyError::BadFraming),
            Ok(None) | Ok(Some(0)) => Framing::Empty,
            Ok(Some(n)) => Framing::Length(n),
        }
    };

    // Host (RFC 9112 §3.2): an HTTP/1.1 request has exactly one valid Host
    // header, an HTTP/1.0 one at most one, whatever the target's form. An
    // absolute-form target's authority then decides the route and replaces
    // the Host header (RFC 9112 §3.2.2), so the backend is never told
    // another host than the one its route was chosen for.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(ProxyError::BadHost);
    }
    let header_host = match host_header {
        Some(raw) => Some((checked_authority(raw)?, raw)),
        None => None,
    };
    if target.contains('#') {
        // A fragment is never sent (RFC 9112 §3.2); one here is an attempt
        // to make two parsers disagree on the authority.
        return Err(ProxyError::BadRequest);
    }
    let (host, original_host, path) =
        if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
            let (host, raw) = header_host.ok_or(ProxyError::BadHost)?;
            (host, raw, target)
        } else {
            absolute_form(target)?
        };

    let upgrade = upgrade.filter(|_| !http10 && connection.has("upgrade"));
    let keep_alive = if http10 {
        connection.has("keep-alive")
    } else {
        !connection.has("close")
    };
    Ok(RequestFacts {
        host,
        original_host,
        path,
        framing,
        keep_alive,
        http10,
        is_head: method == "HEAD",
        idempotent: crate::proxy::policy::is_idempotent(method),
        upgrade,
        expect_continue,
        request_id,
        user_agent,
    })
}

/// [`checked_authority`](crate::proxy::headers::checked_authority) over
/// header bytes: `400` when it is not a valid authority.
fn checked_authority(raw: &[u8]) -> Result<Cow<'_, str>, ProxyError> {
    let text = std::str::from_utf8(raw).map_err(|_| ProxyError::BadHost)?;
    crate::proxy::headers::checked_authority(text).map_err(|_: HostError| ProxyError::BadHost)
}

/// `http[s]://host[:port][/path?query]`: (routing host, the authority,
/// origin-form path). Userinfo is refused (it is no part of a Host header,
/// and a lax parser takes the text after `@` for the host).
fn absolute_form(target: &str) -> Result<(Cow<'_, str>, &[u8], &str), ProxyError> {
    let (scheme, rest) = target.split_once("://").ok_or(ProxyError::BadRequest)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(ProxyError::BadRequest);
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(ProxyError::BadHost);
    }
    let path = if path.is_empty() {
        "/"
    } else if path.starts_with('?') {
        // `http://host?q`: origin form spells the empty path `/`, which
        // cannot be borrowed from the target; refuse this rare shape rather
        // than drop the query.
        return Err(ProxyError::BadRequest);
    } else {
        path
    };
    Ok((
        checked_authority(authority.as_bytes())?,
        authority.as_bytes(),
        path,
    ))
}

/// What the proxy adds to the request head it sends upstream.
pub struct Forwarding<'a> {
    /// The client's address as text (`X-Forwarded-For`).
    pub client: &'a [u8],
    /// How the client reached the proxy, `http` or `https`
    /// (`X-Forwarded-Proto`).
    pub proto: &'a [u8],
    /// The client is a proxy of ours (`--trusted-proxies`): its
    /// `X-Forwarded-For` is appended to and its `X-Forwarded-Proto`,
    /// `X-Real-IP` and `Forwarded` kept. From anyone else they are
    /// replaced (`X-Forwarded-For`: the client alone) or removed.
    pub trusted: bool,
    pub request_id: &'a [u8],
    /// Leave `Expect` out: the proxy answered `100 Continue` itself and
    /// has the body already.
    pub drop_expect: bool,
}

/// Writes the head of the request to the backend into `out`: the client's
/// headers in their order and spelling minus hop-by-hop ones, then `Host`,
/// the forwarding headers and the request id; framing headers as needed.
pub fn write_request_head(
    out: &mut Vec<u8>,
    req: &httparse::Request<'_, '_>,
    facts: &RequestFacts<'_>,
    fwd: &Forwarding<'_>,
) {
    let headers: &[httparse::Header<'_>] = req.headers;
    let connection = ConnectionTokens::of(headers);
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(facts.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut te_trailers = false;
    let mut prior_xff = false;
    let mut prior_proto: Option<&[u8]> = None;
    for h in headers {
        match classify(h.name) {
            Name::Other | Name::UserAgent => {
                if connection.names(h.name) {
                    continue;
                }
                if h.name.contains('_') {
                    // Some frameworks read `X_Forwarded_For` as
                    // `X-Forwarded-For` (CGI-style names merge both): a
                    // client could forge what the proxy vouches for.
                    tracing::debug!(name = h.name, "dropped a header name with an underscore");
                    continue;
                }
                put_header(out, h.name.as_bytes(), h.value);
            }
            Name::Expect if !fwd.drop_expect => put_header(out, h.name.as_bytes(), h.value),
            Name::Te => te_trailers |= list(h.value).any(|t| t.eq_ignore_ascii_case(b"trailers")),
            Name::XForwardedFor => prior_xff = true,
            Name::XForwardedProto if fwd.trusted => {
                prior_proto = prior_proto.or(Some(h.value));
            }
            Name::XRealIp | Name::Forwarded if fwd.trusted => {
                put_header(out, h.name.as_bytes(), h.value)
            }
            _ => {}
        }
    }
    put_header(out, b"Host", facts.original_host);
    // X-Forwarded-For: a trusted proxy's values, in order, then the client.
    out.extend_from_slice(b"X-Forwarded-For: ");
    if prior_xff && fwd.trusted {
        for h in headers
            .iter()
            .filter(|h| classify(h.name) == Name::XForwardedFor)
        {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(fwd.client);
    out.extend_from_slice(b"\r\n");
    put_header(out, b"X-Forwarded-Proto", prior_proto.unwrap_or(fwd.proto));
    put_header(out, b"X-Forwarded-Host", facts.original_host);
    put_header(out, b"X-Request-Id", fwd.request_id);
    match facts.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    if te_trailers {
        out.extend_from_slice(b"TE: trailers\r\n");
    }
    if let Some(protocol) = facts.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        put_header(out, b"Upgrade", protocol);
    }
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the proxy needs to know of a backend's response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFacts {
    pub status: u16,
    pub framing: Framing,
    /// The backend connection may carry another request after this
    /// response.
    pub reusable: bool,
    /// The `Content-Length` the client is told, written by the proxy (never
    /// copied): the body's length, or on a HEAD or 304 answer the length
    /// the backend declared for the resource.
    pub length_header: Option<u64>,
}

/// Reads a parsed response head; `request_is_head` because a response to
/// HEAD has no body whatever its headers say. A status outside 100–999, an
/// unreadable length or a transfer coding other than `chunked` is an error
/// (`502`): the proxy cannot tell, or cannot tell the client, where the
/// message ends.
pub fn inspect_response(
    resp: &httparse::Response<'_, '_>,
    request_is_head: bool,
) -> Result<ResponseFacts, HeadError> {
    let status = resp.code.unwrap_or(0);
    if !(100..=999).contains(&status) {
        return Err(HeadError::Malformed);
    }
    let headers: &[httparse::Header<'_>] = resp.headers;
    let connection = ConnectionTokens::of(headers);
    let values = |name| {
        headers
            .iter()
            .filter(move |h| classify(h.name) == name)
            .map(|h| h.value)
    };
    let has_te = values(Name::TransferEncoding).next().is_some();
    let length = content_length(values(Name::ContentLength)).map_err(|()| HeadError::Framing)?;
    let bodiless =
        request_is_head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::Empty
    } else if has_te {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length.
        if !response_chunked(values(Name::TransferEncoding)) {
            return Err(HeadError::Framing);
        }
        Framing::Chunked
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = if resp.version == Some(0) {
        connection.has("keep-alive")
    } else {
        !connection.has("close")
    };
    // Never reused: a connection whose response had both framings (RFC
    // 9112 §6.3 says close it), or that announced a body where none may
    // follow (a sloppy backend may send it anyway, later, and it would
    // become the next client's answer).
    let announced_body = has_te || length.is_some_and(|n| n > 0);
    let reusable = keep_alive
        && framing != Framing::UntilClose
        && !(has_te && length.is_some())
        && !(bodiless && announced_body);
    let length_header = match framing {
        Framing::Length(n) => Some(n),
        Framing::Empty if request_is_head || status == 304 => length.filter(|_| !has_te),
        _ => None,
    };
    Ok(ResponseFacts {
        status,
        framing,
        reusable,
        length_header,
    })
}

/// How the client connection continues after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downstream<'a> {
    pub request_id: &'a [u8],
    /// The proxy closes the client connection after this response.
    pub close: bool,
    /// An HTTP/1.0 client: chunked bodies are sent unchunked (and the
    /// connection closed), keep-alive is said explicitly.
    pub http10: bool,
    /// The `Strict-Transport-Security` value (`--hsts`, TLS connections).
    pub hsts: Option<&'a [u8]>,
}

/// Writes the head of the response to the client: status line, the
/// backend's headers minus hop-by-hop and framing ones, the request id, the
/// framing and `Connection` as this connection needs them. A 101 keeps its
/// `Upgrade` and says `Connection: upgrade`.
pub fn write_response_head(
    out: &mut Vec<u8>,
    resp: &httparse::Response<'_, '_>,
    facts: &ResponseFacts,
    down: &Downstream<'_>,
) {
    let headers: &[httparse::Header<'_>] = resp.headers;
    write_status_line(out, facts.status, resp.reason.unwrap_or(""));
    write_end_to_end(out, headers);
    put_header(out, b"X-Request-Id", down.request_id);
    // A backend's own policy is kept: the flag is the default.
    let backend_hsts = || {
        headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("strict-transport-security"))
    };
    if let Some(hsts) = down.hsts.filter(|_| !backend_hsts()) {
        put_header(out, b"Strict-Transport-Security", hsts);
    }
    if let Some(n) = facts.length_header {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if facts.framing == Framing::Chunked && !down.http10 {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if facts.status == 101 {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        if let Some(h) = headers.iter().find(|h| classify(h.name) == Name::Upgrade) {
            put_header(out, b"Upgrade", h.value);
        }
    } else if down.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if down.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an interim (1xx) answer for the client: parsed, stripped of
/// hop-by-hop and framing headers and written again with CRLF line ends,
/// never relayed byte for byte.
pub fn write_interim_head(out: &mut Vec<u8>, resp: &httparse::Response<'_, '_>) {
    write_status_line(out, resp.code.unwrap_or(100), resp.reason.unwrap_or(""));
    write_end_to_end(out, resp.headers);
    out.extend_from_slice(b"\r\n");
}

/// A response's end-to-end headers, in order: all but hop-by-hop ones
/// (those `Connection` names included), the request id and framing ones,
/// which the proxy writes itself. Both protocols relay these.
pub fn end_to_end<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
) -> impl Iterator<Item = &'h httparse::Header<'b>> {
    let connection = ConnectionTokens::of(headers);
    headers.iter().filter(move |h| match classify(h.name) {
        Name::Other => !connection.names(h.name),
        Name::Host
        | Name::Expect
        | Name::XForwardedFor
        | Name::XForwardedHost
        | Name::XForwardedProto
        | Name::XRealIp
        | Name::Forwarded
        | Name::UserAgent => true,
        _ => false,
    })
}

fn write_end_to_end(out: &mut Vec<u8>, headers: &[httparse::Header<'_>]) {
    for h in end_to_end(headers) {
        put_header(out, h.name.as_bytes(), h.value);
    }
}

fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether a 101 answer agrees to the protocol the client asked for.
pub fn upgrade_agreed(resp: &httparse::Response<'_, '_>, requested: &[u8]) -> bool {
    resp.headers
        .iter()
        .find(|h| classify(h.name) == Name::Upgrade)
        .is_some_and(|h| {
            h.value
                .trim_ascii()
                .eq_ignore_ascii_case(requested.trim_ascii())
        })
}

/// The proxy's own short answer (errors, 404, 503), with the request's id.
pub fn write_error(
    out: &mut Vec<u8>,
    error: ProxyError,
    close: bool,
    request_id: &[u8],
    location: Option<&[u8]>,
) {
    let status = error.status();
    let body = error.body();
    write_status_line(
        out,
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
    );
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    put_header(out, b"X-Request-Id", request_id);
    if error == ProxyError::NotReady {
        out.extend_from_slice(b"Retry-After: 1\r\n");
    }
    if let Some(location) = location {
        put_header(out, b"Location", location);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// A `200` of the proxy's own with a plain-text body (an ACME HTTP-01
/// key authorization).
pub fn write_plain_ok(out: &mut Vec<u8>, body: &[u8], close: bool, request_id: &[u8]) {
    write_status_line(out, 200, "OK");
    out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    put_header(out, b"X-Request-Id", request_id);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The client address as `X-Forwarded-For` spells it.
pub fn client_text(ip: IpAddr) -> Vec<u8> {
    crate::proxy::headers::client_ip(ip)
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'h, 'b>(
        raw: &'b [u8],
        headers: &'h mut [httparse::Header<'b>],
    ) -> httparse::Request<'h, 'b> {
        let mut req = httparse::Request::new(headers);
        assert!(req.parse(raw).unwrap().is_complete());
        req
    }

    fn facts(raw: &[u8]) -> Result<RequestFacts<'_>, ProxyError> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let req = parse(raw, &mut headers);
        inspect_request(&req)
    }

    fn forwarded(raw: &[u8]) -> String {
        forwarded_by(raw, true)
    }

    fn forwarded_by(raw: &[u8], trusted: bool) -> String {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let req = parse(raw, &mut headers);
        let f = inspect_request(&req).unwrap();
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &req,
            &f,
            &Forwarding {
                client: b"10.0.0.1",
                proto: b"http",
                trusted,
                request_id: f.request_id.unwrap_or(b"rid"),
                drop_expect: false,
            },
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn framing_follows_rfc_9112_and_refuses_smuggling_shapes() {
        let f = |raw: &str| facts(raw.as_bytes()).map(|f| f.framing);
        assert_eq!(f("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(Framing::Empty));
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740991\r\n\r\n"),
            Ok(Framing::Length(MAX_BODY_LENGTH))
        );
        for unknown in ["gzip", "identity", "x-custom"] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {unknown}\r\n\r\n");
            assert_eq!(f(&raw), Err(ProxyError::UnsupportedCoding), "{unknown}");
        }
        for bad in [
            // Issue 25, bug 2: every list shape and repeated line.
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            // Issue 25, bug 10: lengths past what backends read exactly.
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740992\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(f(bad), Err(ProxyError::BadFraming), "{bad:?}");
        }
    }

    #[test]
    fn host_comes_from_the_absolute_target_then_the_single_host_header() {
        let host = |raw: &str| {
            facts(raw.as_bytes()).map(|f| {
                (
                    f.host.into_owned(),
                    String::from_utf8_lossy(f.original_host).into_owned(),
                    f.path.to_owned(),
                )
            })
        };
        assert_eq!(
            host("GET /x HTTP/1.1\r\nHost: App.Cloud.com:8080\r\n\r\n"),
            Ok((
                "app.cloud.com".into(),
                "App.Cloud.com:8080".into(),
                "/x".into()
            ))
        );
        assert_eq!(
            host("GET http://b.cloud.com:81/p?q=1 HTTP/1.1\r\nHost: a.cloud.com\r\n\r\n"),
            Ok((
                "b.cloud.com".into(),
                "b.cloud.com:81".into(),
                "/p?q=1".into()
            ))
        );
        assert_eq!(
            host("GET HTTP://b.cloud.com HTTP/1.1\r\nHost: b.cloud.com\r\n\r\n").map(|h| h.2),
            Ok("/".into())
        );
        assert_eq!(
            host("GET http://b.cloud.com/ HTTP/1.0\r\n\r\n").map(|h| h.0),
            Ok("b.cloud.com".into()),
            "HTTP/1.0 needs no Host"
        );
        assert_eq!(
            host("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").map(|h| h.2),
            Ok("*".into())
        );
        // Issue 25, bug 9: whatever the target's form, Host must be there
        // once and valid; userinfo, signed ports and fragments are refused.
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: \r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:port\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:+80\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://app.test/x HTTP/1.1\r\n\r\n",
            "GET http://app.test/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET http://app.test/x HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET http://user:pw@app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
            "GET http://app.test:+80/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        ] {
            assert_eq!(host(bad), Err(ProxyError::BadHost), "{bad:?}");
        }
        for bad in [
            "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://other.test#@app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
            "GET /x#frag HTTP/1.1\r\nHost: app.test\r\n\r\n",
            "GET ftp://app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        ] {
            assert_eq!(host(bad), Err(ProxyError::BadRequest), "{bad:?}");
        }
        assert_eq!(
            facts(b"CONNECT a:80 HTTP/1.1\r\nHost: a:80\r\n\r\n"),
            Err(ProxyError::ConnectRefused)
        );
    }

    #[test]
    fn keep_alive_upgrade_and_method_facts() {
        let f = facts(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!f.keep_alive && f.idempotent && !f.is_head);
        let f = facts(b"HEAD / HTTP/1.0\r\nHost: a\r\n\r\n").unwrap();
        assert!(!f.keep_alive && f.http10 && f.is_head);
        let f = facts(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(f.keep_alive);
        let f = facts(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert_eq!(f.upgrade, Some(&b"websocket"[..]));
        let f = facts(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert_eq!(f.upgrade, None, "Upgrade without Connection: upgrade");
        let f = facts(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert!(!f.idempotent);
    }

    #[test]
    fn request_head_keeps_end_to_end_headers_and_adds_forwarding_ones() {
        let out = forwarded(
            b"GET /p?q=1 HTTP/1.1\r\nHost: hdr.test\r\nX-Forwarded-For: 203.0.113.7\r\n\
              Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\n\
              Proxy-Authorization: Basic x\r\nTE: trailers, gzip\r\nX-Kept: 1\r\nX-Forwarded-Proto: https\r\n\r\n",
        );
        assert_eq!(
            out,
            "GET /p?q=1 HTTP/1.1\r\nX-Kept: 1\r\nHost: hdr.test\r\n\
             X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: hdr.test\r\nX-Request-Id: rid\r\nTE: trailers\r\n\r\n"
        );
        let out = forwarded(b"POST http://a.test/x HTTP/1.1\r\nHost: b\r\nX-Request-Id: mine\r\nContent-Length: 3, 3\r\n\r\n");
        assert!(
            out.starts_with("POST /x HTTP/1.1\r\nHost: a.test\r\n"),
            "{out}"
        );
        assert!(
            out.contains("X-Request-Id: mine\r\nContent-Length: 3\r\n\r\n"),
            "{out}"
        );
        // From anyone but a trusted proxy, forwarding headers are the
        // proxy's alone.
        let out = forwarded_by(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
              X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil\r\n\r\n",
            false,
        );
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: a\r\nX-Request-Id: rid\r\n\r\n"
        );
        let out = forwarded(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
              X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n",
        );
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nHost: a\r\n\
             X-Forwarded-For: 6.6.6.6, 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\n\
             X-Request-Id: rid\r\n\r\n"
        );
        let out = forwarded(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"), "{out}");
        assert!(
            out.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "{out}"
        );
        let out = forwarded(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED \r\n\r\n");
        assert!(out.ends_with("Transfer-Encoding: chunked\r\n\r\n"), "{out}");
        // Issue 25, bug 6: names with `_` never reach the backend.
        let out = forwarded(b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_Host: evil\r\nX_Forwarded_Proto: https\r\nX-Ok: 1\r\n\r\n");
        assert!(!out.contains('_'), "{out}");
        assert!(out.contains("X-Ok: 1\r\n"), "{out}");
    }

    fn response(raw: &[u8], head: bool) -> (Result<ResponseFacts, HeadError>, String) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(raw).unwrap().is_complete());
        let facts = inspect_response(&resp, head);
        let mut out = Vec::new();
        if let Ok(f) = &facts {
            write_response_head(
                &mut out,
                &resp,
                f,
                &Downstream {
                    request_id: b"rid",
                    close: false,
                    http10: false,
                    hsts: None,
                },
            );
        }
        (facts, String::from_utf8(out).unwrap())
    }

    #[test]
    fn response_framing_and_reuse() {
        let framing = |raw: &str, head| {
            response(raw.as_bytes(), head)
                .0
                .map(|f| (f.framing, f.reusable))
        };
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", false),
            Ok((Framing::Length(2), true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n", false),
            Ok((Framing::Length(2), true))
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", false),
            Ok((Framing::UntilClose, false))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
                false
            ),
            Ok((Framing::Length(2), false))
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false),
            Ok((Framing::Length(2), false))
        );
        // Issue 25, bug 3: Transfer-Encoding overrides Content-Length (and
        // that connection is closed after); a coding other than chunked
        // alone, or a length the proxy cannot agree on, is refused.
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, false))
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n",
        ] {
            assert_eq!(framing(bad, false), Err(HeadError::Framing), "{bad:?}");
        }
        // Issue 25, bug 8: a status outside 100-999.
        for bad in ["HTTP/1.1 099 Low\r\n\r\n", "HTTP/1.1 000 Zero\r\n\r\n"] {
            assert_eq!(framing(bad, false), Err(HeadError::Malformed), "{bad:?}");
        }
        // Issue 25, bug 12: a body announced where none may follow: the
        // answer is relayed without one, the connection never reused.
        for (raw, head) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
            ),
        ] {
            assert_eq!(framing(raw, head), Ok((Framing::Empty, false)), "{raw:?}");
        }
    }

    #[test]
    fn response_head_writes_its_own_framing_headers() {
        let (_, out) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nContent-Length: 5\r\n\r\n"
        );
        let (_, out) = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: Chunked\r\n\r\n",
            false,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let (_, out) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true);
        assert!(
            out.contains("Content-Length: 7\r\n"),
            "HEAD keeps the resource's length: {out}"
        );
        let (_, out) = response(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
            false,
        );
        assert!(!out.contains("Content-Length"), "{out}");
        let (_, out) = response(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Hop\r\nX-Hop: 1\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: k\r\n\r\n",
            false,
        );
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: k\r\nX-Request-Id: rid\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn interim_answers_are_rewritten_with_crlf_and_without_hop_by_hop_headers() {
        // Issue 25, bug 7: bare LF and hop-by-hop headers in a 1xx.
        let raw = b"HTTP/1.1 103 Early Hints\nLink: </s.css>; rel=preload\nConnection: X-Hop\nX-Hop: 1\nKeep-Alive: 5\n\n";
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(raw).unwrap().is_complete());
        let mut out = Vec::new();
        write_interim_head(&mut out, &resp);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        );
    }

    #[test]
    fn error_answers_are_short_plain_text() {
        let mut out = Vec::new();
        write_error(&mut out, ProxyError::NotReady, false, b"rid", None);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain"),
            "{text}"
        );
        assert!(text.contains("Retry-After: 1\r\n"));
        let body = ProxyError::NotReady.body();
        assert!(
            text.ends_with(&format!(
                "Content-Length: {}\r\nX-Request-Id: rid\r\nRetry-After: 1\r\n\r\n{body}",
                body.len()
            )),
            "{text}"
        );
    }

    #[test]
    fn client_text_unmaps_ipv4_mapped_addresses() {
        assert_eq!(client_text("::ffff:10.1.2.3".parse().unwrap()), b"10.1.2.3");
        assert_eq!(client_text("::1".parse().unwrap()), b"::1");
    }
}
