//! The route table: an immutable host → backends map, built from the Redis
//! hash and swapped in by the sync module. Readers do one lookup on a
//! table they loaded once; nothing here locks or awaits.
//!
//! The table is a function of the whole hash (and, for a key whose value
//! turned invalid, of the route it served before): the full build
//! ([`RouteTable::build`]) and every patch ([`RouteTable::apply`],
//! [`RouteTable::update`]) give the same table for the same hash.

mod build;
mod diff;
mod field;
mod host;
mod parse;
mod patch;
mod route;
mod spellings;

pub use diff::{Diff, Names};
pub use field::{parse_field, FieldKey};
pub use host::{normalize_host, HostError};
pub use parse::{parse_backends, parse_backends_bytes, RouteError, MAX_BACKENDS, MAX_VALUE_LEN};
pub use route::{ms_at, now_ms, Backend, BackendAddr, Backends, Route, SharedRoute};

use compact_str::CompactString;
use field::Kind;
use hashbrown::HashTable;
use serde::Serialize;
use spellings::Spellings;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::SystemTime;

/// One raw hash entry as read from Redis: field and value, bytes as stored.
pub type RawEntry = (bytes::Bytes, bytes::Bytes);

/// Redis server time, microseconds since the Unix epoch.
pub type RedisMicros = u64;

/// Key maps hash with foldhash: several times faster than SipHash on
/// short keys, and hosts are not attacker-chosen keys of an unbounded map
/// (they come from the routes hash). Seeded per build all the same.
type Hasher = foldhash::fast::RandomState;

/// What a table holds under a key: a route, or the knowledge that the
/// key's value is invalid (which answers 502 rather than 404). One
/// pointer wide.
#[derive(Debug, Clone)]
enum Held {
    Route(SharedRoute),
    Invalid,
}

impl Held {
    /// Whether two entries serve the same: one value, or both invalid.
    fn same(&self, other: &Held) -> bool {
        match (self, other) {
            // Carried-over routes are the same `Arc`: no string compare.
            (Held::Route(a), Held::Route(b)) => SharedRoute::ptr_eq(a, b) || a.value() == b.value(),
            (Held::Invalid, Held::Invalid) => true,
            _ => false,
        }
    }

    fn route(&self) -> Option<&SharedRoute> {
        match self {
            Held::Route(route) => Some(route),
            Held::Invalid => None,
        }
    }
}

/// A map's slot: the key inline (a host of up to 24 bytes needs no
/// allocation, and a probe compares it without leaving the slot) and
/// what it holds.
#[derive(Debug, Clone)]
struct Slot {
    key: CompactString,
    held: Held,
}

/// Keys of one kind with what they hold.
#[derive(Debug, Clone, Default)]
struct KeyMap(HashTable<Slot>);

impl KeyMap {
    fn with_capacity(n: usize) -> Self {
        KeyMap(HashTable::with_capacity(n))
    }

    #[inline]
    fn get(&self, hash: u64, key: &str) -> Option<&Held> {
        self.0
            .find(hash, |slot| slot.key == key)
            .map(|slot| &slot.held)
    }

    /// Puts `held` under `key`, returning what it replaces.
    fn insert(&mut self, hash: u64, key: &str, held: Held, hasher: &Hasher) -> Option<Held> {
        match self.0.entry(
            hash,
            |slot| slot.key == key,
            |slot| hasher.hash_one(slot.key.as_str()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                Some(std::mem::replace(&mut slot.get_mut().held, held))
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(Slot {
                    key: key.into(),
                    held,
                });
                None
            }
        }
    }

    fn remove(&mut self, hash: u64, key: &str) -> Option<Held> {
        let slot = self.0.find_entry(hash, |slot| slot.key == key).ok()?;
        Some(slot.remove().0.held)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Held)> + '_ {
        self.0.iter().map(|slot| (slot.key.as_str(), &slot.held))
    }
}

/// A whole table as of its last full build (or fold of the delta).
#[derive(Debug, Clone, Default)]
struct Layer {
    hasher: Hasher,
    exact: KeyMap,
    /// Wildcard routes keyed by suffix (`*.cloud.com` under `cloud.com`).
    wildcard: KeyMap,
    /// The bare `*`.
    default: Option<Held>,
}

impl Layer {
    fn with_capacity(n: usize) -> Self {
        Layer {
            exact: KeyMap::with_capacity(n),
            ..Layer::default()
        }
    }

    #[inline]
    fn get(&self, kind: Kind, hash: u64, key: &str) -> Option<&Held> {
        match kind {
            Kind::Exact => self.exact.get(hash, key),
            Kind::Wildcard => self.wildcard.get(hash, key),
            Kind::Default => self.default.as_ref(),
        }
    }

    fn insert(&mut self, kind: Kind, key: &str, held: Held) -> Option<Held> {
        let hash = self.hasher.hash_one(key);
        match kind {
            Kind::Exact => self.exact.insert(hash, key, held, &self.hasher),
            Kind::Wildcard => self.wildcard.insert(hash, key, held, &self.hasher),
            Kind::Default => self.default.replace(held),
        }
    }

    fn remove(&mut self, kind: Kind, key: &str) -> Option<Held> {
        let hash = self.hasher.hash_one(key);
        match kind {
            Kind::Exact => self.exact.remove(hash, key),
            Kind::Wildcard => self.wildcard.remove(hash, key),
            Kind::Default => self.default.take(),
        }
    }

    fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.default.is_some())
    }

    /// Every key with its map and what it holds.
    fn iter(&self) -> impl Iterator<Item = (Kind, &str, &Held)> + '_ {
        let exact = self.exact.iter().map(|(k, h)| (Kind::Exact, k, h));
        let wildcard = self.wildcard.iter().map(|(k, h)| (Kind::Wildcard, k, h));
        let default = self.default.iter().map(|h| (Kind::Default, "", h));
        exact.chain(wildcard).chain(default)
    }
}

/// A key changed since the base was built: what it holds now, or `None`
/// when the key was removed.
#[derive(Debug, Clone)]
struct DeltaEntry {
    kind: Kind,
    key: CompactString,
    held: Option<Held>,
}

/// The keys changed since the base, hashed with the base's hasher so that
/// a lookup hashes its key once for both.
#[derive(Debug, Clone, Default)]
struct Delta(HashTable<DeltaEntry>);

impl Delta {
    #[inline]
    fn get(&self, kind: Kind, hash: u64, key: &str) -> Option<&DeltaEntry> {
        self.0.find(hash, |e| e.kind == kind && e.key == key)
    }

    /// Records that `key` now holds `held`, in a table whose base is
    /// `base`: nothing when that is what the base holds.
    fn set(&mut self, base: &Layer, kind: Kind, key: &str, held: Option<Held>) {
        let hash = base.hasher.hash_one(key);
        let same_as_base = match (base.get(kind, hash, key), &held) {
            (None, None) => true,
            (Some(Held::Route(a)), Some(Held::Route(b))) => SharedRoute::ptr_eq(a, b),
            (Some(Held::Invalid), Some(Held::Invalid)) => true,
            _ => false,
        };
        let slot = self.0.entry(
            hash,
            |e| e.kind == kind && e.key == key,
            |e| base.hasher.hash_one(e.key.as_str()),
        );
        match slot {
            hashbrown::hash_table::Entry::Occupied(slot) if same_as_base => {
                slot.remove();
            }
            hashbrown::hash_table::Entry::Occupied(mut slot) => slot.get_mut().held = held,
            hashbrown::hash_table::Entry::Vacant(_) if same_as_base => {}
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(DeltaEntry {
                    kind,
                    key: key.into(),
                    held,
                });
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &DeltaEntry> + '_ {
        self.0.iter()
    }
}

/// What a table holds for a key: a route, or the knowledge that its value
/// is invalid (which answers 502 rather than 404).
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    Valid(&'a SharedRoute),
    Invalid,
}

impl<'a> From<&'a Held> for Entry<'a> {
    fn from(held: &'a Held) -> Self {
        match held {
            Held::Route(route) => Entry::Valid(route),
            Held::Invalid => Entry::Invalid,
        }
    }
}

/// A hash entry that does not serve as written, kept aside with its reason:
/// a field that names no host, a value that does not parse, or a field
/// shadowed by another spelling of the same host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidEntry {
    pub field: String,
    pub value: String,
    pub reason: String,
    /// True when the host's last valid route keeps serving in its place.
    pub serving_previous: bool,
}

/// Where a table's data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableSource {
    /// Nothing loaded yet: every request gets 503.
    None,
    /// Loaded from the on-disk snapshot while Redis was unreachable.
    Snapshot,
    /// Loaded from Redis.
    Redis,
}

/// The result of a lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    Route(&'a SharedRoute),
    Invalid,
    NotFound,
}

impl<'a> From<&'a Held> for Lookup<'a> {
    #[inline]
    fn from(held: &'a Held) -> Self {
        match held {
            Held::Route(route) => Lookup::Route(route),
            Held::Invalid => Lookup::Invalid,
        }
    }
}

/// An immutable routing table.
///
/// Two layers, so that a change to one route of a large table costs work
/// in proportion to the change, not to the table: `base` is the table as
/// of its last full build, shared (not copied) by every table patched from
/// it; `delta` holds what changed since. Lookups check the delta first
/// (skipped when it is empty), then the base.
#[derive(Debug)]
pub struct RouteTable {
    base: Arc<Layer>,
    /// Small by construction: copied by every patch, folded into a new
    /// base when it grows (see `patch`).
    delta: Delta,
    /// Keys the table answers for (base and delta merged).
    len: usize,
    /// Whether any wildcard key, or the default route, may answer: the
    /// request path skips those probes otherwise.
    wildcards: bool,
    default: bool,
    /// The hash fields the maps cannot spell back (see `spellings`).
    spellings: Arc<Spellings>,
    /// Derived from `spellings` and the routes; recomputed only when the
    /// spellings change.
    invalid: Arc<[InvalidEntry]>,
    pub version: u64,
    pub built_at: SystemTime,
    /// Redis time the read behind this table reflects (see ARCHITECTURE.md,
    /// `replicas`).
    pub watermark: Option<RedisMicros>,
    pub source: TableSource,
}

impl RouteTable {
    /// The table before anything is loaded: every lookup answers 503.
    pub fn unloaded() -> Self {
        RouteTable::assemble(
            Arc::default(),
            Delta::default(),
            Arc::default(),
            Arc::from([]),
            TableSource::None,
        )
    }

    /// A table of these parts; the counts and flags follow from them.
    fn assemble(
        base: Arc<Layer>,
        delta: Delta,
        spellings: Arc<Spellings>,
        invalid: Arc<[InvalidEntry]>,
        source: TableSource,
    ) -> RouteTable {
        let mut len = base.len();
        let mut wildcards = !base.wildcard.is_empty();
        let mut default = base.default.is_some();
        for entry in delta.iter() {
            let hash = base.hasher.hash_one(entry.key.as_str());
            let in_base = base.get(entry.kind, hash, &entry.key).is_some();
            let live = entry.held.is_some();
            len = len + usize::from(live) - usize::from(in_base);
            match entry.kind {
                Kind::Wildcard => wildcards |= live,
                Kind::Default => default |= live,
                Kind::Exact => {}
            }
        }
        RouteTable {
            base,
            delta,
            len,
            wildcards,
            default,
            spellings,
            invalid,
            version: 0,
            built_at: SystemTime::now(),
            watermark: None,
            source,
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.source != TableSource::None
    }

    /// Looks a normalised host up: exact first, then the longest wildcard
    /// suffix, then the default route. One hash lookup per label at most;
    /// no allocation.
    #[inline]
    pub fn lookup(&self, host: &str) -> Lookup<'_> {
        if let Some(held) = self.get(Kind::Exact, host) {
            return held.into();
        }
        if self.wildcards {
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(held) = self.get(Kind::Wildcard, suffix) {
                    return held.into();
                }
                rest = suffix;
            }
        }
        if self.default {
            if let Some(held) = self.get(Kind::Default, "") {
                return held.into();
            }
        }
        Lookup::NotFound
    }

    /// What a key holds: the delta's word first, then the base's.
    #[inline]
    fn get(&self, kind: Kind, key: &str) -> Option<&Held> {
        let hash = self.base.hasher.hash_one(key);
        if !self.delta.is_empty() {
            if let Some(entry) = self.delta.get(kind, hash, key) {
                return entry.held.as_ref();
            }
        }
        self.base.get(kind, hash, key)
    }

    /// Every key with its map and what it holds, base and delta merged,
    /// in no particular order.
    fn keys(&self) -> impl Iterator<Item = (Kind, &str, &Held)> + '_ {
        let shadowed = |kind: Kind, key: &str| {
            !self.delta.is_empty() && {
                let hash = self.base.hasher.hash_one(key);
                self.delta.get(kind, hash, key).is_some()
            }
        };
        self.base
            .iter()
            .filter(move |(kind, key, _)| !shadowed(*kind, key))
            .chain(
                self.delta
                    .iter()
                    .filter_map(|e| Some((e.kind, e.key.as_str(), e.held.as_ref()?))),
            )
    }

    /// Number of keys (valid or invalid) the table answers for.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash entries that do not serve as written, sorted by field.
    pub fn invalid(&self) -> &[InvalidEntry] {
        &self.invalid
    }

    /// Every key with its entry, written as its normal field (`host`,
    /// `*.suffix`, `*`), sorted.
    pub fn entries(&self) -> Vec<(String, Entry<'_>)> {
        let mut out: Vec<(String, Entry<'_>)> = self
            .keys()
            .map(|(kind, key, held)| (field::shown(kind, key), held.into()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The value, as written in Redis, of the valid route a hash field
    /// names; `None` for no or an invalid route.
    pub fn route_value(&self, field: &str) -> Option<&str> {
        let key = parse_field(field).ok()?;
        Some(self.get(key.kind(), key.name())?.route()?.value())
    }

    /// Every field of the hash this table was made from, with its value:
    /// the table gives back exactly the hash it was built from (what a
    /// snapshot stores, and what [`RouteTable::update`] compares a read
    /// with).
    pub fn for_each_field(&self, mut visit: impl FnMut(&[u8], &[u8])) {
        let mut field = Vec::new();
        for (kind, key, held) in self.keys() {
            // A key outside the spellings is plain: it holds a route.
            if let (false, Some(route)) = (self.spellings.names(kind, key), held.route()) {
                field::spell(kind, key, &mut field);
                visit(&field, route.value().as_bytes());
            }
        }
        self.spellings.for_each_field(visit);
    }

    /// For each key that serves its last valid route because the field
    /// that wins for it now holds an invalid value: that field and the
    /// route's value. With the fields of [`RouteTable::for_each_field`],
    /// enough to rebuild this table in another process (see `snapshot`).
    pub fn for_each_last_valid(&self, mut visit: impl FnMut(&[u8], &str)) {
        self.spellings.for_each_winner(|kind, name, field, value| {
            if let Some(route) = self.get(kind, name).and_then(Held::route) {
                if route.value().as_bytes() != value {
                    visit(field, route.value());
                }
            }
        });
    }

    /// What changed from `old` to `self`, by key and by route value.
    pub fn diff(&self, old: &RouteTable) -> Diff {
        let mut diff = Diff::default();
        for (kind, key, held) in self.keys() {
            diff.record(kind, key, old.get(kind, key), Some(held));
        }
        for (kind, key, held) in old.keys() {
            if self.get(kind, key).is_none() {
                diff.record(kind, key, Some(held), None);
            }
        }
        diff.finish(self.spellings != old.spellings);
        diff
    }
}

/// Helpers for the tests of the table and of what builds it.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Entry, RawEntry, RouteTable};
    use bytes::Bytes;

    /// Raw hash entries from text pairs.
    pub fn raw(entries: &[(&str, &str)]) -> Vec<RawEntry> {
        entries
            .iter()
            .map(|(f, v)| (Bytes::from(f.to_string()), Bytes::from(v.to_string())))
            .collect()
    }

    /// What a table serves: each key with its route value, or `INVALID`.
    pub fn served(table: &RouteTable) -> Vec<(String, String)> {
        table
            .entries()
            .into_iter()
            .map(|(key, entry)| {
                let value = match entry {
                    Entry::Valid(route) => route.value().to_string(),
                    Entry::Invalid => "INVALID".into(),
                };
                (key, value)
            })
            .collect()
    }

    /// The hash a table gives back, sorted.
    pub fn fields(table: &RouteTable) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        table.for_each_field(|f, v| out.push((f.to_vec(), v.to_vec())));
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_an_inline_key_and_a_pointer() {
        // A table of 100,000 routes is 131,072 of these: keep them so.
        assert_eq!(std::mem::size_of::<Held>(), 8);
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }
}
