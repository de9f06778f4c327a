//! Decoding the reply of `DUMP <routes-key>`: the hash in Redis's RDB
//! serialization, one bulk string.
//!
//! Why not `HGETALL`: its reply is an array of two bulk strings per route,
//! and the client decodes a partial array again from its start each time
//! more bytes arrive, so a 4 MB reply (100,000 routes) costs ~70 ms of
//! decoding against ~15 ms for Redis to produce and send it. A `DUMP` reply
//! is a single length-prefixed string: the client waits for its last byte
//! without re-parsing, and this module walks it once (~100,000 routes in a
//! few milliseconds). Redis spends about the same on `DUMP` as on `HGETALL`.
//!
//! Only the encoding Redis uses for large hashes is decoded (`RDB_TYPE_HASH`:
//! a count, then field and value strings). Anything else (the listpack of a
//! small hash, hashes with field expiry from Redis 7.4) is reported as
//! [`DumpError::Unsupported`] and the caller reads the hash with `HGETALL`.

use std::borrow::Cow;

/// A hash entry borrowed from the payload (or decoded into its own buffer
/// when Redis stored it as an integer or compressed it).
pub type DumpedEntry<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// `RDB_TYPE_HASH` in Redis's `rdb.h`: a hash in hashtable encoding.
const RDB_TYPE_HASH: u8 = 4;
/// A DUMP payload ends with the RDB version (2 bytes) and a CRC64 (8 bytes).
const FOOTER_LEN: usize = 10;
/// Length-encoding markers (`rdb.h`): the top two bits of the first byte.
const RDB_6BITLEN: u8 = 0;
const RDB_14BITLEN: u8 = 1;
const RDB_32BITLEN: u8 = 0x80;
const RDB_64BITLEN: u8 = 0x81;
const RDB_ENCVAL: u8 = 3;
/// Special string encodings (`RDB_ENC_*`).
const RDB_ENC_INT8: u8 = 0;
const RDB_ENC_INT16: u8 = 1;
const RDB_ENC_INT32: u8 = 2;
const RDB_ENC_LZF: u8 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DumpError {
    /// A valid payload in an encoding this module does not read.
    #[error("unsupported DUMP encoding (type {0})")]
    Unsupported(u8),
    #[error("malformed DUMP payload: {0}")]
    Malformed(&'static str),
}

/// Checks that a payload is in the one encoding [`decode_hash`] reads,
/// without decoding it.
pub fn check_kind(payload: &[u8]) -> Result<(), DumpError> {
    match payload.first() {
        None => Err(DumpError::Malformed("too short")),
        Some(&RDB_TYPE_HASH) => Ok(()),
        Some(&kind) => Err(DumpError::Unsupported(kind)),
    }
}

/// Decodes the DUMP payload of a hash into its entries. Field and value
/// bytes are borrowed from `payload` (no copy, no reference count) unless
/// Redis stored them as integers or compressed them.
pub fn decode_hash(payload: &[u8]) -> Result<Vec<DumpedEntry<'_>>, DumpError> {
    check_kind(payload)?;
    if payload.len() < 1 + FOOTER_LEN {
        return Err(DumpError::Malformed("too short"));
    }
    let mut reader = Reader {
        buf: &payload[1..payload.len() - FOOTER_LEN],
        pos: 0,
    };
    let count = reader.length()?;
    // Each entry takes at least two bytes: a bound on what to reserve.
    let mut entries = Vec::with_capacity(count.min(reader.remaining() / 2));
    for _ in 0..count {
        let field = reader.string()?;
        let value = reader.string()?;
        entries.push((field, value));
    }
    if reader.remaining() != 0 {
        return Err(DumpError::Malformed("trailing bytes"));
    }
    Ok(entries)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DumpError> {
        if n > self.remaining() {
            return Err(DumpError::Malformed("truncated"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, DumpError> {
        Ok(self.array::<1>()?[0])
    }

    /// `rdbLoadLenByRef`: a length, or `Err(encoding)` for an encoded string.
    fn length_or_encoding(&mut self) -> Result<Result<usize, u8>, DumpError> {
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

    fn length(&mut self) -> Result<usize, DumpError> {
        self.length_or_encoding()?
            .map_err(|_| DumpError::Malformed("encoded value where a length belongs"))
    }

    /// `rdbGenericLoadStringObject`: raw, integer-encoded or LZF-compressed.
    fn string(&mut self) -> Result<Cow<'a, [u8]>, DumpError> {
        match self.length_or_encoding()? {
            Ok(len) => self.take(len).map(Cow::Borrowed),
            Err(RDB_ENC_INT8) => Ok(int_text(i8::from_le_bytes(self.array()?).into())),
            Err(RDB_ENC_INT16) => Ok(int_text(i16::from_le_bytes(self.array()?).into())),
            Err(RDB_ENC_INT32) => Ok(int_text(i32::from_le_bytes(self.array()?).into())),
            Err(RDB_ENC_LZF) => {
                let compressed_len = self.length()?;
                let len = self.length()?;
                let compressed = self.take(compressed_len)?;
                let plain = lzf::decompress(compressed, len)
                    .map_err(|_| DumpError::Malformed("bad LZF data"))?;
                if plain.len() != len {
                    return Err(DumpError::Malformed("LZF length mismatch"));
                }
                Ok(Cow::Owned(plain))
            }
            Err(_) => Err(DumpError::Malformed("unknown string encoding")),
        }
    }
}

fn int_text(n: i64) -> Cow<'static, [u8]> {
    Cow::Owned(n.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload as Redis would write it: type, body, then version + CRC
    /// (not checked here, so zeros).
    fn payload(body: &[u8]) -> Vec<u8> {
        let mut out = vec![RDB_TYPE_HASH];
        out.extend_from_slice(body);
        out.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out
    }

    fn text(entries: &[DumpedEntry]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(f, v)| {
                (
                    String::from_utf8_lossy(f).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn decodes_raw_integer_and_compressed_strings() {
        let long = "a".repeat(300);
        let compressed = lzf::compress(long.as_bytes()).unwrap();
        let mut body = vec![4]; // four entries
        body.extend_from_slice(&[5]);
        body.extend_from_slice(b"a.com");
        body.extend_from_slice(&[11]);
        body.extend_from_slice(b"10.0.0.1:80");
        // INT8 -5 as field, INT16 1234 as value.
        body.extend_from_slice(&[0xc0, 0xfb, 0xc1, 0xd2, 0x04]);
        // INT32 100000 as field, a 14-bit length value.
        body.extend_from_slice(&[0xc2, 0xa0, 0x86, 0x01, 0x00]);
        body.extend_from_slice(&[0x41, 0x2c]);
        body.extend_from_slice(long.as_bytes()[..300].as_ref());
        // LZF-compressed field, empty value.
        body.push(0xc3);
        body.extend_from_slice(&[0x40 | (compressed.len() >> 8) as u8, compressed.len() as u8]);
        body.extend_from_slice(&[0x41, 0x2c]);
        body.extend_from_slice(&compressed);
        body.push(0);
        let payload = payload(&body);
        let entries = decode_hash(&payload).unwrap();
        assert_eq!(
            text(&entries),
            [
                ("a.com".into(), "10.0.0.1:80".into()),
                ("-5".into(), "1234".into()),
                ("100000".into(), long.clone()),
                (long, String::new()),
            ]
        );
    }

    #[test]
    fn other_encodings_and_damage_are_errors_not_panics() {
        let listpack = [16, 1, 2, 3, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_hash(&listpack), Err(DumpError::Unsupported(16)));
        assert_eq!(check_kind(&listpack), Err(DumpError::Unsupported(16)));
        for body in [
            &[2, 1, b'a'][..],                   // second entry missing
            &[1, 9, b'a'],                       // string longer than the payload
            &[1, 0xc3, 5, 10, 1, 2, 3, 4, 5, 0], // bad LZF
            &[0, 0],                             // trailing bytes
            &[0x80],                             // truncated 32-bit length
        ] {
            assert!(
                matches!(decode_hash(&payload(body)), Err(DumpError::Malformed(_))),
                "{body:?}"
            );
        }
        assert!(decode_hash(b"\x04").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut with_type = vec![RDB_TYPE_HASH];
            with_type.extend(bytes);
            let _ = decode_hash(&with_type);
        }
    }
}
