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
use std::collections::{HashMap, HashSet};

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
    let (count, mut reader) = entries_region(payload)?;
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

/// The entry count of a payload and a reader over its entries (after the
/// type and the count, before the footer), checked to be of the kind this
/// module reads.
fn entries_region(payload: &[u8]) -> Result<(usize, Reader<'_>), DumpError> {
    check_kind(payload)?;
    if payload.len() < 1 + FOOTER_LEN {
        return Err(DumpError::Malformed("too short"));
    }
    let mut header = Reader {
        buf: &payload[1..payload.len() - FOOTER_LEN],
        pos: 0,
    };
    let count = header.length()?;
    let entries = Reader {
        buf: &header.buf[header.pos..],
        pos: 0,
    };
    Ok((count, entries))
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
/// Redis serializes a hash by walking its dict: an `HSET` of an existing
/// field changes its value in place, a new field or an `HDEL` touches one
/// spot, so two successive payloads are equal but for a region in the
/// middle. The payloads are compared byte-wise from both ends (memcmp
/// speed) and the entry boundaries walked (skipping, not decoding) to find
/// that region. Inside it, entries are matched by their encoded bytes, not
/// by position: while Redis incrementally rehashes a dict that grew past a
/// power of two (which lasts until about as many more writes have reached
/// that hash), every write also moves a bucket's entries to the new table,
/// so the region spans much of the payload while holding the same entries
/// in another order. Only the entries without a byte-equal twin on the
/// other side are decoded.
pub fn diff_payloads<'a>(old: &'a [u8], new: &'a [u8]) -> Result<PayloadDiff<'a>, DumpError> {
    let (mut old, mut new) = (entries_region(old)?.1, entries_region(new)?.1);
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

    /// Moves past one string without decoding it.
    fn skip_string(&mut self) -> Result<(), DumpError> {
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
        for new in [&old, &changed, &inserted, &deleted] {
            let (a, b) = (encode(&old), encode(new));
            let diff = diff_payloads(&a, &b).unwrap();
            assert!(diff.upserts.len() + diff.removed.len() <= 1, "{diff:?}");
            assert_eq!(patched(&old, &diff), sorted(new));
        }
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
            let (a, b) = (encode(&old), encode(&new));
            let diff = diff_payloads(&a, &b).unwrap();
            proptest::prop_assert_eq!(patched(&old, &diff), sorted(&new));
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut with_type = vec![RDB_TYPE_HASH];
            with_type.extend(bytes);
            let _ = decode_hash(&with_type);
        }
    }
}
