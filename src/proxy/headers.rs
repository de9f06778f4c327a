//! Header rules of the HTTP/2 path over `HeaderMap`s, the same as the
//! HTTP/1 driver's over parsed heads ([`super::h1::head`]): which host a
//! request is for, the HTTP/1.1 head sent upstream (hop-by-hop and `_`
//! names left out, forwarding headers, request id, framing), and request
//! ids.

use super::h1::head::{put_framing, put_header, Forwarding, Framing};
use crate::routes::{normalize_host, HostError};
use http::header::{self, HeaderMap, HeaderName};
use http::Request;
use std::borrow::Cow;
use std::net::IpAddr;

/// The host a request is for, normalised: the absolute-form target or
/// HTTP/2 `:authority` first, else the single `Host` header. With both, a
/// `Host` naming another authority makes the request malformed (RFC 9113
/// §8.3.1).
pub fn request_host<B>(req: &Request<B>) -> Result<Cow<'_, str>, HostError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Malformed);
    }
    if let Some(authority) = req.uri().authority() {
        if host.is_some_and(|h| {
            !h.as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        }) {
            return Err(HostError::Malformed);
        }
        return checked_authority(authority.as_str());
    }
    let host = host.ok_or(HostError::Empty)?;
    checked_authority(host.to_str().map_err(|_| HostError::Malformed)?)
}

/// Checks an authority as a Host header, an absolute-form target or
/// `:authority` carries it, and returns the host to route by: a host, then
/// an optional port of ASCII digits. No userinfo (not part of a Host, and a
/// lax parser takes the text after `@` for the host), no sign in the port.
pub fn checked_authority(text: &str) -> Result<Cow<'_, str>, HostError> {
    let port = match text.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(_, after)| after),
        None => text.split_once(':').map(|(_, port)| port),
    };
    let port = port.map(|p| p.strip_prefix(':').unwrap_or(p));
    if text.contains('@') || port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(HostError::Malformed);
    }
    normalize_host(text)
}

/// Headers the proxy never copies from an HTTP/2 request: hop-by-hop ones
/// (RFC 9110 §7.6.1; HTTP/2 forbids most of them anyway), the ones it
/// writes itself, and `expect` (the proxy sends the body at once).
fn written_by_proxy(name: &HeaderName) -> bool {
    const NAMES: [&str; 15] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-request-id",
    ];
    NAMES.contains(&name.as_str())
}

/// Writes the HTTP/1.1 head sent upstream for an HTTP/2 request, by the
/// HTTP/1 driver's rules (`h1::head::write_request_head`): the client's
/// headers minus hop-by-hop ones and names with `_`, `cookie` fields joined
/// into one (RFC 9113 §8.2.3), then `Host` (the authority routed by), the
/// forwarding headers, the request id and the framing the proxy chose.
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    method: &http::Method,
    target: &str,
    headers: &HeaderMap,
    authority: &[u8],
    fwd: &Forwarding<'_>,
    framing: Framing,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut cookie_written = false;
    for (name, value) in headers {
        let text = name.as_str();
        if written_by_proxy(name) {
            continue;
        }
        if text.contains('_') {
            tracing::debug!(name = text, "dropped a header name with an underscore");
            continue;
        }
        match text {
            "x-forwarded-proto" | "x-real-ip" | "forwarded" if !fwd.trusted => {}
            "x-forwarded-proto" => {}
            "cookie" => {
                if !cookie_written {
                    cookie_written = true;
                    out.extend_from_slice(b"cookie: ");
                    for (i, c) in headers.get_all(header::COOKIE).iter().enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b"; ");
                        }
                        out.extend_from_slice(c.as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                }
            }
            _ => put_header(out, text.as_bytes(), value.as_bytes()),
        }
    }
    put_header(out, b"Host", authority);
    out.extend_from_slice(b"X-Forwarded-For: ");
    if fwd.trusted {
        for prior in headers.get_all("x-forwarded-for") {
            out.extend_from_slice(prior.as_bytes());
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(fwd.client);
    out.extend_from_slice(b"\r\n");
    let prior_proto = headers
        .get("x-forwarded-proto")
        .filter(|_| fwd.trusted)
        .map(|v| v.as_bytes());
    put_header(out, b"X-Forwarded-Proto", prior_proto.unwrap_or(fwd.proto));
    put_header(out, b"X-Forwarded-Host", authority);
    put_header(out, b"X-Request-Id", fwd.request_id);
    put_framing(out, framing);
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    if te_trailers {
        out.extend_from_slice(b"TE: trailers\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The client as forwarding headers name it: an IPv4-mapped IPv6 peer (a
/// dual-stack listener) is an IPv4 client.
pub fn client_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A request whose framing is ambiguous: several different Content-Length
/// values, or Content-Length together with Transfer-Encoding (RFC 9112
/// §6.3: a request smuggling vector; never forward it).
pub fn has_conflicting_framing(headers: &HeaderMap) -> bool {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = lengths.next();
    if first.is_some() && headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    lengths.any(|v| Some(v) != first)
}

/// A fresh request id: 128 random bits as 32 hex digits.
pub fn request_id_hex() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits: u128 = rand::random();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_comes_from_absolute_target_then_host_header() {
        assert_eq!(
            request_host(&req("/", Some("App.Cloud.com:8080"))).unwrap(),
            "app.cloud.com"
        );
        assert_eq!(
            request_host(&req("http://b.cloud.com:81/x", Some("B.cloud.com:81"))).unwrap(),
            "b.cloud.com"
        );
        assert!(request_host(&req("http://user@b.cloud.com:81/x", None)).is_err());
        assert!(
            request_host(&req("http://b.cloud.com/x", Some("a.cloud.com"))).is_err(),
            "host differs from :authority"
        );
        assert!(request_host(&req("/", Some("a.com:+80"))).is_err());
        assert_eq!(request_host(&req("/", None)), Err(HostError::Empty));
        assert!(request_host(&req("/", Some("a b"))).is_err());
        let mut two = req("/", Some("a.com"));
        two.headers_mut()
            .append("host", HeaderValue::from_static("b.com"));
        assert!(request_host(&two).is_err());
    }

    fn upstream_head(headers: &[(&str, &str)], trusted: bool, framing: Framing) -> String {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        write_upstream_head(
            &mut out,
            &http::Method::POST,
            "/p?q=1",
            &map,
            b"a.test",
            &Forwarding {
                client: b"10.0.0.1",
                proto: b"https",
                trusted,
                request_id: b"rid",
                drop_expect: true,
            },
            framing,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn http2_requests_go_upstream_by_the_http1_rules() {
        let head = upstream_head(
            &[
                ("cookie", "a=1"),
                ("x-kept", "1"),
                ("cookie", "b=2"),
                ("x_forwarded_host", "evil"),
                ("te", "trailers"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "http"),
                ("x-real-ip", "6.6.6.6"),
                ("expect", "100-continue"),
                ("content-length", "9"),
            ],
            false,
            Framing::Length(5),
        );
        assert_eq!(
            head,
            "POST /p?q=1 HTTP/1.1\r\ncookie: a=1; b=2\r\nx-kept: 1\r\nHost: a.test\r\n\
             X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a.test\r\n\
             X-Request-Id: rid\r\nContent-Length: 5\r\nTE: trailers\r\n\r\n"
        );
        let head = upstream_head(
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "http"),
                ("x-real-ip", "6.6.6.6"),
            ],
            true,
            Framing::Chunked,
        );
        assert_eq!(
            head,
            "POST /p?q=1 HTTP/1.1\r\nx-real-ip: 6.6.6.6\r\nHost: a.test\r\n\
             X-Forwarded-For: 6.6.6.6, 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.test\r\n\
             X-Request-Id: rid\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = request_id_hex();
        let b = request_id_hex();
        assert!(a.iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn detects_conflicting_framing() {
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("5"));
        assert!(!has_conflicting_framing(&h));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        assert!(has_conflicting_framing(&h));
        let mut h = HeaderMap::new();
        h.append("content-length", HeaderValue::from_static("5"));
        h.append("content-length", HeaderValue::from_static("6"));
        assert!(has_conflicting_framing(&h));
    }
}
