//! The proxy's own answers: an error ([`write_error`]: short plain text,
//! a redirect's `Location`) and a plain `200` (an ACME challenge).

use super::{put_header, write_status_line};
use crate::proxy::ProxyError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
