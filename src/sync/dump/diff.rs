//! The payload diff: what changed between two DUMP payloads of the same
//! hash, found by comparing bytes from both ends and decoding only the
//! entries that differ.

use super::{entries_region, DumpError, DumpedEntry};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

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
pub(super) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
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
pub(super) fn common_suffix(a: &[u8], b: &[u8]) -> usize {
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
