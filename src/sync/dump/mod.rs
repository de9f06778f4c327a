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

mod diff;
mod reader;
#[cfg(test)]
mod tests;

pub use diff::{diff_payloads, PayloadDiff};
use reader::{inflate, Format, Reader};

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

/// Whether a (prepared) payload is a hash Redis keeps as a dict: one
/// `DUMP` of it walks every entry (~30 ms at 100,000), where a listpack
/// is one string.
pub fn is_dict(payload: &[u8]) -> bool {
    payload.first() == Some(&RDB_TYPE_HASH)
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
