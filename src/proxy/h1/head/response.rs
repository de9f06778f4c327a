//! A response head: the facts read from it ([`inspect_response`]: framing,
//! reuse of the backend connection) and the client's head written in its
//! place, final ([`write_response_head`]) or interim.

use super::fields::{classify, content_length, response_chunked, ConnectionTokens, Name};
use super::{put_header, write_status_line, Framing, HeadError};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
