//! Header rules of the request path, as pure functions: which host a request
//! is for, which headers are hop-by-hop, and the forwarding headers.

use crate::routes::{normalize_host, HostError};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};
use std::borrow::Cow;
use std::net::IpAddr;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard ones Go's
/// reverse proxy also drops).
fn hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &PROXY_CONNECTION,
        &KEEP_ALIVE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

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

/// True for an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade`).
pub fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    connection_has_token(req.headers(), "upgrade").then(|| upgrade.clone())
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `TE: trailers` is kept on requests: it is end-to-end in meaning.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Fast path: most requests carry none of these. One pass over the
    // (few) names present beats nine hashed lookups.
    let hop = hop_by_hop();
    if !headers.keys().any(|name| hop.contains(&name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let te_trailers = keep_te_trailers
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for name in hop {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes header names containing `_`: some frameworks read `X_Forwarded_For`
/// as `X-Forwarded-For` (CGI-style names merge both), so a client could
/// forge what the proxy vouches for (nginx drops them too).
pub fn strip_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| name.as_str().contains('_')) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        tracing::debug!(
            name = name.as_str(),
            "dropped a header name with an underscore"
        );
        headers.remove(name);
    }
}

/// Appends the client to `X-Forwarded-For` (merging repeated headers into
/// one list) and sets `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn add_forwarding_headers(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    // Formatted on the stack: no allocation when there is no prior value.
    let mut buf = [0u8; 64];
    let client = {
        use std::io::Write;
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        write!(cursor, "{}", client_ip(client)).expect("an IP address fits in 64 bytes");
        let len = cursor.position() as usize;
        &buf[..len]
    };
    let mut prior = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    let value = if prior.peek().is_none() {
        HeaderValue::from_bytes(client)
    } else {
        let mut joined = prior.collect::<Vec<_>>().join(", ").into_bytes();
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(client);
        HeaderValue::from_bytes(&joined)
    };
    if let Ok(value) = value {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
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

/// [`request_id_hex`] as a header value (one allocation, inside
/// `HeaderValue`).
pub fn new_request_id() -> HeaderValue {
    HeaderValue::from_bytes(&request_id_hex()).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers, gzip"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-kept"], "1");
    }

    #[test]
    fn forwarding_headers_append_and_merge() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        add_forwarding_headers(
            &mut h,
            "10.0.0.1".parse().unwrap(),
            "http",
            Some(HeaderValue::from_static("a.com")),
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.com");
        let mut h = HeaderMap::new();
        add_forwarding_headers(&mut h, "::1".parse().unwrap(), "http", None);
        assert_eq!(h["x-forwarded-for"], "::1");
        let mut h = HeaderMap::new();
        add_forwarding_headers(&mut h, "::ffff:10.1.2.3".parse().unwrap(), "http", None);
        assert_eq!(
            h["x-forwarded-for"], "10.1.2.3",
            "as the HTTP/1 path says it"
        );
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn detects_upgrades_and_conflicting_framing() {
        let r = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(upgrade_protocol(&r).unwrap(), "websocket");
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
