//! Walking the strings of a payload: RDB strings (lengths, integer and LZF
//! encodings) and listpack elements, borrowed where they are stored plainly.

use super::*;
use std::borrow::Cow;

/// How the strings of a payload are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// RDB strings (`rdbSaveRawString`): a length or an integer or LZF
    /// encoding, then the bytes.
    Rdb,
    /// Listpack elements (`lpInsert`): an encoding byte that holds a small
    /// integer or says how the length or integer follows, the bytes, then
    /// the element's size again ("backlen", for walking backwards).
    Listpack,
}

/// One listpack element: a string, or an integer Redis stored as a number.
enum Element<'a> {
    Text(&'a [u8]),
    Int(i64),
}

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    pub(super) format: Format,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], format: Format) -> Self {
        Reader {
            buf,
            pos: 0,
            format,
        }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DumpError> {
        if n > self.remaining() {
            return Err(DumpError::Malformed("truncated"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn byte(&mut self) -> Result<u8, DumpError> {
        Ok(self.array::<1>()?[0])
    }

    /// `rdbLoadLenByRef`: a length, or `Err(encoding)` for an encoded string.
    pub(super) fn length_or_encoding(&mut self) -> Result<Result<usize, u8>, DumpError> {
        let first = self.byte()?;
        let len = match first >> 6 {
            RDB_6BITLEN => usize::from(first & 0x3f),
            RDB_14BITLEN => (usize::from(first & 0x3f) << 8) | usize::from(self.byte()?),
            RDB_ENCVAL => return Ok(Err(first & 0x3f)),
            _ => match first {
                RDB_32BITLEN => u32::from_be_bytes(self.array()?) as usize,
                RDB_64BITLEN => usize::try_from(u64::from_be_bytes(self.array()?))
                    .map_err(|_| DumpError::Malformed("length out of range"))?,
                _ => return Err(DumpError::Malformed("unknown length encoding")),
            },
        };
        Ok(Ok(len))
    }

    pub(super) fn length(&mut self) -> Result<usize, DumpError> {
        self.length_or_encoding()?
            .map_err(|_| DumpError::Malformed("encoded value where a length belongs"))
    }

    /// An LZF-compressed string's compressed bytes and inflated length,
    /// after its encoding marker.
    pub(super) fn lzf_parts(&mut self) -> Result<(&'a [u8], usize), DumpError> {
        let compressed_len = self.length()?;
        let len = self.length()?;
        // A larger stated length is damage, not a buffer to allocate.
        if len > compressed_len.saturating_mul(LZF_MAX_RATIO) {
            return Err(DumpError::Malformed("LZF length out of range"));
        }
        Ok((self.take(compressed_len)?, len))
    }

    /// The next string's compressed bytes and inflated length when it is
    /// LZF-compressed (then consumed); otherwise `None`, and the string is
    /// still there to read.
    pub(super) fn lzf_string(&mut self) -> Result<Option<(&'a [u8], usize)>, DumpError> {
        let start = self.pos;
        if self.length_or_encoding()? == Err(RDB_ENC_LZF) {
            return self.lzf_parts().map(Some);
        }
        self.pos = start;
        Ok(None)
    }

    /// Moves past one string without decoding it.
    pub(super) fn skip_string(&mut self) -> Result<(), DumpError> {
        if self.format == Format::Listpack {
            return self.element().map(|_| ());
        }
        let n = match self.length_or_encoding()? {
            Ok(len) => len,
            Err(RDB_ENC_INT8) => 1,
            Err(RDB_ENC_INT16) => 2,
            Err(RDB_ENC_INT32) => 4,
            Err(RDB_ENC_LZF) => {
                let compressed_len = self.length()?;
                self.length()?;
                compressed_len
            }
            Err(_) => return Err(DumpError::Malformed("unknown string encoding")),
        };
        self.take(n).map(|_| ())
    }

    /// Moves past one entry (field and value); false at the end.
    pub(super) fn skip_entry(&mut self) -> Result<bool, DumpError> {
        if self.remaining() == 0 {
            return Ok(false);
        }
        self.skip_string()?;
        self.skip_string()?;
        Ok(true)
    }

    /// `rdbGenericLoadStringObject`: raw, integer-encoded or LZF-compressed
    /// (or a listpack element, borrowed or an integer's text).
    pub(super) fn string(&mut self) -> Result<Cow<'a, [u8]>, DumpError> {
        if self.format == Format::Listpack {
            return Ok(match self.element()? {
                Element::Text(text) => Cow::Borrowed(text),
                Element::Int(n) => int_text(n),
            });
        }
        match self.length_or_encoding()? {
            Ok(len) => self.take(len).map(Cow::Borrowed),
            Err(RDB_ENC_INT8) => Ok(int_text(i8::from_le_bytes(self.array()?).into())),
            Err(RDB_ENC_INT16) => Ok(int_text(i16::from_le_bytes(self.array()?).into())),
            Err(RDB_ENC_INT32) => Ok(int_text(i32::from_le_bytes(self.array()?).into())),
            Err(RDB_ENC_LZF) => {
                let (compressed, len) = self.lzf_parts()?;
                let mut plain = vec![0; len];
                inflate(compressed, &mut plain)?;
                Ok(Cow::Owned(plain))
            }
            Err(_) => Err(DumpError::Malformed("unknown string encoding")),
        }
    }

    /// `lpGet`: one listpack element, then its backlen (checked).
    fn element(&mut self) -> Result<Element<'a>, DumpError> {
        let start = self.pos;
        let first = self.byte()?;
        let element = match first {
            // 0xxxxxxx: an integer 0..=127.
            0x00..=0x7f => Element::Int(i64::from(first)),
            // 10xxxxxx: a string of up to 63 bytes.
            0x80..=0xbf => Element::Text(self.take(usize::from(first & 0x3f))?),
            // 110xxxxx + 1 byte: a 13-bit signed integer.
            0xc0..=0xdf => {
                let bits = (u64::from(first & 0x1f) << 8) | u64::from(self.byte()?);
                Element::Int(sign_extend(bits, 13))
            }
            // 1110xxxx + 1 byte: a string of up to 4095 bytes.
            0xe0..=0xef => {
                let len = (usize::from(first & 0x0f) << 8) | usize::from(self.byte()?);
                Element::Text(self.take(len)?)
            }
            0xf0 => {
                let len = u32::from_le_bytes(self.array()?);
                let len = usize::try_from(len)
                    .map_err(|_| DumpError::Malformed("length out of range"))?;
                Element::Text(self.take(len)?)
            }
            0xf1 => Element::Int(i16::from_le_bytes(self.array()?).into()),
            0xf2 => {
                let [a, b, c] = self.array()?;
                Element::Int(sign_extend(u64::from(u32::from_le_bytes([a, b, c, 0])), 24))
            }
            0xf3 => Element::Int(i32::from_le_bytes(self.array()?).into()),
            0xf4 => Element::Int(i64::from_le_bytes(self.array()?)),
            _ => return Err(DumpError::Malformed("unknown listpack encoding")),
        };
        self.backlen(self.pos - start)?;
        Ok(element)
    }

    /// `lpEncodeBacklen`, read forwards: `size` in 1-5 bytes of 7 bits,
    /// most significant first, all but the first with the top bit set. Its
    /// length follows from `size` (the next element's first byte may have
    /// its top bit set too, so it cannot be found by looking).
    pub(super) fn backlen(&mut self, size: usize) -> Result<(), DumpError> {
        let mut value = 0usize;
        for (i, &byte) in self.take(backlen_len(size))?.iter().enumerate() {
            if (byte & 0x80 != 0) != (i > 0) {
                return Err(DumpError::Malformed("bad listpack backlen"));
            }
            value = (value << 7) | usize::from(byte & 0x7f);
        }
        if value != size {
            return Err(DumpError::Malformed("listpack backlen mismatch"));
        }
        Ok(())
    }
}

/// Inflates LZF data that must fill `out` exactly.
pub(super) fn inflate(compressed: &[u8], out: &mut [u8]) -> Result<(), DumpError> {
    match lzf_rust::decompress(compressed, out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(_) => Err(DumpError::Malformed("LZF length mismatch")),
        Err(_) => Err(DumpError::Malformed("bad LZF data")),
    }
}

/// How many bytes `lpEncodeBacklen` takes for an element of `size` bytes
/// (its thresholds, as Redis has them).
pub(super) fn backlen_len(size: usize) -> usize {
    match size {
        0..=127 => 1,
        128..16_383 => 2,
        16_383..2_097_151 => 3,
        2_097_151..268_435_455 => 4,
        _ => 5,
    }
}

/// The low `bits` bits of `value` as a two's-complement signed integer.
fn sign_extend(value: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((value << shift) as i64) >> shift
}

fn int_text(n: i64) -> Cow<'static, [u8]> {
    Cow::Owned(n.to_string().into_bytes())
}
