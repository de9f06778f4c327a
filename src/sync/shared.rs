//! The shared-reads protocol: names, the read marker, the change messages
//! and their binary encoding, and the lease rules.
//!
//! A keyspace event does not say which field changed, so every replica
//! would read the whole hash on every change. For a large hash one replica,
//! the *reader* (holder of the lease key `<routes-key>:reader`), reads, and
//! publishes what changed; the others (*followers*) apply that instead of
//! reading. Correctness never depends on it: a follower that does not get a
//! matching delta in time reads the hash itself, exactly as without shared
//! reads (see `follower` for what it waits for, and the sync loop).
//!
//! Two kinds of message:
//! - **Read marker**: published *inside* the reader's read transaction
//!   (`MULTI TIME PUBLISH DUMP EXEC`), so it reaches every subscriber at the
//!   very point of its event stream where the read was taken. It must stay
//!   in order with keyspace events on the receiving side, and fred hands
//!   keyspace events and other pub/sub messages out on two separate
//!   queues; so the marker travels on a channel named like the keyspace
//!   channel of a key that never exists ([`marker_channel`]), which fred
//!   delivers on the keyspace queue, in wire order. Its payload is ASCII
//!   (fred reads a keyspace payload as text).
//! - **Change** ([`Change`]), on the plain channel `<routes-key>:changes`:
//!   after the read, either the field-level delta (upserts and removed
//!   fields, from the payload diff) with the identities of the content it
//!   applies to and yields, or "no delta for this read: read yourselves".
//!   Binary and length-prefixed (fields and values are arbitrary bytes).
//!
//! Content identity is the CRC64 that ends every `DUMP` payload: two tables
//! made from the same payload bytes hold the same routes, at no hashing
//! cost. A delta names the CRC of the content it starts from and the one it
//! gives; a follower applies it only on top of exactly that content.

use crate::routes::RedisMicros;
use bytes::Bytes;

/// Version byte of the change messages (and of the marker text).
pub const VERSION: u8 = 1;

/// A delta carries at most this many entries (upserts and removed fields);
/// past it, the reader tells followers to read themselves.
pub const MAX_DELTA_ENTRIES: usize = 2_000;
/// A delta message is at most this large, for the same reason: a large
/// change is as cheap for Redis to serve as one more DUMP.
pub const MAX_DELTA_BYTES: usize = 256 * 1024;

/// The lease key: its value is the id of the replica that reads for all.
pub fn lease_key(routes_key: &str) -> String {
    format!("{routes_key}:reader")
}

/// The plain channel of change messages.
pub fn changes_channel(routes_key: &str) -> String {
    format!("{routes_key}:changes")
}

/// The "key" whose keyspace channel carries read markers. No such key is
/// ever written; a real key of that name would only send events that do not
/// decode as markers, which are ignored.
pub fn marker_key(routes_key: &str) -> String {
    format!("{routes_key}:reads")
}

/// The channel of read markers (see the module doc for why it is named
/// like a keyspace channel).
pub fn marker_channel(db: u8, routes_key: &str) -> String {
    format!("__keyspace@{db}__:{}", marker_key(routes_key))
}

/// What a replica that has just taken the lease publishes on both channels
/// to check it may, before it puts a `PUBLISH` in a read transaction (where
/// a refusal would fail the read). Neither a marker nor a change message:
/// receivers ignore it.
pub const PROBE: &str = "sy1:probe";

/// One read of one reader: a random id per reader term (so a restarted or
/// second reader never reuses a number) and a counter within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadId {
    pub reader: u64,
    pub seq: u64,
}

impl ReadId {
    /// The marker's text: `sy1:<reader, 16 hex digits>:<seq>`.
    pub fn marker(&self) -> String {
        format!("sy{VERSION}:{:016x}:{}", self.reader, self.seq)
    }

    /// Parses a marker; `None` for anything else.
    pub fn from_marker(text: &str) -> Option<ReadId> {
        let rest = text.strip_prefix("sy")?;
        let (version, rest) = rest.split_once(':')?;
        if version.parse::<u8>().ok()? != VERSION {
            return None;
        }
        let (reader, seq) = rest.split_once(':')?;
        if reader.len() != 16 || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ReadId {
            reader: u64::from_str_radix(reader, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// The content identity of a DUMP payload: its trailing CRC64.
pub fn payload_crc(payload: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = payload
        .get(payload.len().checked_sub(8)?..)?
        .try_into()
        .ok()?;
    Some(u64::from_le_bytes(tail))
}

/// What changed between two contents of the hash: fields set (new, changed,
/// or unchanged ones the diff could not rule out) and fields deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub upserts: Vec<(Bytes, Bytes)>,
    pub removed: Vec<Bytes>,
}

impl ChangeSet {
    pub fn len(&self) -> usize {
        self.upserts.len() + self.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of field and value data it carries.
    fn data_len(&self) -> usize {
        self.upserts
            .iter()
            .map(|(f, v)| f.len() + v.len())
            .chain(self.removed.iter().map(Bytes::len))
            .sum()
    }

    /// Small enough to publish (see [`MAX_DELTA_ENTRIES`]).
    pub fn fits(&self) -> bool {
        self.len() <= MAX_DELTA_ENTRIES
            && self.data_len() + 8 * self.len() + DELTA_HEADER_LEN <= MAX_DELTA_BYTES
    }
}

/// A reader's field-level delta for one of its reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub read: ReadId,
    /// The content it applies to (CRC of the reader's previous payload).
    pub base_crc: u64,
    /// The content it gives (CRC of the payload of this read).
    pub new_crc: u64,
    /// Redis time of the read (the watermark of the table it gives).
    pub watermark: RedisMicros,
    /// The reader's read and build time, µs: followers size their patience
    /// by it.
    pub read_micros: u32,
    pub changes: ChangeSet,
}

/// A message on the changes channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Delta(Delta),
    /// The reader has no usable delta for this read (first read of a
    /// session, a reordered payload, a read without DUMP, a change too
    /// large): followers waiting for it read the hash themselves.
    ReadYourselves {
        read: ReadId,
        watermark: RedisMicros,
    },
}

impl Change {
    pub fn read(&self) -> ReadId {
        match self {
            Change::Delta(delta) => delta.read,
            Change::ReadYourselves { read, .. } => *read,
        }
    }
}

const KIND_DELTA: u8 = 1;
const KIND_READ_YOURSELVES: u8 = 2;
/// Version, kind, reader, seq, watermark.
const HEADER_LEN: usize = 2 + 3 * 8;
/// Header plus base, new, read time and the two counts.
const DELTA_HEADER_LEN: usize = HEADER_LEN + 2 * 8 + 3 * 4;

/// Why a message did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown change message version {0}")]
    Version(u8),
    #[error("unknown change message kind {0}")]
    Kind(u8),
    #[error("truncated change message")]
    Truncated,
    #[error("trailing bytes after a change message")]
    Trailing,
}

/// Encodes a change message: a version byte, a kind byte, then fixed-width
/// little-endian integers and `u32`-length-prefixed byte strings.
pub fn encode(change: &Change) -> Vec<u8> {
    let (kind, read, watermark) = match change {
        Change::Delta(d) => (KIND_DELTA, d.read, d.watermark),
        Change::ReadYourselves { read, watermark } => (KIND_READ_YOURSELVES, *read, *watermark),
    };
    let mut out = Vec::with_capacity(match change {
        Change::Delta(d) => DELTA_HEADER_LEN + d.changes.data_len() + 8 * d.changes.len(),
        Change::ReadYourselves { .. } => HEADER_LEN,
    });
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&read.reader.to_le_bytes());
    out.extend_from_slice(&read.seq.to_le_bytes());
    out.extend_from_slice(&watermark.to_le_bytes());
    if let Change::Delta(d) = change {
        out.extend_from_slice(&d.base_crc.to_le_bytes());
        out.extend_from_slice(&d.new_crc.to_le_bytes());
        out.extend_from_slice(&d.read_micros.to_le_bytes());
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        out.extend_from_slice(&(d.changes.upserts.len() as u32).to_le_bytes());
        for (field, value) in &d.changes.upserts {
            bytes(&mut out, field);
            bytes(&mut out, value);
        }
        out.extend_from_slice(&(d.changes.removed.len() as u32).to_le_bytes());
        for field in &d.changes.removed {
            bytes(&mut out, field);
        }
    }
    out
}

/// Decodes a change message; fields and values are slices of `message`
/// (no copy). Any input gives a message or an error, never a panic, and a
/// count never reserves more than the message could hold.
pub fn decode(message: &Bytes) -> Result<Change, DecodeError> {
    let mut r = Reader {
        buf: message,
        pos: 0,
    };
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = r.u8()?;
    let read = ReadId {
        reader: r.u64()?,
        seq: r.u64()?,
    };
    let watermark = r.u64()?;
    let change = match kind {
        KIND_READ_YOURSELVES => Change::ReadYourselves { read, watermark },
        KIND_DELTA => {
            let base_crc = r.u64()?;
            let new_crc = r.u64()?;
            let read_micros = r.u32()?;
            let n = r.count(8)?;
            let mut upserts = Vec::with_capacity(n);
            for _ in 0..n {
                upserts.push((r.bytes()?, r.bytes()?));
            }
            let n = r.count(4)?;
            let mut removed = Vec::with_capacity(n);
            for _ in 0..n {
                removed.push(r.bytes()?);
            }
            Change::Delta(Delta {
                read,
                base_crc,
                new_crc,
                watermark,
                read_micros,
                changes: ChangeSet { upserts, removed },
            })
        }
        other => return Err(DecodeError::Kind(other)),
    };
    if r.pos != message.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(change)
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let range = self.take(N)?;
        Ok(self.buf[range].try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items each at least `min_len` bytes long: refused when
    /// the rest of the message cannot hold that many.
    fn count(&mut self, min_len: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_len) > self.buf.len() - self.pos {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        let range = self.take(len)?;
        Ok(self.buf.slice(range))
    }
}

/// This replica's part in shared reads, as the lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not taking part: the hash is small, or shared reads are off.
    Inactive,
    /// Holds the lease: reads for everyone and publishes what changed.
    Reader,
    /// Another replica holds the lease: apply its deltas.
    Follower { reader: String },
}

/// What a lease command answered: the holder the key had before (`None`
/// when it had none, and a `SET NX` then made us the holder).
pub fn role_after_acquire(previous_holder: Option<&str>, me: &str) -> Role {
    match previous_holder {
        None => Role::Reader,
        // Ours already (set in an earlier session that did not release it).
        Some(holder) if holder == me => Role::Reader,
        Some(holder) => Role::Follower {
            reader: holder.to_owned(),
        },
    }
}

/// What a renewal (`GETEX <lease> PX <ttl>`) answered: still ours, gone (so
/// try to acquire it), or someone else's: they took it after ours expired
/// (a late renewal), and they keep it. Renewing with `GETEX` rather than
/// `SET XX` never overwrites another holder, so two replicas can never both
/// keep renewing; the one extra expiry it gave the other holder is harmless.
pub fn role_after_renew(holder: Option<&str>, me: &str) -> Option<Role> {
    match holder {
        Some(holder) if holder == me => Some(Role::Reader),
        Some(holder) => Some(Role::Follower {
            reader: holder.to_owned(),
        }),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn delta(upserts: &[(&[u8], &[u8])], removed: &[&[u8]]) -> Change {
        Change::Delta(Delta {
            read: ReadId {
                reader: 0xdead_beef_0102_0304,
                seq: 7,
            },
            base_crc: 1,
            new_crc: u64::MAX,
            watermark: 1_700_000_000_123_456,
            read_micros: 31_000,
            changes: ChangeSet {
                upserts: upserts
                    .iter()
                    .map(|(f, v)| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
                    .collect(),
                removed: removed.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
            },
        })
    }

    #[test]
    fn messages_round_trip_with_arbitrary_bytes() {
        for change in [
            delta(&[], &[]),
            delta(
                &[
                    (b"a.com", b"10.0.0.1:80"),
                    (b"\xff\x00*.x", b""),
                    (b"", b"\n\r\0"),
                ],
                &[b"gone.com", b"\x00"],
            ),
            Change::ReadYourselves {
                read: ReadId { reader: 0, seq: 0 },
                watermark: 5,
            },
        ] {
            let bytes = Bytes::from(encode(&change));
            assert_eq!(decode(&bytes), Ok(change));
        }
    }

    #[test]
    fn damaged_messages_are_errors() {
        let good = encode(&delta(&[(b"a.com", b"10.0.0.1:80")], &[b"b.com"]));
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        assert_eq!(
            decode(&Bytes::from(wrong_version)),
            Err(DecodeError::Version(9))
        );
        let mut wrong_kind = good.clone();
        wrong_kind[1] = 0;
        assert_eq!(decode(&Bytes::from(wrong_kind)), Err(DecodeError::Kind(0)));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode(&Bytes::from(trailing)), Err(DecodeError::Trailing));
        for cut in 0..good.len() {
            assert!(
                decode(&Bytes::copy_from_slice(&good[..cut])).is_err(),
                "{cut}"
            );
        }
        // A count far beyond what the message holds reserves nothing.
        let mut huge = good[..DELTA_HEADER_LEN - 8].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&Bytes::from(huge)), Err(DecodeError::Truncated));
    }

    #[test]
    fn markers_round_trip_and_strangers_are_refused() {
        let id = ReadId {
            reader: 0x0123_4567_89ab_cdef,
            seq: 42,
        };
        assert_eq!(id.marker(), "sy1:0123456789abcdef:42");
        assert_eq!(ReadId::from_marker(&id.marker()), Some(id));
        assert!(decode(&Bytes::from_static(PROBE.as_bytes())).is_err());
        for other in [
            PROBE,
            "",
            "hset",
            "set",
            "sy2:0123456789abcdef:42",
            "sy1:0123456789abcde:42",
            "sy1:0123456789abcdef:",
            "sy1:0123456789abcdef:+4",
            "sy1:0123456789abcdef:99999999999999999999999",
            "sy1:0123456789abcdeg:1",
        ] {
            assert_eq!(ReadId::from_marker(other), None, "{other:?}");
        }
    }

    #[test]
    fn names_are_scoped_by_the_routes_key() {
        assert_eq!(lease_key("routes"), "routes:reader");
        assert_eq!(changes_channel("routes"), "routes:changes");
        assert_eq!(marker_channel(3, "routes"), "__keyspace@3__:routes:reads");
    }

    #[test]
    fn the_crc_is_the_last_eight_bytes() {
        let mut payload = vec![4, 0, 10, 0];
        payload.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(payload_crc(&payload), Some(0x1122_3344_5566_7788));
        assert_eq!(payload_crc(&[1, 2, 3]), None);
    }

    #[test]
    fn the_size_cap_counts_entries_and_bytes() {
        let entry = (Bytes::from_static(b"a.com"), Bytes::from_static(b"1:1"));
        let mut set = ChangeSet {
            upserts: vec![entry.clone(); MAX_DELTA_ENTRIES],
            removed: Vec::new(),
        };
        assert!(set.fits());
        set.removed.push(Bytes::from_static(b"b.com"));
        assert!(!set.fits());
        let big = ChangeSet {
            upserts: vec![(Bytes::from(vec![b'x'; MAX_DELTA_BYTES]), Bytes::new())],
            removed: Vec::new(),
        };
        assert!(!big.fits());
        // What fits also encodes within the byte cap.
        assert!(encode(&delta(&[(b"a.com", b"1:1")], &[])).len() <= MAX_DELTA_BYTES);
    }

    #[test]
    fn lease_replies_give_roles() {
        assert_eq!(role_after_acquire(None, "a"), Role::Reader);
        assert_eq!(role_after_acquire(Some("a"), "a"), Role::Reader);
        assert_eq!(
            role_after_acquire(Some("b"), "a"),
            Role::Follower { reader: "b".into() }
        );
        assert_eq!(role_after_renew(Some("a"), "a"), Some(Role::Reader));
        assert_eq!(
            role_after_renew(Some("b"), "a"),
            Some(Role::Follower { reader: "b".into() })
        );
        assert_eq!(role_after_renew(None, "a"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&Bytes::from(bytes.clone()));
            // And with a valid header in front, to reach the counts.
            let mut framed = vec![VERSION, KIND_DELTA];
            framed.extend(bytes);
            let _ = decode(&Bytes::from(framed));
        }

        #[test]
        fn arbitrary_deltas_round_trip(
            reader in any::<u64>(), seq in any::<u64>(), base in any::<u64>(), new in any::<u64>(),
            watermark in any::<u64>(), read_micros in any::<u32>(),
            upserts in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..20)), 0..20),
            removed in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..20),
        ) {
            let change = Change::Delta(Delta {
                read: ReadId { reader, seq },
                base_crc: base,
                new_crc: new,
                watermark,
                read_micros,
                changes: ChangeSet {
                    upserts: upserts.into_iter().map(|(f, v)| (Bytes::from(f), Bytes::from(v))).collect(),
                    removed: removed.into_iter().map(Bytes::from).collect(),
                },
            });
            prop_assert_eq!(decode(&Bytes::from(encode(&change))), Ok(change));
        }

        #[test]
        fn arbitrary_marker_text_never_panics(text in ".{0,40}") {
            let _ = ReadId::from_marker(&text);
        }
    }
}
