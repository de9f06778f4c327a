//! Strict HTTP/1.1 message parsing for the conformance tests: the reading
//! a careful backend (requests) or a careful client (responses) would make
//! of the proxy's bytes. Anything two careful readers could read two ways
//! is an error here, so a proxy that forwards ambiguous framing fails the
//! comparison instead of being read generously.

/// One header as it appeared on the wire.
pub type Field = (String, Vec<u8>);

/// How a message's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFraming {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body ran until the connection closed.
    UntilClose,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<Field>,
    pub body: Vec<u8>,
    pub trailers: Vec<Field>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<Field>,
    pub body: Vec<u8>,
    pub trailers: Vec<Field>,
}

/// Every value of header `name`, in order.
pub fn values<'a>(headers: &'a [Field], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// The single value of header `name`, as text; `None` if absent.
pub fn value(headers: &[Field], name: &str) -> Option<String> {
    values(headers, name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl Request {
    pub fn header(&self, name: &str) -> Option<String> {
        value(&self.headers, name)
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        value(&self.headers, name)
    }
}

/// The outcome of parsing from the front of a buffer.
pub enum Parsed<T> {
    /// More bytes are needed.
    Partial,
    /// A whole message and the bytes it took.
    Done(T, usize),
}

pub type ParseResult<T> = Result<Parsed<T>, String>;

/// The end of the head (index past the empty line), insisting on CRLF
/// line ends: a bare LF in a head is an error.
fn head_end(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(format!("bare LF at {lf} in head"));
            }
        }
        return Ok(None);
    };
    let head = &buf[..at + 4];
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err(format!("bare LF at {i} in head"));
        }
    }
    Ok(Some(at + 4))
}

fn fields(headers: &[httparse::Header<'_>]) -> Vec<Field> {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

/// The strict request framing of RFC 9112 §6.3: one `Transfer-Encoding:
/// chunked` and no `Content-Length`, or one plain decimal
/// `Content-Length`, or nothing.
fn request_framing(headers: &[Field]) -> Result<WireFraming, String> {
    let te = values(headers, "transfer-encoding");
    let cl = values(headers, "content-length");
    if !te.is_empty() {
        if te.len() != 1 || !te[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(format!(
                "Transfer-Encoding is not exactly `chunked`: {:?}",
                te.iter()
                    .map(|v| String::from_utf8_lossy(v))
                    .collect::<Vec<_>>()
            ));
        }
        if !cl.is_empty() {
            return Err("Transfer-Encoding together with Content-Length".into());
        }
        return Ok(WireFraming::Chunked);
    }
    match cl.as_slice() {
        [] => Ok(WireFraming::None),
        [one] => Ok(WireFraming::Length(plain_length(one)?)),
        _ => Err(format!("{} Content-Length headers", cl.len())),
    }
}

fn plain_length(value: &[u8]) -> Result<u64, String> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 15 || !v.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "Content-Length not a plain decimal below 10^15: {:?}",
            String::from_utf8_lossy(value)
        ));
    }
    Ok(std::str::from_utf8(v).unwrap().parse().unwrap())
}

/// Parses one request from the front of `buf`.
pub fn parse_request(buf: &[u8]) -> ParseResult<Request> {
    let Some(end) = head_end(buf)? else {
        return Ok(Parsed::Partial);
    };
    let mut slots = [httparse::EMPTY_HEADER; 160];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err("head did not parse to its end".into()),
        Err(e) => return Err(format!("head does not parse: {e}")),
    }
    let headers = fields(req.headers);
    let framing = request_framing(&headers)?;
    let mut out = Request {
        method: req.method.unwrap().to_owned(),
        target: req.path.unwrap().to_owned(),
        version: req.version.unwrap(),
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    match body(framing, &buf[end..], false)? {
        Parsed::Partial => Ok(Parsed::Partial),
        Parsed::Done((body, trailers), n) => {
            out.body = body;
            out.trailers = trailers;
            Ok(Parsed::Done(out, end + n))
        }
    }
}

/// Parses just a request head: (method, headers, framing, head length).
pub fn parse_request_head(buf: &[u8]) -> ParseResult<(Vec<Field>, WireFraming)> {
    let Some(end) = head_end(buf)? else {
        return Ok(Parsed::Partial);
    };
    let mut slots = [httparse::EMPTY_HEADER; 160];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(_) => return Err("head did not parse to its end".into()),
        Err(e) => return Err(format!("head does not parse: {e}")),
    }
    let headers = fields(req.headers);
    let framing = request_framing(&headers)?;
    Ok(Parsed::Done((headers, framing), end))
}

/// Every request in `buf`, which must hold nothing else: whole requests,
/// strictly framed, no trailing bytes.
pub fn parse_all_requests(mut buf: &[u8]) -> Result<Vec<Request>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match parse_request(buf) {
            Ok(Parsed::Done(req, n)) => {
                out.push(req);
                buf = &buf[n..];
            }
            Ok(Parsed::Partial) => {
                return Err(format!(
                    "after {} whole request(s), an incomplete one: {:?}",
                    out.len(),
                    String::from_utf8_lossy(&buf[..buf.len().min(300)])
                ))
            }
            Err(e) => {
                return Err(format!(
                    "after {} whole request(s): {e}: {:?}",
                    out.len(),
                    String::from_utf8_lossy(&buf[..buf.len().min(300)])
                ))
            }
        }
    }
    Ok(out)
}

/// Parses one response from the front of `buf`. `to_head`: the request
/// was HEAD. `eof`: the connection has closed (completes a close-delimited
/// body).
pub fn parse_response(buf: &[u8], to_head: bool, eof: bool) -> ParseResult<Response> {
    let Some(end) = head_end(buf)? else {
        return Ok(Parsed::Partial);
    };
    let mut slots = [httparse::EMPTY_HEADER; 160];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err("response head did not parse to its end".into()),
        Err(e) => return Err(format!("response head does not parse: {e}")),
    }
    let status = resp.code.unwrap();
    // httparse takes any three digits; a careful client takes 100..=999.
    if status < 100 {
        return Err(format!("status {status} below 100"));
    }
    let headers = fields(resp.headers);
    let te = values(&headers, "transfer-encoding");
    let cl = values(&headers, "content-length");
    // RFC 9112 §6.3: no body for HEAD, 1xx, 204, 304; else chunked when
    // the last transfer coding is chunked, until close with any other
    // coding; a careful client refuses Transfer-Encoding with
    // Content-Length, and a Content-Length that is not one plain number.
    let framing = if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
        WireFraming::None
    } else if !te.is_empty() {
        if !cl.is_empty() {
            return Err("response with Transfer-Encoding and Content-Length".into());
        }
        let last = te
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| t.trim_ascii())
            .rfind(|t| !t.is_empty());
        if last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")) {
            WireFraming::Chunked
        } else {
            WireFraming::UntilClose
        }
    } else {
        match cl.as_slice() {
            [] => WireFraming::UntilClose,
            [one] => WireFraming::Length(plain_length(one)?),
            _ => return Err(format!("response with {} Content-Length headers", cl.len())),
        }
    };
    let mut out = Response {
        status,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    match body(framing, &buf[end..], eof)? {
        Parsed::Partial => Ok(Parsed::Partial),
        Parsed::Done((body, trailers), n) => {
            out.body = body;
            out.trailers = trailers;
            Ok(Parsed::Done(out, end + n))
        }
    }
}

type Body = (Vec<u8>, Vec<Field>);

fn body(framing: WireFraming, buf: &[u8], eof: bool) -> ParseResult<Body> {
    match framing {
        WireFraming::None => Ok(Parsed::Done((Vec::new(), Vec::new()), 0)),
        WireFraming::Length(n) => {
            let n = n as usize;
            if buf.len() < n {
                Ok(Parsed::Partial)
            } else {
                Ok(Parsed::Done((buf[..n].to_vec(), Vec::new()), n))
            }
        }
        WireFraming::UntilClose => {
            if eof {
                Ok(Parsed::Done((buf.to_vec(), Vec::new()), buf.len()))
            } else {
                Ok(Parsed::Partial)
            }
        }
        WireFraming::Chunked => dechunk(buf),
    }
}

/// A line ending in CRLF from the front of `buf`: (line, bytes taken).
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    match buf.iter().position(|&b| b == b'\n') {
        None => {
            if buf.len() > 4096 {
                return Err("chunk line over 4 KiB".into());
            }
            Ok(None)
        }
        Some(0) => Err("bare LF in chunked framing".into()),
        Some(lf) if buf[lf - 1] != b'\r' => Err("bare LF in chunked framing".into()),
        Some(lf) => Ok(Some((&buf[..lf - 1], lf + 1))),
    }
}

/// Strict chunked decoding: hex sizes (no sign, no overflow past 2^60),
/// token extensions, CRLF everywhere, trailer fields without obs-fold.
pub fn dechunk(buf: &[u8]) -> ParseResult<Body> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some((size_line, n)) = line(&buf[at..])? else {
            return Ok(Parsed::Partial);
        };
        let (size, ext) = match size_line.iter().position(|&b| b == b';') {
            Some(semi) => (&size_line[..semi], Some(&size_line[semi + 1..])),
            None => (size_line, None),
        };
        let size = size.trim_ascii_end();
        if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "bad chunk size {:?}",
                String::from_utf8_lossy(size_line)
            ));
        }
        if let Some(ext) = ext {
            if ext.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
                return Err("control byte in a chunk extension".into());
            }
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16).unwrap();
        at += n;
        if size == 0 {
            break;
        }
        if buf.len() < at + size + 2 {
            return Ok(Parsed::Partial);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
    let mut trailers = Vec::new();
    loop {
        let Some((field, n)) = line(&buf[at..])? else {
            return Ok(Parsed::Partial);
        };
        at += n;
        if field.is_empty() {
            return Ok(Parsed::Done((body, trailers), at));
        }
        if field[0] == b' ' || field[0] == b'\t' {
            return Err("obs-fold in a trailer section".into());
        }
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            return Err(format!(
                "trailer line without a colon: {:?}",
                String::from_utf8_lossy(field)
            ));
        };
        let name = &field[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(format!(
                "bad trailer field name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        trailers.push((
            String::from_utf8_lossy(name).into_owned(),
            field[colon + 1..].trim_ascii().to_vec(),
        ));
    }
}

/// RFC 9110 §5.6.2 token characters.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reading_refuses_what_two_readers_could_read_two_ways() {
        assert!(parse_all_requests(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        assert!(parse_all_requests(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        )
        .is_err());
        assert!(parse_all_requests(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"
        )
        .is_err());
        assert!(parse_all_requests(b"GET / HTTP/1.1\nHost: a\r\n\r\n").is_err());
        let two = parse_all_requests(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].body, b"hello");
        assert_eq!(two[0].trailers, vec![("T".into(), b"1".to_vec())]);
        assert_eq!(two[1].target, "/2");
    }
}
