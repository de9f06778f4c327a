//! A request head: the facts read from it ([`inspect_request`]: host,
//! framing, keep-alive, upgrade) and the backend's head written in its
//! place ([`write_request_head`]: the client's end-to-end headers plus the
//! forwarding ones).

use super::fields::{classify, content_length, list, request_coding, ConnectionTokens, Name};
use super::{put_framing, put_header, Framing};
use crate::proxy::ProxyError;
use crate::routes::HostError;
use std::borrow::Cow;
use std::net::IpAddr;

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
    put_framing(out, facts.framing);
    if te_trailers {
        out.extend_from_slice(b"TE: trailers\r\n");
    }
    if let Some(protocol) = facts.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        put_header(out, b"Upgrade", protocol);
    }
    out.extend_from_slice(b"\r\n");
}

/// The client address as `X-Forwarded-For` spells it.
pub fn client_text(ip: IpAddr) -> Vec<u8> {
    crate::proxy::headers::client_ip(ip)
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::MAX_BODY_LENGTH;
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

    #[test]
    fn client_text_unmaps_ipv4_mapped_addresses() {
        assert_eq!(client_text("::ffff:10.1.2.3".parse().unwrap()), b"10.1.2.3");
        assert_eq!(client_text("::1".parse().unwrap()), b"::1");
    }
}
