//! The `Transfer-Encoding: chunked` framing (RFC 9112 §7.1), read as bytes
//! stream past: where the message ends, which bytes are data, and whether
//! the framing is well formed.
//!
//! The proxy forwards chunked bodies as they came (framing bytes included),
//! so the decoder only has to find the end of the message and refuse
//! anything a backend could read differently: bare LF line ends, sizes that
//! overflow, control characters in extensions or trailers, endless
//! trailers. Strictness here is what keeps a request from being smuggled
//! past the proxy inside another one's body.

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
    /// Size lines, CRLFs and trailers.
    Framing(usize),
}

impl Segment {
    /// Bytes of input the segment covers.
    pub fn size(self) -> usize {
        match self {
            Segment::Data(n) | Segment::Framing(n) => n,
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

    /// Reads the start of `input`: the length of the first segment (data or
    /// framing) and its kind. Returns `Framing(0)` only when done.
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
        let mut used = 0;
        for &b in input {
            if matches!(self.state, State::Data { .. } | State::Done) {
                break;
            }
            used += 1;
            self.state = self.step(b)?;
        }
        Ok(Segment::Framing(used))
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
                    if digits >= 16 || value > (u64::MAX >> 4) {
                        return Err(ChunkError::Overflow);
                    }
                    State::Size {
                        value: (value << 4) | u64::from(d),
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
