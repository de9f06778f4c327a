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
//! Two encodings are decoded:
//! - `RDB_TYPE_HASH`, how Redis keeps a large hash (a dict): a count, then
//!   field and value strings;
//! - `RDB_TYPE_HASH_LISTPACK` (Redis 7+), how it keeps a hash of up to
//!   `hash-max-listpack-entries` fields: one contiguous listpack, saved as
//!   one RDB string (LZF-compressed when that shrinks it). Redis produces
//!   this DUMP by copying one buffer instead of walking a dict, which at
//!   1,000 routes is 60-90 µs of its time against 190-260 µs
//!   (bench/README.md).
//!
//! A payload is first [`prepare`]d: a listpack is inflated once, so that
//! entries of either kind borrow from the prepared payload. Anything else
//! (a ziplist from Redis 6, hashes with field expiry from Redis 7.4) is
//! reported as [`DumpError::Unsupported`] and the caller reads the hash with
//! `HGETALL`.

use bytes::Bytes;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// A hash entry borrowed from the payload (or decoded into its own buffer
/// when Redis stored it as an integer or compressed it).
pub type DumpedEntry<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// `RDB_TYPE_HASH` in Redis's `rdb.h`: a hash in hashtable encoding.
const RDB_TYPE_HASH: u8 = 4;
/// `RDB_TYPE_HASH_LISTPACK`: a hash in listpack encoding (Redis 7+).
const RDB_TYPE_HASH_LISTPACK: u8 = 16;
/// Not an RDB type: a listpack payload after [`prepare`], the listpack
/// stored plainly instead of as an RDB string.
const PREPARED_LISTPACK: u8 = 0x80 | RDB_TYPE_HASH_LISTPACK;
/// A listpack (`listpack.c`) starts with its total size (u32) and element
/// count (u16, `u16::MAX` when unknown) and ends with 0xFF.
const LISTPACK_HEADER_LEN: usize = 6;
const LISTPACK_COUNT_UNKNOWN: u16 = u16::MAX;
const LISTPACK_END: u8 = 0xff;
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
/// The most LZF can inflate: a 3-byte back-reference copies 264 bytes.
const LZF_MAX_RATIO: usize = 88;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DumpError {
    /// A valid payload in an encoding this module does not read.
    #[error("unsupported DUMP encoding (type {0})")]
    Unsupported(u8),
    #[error("malformed DUMP payload: {0}")]
    Malformed(&'static str),
    /// Two payloads to compare hold the hash in different encodings (Redis
    /// converted it between the reads).
    #[error("the payloads hold the hash in different encodings")]
    EncodingChanged,
}

/// Puts a DUMP payload in the form the other functions here read: a
/// hashtable payload as Redis sent it (no copy), a listpack payload with its
/// listpack inflated and checked. The footer stays, so the payload's CRC
/// (`shared::payload_crc`) still names the content Redis dumped.
pub fn prepare(payload: Bytes) -> Result<Bytes, DumpError> {
    match payload.first() {
        None => Err(DumpError::Malformed("too short")),
        Some(&RDB_TYPE_HASH) => Ok(payload),
        Some(&RDB_TYPE_HASH_LISTPACK) => {
            let body = body(&payload)?;
            let mut reader = Reader::new(body, Format::Rdb);
            // [type byte][listpack][footer]; the type byte is set once the
            // listpack has checked.
            let mut prepared = match reader.lzf_string()? {
                // Redis compresses every listpack that shrinks; at 100,000
                // routes one inflates to 3.6 MB. Straight into place: an
                // inflate into a buffer of its own and a copy took half of
                // each reload's read time there (bench/README.md).
                Some((compressed, len)) => {
                    let mut prepared = vec![0; 1 + len + FOOTER_LEN];
                    inflate(compressed, &mut prepared[1..=len])?;
                    prepared.truncate(1 + len);
                    prepared
                }
                None => {
                    let listpack = reader.string()?;
                    let mut prepared = Vec::with_capacity(1 + listpack.len() + FOOTER_LEN);
                    prepared.push(0);
                    prepared.extend_from_slice(&listpack);
                    prepared
                }
            };
            if reader.remaining() != 0 {
                return Err(DumpError::Malformed("trailing bytes"));
            }
            listpack_elements(&prepared[1..])?;
            prepared[0] = PREPARED_LISTPACK;
            prepared.extend_from_slice(&payload[payload.len() - FOOTER_LEN..]);
            Ok(Bytes::from(prepared))
        }
        Some(&kind) => Err(DumpError::Unsupported(kind)),
    }
}

/// Decodes a [`prepare`]d DUMP payload of a hash into its entries. Field
/// and value bytes are borrowed from `payload` (no copy, no reference
/// count) unless Redis stored them as integers or compressed them.
pub fn decode_hash(payload: &[u8]) -> Result<Vec<DumpedEntry<'_>>, DumpError> {
    let (count, mut reader) = entries_region(payload)?;
    // Each entry takes at least two bytes: a bound on what to reserve.
    let bound = reader.remaining() / 2;
    let mut entries = Vec::with_capacity(count.unwrap_or(bound).min(bound));
    while reader.remaining() != 0 {
        let field = reader.string()?;
        let value = reader.string()?;
        entries.push((field, value));
    }
    if count.is_some_and(|count| count != entries.len()) {
        return Err(DumpError::Malformed("entry count mismatch"));
    }
    Ok(entries)
}

/// The payload between its type byte and its footer.
fn body(payload: &[u8]) -> Result<&[u8], DumpError> {
    if payload.len() < 1 + FOOTER_LEN {
        return Err(DumpError::Malformed("too short"));
    }
    Ok(&payload[1..payload.len() - FOOTER_LEN])
}

/// The entry count of a prepared payload (when it says) and a reader over
/// exactly its entries.
fn entries_region(payload: &[u8]) -> Result<(Option<usize>, Reader<'_>), DumpError> {
    let kind = *payload.first().ok_or(DumpError::Malformed("too short"))?;
    match kind {
        RDB_TYPE_HASH => {
            let mut header = Reader::new(body(payload)?, Format::Rdb);
            let count = header.length()?;
            let entries = Reader::new(&header.buf[header.pos..], Format::Rdb);
            Ok((Some(count), entries))
        }
        PREPARED_LISTPACK => {
            let (count, elements) = listpack_elements(body(payload)?)?;
            Ok((count, Reader::new(elements, Format::Listpack)))
        }
        kind => Err(DumpError::Unsupported(kind)),
    }
}

/// The entry count a listpack states (field and value are two elements)
/// and the bytes of its elements, between header and end mark.
fn listpack_elements(listpack: &[u8]) -> Result<(Option<usize>, &[u8]), DumpError> {
    if listpack.len() <= LISTPACK_HEADER_LEN {
        return Err(DumpError::Malformed("listpack too short"));
    }
    let total = u32::from_le_bytes(listpack[..4].try_into().expect("4 bytes"));
    if usize::try_from(total) != Ok(listpack.len()) {
        return Err(DumpError::Malformed("listpack size mismatch"));
    }
    if listpack.last() != Some(&LISTPACK_END) {
        return Err(DumpError::Malformed("listpack without its end mark"));
    }
    let count = match u16::from_le_bytes(listpack[4..6].try_into().expect("2 bytes")) {
        LISTPACK_COUNT_UNKNOWN => None,
        elements if elements % 2 == 1 => {
            return Err(DumpError::Malformed("odd listpack element count"))
        }
        elements => Some(usize::from(elements / 2)),
    };
    Ok((count, &listpack[LISTPACK_HEADER_LEN..listpack.len() - 1]))
}

/// What changed between two DUMP payloads of the same hash.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PayloadDiff<'a> {
    /// Entries of the new payload that are new or whose value changed
    /// (and possibly some unchanged ones that moved).
    pub upserts: Vec<DumpedEntry<'a>>,
    /// Fields of the old payload that the new one no longer has.
    pub removed: Vec<Cow<'a, [u8]>>,
}

/// Finds what changed from `old` to `new` without decoding either whole.
///
/// Redis serializes a hash by walking its dict (or copies its listpack): an
/// `HSET` of an existing field changes its value in place, a new field or
/// an `HDEL` touches one spot, so two successive payloads are equal but for
/// a region in the middle. The payloads are compared byte-wise from both
/// ends (memcmp speed) and the entry boundaries walked (skipping, not
/// decoding) to find that region. Inside it, entries are matched by their
/// encoded bytes, not by position: while Redis incrementally rehashes a
/// dict that grew past a power of two (which lasts until about as many
/// more writes have reached that hash), every write also moves a bucket's
/// entries to the new table, so the region spans much of the payload while
/// holding the same entries in another order. Only the entries without a
/// byte-equal twin on the other side are decoded.
pub fn diff_payloads<'a>(old: &'a [u8], new: &'a [u8]) -> Result<PayloadDiff<'a>, DumpError> {
    let (mut old, mut new) = (entries_region(old)?.1, entries_region(new)?.1);
    if old.format != new.format {
        return Err(DumpError::EncodingChanged);
    }
    let (old_len, new_len) = (old.buf.len(), new.buf.len());
    let prefix = common_prefix(old.buf, new.buf);
    // The entries wholly inside the common prefix are the same in both.
    let mut start = 0;
    loop {
        let before = new.pos;
        if !new.skip_entry()? || new.pos > prefix {
            new.pos = before;
            break;
        }
        start = new.pos;
    }
    old.pos = start;
    let suffix = common_suffix(&old.buf[start..], &new.buf[start..]);
    // Walk both to boundaries inside the common suffix that sit at the same
    // distance from the end: from there on the entries are the same bytes.
    let mut old_entries = Vec::new();
    let mut new_entries = Vec::new();
    let (mut old_at, mut new_at) = (start, start);
    while old_len - old_at > suffix {
        old.skip_entry()?;
        old_entries.push(old_at..old.pos);
        old_at = old.pos;
    }
    while new_len - new_at > suffix {
        new.skip_entry()?;
        new_entries.push(new_at..new.pos);
        new_at = new.pos;
    }
    while old_len - old_at != new_len - new_at {
        if old_len - old_at > new_len - new_at {
            old.skip_entry()?;
            old_entries.push(old_at..old.pos);
            old_at = old.pos;
        } else {
            new.skip_entry()?;
            new_entries.push(new_at..new.pos);
            new_at = new.pos;
        }
    }
    // Old entries by their bytes; what the new side matches is unchanged.
    let mut unmatched: HashMap<&'a [u8], usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(old_entries.len(), Default::default());
    for range in &old_entries {
        unmatched.insert(&old.buf[range.clone()], range.start);
    }
    let mut diff = PayloadDiff::default();
    for range in new_entries {
        if unmatched.remove(&new.buf[range.clone()]).is_none() {
            new.pos = range.start;
            diff.upserts.push((new.string()?, new.string()?));
        }
    }
    let upserted: HashSet<&[u8], foldhash::fast::RandomState> = diff
        .upserts
        .iter()
        .map(|(field, _)| field.as_ref())
        .collect();
    let mut removed = Vec::new();
    for &at in unmatched.values() {
        old.pos = at;
        let field = old.string()?;
        if !upserted.contains(field.as_ref()) {
            removed.push(field);
        }
    }
    diff.removed = removed;
    Ok(diff)
}

/// Compared this many bytes at a time (one `memcmp` each) before the
/// differing byte is looked for: megabytes of equal payload go by at
/// memory speed, not a byte per step.
const COMPARE_BLOCK: usize = 256;

/// Length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut at = 0;
    while at + COMPARE_BLOCK <= n && a[at..at + COMPARE_BLOCK] == b[at..at + COMPARE_BLOCK] {
        at += COMPARE_BLOCK;
    }
    at + a[at..n]
        .iter()
        .zip(&b[at..n])
        .position(|(x, y)| x != y)
        .unwrap_or(n - at)
}

/// Length of the longest common suffix of `a` and `b`.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut end = n;
    while end >= COMPARE_BLOCK && a[end - COMPARE_BLOCK..end] == b[end - COMPARE_BLOCK..end] {
        end -= COMPARE_BLOCK;
    }
    n - end
        + a[..end]
            .iter()
            .rev()
            .zip(b[..end].iter().rev())
            .position(|(x, y)| x != y)
            .unwrap_or(end)
}

/// How the strings of a payload are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
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

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    format: Format,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], format: Format) -> Self {
        Reader {
            buf,
            pos: 0,
            format,
        }
    }

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

    /// An LZF-compressed string's compressed bytes and inflated length,
    /// after its encoding marker.
    fn lzf_parts(&mut self) -> Result<(&'a [u8], usize), DumpError> {
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
    fn lzf_string(&mut self) -> Result<Option<(&'a [u8], usize)>, DumpError> {
        let start = self.pos;
        if self.length_or_encoding()? == Err(RDB_ENC_LZF) {
            return self.lzf_parts().map(Some);
        }
        self.pos = start;
        Ok(None)
    }

    /// Moves past one string without decoding it.
    fn skip_string(&mut self) -> Result<(), DumpError> {
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
    fn skip_entry(&mut self) -> Result<bool, DumpError> {
        if self.remaining() == 0 {
            return Ok(false);
        }
        self.skip_string()?;
        self.skip_string()?;
        Ok(true)
    }

    /// `rdbGenericLoadStringObject`: raw, integer-encoded or LZF-compressed
    /// (or a listpack element, borrowed or an integer's text).
    fn string(&mut self) -> Result<Cow<'a, [u8]>, DumpError> {
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
    fn backlen(&mut self, size: usize) -> Result<(), DumpError> {
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
fn inflate(compressed: &[u8], out: &mut [u8]) -> Result<(), DumpError> {
    match lzf_rust::decompress(compressed, out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(_) => Err(DumpError::Malformed("LZF length mismatch")),
        Err(_) => Err(DumpError::Malformed("bad LZF data")),
    }
}

/// How many bytes `lpEncodeBacklen` takes for an element of `size` bytes
/// (its thresholds, as Redis has them).
fn backlen_len(size: usize) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_and_suffix_at_every_position() {
        let base: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for at in [0, 1, 255, 256, 257, 511, 512, 999] {
            let mut other = base.clone();
            other[at] ^= 0xff;
            assert_eq!(common_prefix(&base, &other), at, "prefix, change at {at}");
            assert_eq!(
                common_suffix(&base, &other),
                999 - at,
                "suffix, change at {at}"
            );
        }
        assert_eq!(common_prefix(&base, &base), 1000);
        assert_eq!(common_suffix(&base, &base), 1000);
        assert_eq!(common_prefix(&base[..300], &base), 300);
        assert_eq!(common_suffix(&base[700..], &base), 300);
        assert_eq!(common_prefix(&[], &base), 0);
    }

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
        let mut compressed = vec![0; long.len()];
        let n = lzf_rust::compress(long.as_bytes(), &mut compressed).unwrap();
        compressed.truncate(n);
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
        const ZIPLIST: [u8; 14] = [13, 1, 2, 3, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let ziplist = ZIPLIST;
        assert_eq!(decode_hash(&ziplist), Err(DumpError::Unsupported(13)));
        assert_eq!(
            prepare(Bytes::from_static(&ZIPLIST)),
            Err(DumpError::Unsupported(13))
        );
        // A listpack payload is read only once prepared.
        let raw = Bytes::from(hex(REDIS_LISTPACK_DUMP));
        assert_eq!(decode_hash(&raw), Err(DumpError::Unsupported(16)));
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

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// What Redis 7.0.15 answered to `DUMP` of a listpack hash set with
    /// `HSET k a.com 10.0.0.1:80 5 -5 1234 -100000 100000000 1099511627776
    /// <70 x "a"> "" b.com 127 -4096 4095` (`hash-max-listpack-value 128`):
    /// every integer width, short and 12-bit strings, an empty one. Once
    /// with `rdbcompression no`, once with the default (LZF).
    const REDIS_LISTPACK_DUMP: &str = "104092920000000e0085612e636f6d068b31302e302e302e313a38300c0501dffb02c4d202f26079fe04f300e1f50505f4000000000001000009e0466161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616148800185622e636f6d067f01d00002cfff02ff0a00b5f8062052c4b375";
    const REDIS_LISTPACK_DUMP_LZF: &str = "10c3404f409210920000000e0085612e636f6d068b31302e400118313a38300c0501dffb02c4d202f26079fe04f300e1f50505f4202c08000001000009e04661e03c00044880018562607b087f01d00002cfff02ff0a00d3d315f16e758611";

    #[test]
    fn decodes_listpacks_that_redis_dumped() {
        let long = "a".repeat(70);
        let want: Vec<(String, String)> = [
            ("a.com", "10.0.0.1:80"),
            ("5", "-5"),
            ("1234", "-100000"),
            ("100000000", "1099511627776"),
            (long.as_str(), ""),
            ("b.com", "127"),
            ("-4096", "4095"),
        ]
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
        for dump in [REDIS_LISTPACK_DUMP, REDIS_LISTPACK_DUMP_LZF] {
            let raw = hex(dump);
            let prepared = prepare(Bytes::from(raw.clone())).unwrap();
            assert_eq!(text(&decode_hash(&prepared).unwrap()), want);
            // The footer (and so the CRC that names the content) is kept.
            assert_eq!(prepared[prepared.len() - 10..], raw[raw.len() - 10..]);
        }
    }

    /// A listpack of `elements` as `listpack.c` encodes them: integers for
    /// strings that are canonical integers, else the narrowest string.
    fn listpack(elements: &[&str]) -> Vec<u8> {
        fn backlen(out: &mut Vec<u8>, l: usize) {
            let len = backlen_len(l);
            for i in (0..len).rev() {
                let group = ((l >> (7 * i)) & 0x7f) as u8;
                out.push(if i + 1 == len { group } else { group | 0x80 });
            }
        }
        let mut body = Vec::new();
        for element in elements {
            let mut enc = Vec::new();
            match element.parse::<i64>() {
                Ok(n) if n.to_string() == *element => match n {
                    0..=127 => enc.push(n as u8),
                    -4096..=4095 => {
                        let u = (n as u64) & 0x1fff;
                        enc.extend_from_slice(&[0xc0 | (u >> 8) as u8, u as u8]);
                    }
                    -32_768..=32_767 => {
                        enc.push(0xf1);
                        enc.extend_from_slice(&(n as i16).to_le_bytes());
                    }
                    -8_388_608..=8_388_607 => {
                        enc.push(0xf2);
                        enc.extend_from_slice(&(n as i32).to_le_bytes()[..3]);
                    }
                    -2_147_483_648..=2_147_483_647 => {
                        enc.push(0xf3);
                        enc.extend_from_slice(&(n as i32).to_le_bytes());
                    }
                    _ => {
                        enc.push(0xf4);
                        enc.extend_from_slice(&n.to_le_bytes());
                    }
                },
                _ => {
                    let n = element.len();
                    if n < 64 {
                        enc.push(0x80 | n as u8);
                    } else if n < 4096 {
                        enc.extend_from_slice(&[0xe0 | (n >> 8) as u8, n as u8]);
                    } else {
                        enc.push(0xf0);
                        enc.extend_from_slice(&(n as u32).to_le_bytes());
                    }
                    enc.extend_from_slice(element.as_bytes());
                }
            }
            let size = enc.len();
            body.extend_from_slice(&enc);
            backlen(&mut body, size);
        }
        let count = u16::try_from(elements.len()).unwrap_or(u16::MAX);
        let total = (LISTPACK_HEADER_LEN + body.len() + 1) as u32;
        let mut out = total.to_le_bytes().to_vec();
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&body);
        out.push(LISTPACK_END);
        out
    }

    /// A prepared listpack payload of `entries`.
    fn encode_listpack(entries: &[(String, String)]) -> Vec<u8> {
        let elements: Vec<&str> = entries
            .iter()
            .flat_map(|(f, v)| [f.as_str(), v.as_str()])
            .collect();
        let raw = listpack_payload(&listpack(&elements));
        prepare(Bytes::from(raw)).unwrap().to_vec()
    }

    /// A listpack as Redis DUMPs it: an RDB string (raw here), then footer.
    fn listpack_payload(listpack: &[u8]) -> Vec<u8> {
        let mut raw = vec![RDB_TYPE_HASH_LISTPACK, RDB_32BITLEN];
        raw.extend_from_slice(&(listpack.len() as u32).to_be_bytes());
        raw.extend_from_slice(listpack);
        raw.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        raw
    }

    #[test]
    fn decodes_long_listpack_strings_and_backlens() {
        // 200 bytes: a two-byte backlen; 5,000: a 32-bit length.
        let entries = vec![
            ("x".repeat(200), "y".repeat(5000)),
            ("-9000000000".to_string(), "-70000".to_string()),
        ];
        let payload = encode_listpack(&entries);
        assert_eq!(text(&decode_hash(&payload).unwrap()), entries);
        // An element count of "unknown" (65535) is read to the end mark.
        let mut lp = listpack(&["a", "b"]);
        lp[4..6].copy_from_slice(&u16::MAX.to_le_bytes());
        let payload = prepare(Bytes::from(listpack_payload(&lp))).unwrap();
        assert_eq!(decode_hash(&payload).unwrap().len(), 1);
    }

    /// A listpack as Redis DUMPs one that shrinks: an LZF-compressed RDB
    /// string stating `stated_len` as its inflated length.
    fn lzf_listpack_payload(listpack: &[u8], stated_len: usize) -> Vec<u8> {
        let mut compressed = vec![0; listpack.len() + 64];
        let n = lzf_rust::compress(listpack, &mut compressed).unwrap();
        let mut raw = vec![RDB_TYPE_HASH_LISTPACK, 0xc0 | RDB_ENC_LZF, RDB_32BITLEN];
        raw.extend_from_slice(&(n as u32).to_be_bytes());
        raw.push(RDB_32BITLEN);
        raw.extend_from_slice(&(stated_len as u32).to_be_bytes());
        raw.extend_from_slice(&compressed[..n]);
        raw.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        raw
    }

    #[test]
    fn compressed_listpacks_inflate_in_place_and_bad_lengths_are_errors() {
        let entries: Vec<(String, String)> = (0..2_000)
            .map(|i| {
                (
                    format!("h{i}.bench.test"),
                    format!("127.0.0.1:{}", 19_000 + i % 4),
                )
            })
            .collect();
        let elements: Vec<&str> = entries
            .iter()
            .flat_map(|(f, v)| [f.as_str(), v.as_str()])
            .collect();
        let lp = listpack(&elements);
        let compressed = prepare(Bytes::from(lzf_listpack_payload(&lp, lp.len()))).unwrap();
        // The same prepared bytes as the listpack stored plainly.
        assert_eq!(
            compressed,
            prepare(Bytes::from(listpack_payload(&lp))).unwrap()
        );
        assert_eq!(text(&decode_hash(&compressed).unwrap()), entries);
        for (stated, error) in [
            (lp.len() + 1, "LZF length mismatch"),
            (lp.len() - 1, "bad LZF data"),
            (usize::MAX >> 33, "LZF length out of range"),
        ] {
            assert_eq!(
                prepare(Bytes::from(lzf_listpack_payload(&lp, stated))),
                Err(DumpError::Malformed(error)),
                "stated length {stated}"
            );
        }
    }

    #[test]
    fn damaged_listpacks_are_errors_not_panics() {
        let good = listpack(&["a.com", "10.0.0.1:80"]);
        let mut wrong_size = good.clone();
        wrong_size[0] += 1;
        let mut no_end = good.clone();
        *no_end.last_mut().unwrap() = 0;
        let mut odd = good.clone();
        odd[4] = 1;
        let mut bad_backlen = good.clone();
        bad_backlen[6 + 6] = 7; // "a.com" is 6 bytes encoded
        let mut wrong_count = good.clone();
        wrong_count[4] = 4;
        for lp in [
            wrong_size,
            no_end,
            odd,
            bad_backlen,
            wrong_count,
            vec![7, 0, 0, 0],
        ] {
            let result = prepare(Bytes::from(listpack_payload(&lp)))
                .and_then(|payload| decode_hash(&payload).map(|_| ()));
            assert!(matches!(result, Err(DumpError::Malformed(_))), "{lp:?}");
        }
    }

    /// A payload of `entries` in raw string encoding.
    fn encode(entries: &[(String, String)]) -> Vec<u8> {
        fn length(out: &mut Vec<u8>, n: usize) {
            if n < 64 {
                out.push(n as u8);
            } else if n < 16384 {
                out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
            } else {
                out.push(RDB_32BITLEN);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
        let mut body = Vec::new();
        length(&mut body, entries.len());
        for (f, v) in entries {
            length(&mut body, f.len());
            body.extend_from_slice(f.as_bytes());
            length(&mut body, v.len());
            body.extend_from_slice(v.as_bytes());
        }
        payload(&body)
    }

    /// `old` with the payload diff applied, as a sorted map.
    fn patched(old: &[(String, String)], diff: &PayloadDiff) -> Vec<(String, String)> {
        let mut map: std::collections::BTreeMap<String, String> = old.iter().cloned().collect();
        for f in &diff.removed {
            assert!(
                map.remove(&*String::from_utf8_lossy(f)).is_some(),
                "removed twice"
            );
        }
        for (f, v) in text(&diff.upserts) {
            map.insert(f, v);
        }
        map.into_iter().collect()
    }

    fn sorted(entries: &[(String, String)]) -> Vec<(String, String)> {
        let mut out = entries.to_vec();
        out.sort();
        out
    }

    #[test]
    fn payload_diff_finds_a_change_an_insert_and_a_delete() {
        let old: Vec<(String, String)> = (0..100)
            .map(|i| (format!("h{i}.com"), format!("10.0.0.{i}:80")))
            .collect();
        let mut changed = old.clone();
        changed[40].1 = "10.9.9.9:80".into();
        let mut inserted = old.clone();
        inserted.insert(70, ("new.com".into(), "10.1.1.1:80".into()));
        let mut deleted = old.clone();
        deleted.remove(0);
        for encoder in [encode, encode_listpack] {
            for new in [&old, &changed, &inserted, &deleted] {
                let (a, b) = (encoder(&old), encoder(new));
                let diff = diff_payloads(&a, &b).unwrap();
                assert!(diff.upserts.len() + diff.removed.len() <= 1, "{diff:?}");
                assert_eq!(patched(&old, &diff), sorted(new));
            }
        }
        // Redis converted the hash between two reads: no diff.
        assert_eq!(
            diff_payloads(&encode(&old), &encode_listpack(&old)),
            Err(DumpError::EncodingChanged)
        );
        // Everything reordered (a rehash): the same entries, no change; and
        // a change inside the reordering is found.
        let mut reversed = old.clone();
        reversed.reverse();
        let (a, b) = (encode(&old), encode(&reversed));
        assert_eq!(diff_payloads(&a, &b).unwrap(), PayloadDiff::default());
        reversed[10].1 = "10.7.7.7:80".into();
        reversed.remove(50);
        let b = encode(&reversed);
        let diff = diff_payloads(&a, &b).unwrap();
        assert_eq!((diff.upserts.len(), diff.removed.len()), (1, 1), "{diff:?}");
        assert_eq!(patched(&old, &diff), sorted(&reversed));
    }

    proptest::proptest! {
        /// Any edits of a payload, with its entries moved around as a
        /// rehash moves them: the diff applied to the old entries gives the
        /// new ones.
        #[test]
        fn payload_diff_applied_gives_the_new_entries(
            n in 0usize..120,
            edits in proptest::collection::vec((0u8..4, 0usize..200, 0u32..1000), 0..6),
        ) {
            let old: Vec<(String, String)> = (0..n).map(|i| (format!("h{i}.com"), format!("v{i}"))).collect();
            let mut new = old.clone();
            let mut fresh = 0;
            for (kind, at, value) in edits {
                match kind {
                    0 if !new.is_empty() => { let i = at % new.len(); new[i].1 = format!("x{value}"); }
                    1 => { fresh += 1; let i = at % (new.len() + 1); new.insert(i, (format!("n{fresh}.com"), format!("y{value}"))); }
                    2 if !new.is_empty() => { let i = at % new.len(); new.remove(i); }
                    3 if !new.is_empty() => { let i = at % new.len(); let moved = new.remove(i); new.insert((at * 7) % (new.len() + 1), moved); }
                    _ => {}
                }
            }
            for encoder in [encode, encode_listpack] {
                let (a, b) = (encoder(&old), encoder(&new));
                let diff = diff_payloads(&a, &b).unwrap();
                proptest::prop_assert_eq!(patched(&old, &diff), sorted(&new));
            }
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            for kind in [RDB_TYPE_HASH, PREPARED_LISTPACK] {
                let mut with_type = vec![kind];
                with_type.extend(&bytes);
                let _ = decode_hash(&with_type);
            }
            let mut raw = vec![RDB_TYPE_HASH_LISTPACK];
            raw.extend(bytes);
            let _ = prepare(Bytes::from(raw)).map(|payload| decode_hash(&payload).map(|_| ()));
        }

        /// Arbitrary elements, listpack-encoded, come back as they went in.
        #[test]
        fn listpacks_round_trip(
            entries in proptest::collection::vec(("-?[0-9a-z.]{0,12}", "-?[0-9:.]{0,300}"), 0..40),
        ) {
            let entries: Vec<(String, String)> = entries;
            let payload = encode_listpack(&entries);
            proptest::prop_assert_eq!(text(&decode_hash(&payload).unwrap()), entries);
        }
    }
}
