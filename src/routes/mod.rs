//! The route table: an immutable host → backends map, built whole from the
//! Redis hash and swapped in by the sync module. Readers do one lookup on a
//! table they loaded once; nothing here locks or awaits.

mod host;
mod parse;
mod patch;

pub use host::{normalize_host, HostError};
pub use parse::{parse_backends, parse_backends_bytes, RouteError, MAX_BACKENDS, MAX_VALUE_LEN};

use compact_str::CompactString;
use http::uri::Authority;
use serde::Serialize;
use std::collections::HashMap;

/// Route maps hash with foldhash: several times faster than SipHash on
/// short keys, and hosts are not attacker-chosen keys of an unbounded map
/// (they come from the routes hash). Seeded per process all the same.
/// Keys are `CompactString`s: a host of up to 24 bytes lives in the bucket
/// itself, so a probe compares it without another cache miss and a route
/// costs one allocation less.
type HostMap<V = Entry> = HashMap<CompactString, V, foldhash::fast::RandomState>;

/// The two maps of a table, or of its delta: exact hosts, and wildcard
/// routes keyed by suffix (`*.cloud.com` is stored as `cloud.com`).
#[derive(Debug, Clone)]
struct Layer<V> {
    exact: HostMap<V>,
    wildcard: HostMap<V>,
}

impl<V> Default for Layer<V> {
    fn default() -> Self {
        Layer {
            exact: HostMap::default(),
            wildcard: HostMap::default(),
        }
    }
}

impl<V> Layer<V> {
    fn map(&self, wildcard: bool) -> &HostMap<V> {
        if wildcard {
            &self.wildcard
        } else {
            &self.exact
        }
    }

    fn map_mut(&mut self, wildcard: bool) -> &mut HostMap<V> {
        if wildcard {
            &mut self.wildcard
        } else {
            &mut self.exact
        }
    }

    fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One raw hash entry as read from Redis: field and value, bytes as stored.
pub type RawEntry = (bytes::Bytes, bytes::Bytes);

/// A backend of a route. Its health mark lives here so that a route whose
/// value did not change keeps its marks across reloads (the whole `Route` is
/// carried over by `Arc`).
#[derive(Debug)]
pub struct Backend {
    pub authority: Authority,
    /// Milliseconds since [`process_epoch`] until which the backend is
    /// considered down; 0 when healthy.
    down_until_ms: AtomicU64,
}

impl Backend {
    fn new(authority: Authority) -> Self {
        Backend {
            authority,
            down_until_ms: AtomicU64::new(0),
        }
    }

    pub fn is_down(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub fn mark_down(&self, now_ms: u64, ttl_ms: u64) {
        self.down_until_ms
            .store(now_ms.saturating_add(ttl_ms).max(1), Ordering::Relaxed);
    }

    pub fn mark_up(&self) {
        self.down_until_ms.store(0, Ordering::Relaxed);
    }
}

/// Milliseconds since the first call: a monotonic clock cheap enough for the
/// request path, used for backend health marks.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// [`now_ms`] of an instant already read (the request path reads the clock
/// once per request and derives the rest).
pub fn ms_at(at: Instant) -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // +1 so that "0" can mean "never marked".
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_millis() as u64
        + 1
}

/// A valid route: its value as written in Redis and the parsed backends.
#[derive(Debug)]
pub struct Route {
    /// Inline up to 24 bytes (`ip:port` always is): a reload compares it
    /// with what Redis holds without following another pointer.
    pub value: CompactString,
    pub backends: Box<[Backend]>,
    /// Round-robin cursor. An atomic, not a lock: the table stays shareable.
    next: AtomicUsize,
}

impl Route {
    fn new(value: &str, backends: Vec<Authority>) -> Self {
        Route {
            value: value.into(),
            backends: backends.into_iter().map(Backend::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Backends in the order this request should try them: round-robin
    /// start, healthy ones first, down ones last (so that when every backend
    /// is down they are still tried rather than failing at once).
    pub fn pick_order(&self, now_ms: u64) -> impl Iterator<Item = &Backend> + '_ {
        let n = self.backends.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        let rotated = (0..n).map(move |i| &self.backends[(start + i) % n]);
        let healthy = rotated.clone().filter(move |b| !b.is_down(now_ms));
        let down = rotated.filter(move |b| b.is_down(now_ms));
        healthy.chain(down)
    }
}

/// What a table holds for a key: a route, or the knowledge that its value
/// is invalid (which answers 502 rather than 404).
#[derive(Debug, Clone)]
pub enum Entry {
    Valid(Arc<Route>),
    Invalid,
}

/// A hash entry that did not parse, kept aside with its reason.
#[derive(Debug, Clone, Serialize)]
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
    Route(&'a Arc<Route>),
    Invalid,
    NotFound,
}

/// Redis server time, microseconds since the Unix epoch.
pub type RedisMicros = u64;

/// An immutable routing table.
///
/// Two layers, so that a change to one route of a large table costs work
/// in proportion to the change, not to the table: `base` is the table as
/// of its last full build, shared (not copied) by every table patched from
/// it; `delta` holds what changed since. Lookups check the delta first
/// (skipped when it is empty), then the base.
#[derive(Debug)]
pub struct RouteTable {
    base: Arc<Layer<Entry>>,
    /// Keys changed since `base` was built: the new entry, or `None` when
    /// the key was removed. Small by construction: copied by every patch,
    /// folded into a new base when it grows (see `patch`).
    delta: Layer<Option<Entry>>,
    /// Keys the table answers for (base and delta merged).
    len: usize,
    invalid: Vec<InvalidEntry>,
    pub version: u64,
    pub built_at: SystemTime,
    /// Redis time the read behind this table reflects (DESIGN 3.7).
    pub watermark: Option<RedisMicros>,
    pub source: TableSource,
}

/// The diff as [`RouteTable::build_with_diff`] accumulates it.
#[derive(Default)]
struct DiffTracker {
    diff: Diff,
    /// Keys of the new table that the previous table also had.
    carried: usize,
}

/// What changed between two tables.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub added: Names,
    pub changed: Names,
    pub removed: Names,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
    pub fn len(&self) -> usize {
        self.added.len() + self.changed.len() + self.removed.len()
    }

    fn sort(&mut self) {
        self.added.kept.sort();
        self.changed.kept.sort();
        self.removed.kept.sort();
    }
}

/// The hosts in one part of a [`Diff`]: how many, and the names of the
/// first [`Names::KEPT`], enough for a log line. A boot load of a million
/// routes is a million additions; formatting and sorting a million names
/// for a log line took over half of that build.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    count: usize,
    kept: Vec<String>,
}

impl Names {
    pub const KEPT: usize = 64;

    /// Counts one more host; `name` is only called while names are kept.
    pub fn push_with(&mut self, name: impl FnOnce() -> String) {
        self.count += 1;
        if self.kept.len() < Self::KEPT {
            self.kept.push(name());
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Up to [`Names::KEPT`] names, sorted.
    pub fn kept(&self) -> &[String] {
        &self.kept
    }
}

impl<const N: usize> PartialEq<[&str; N]> for Names {
    fn eq(&self, names: &[&str; N]) -> bool {
        self.count == N && self.kept.iter().zip(names).all(|(a, b)| a == b)
    }
}

impl RouteTable {
    /// The table before anything is loaded: every lookup answers 503.
    pub fn unloaded() -> Self {
        RouteTable {
            base: Arc::default(),
            delta: Layer::default(),
            len: 0,
            invalid: Vec::new(),
            version: 0,
            built_at: SystemTime::now(),
            watermark: None,
            source: TableSource::None,
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.source != TableSource::None
    }

    /// Looks a normalised host up: exact first, then the longest wildcard
    /// suffix. One hash lookup per label at most; no allocation.
    pub fn lookup(&self, host: &str) -> Lookup<'_> {
        if let Some(entry) = self.get(false, host) {
            return entry.into();
        }
        if !self.base.wildcard.is_empty() || !self.delta.wildcard.is_empty() {
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(entry) = self.get(true, suffix) {
                    return entry.into();
                }
                rest = suffix;
            }
        }
        Lookup::NotFound
    }

    /// The entry of an exact host or a wildcard suffix: the delta's word
    /// first, then the base's.
    #[inline]
    fn get(&self, wildcard: bool, key: &str) -> Option<&Entry> {
        let delta = self.delta.map(wildcard);
        if !delta.is_empty() {
            if let Some(entry) = delta.get(key) {
                return entry.as_ref();
            }
        }
        self.base.map(wildcard).get(key)
    }

    /// Every key of one map with its entry, base and delta merged.
    fn iter_map(&self, wildcard: bool) -> impl Iterator<Item = (&str, &Entry)> + '_ {
        let delta = self.delta.map(wildcard);
        self.base
            .map(wildcard)
            .iter()
            .filter(move |(key, _)| !delta.contains_key(*key))
            .map(|(key, entry)| (&**key, entry))
            .chain(
                delta
                    .iter()
                    .filter_map(|(key, entry)| Some((&**key, entry.as_ref()?))),
            )
    }

    /// Number of keys (valid or invalid) the table answers for.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn invalid(&self) -> &[InvalidEntry] {
        &self.invalid
    }

    /// Every key with its entry, wildcards written as `*.suffix`, sorted.
    pub fn entries(&self) -> Vec<(String, &Entry)> {
        let mut out: Vec<(String, &Entry)> = self
            .iter_map(false)
            .map(|(k, v)| (k.to_string(), v))
            .chain(self.iter_map(true).map(|(k, v)| (format!("*.{k}"), v)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Builds a table from raw hash entries. Entries whose value did not
    /// change since `previous` reuse its `Route` (keeping health marks and
    /// the round-robin cursor); an invalid value keeps the previous valid
    /// route for that host when there was one.
    pub fn build<E: AsRef<[u8]>>(raw: &[(E, E)], previous: &RouteTable) -> RouteTable {
        Self::build_with_diff(raw, previous).0
    }

    /// [`RouteTable::build`] plus what changed from `previous`, computed on
    /// the way: each key is looked up in `previous` once anyway, so the
    /// diff costs a second pass only when keys were removed. Equal to
    /// `table.diff(previous)`.
    pub fn build_with_diff<E: AsRef<[u8]>>(
        raw: &[(E, E)],
        previous: &RouteTable,
    ) -> (RouteTable, Diff) {
        let mut tracker = DiffTracker::default();
        let mut layer = Layer {
            exact: HostMap::with_capacity_and_hasher(raw.len(), Default::default()),
            wildcard: HostMap::default(),
        };
        let mut invalid = Vec::new();
        for (field, value) in raw {
            let (field, value) = (field.as_ref(), value.as_ref());
            insert_raw(
                &mut layer,
                &mut invalid,
                field,
                value,
                previous,
                &mut tracker,
            );
        }
        invalid.sort_by(|a: &InvalidEntry, b| a.field.cmp(&b.field));
        let mut diff = tracker.diff;
        if tracker.carried < previous.len() {
            for (wildcard, prefix) in [(false, ""), (true, "*.")] {
                let new = layer.map(wildcard);
                for (k, _) in previous.iter_map(wildcard) {
                    if !new.contains_key(k) {
                        diff.removed.push_with(|| format!("{prefix}{k}"));
                    }
                }
            }
        }
        if diff.is_empty() && previous.invalid.len() != invalid.len() {
            diff.changed.push_with(|| "(invalid entries)".into());
        }
        diff.sort();
        let table = RouteTable {
            len: layer.len(),
            base: Arc::new(layer),
            delta: Layer::default(),
            invalid,
            version: previous.version,
            built_at: SystemTime::now(),
            watermark: None,
            source: TableSource::Redis,
        };
        (table, diff)
    }

    /// The value, as written in Redis, of the valid route a hash field
    /// names (`*.suffix` for a wildcard); `None` for no or an invalid route.
    pub fn route_value(&self, field: &str) -> Option<&str> {
        match self.entry(&parse_field(field).ok()?)? {
            Entry::Valid(route) => Some(&route.value),
            Entry::Invalid => None,
        }
    }

    fn entry(&self, key: &FieldKey) -> Option<&Entry> {
        match key {
            FieldKey::Exact(h) => self.get(false, h),
            FieldKey::Wildcard(s) => self.get(true, s),
        }
    }

    /// What changed from `old` to `self`, by key and by route value.
    pub fn diff(&self, old: &RouteTable) -> Diff {
        let mut diff = Diff::default();
        for (wildcard, prefix) in [(false, ""), (true, "*.")] {
            for (key, entry) in self.iter_map(wildcard) {
                match old.get(wildcard, key) {
                    None => diff.added.push_with(|| format!("{prefix}{key}")),
                    Some(before) if !same_entry(before, entry) => {
                        diff.changed.push_with(|| format!("{prefix}{key}"))
                    }
                    Some(_) => {}
                }
            }
            for (key, _) in old.iter_map(wildcard) {
                if self.get(wildcard, key).is_none() {
                    diff.removed.push_with(|| format!("{prefix}{key}"));
                }
            }
        }
        if diff.is_empty() && old.invalid.len() != self.invalid.len() {
            // An invalid value replaced by another invalid value changes
            // nothing served, but the admin view must show the new reason.
            diff.changed.push_with(|| "(invalid entries)".into());
        }
        diff.sort();
        diff
    }
}

/// Adds one raw hash entry to a table being built (see
/// [`RouteTable::build_with_diff`]).
fn insert_raw(
    layer: &mut Layer<Entry>,
    invalid: &mut Vec<InvalidEntry>,
    field: &[u8],
    value: &[u8],
    previous: &RouteTable,
    tracker: &mut DiffTracker,
) {
    // Only error paths show the field: no copy for the million good ones.
    let field_text = || String::from_utf8_lossy(field);
    let value_text = || {
        let v = String::from_utf8_lossy(&value[..value.len().min(256)]).into_owned();
        if value.len() > 256 {
            format!("{v}…")
        } else {
            v
        }
    };
    let key = match std::str::from_utf8(field)
        .map_err(|_| "field is not UTF-8".to_owned())
        .and_then(|f| parse_field(f).map_err(|e| format!("field: {e}")))
    {
        Ok(key) => key,
        Err(reason) => {
            invalid.push(InvalidEntry {
                field: field_text().into_owned(),
                value: value_text(),
                reason,
                serving_previous: false,
            });
            return;
        }
    };
    let previous_entry = previous.entry(&key);
    let is_wildcard = matches!(key, FieldKey::Wildcard(_));
    let (map, name) = match key {
        FieldKey::Exact(host) => (&mut layer.exact, host),
        FieldKey::Wildcard(suffix) => (&mut layer.wildcard, suffix),
    };
    // One hash of the key, and the normalised String becomes the key
    // without another allocation.
    let slot = match map.entry(CompactString::from(name)) {
        std::collections::hash_map::Entry::Vacant(slot) => slot,
        std::collections::hash_map::Entry::Occupied(taken) => {
            let shown = if is_wildcard {
                format!("*.{}", taken.key())
            } else {
                taken.key().to_string()
            };
            invalid.push(InvalidEntry {
                field: field_text().into_owned(),
                value: value_text(),
                reason: format!("duplicate of another field for {shown}"),
                serving_previous: false,
            });
            return;
        }
    };
    let shown = || {
        let key: &str = slot.key();
        if is_wildcard {
            format!("*.{key}")
        } else {
            key.to_owned()
        }
    };
    match previous_entry {
        None => tracker.diff.added.push_with(shown),
        Some(_) => tracker.carried += 1,
    }
    // Unchanged value: carry the route over as is.
    if let Some(Entry::Valid(route)) = previous_entry {
        if route.value.as_bytes() == value {
            slot.insert(Entry::Valid(route.clone()));
            return;
        }
    }
    let entry = match parse_backends_bytes(value) {
        Ok(backends) => Entry::Valid(Arc::new(Route::new(
            std::str::from_utf8(value).unwrap_or_default(),
            backends,
        ))),
        Err(error) => {
            let keep = match previous_entry {
                Some(Entry::Valid(route)) => Some(route.clone()),
                _ => None,
            };
            invalid.push(InvalidEntry {
                field: field_text().into_owned(),
                value: value_text(),
                reason: error.to_string(),
                serving_previous: keep.is_some(),
            });
            keep.map_or(Entry::Invalid, Entry::Valid)
        }
    };
    if previous_entry.is_some_and(|before| !same_entry(before, &entry)) {
        tracker.diff.changed.push_with(shown);
    }
    slot.insert(entry);
}

fn same_entry(a: &Entry, b: &Entry) -> bool {
    match (a, b) {
        // Carried-over routes are the same `Arc`: no string compare.
        (Entry::Valid(a), Entry::Valid(b)) => Arc::ptr_eq(a, b) || a.value == b.value,
        (Entry::Invalid, Entry::Invalid) => true,
        _ => false,
    }
}

impl<'a> From<&'a Entry> for Lookup<'a> {
    fn from(entry: &'a Entry) -> Self {
        match entry {
            Entry::Valid(route) => Lookup::Route(route),
            Entry::Invalid => Lookup::Invalid,
        }
    }
}

/// A hash field after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKey {
    Exact(String),
    Wildcard(String),
}

impl FieldKey {
    pub fn display(&self) -> String {
        match self {
            FieldKey::Exact(h) => h.clone(),
            FieldKey::Wildcard(s) => format!("*.{s}"),
        }
    }
}

/// Parses a hash field: a host (normalised like a request's host) or
/// `*.suffix` for a wildcard.
pub fn parse_field(field: &str) -> Result<FieldKey, HostError> {
    match field.strip_prefix("*.") {
        Some(suffix) => Ok(FieldKey::Wildcard(normalize_host(suffix)?.into_owned())),
        None => Ok(FieldKey::Exact(normalize_host(field)?.into_owned())),
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
                    Entry::Valid(route) => route.value.to_string(),
                    Entry::Invalid => "INVALID".into(),
                };
                (key, value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::raw;
    use super::*;
    use bytes::Bytes;

    fn backend_of(table: &RouteTable, host: &str) -> Option<String> {
        match table.lookup(host) {
            Lookup::Route(r) => Some(r.value.to_string()),
            Lookup::Invalid => Some("INVALID".into()),
            Lookup::NotFound => None,
        }
    }

    #[test]
    fn exact_beats_wildcard_and_longest_suffix_wins() {
        let t = RouteTable::build(
            &raw(&[
                ("*.cloud.com", "10.0.0.9:8080"),
                ("*.eu.cloud.com", "10.0.0.10:8080"),
                ("app1.cloud.com", "10.0.0.5:3000"),
                ("App2.Cloud.com.", "10.0.0.6:3000"),
            ]),
            &RouteTable::unloaded(),
        );
        assert_eq!(backend_of(&t, "app1.cloud.com").unwrap(), "10.0.0.5:3000");
        assert_eq!(backend_of(&t, "app2.cloud.com").unwrap(), "10.0.0.6:3000");
        assert_eq!(backend_of(&t, "x.cloud.com").unwrap(), "10.0.0.9:8080");
        assert_eq!(backend_of(&t, "a.b.cloud.com").unwrap(), "10.0.0.9:8080");
        assert_eq!(backend_of(&t, "x.eu.cloud.com").unwrap(), "10.0.0.10:8080");
        assert_eq!(backend_of(&t, "cloud.com"), None);
        assert_eq!(backend_of(&t, "other.org"), None);
    }

    #[test]
    fn invalid_value_keeps_last_valid_route_and_is_reported() {
        let v1 = RouteTable::build(
            &raw(&[("a.com", "10.0.0.1:80"), ("b.com", "10.0.0.2:80")]),
            &RouteTable::unloaded(),
        );
        let v2 = RouteTable::build(
            &raw(&[
                ("a.com", "nonsense"),
                ("b.com", "10.0.0.3:80"),
                ("c.com", "bad"),
            ]),
            &v1,
        );
        assert_eq!(backend_of(&v2, "a.com").unwrap(), "10.0.0.1:80");
        assert_eq!(backend_of(&v2, "b.com").unwrap(), "10.0.0.3:80");
        assert_eq!(backend_of(&v2, "c.com").unwrap(), "INVALID");
        assert_eq!(v2.invalid().len(), 2);
        assert!(v2.invalid()[0].serving_previous);
        assert!(!v2.invalid()[1].serving_previous);
        // Sticky: still serving the old route on the next reload.
        let v3 = RouteTable::build(&raw(&[("a.com", "nonsense")]), &v2);
        assert_eq!(backend_of(&v3, "a.com").unwrap(), "10.0.0.1:80");
    }

    #[test]
    fn unchanged_routes_are_carried_over_by_arc() {
        let v1 = RouteTable::build(&raw(&[("a.com", "10.0.0.1:80")]), &RouteTable::unloaded());
        let v2 = RouteTable::build(&raw(&[("a.com", "10.0.0.1:80")]), &v1);
        let (Lookup::Route(r1), Lookup::Route(r2)) = (v1.lookup("a.com"), v2.lookup("a.com"))
        else {
            panic!("routes expected");
        };
        assert!(Arc::ptr_eq(r1, r2));
        assert!(v2.diff(&v1).is_empty());
    }

    #[test]
    fn diff_names_added_changed_removed() {
        let v1 = RouteTable::build(
            &raw(&[("a.com", "10.0.0.1:80"), ("b.com", "10.0.0.2:80")]),
            &RouteTable::unloaded(),
        );
        let v2 = RouteTable::build(
            &raw(&[("a.com", "10.0.0.9:80"), ("c.com", "10.0.0.3:80")]),
            &v1,
        );
        let d = v2.diff(&v1);
        assert_eq!(d.added, ["c.com"]);
        assert_eq!(d.changed, ["a.com"]);
        assert_eq!(d.removed, ["b.com"]);
    }

    #[test]
    fn a_large_diff_counts_every_host_and_names_a_sorted_few() {
        let n = Names::KEPT + 10;
        let hosts: Vec<String> = (0..n).rev().map(|i| format!("h{i:03}.com")).collect();
        let entries: Vec<(&str, &str)> =
            hosts.iter().map(|h| (h.as_str(), "10.0.0.1:80")).collect();
        let (table, diff) = RouteTable::build_with_diff(&raw(&entries), &RouteTable::unloaded());
        assert_eq!(table.len(), n);
        assert_eq!((diff.added.len(), diff.len()), (n, n));
        let kept = diff.added.kept();
        assert_eq!(kept.len(), Names::KEPT);
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
        assert_eq!(RouteTable::unloaded().diff(&table).removed.len(), n);
    }

    #[test]
    fn diff_computed_while_building_equals_the_full_diff() {
        let v1 = RouteTable::build(
            &raw(&[
                ("a.com", "10.0.0.1:80"),
                ("b.com", "10.0.0.2:80"),
                ("*.w.com", "10.0.0.3:80"),
                ("x.com", "bad"),
            ]),
            &RouteTable::unloaded(),
        );
        for next in [
            vec![
                ("a.com", "10.0.0.1:80"),
                ("b.com", "10.0.0.2:80"),
                ("*.w.com", "10.0.0.3:80"),
                ("x.com", "bad"),
            ],
            vec![
                ("a.com", "10.0.0.9:80"),
                ("c.com", "10.0.0.3:80"),
                ("x.com", "10.0.0.4:80"),
            ],
            vec![("a.com", "bad"), ("*.w.com", "10.0.0.5:80")],
            vec![],
        ] {
            let (v2, inline) = RouteTable::build_with_diff(&raw(&next), &v1);
            assert_eq!(inline, v2.diff(&v1), "{next:?}");
        }
    }

    #[test]
    fn non_utf8_and_duplicate_fields_are_reported_not_fatal() {
        let mut entries = raw(&[("a.com", "10.0.0.1:80"), ("A.com", "10.0.0.2:80")]);
        entries.push((
            Bytes::from_static(b"\xff.com"),
            Bytes::from_static(b"10.0.0.1:80"),
        ));
        entries.push((Bytes::from_static(b"d.com"), Bytes::from_static(b"\xff")));
        let t = RouteTable::build(&entries, &RouteTable::unloaded());
        assert!(matches!(t.lookup("a.com"), Lookup::Route(_)));
        assert_eq!(t.invalid().len(), 3);
    }

    #[test]
    fn round_robin_skips_down_backends_but_tries_them_when_all_are_down() {
        let t = RouteTable::build(
            &raw(&[("a.com", "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80")]),
            &RouteTable::unloaded(),
        );
        let Lookup::Route(route) = t.lookup("a.com") else {
            panic!()
        };
        let firsts: Vec<String> = (0..3)
            .map(|_| {
                route
                    .pick_order(now_ms())
                    .next()
                    .unwrap()
                    .authority
                    .to_string()
            })
            .collect();
        assert_eq!(firsts, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        route.backends[1].mark_down(now_ms(), 60_000);
        for _ in 0..6 {
            let order: Vec<_> = route
                .pick_order(now_ms())
                .map(|b| b.authority.to_string())
                .collect();
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "10.0.0.2:80");
        }
        route.backends[0].mark_down(now_ms(), 60_000);
        route.backends[2].mark_down(now_ms(), 60_000);
        assert_eq!(route.pick_order(now_ms()).count(), 3);
    }

    proptest::proptest! {
        /// Fuzz-style: any bytes as fields and values never panic the
        /// builder, every entry is either served or reported, and a valid
        /// entry added beside them is always served.
        #[test]
        fn arbitrary_entries_never_panic_and_never_hide_valid_ones(
            junk in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60)),
                0..40),
        ) {
            let mut entries: Vec<RawEntry> = junk
                .into_iter()
                .map(|(f, v)| (Bytes::from(f), Bytes::from(v)))
                .collect();
            entries.push((Bytes::from_static(b"known-good.example"), Bytes::from_static(b"10.0.0.1:80")));
            let t = RouteTable::build(&entries, &RouteTable::unloaded());
            proptest::prop_assert!(matches!(t.lookup("known-good.example"), Lookup::Route(_)));
            // An invalid value is both reported and answered (502), so it
            // counts on both sides; nothing is ever silently dropped.
            proptest::prop_assert!(t.len() <= entries.len());
            proptest::prop_assert!(t.invalid().len() <= entries.len());
            let accounted = entries.iter().filter(|(f, _)| {
                let served = std::str::from_utf8(f).ok().and_then(|f| parse_field(f).ok()).is_some_and(|k| t.entry(&k).is_some());
                served || t.invalid().iter().any(|i| i.field.as_bytes() == &f[..] || i.field == String::from_utf8_lossy(f))
            }).count();
            proptest::prop_assert_eq!(accounted, entries.len());
        }
    }
}
