//! What a whole read builds ([`build`]): the next table from a read,
//! from the difference with the last `DUMP` payload ([`LastDump`]) when
//! there is one and it is small, else by comparing every entry; and the
//! replay of the change log over a scan ([`replayed`]). Pure: it runs on
//! the build's thread (`background`).

use super::Table;
use crate::sync::changelog::Change;
use crate::sync::dump::{self, DumpError};
use crate::sync::redis::HashRead;
use bytes::Bytes;
use std::sync::Weak;
use tracing::debug;

/// A `DUMP` payload and (weakly) the table served since: the one made
/// from it, or that one patched from the change log on the `touched`
/// fields. The next event-driven read patches that table with what
/// changed between the payloads and with the new payload's value of each
/// touched field, which is exactly the new payload's table: a field in
/// neither set has the same value in both payloads and in the table.
pub(super) struct LastDump<T> {
    pub(super) payload: Bytes,
    pub(super) table: Weak<T>,
    pub(super) touched: Vec<Bytes>,
}

/// What a full read builds.
pub(super) struct Built<T: Table> {
    pub(super) table: T,
    pub(super) diff: T::Diff,
    /// The DUMP payload read, copied out of the client's read buffer.
    pub(super) dump: Option<Bytes>,
    /// Built from the payload diff (else by comparing every entry).
    pub(super) by_payload_diff: bool,
}

/// The next table from a read: from the difference with the last DUMP when
/// there is one and it is small, else by comparing every entry.
pub(super) fn build<T: Table>(
    read: HashRead,
    last_dump: Option<LastDump<T>>,
    previous: &T,
    max_changes: usize,
) -> Result<Built<T>, DumpError> {
    // Kept as read, no copy: a hashtable payload is a slice of the
    // client's read buffer, which the slice pins (up to twice the
    // payload's size, as the buffer grew); a copy would cost the payload's
    // size on top of that buffer, which the client keeps at its largest
    // size for its next reply (4 MB at 100,000 routes). A listpack payload
    // is its own buffer, inflated by `prepare`.
    let dump = read.dump_payload().cloned();
    if let (Some(last), Some(payload)) = (&last_dump, &dump) {
        let changes = dump::diff_payloads(&last.payload, payload)
            .map_err(|e| debug!(error = %e, "payload diff failed; comparing every entry"))
            .ok()
            .filter(|c| c.upserts.len() + c.removed.len() <= max_changes);
        if let Some(changes) = changes {
            let mut changes: Vec<Change> = changes
                .removed
                .iter()
                .map(|f| Change {
                    field: share(&last.payload, f),
                    value: None,
                })
                .chain(changes.upserts.iter().map(|(f, v)| Change {
                    field: share(payload, f),
                    value: Some(share(payload, v)),
                }))
                .collect();
            changes.extend(touched_values(&last.touched, &changes, payload)?);
            if let Some((table, diff)) = previous.patch(&changes) {
                return Ok(Built {
                    table,
                    diff,
                    dump,
                    by_payload_diff: true,
                });
            }
        }
    }
    let entries = read.entries()?;
    let (table, diff) = T::from_entries(&entries, previous);
    Ok(Built {
        table,
        diff,
        dump,
        by_payload_diff: false,
    })
}

/// The value in `payload` of each field in `touched` that `changes` (the
/// payload diff) does not name, `None` for one it does not hold.
fn touched_values(
    touched: &[Bytes],
    changes: &[Change],
    payload: &Bytes,
) -> Result<Vec<Change>, DumpError> {
    let named: std::collections::HashSet<&[u8]> = changes.iter().map(|c| &c.field[..]).collect();
    let mut wanted: std::collections::HashMap<&[u8], Option<Bytes>> = touched
        .iter()
        .map(|f| &f[..])
        .filter(|f| !named.contains(f))
        .map(|f| (f, None))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    for (field, value) in dump::decode_hash(payload)? {
        if let Some(slot) = wanted.get_mut(&field[..]) {
            *slot = Some(share(payload, &value));
        }
    }
    Ok(wanted
        .into_iter()
        .map(|(field, value)| Change {
            field: Bytes::copy_from_slice(field),
            value,
        })
        .collect())
}

/// `read` (a scan) with the log `changes` written since it began applied
/// in order.
pub(super) fn replayed(read: HashRead, changes: Vec<Change>) -> HashRead {
    if changes.is_empty() {
        return read;
    }
    let (watermark, log) = (read.watermark, read.log);
    let Some(pairs) = read.into_pairs() else {
        unreachable!("only an HSCAN read is replayed")
    };
    let mut map: std::collections::HashMap<Bytes, Bytes> = pairs.into_iter().collect();
    for change in changes {
        match change.value {
            Some(value) => map.insert(change.field, value),
            None => map.remove(&change.field),
        };
    }
    HashRead::from_pairs(map.into_iter().collect(), watermark, log)
}

/// `part` as a slice of `buf` when it lies inside it (no copy), else a copy.
fn share(buf: &Bytes, part: &[u8]) -> Bytes {
    let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
    let at = part.as_ptr() as usize;
    if at >= start && at + part.len() <= end {
        buf.slice(at - start..at - start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_slices_what_lies_inside_and_copies_the_rest() {
        let buf = Bytes::from_static(b"0123456789");
        let inside = share(&buf, &buf[3..6]);
        assert_eq!(&inside[..], b"345");
        assert_eq!(inside.as_ptr(), buf[3..].as_ptr(), "no copy");
        let elsewhere = b"345".to_vec();
        let copied = share(&buf, &elsewhere);
        assert_eq!(&copied[..], b"345");
        assert_ne!(copied.as_ptr(), elsewhere.as_ptr());
    }
}
