//! The `Transfer-Encoding: chunked` framing (RFC 9112 §7.1), read as bytes
//! stream past: where the message ends, which bytes are data, and whether
//! the framing is well formed.
//!
//! The proxy forwards chunks as they came (size lines included), so the
//! decoder only has to find the end of the message and refuse anything a
//! backend could read differently: bare LF line ends, sizes that overflow
//! or exceed [`MAX_BODY_LENGTH`], control characters in extensions or
//! trailers, endless trailers. Strictness here is what keeps a request from
//! being smuggled past the proxy inside another one's body. The trailer
//! section is the exception: [`ChunkedRelay`] holds it back, checks it
//! and rewrites it without the fields a trailer may not carry.

use super::head::MAX_BODY_LENGTH;

/// Longest chunk-size line (size, extensions) and longest trailer section
/// accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed chunk size line")]
    SizeLine,
    #[error("chunk size overflows")]
    Overflow,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("malformed or oversized trailer section")]
    Trailers,
}

/// Trailer fields accepted in one message; more is malformed.
const MAX_TRAILER_FIELDS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` seen so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the digits: optional whitespace, `;extensions`, up to CR.
    SizeRest {
        value: u64,
        len: usize,
        in_ext: bool,
    },
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// What the next bytes of the stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Chunk data: the payload proper.
    Data(usize),
    /// Size lines and CRLFs, up to and including the last chunk's line.
    Framing(usize),
    /// The trailer section and the empty line that ends the message.
    Trailer(usize),
}

impl Segment {
    /// Bytes of input the segment covers.
    pub fn size(self) -> usize {
        match self {
            Segment::Data(n) | Segment::Framing(n) | Segment::Trailer(n) => n,
        }
    }
}

/// Follows one chunked message across reads.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of trailer section seen (bounded by MAX_TRAILERS).
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    /// True once the final CRLF after the last chunk (and trailers) went by.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads the start of `input`: the length of the first segment (data,
    /// framing or trailer) and its kind. Returns `Framing(0)` only when done.
    pub fn next(&mut self, input: &[u8]) -> Result<Segment, ChunkError> {
        if let State::Data { remaining } = self.state {
            let n = remaining.min(input.len() as u64) as usize;
            let left = remaining - n as u64;
            self.state = if left == 0 {
                State::DataCr
            } else {
                State::Data { remaining: left }
            };
            return Ok(Segment::Data(n));
        }
        let in_trailers = self.in_trailers();
        let mut used = 0;
        for &b in input {
            if matches!(self.state, State::Data { .. } | State::Done)
                || self.in_trailers() != in_trailers
            {
                break;
            }
            used += 1;
            self.state = self.step(b)?;
        }
        Ok(if in_trailers {
            Segment::Trailer(used)
        } else {
            Segment::Framing(used)
        })
    }

    /// Past the last chunk's size line, before the end.
    fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            State::TrailerStart | State::TrailerLine | State::TrailerLf | State::EndLf
        )
    }

    /// How many bytes of `input` belong to this message (all of them unless
    /// the message ends inside it).
    pub fn consume(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < input.len() && !self.is_done() {
            at += self.next(&input[at..])?.size();
        }
        Ok(at)
    }

    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { value, digits } => match hex_value(b) {
                Some(d) => {
                    // Leading zeros are harmless; a value past the cap is
                    // refused before it could overflow.
                    let value = (value << 4) | u64::from(d);
                    if digits >= 16 || value > MAX_BODY_LENGTH {
                        return Err(ChunkError::Overflow);
                    }
                    State::Size {
                        value,
                        digits: digits + 1,
                    }
                }
                None if digits == 0 => return Err(ChunkError::SizeLine),
                None => return size_rest(value, 0, false, b),
            },
            State::SizeRest { value, len, in_ext } => return size_rest(value, len, in_ext, b),
            State::SizeLf { value } => {
                if b != b'\n' {
                    return Err(ChunkError::SizeLine);
                }
                if value == 0 {
                    State::TrailerStart
                } else {
                    State::Data { remaining: value }
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => return Err(ChunkError::DataEnd),
            State::TrailerStart if b == b'\r' => State::EndLf,
            State::TrailerStart | State::TrailerLine => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILERS {
                    return Err(ChunkError::Trailers);
                }
                match b {
                    b'\r' => State::TrailerLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => State::TrailerLine,
                    _ => return Err(ChunkError::Trailers),
                }
            }
            State::TrailerLf if b == b'\n' => {
                self.trailer_bytes += 2;
                State::TrailerStart
            }
            State::TrailerLf => return Err(ChunkError::Trailers),
            State::EndLf if b == b'\n' => State::Done,
            State::EndLf => return Err(ChunkError::Trailers),
            State::Data { .. } | State::Done => unreachable!("handled by next()"),
        })
    }
}

/// After the size digits: whitespace, then `;` and extensions (visible
/// characters, spaces, tabs), then CR. Anything but whitespace before the
/// `;` is refused.
fn size_rest(value: u64, len: usize, in_ext: bool, b: u8) -> Result<State, ChunkError> {
    if len >= MAX_LINE {
        return Err(ChunkError::SizeLine);
    }
    let in_ext = match b {
        b'\r' => return Ok(State::SizeLf { value }),
        b';' => true,
        b' ' | b'\t' => in_ext,
        b'!'..=b'~' if in_ext => true,
        _ => return Err(ChunkError::SizeLine),
    };
    Ok(State::SizeRest {
        value,
        len: len + 1,
        in_ext,
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// How much of a piece of input [`ChunkedRelay::feed`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input that belong to this message.
    pub used: usize,
    /// The first `pass` of them are forwarded as they are; the rest (up to
    /// `used`) is trailer section, held back.
    pub pass: usize,
}

/// Relays one chunked message: chunks and their size lines pass as they
/// came, the trailer section is held back (bounded by the decoder), and
/// once the message is complete [`ChunkedRelay::write_trailers`] writes it
/// checked and without the fields a trailer may not carry.
#[derive(Debug, Clone, Default)]
pub struct ChunkedRelay {
    decoder: ChunkedDecoder,
    trailers: Vec<u8>,
}

impl ChunkedRelay {
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// Reads `input` up to the end of the message.
    pub fn feed(&mut self, input: &[u8]) -> Result<Fed, ChunkError> {
        let (mut at, mut pass) = (0, 0);
        while at < input.len() && !self.decoder.is_done() {
            match self.decoder.next(&input[at..])? {
                Segment::Data(n) | Segment::Framing(n) => {
                    at += n;
                    pass = at;
                }
                Segment::Trailer(n) => {
                    self.trailers.extend_from_slice(&input[at..at + n]);
                    at += n;
                }
            }
        }
        Ok(Fed { used: at, pass })
    }

    /// Appends the end of the message to `out`: the allowed trailer fields
    /// and the empty line. Only valid once [`ChunkedRelay::is_done`].
    pub fn write_trailers(&self, out: &mut Vec<u8>) -> Result<(), ChunkError> {
        write_trailer_section(&self.trailers, out)
    }
}

/// Checks a trailer section (`field-line CRLF ... CRLF`) and appends it to
/// `out` without the fields a trailer may not carry. Malformed field lines
/// (obs-fold, a request line, a name with no colon) refuse the message.
pub fn write_trailer_section(section: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
    if section.len() > 2 {
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        match httparse::parse_headers(section, &mut fields) {
            Ok(httparse::Status::Complete((end, fields))) if end == section.len() => {
                for field in fields.iter().filter(|f| trailer_allowed(f.name)) {
                    out.extend_from_slice(field.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(field.value);
                    out.extend_from_slice(b"\r\n");
                }
            }
            _ => return Err(ChunkError::Trailers),
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Whether a field may travel in a trailer section. RFC 9110 §6.5.1: not
/// the fields that frame or route the message, modify the request,
/// authenticate, control the response or describe the content; nor the
/// forwarding headers the proxy vouches for, nor names with `_` (see
/// `head.rs`).
pub fn trailer_allowed(name: &str) -> bool {
    const DENIED: &[&str] = &[
        "age",
        "authorization",
        "cache-control",
        "connection",
        "content-encoding",
        "content-length",
        "content-range",
        "content-type",
        "cookie",
        "date",
        "expect",
        "expires",
        "forwarded",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "keep-alive",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "range",
        "retry-after",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "vary",
        "warning",
        "www-authenticate",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-request-id",
    ];
    !name.contains('_') && !DENIED.iter().any(|d| d.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` in pieces of `split` bytes: (bytes of the message,
    /// data bytes, done).
    fn run(input: &[u8], split: usize) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let mut at = 0;
        let mut data = Vec::new();
        for piece in input.chunks(split.max(1)) {
            let mut i = 0;
            while i < piece.len() && !d.is_done() {
                let seg = d.next(&piece[i..])?;
                if let Segment::Data(n) = seg {
                    data.extend_from_slice(&piece[i..i + n]);
                }
                i += seg.size();
            }
            at += i;
            if d.is_done() {
                break;
            }
        }
        Ok((at, data, d.is_done()))
    }

    #[test]
    fn finds_the_end_and_the_data_across_any_split() {
        let msg =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 1..msg.len() {
            let (end, data, done) = run(msg, split).unwrap();
            assert!(done, "split {split}");
            assert_eq!(&msg[end..], b"NEXT", "split {split}");
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
        }
    }

    #[test]
    fn an_unfinished_message_is_not_done() {
        let (end, _, done) = run(b"5\r\nhel", 64).unwrap();
        assert_eq!((end, done), (6, false));
    }

    #[test]
    fn refuses_what_a_backend_could_read_differently() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after size
            b"5\r\nhello\n0\r\n\r\n",      // bare LF after data
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than its size
            b"\r\n",                       // no size
            b"x\r\n",                      // not hex
            b"11111111111111111\r\n",      // 17 digits
            b"5\x00\r\n",                  // control character
            b"0\r\nX-T: 1\nY: 2\r\n\r\n",  // bare LF in trailers
            b"0\r\nX-T: \x01\r\n\r\n",     // control character in trailers
            b"0\r\n\rx",                   // CR not followed by LF at the end
        ] {
            assert!(
                run(bad, 64).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn sizes_past_the_cap_are_refused() {
        assert_eq!(
            run(b"fffffffffffffff0\r\n", 64).unwrap_err(),
            ChunkError::Overflow
        );
        assert_eq!(
            run(b"20000000000000\r\n", 64).unwrap_err(),
            ChunkError::Overflow,
            "2^53 is one past the cap"
        );
        assert!(
            run(b"00000000000000005\r\nhello\r\n0\r\n\r\n", 64).is_err(),
            "17 digits are refused, leading zeros or not"
        );
    }

    /// Relays `msg` in pieces of `split`: (bytes forwarded, bytes of the message).
    fn relay(msg: &[u8], split: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut r = ChunkedRelay::default();
        let (mut out, mut at) = (Vec::new(), 0);
        for piece in msg.chunks(split.max(1)) {
            let fed = r.feed(piece)?;
            out.extend_from_slice(&piece[..fed.pass]);
            at += fed.used;
            if r.is_done() {
                r.write_trailers(&mut out)?;
                return Ok((out, at));
            }
        }
        panic!("message not done: {:?}", String::from_utf8_lossy(msg));
    }

    #[test]
    fn relay_passes_chunks_and_drops_disallowed_trailer_fields() {
        let msg = b"5;x=1\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 5\r\nHost: evil\r\nX_Forwarded_For: 1.2.3.4\r\nTransfer-Encoding: chunked\r\nServer-Timing: db;dur=53\r\n\r\nNEXT";
        for split in 1..msg.len() {
            let (out, end) = relay(msg, split).unwrap();
            assert_eq!(&msg[end..], b"NEXT", "split {split}");
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "5;x=1\r\nhello\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=53\r\n\r\n",
                "split {split}"
            );
        }
        let (out, _) = relay(b"0\r\n\r\n", 1).unwrap();
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn relay_refuses_malformed_trailer_sections() {
        for bad in [
            &b"0\r\nX-A: 1\r\n folded\r\n\r\n"[..], // obs-fold
            b"0\r\nGET / HTTP/1.1\r\n\r\n",         // a request line
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
        ] {
            let mut r = ChunkedRelay::default();
            let fed = r.feed(bad);
            let refused = match fed {
                Err(_) => true,
                Ok(_) => {
                    assert!(r.is_done(), "{:?}", String::from_utf8_lossy(bad));
                    r.write_trailers(&mut Vec::new()).is_err()
                }
            };
            assert!(refused, "accepted {:?}", String::from_utf8_lossy(bad));
        }
        let mut many = b"0\r\n".to_vec();
        for i in 0..=MAX_TRAILER_FIELDS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut r = ChunkedRelay::default();
        r.feed(&many).unwrap();
        assert!(
            r.write_trailers(&mut Vec::new()).is_err(),
            "too many fields"
        );
    }

    #[test]
    fn endless_trailers_are_refused() {
        let mut msg = b"0\r\n".to_vec();
        while msg.len() < MAX_TRAILERS + 100 {
            msg.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(run(&msg, 4096).unwrap_err(), ChunkError::Trailers);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512), split in 1usize..64) {
            let _ = run(&input, split);
        }

        #[test]
        fn encoded_chunks_decode_to_their_data(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8), split in 1usize..97) {
            let mut msg = Vec::new();
            for c in &chunks {
                msg.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                msg.extend_from_slice(c);
                msg.extend_from_slice(b"\r\n");
            }
            msg.extend_from_slice(b"0\r\n\r\n");
            let (end, data, done) = run(&msg, split).unwrap();
            prop_assert!(done);
            prop_assert_eq!(end, msg.len());
            prop_assert_eq!(data, chunks.concat());
        }
    }
}
