//! The next table from a fresh read of the hash, in time proportional to
//! what changed.
//!
//! A keyspace event does not say which field changed, so every reload reads
//! the whole hash. Building a whole new table from that read costs an
//! allocation and an insert per route (~100 ms at 100,000 routes); this
//! module compares the read against the current table instead, without
//! allocating for unchanged entries, and records only the changed keys in
//! the table's delta layer. Anything unusual (a field not already in normal
//! form, an invalid value, a table that carries invalid entries) falls back
//! to the full build, which owns those rules.

use super::{
    normalize_host, parse_backends_bytes, Diff, Entry, Layer, Route, RouteTable, TableSource,
};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

impl RouteTable {
    /// The table that follows `previous` given a complete read of the hash,
    /// and what changed. Same result as [`RouteTable::build_with_diff`];
    /// cheaper when few entries changed.
    pub fn update<E: AsRef<[u8]>>(raw: &[(E, E)], previous: &RouteTable) -> (RouteTable, Diff) {
        patch(raw, previous).unwrap_or_else(|| RouteTable::build_with_diff(raw, previous))
    }

    /// The same table with the delta folded into a new base.
    fn compacted(&self) -> RouteTable {
        let mut base = (*self.base).clone();
        for wildcard in [false, true] {
            let map = base.map_mut(wildcard);
            for (key, entry) in self.delta.map(wildcard) {
                match entry {
                    Some(entry) => map.insert(key.clone(), entry.clone()),
                    None => map.remove(key),
                };
            }
        }
        RouteTable {
            base: Arc::new(base),
            delta: Layer::default(),
            len: self.len,
            invalid: self.invalid.clone(),
            version: self.version,
            built_at: self.built_at,
            watermark: self.watermark,
            source: self.source,
        }
    }
}

/// Past this many delta keys the delta is folded into a new base: every
/// patch copies the delta, the fold copies the base, so the delta may grow
/// with the table, within bounds.
fn compaction_threshold(base_len: usize) -> usize {
    (base_len / 32).clamp(512, 8192)
}

/// A field as `(is_wildcard, key)` when it is already in normal form (the
/// key is the field itself, minus `*.`); `None` otherwise. Two different
/// normal fields are always two different keys, so no duplicates can hide.
fn normal_field(field: &[u8]) -> Option<(bool, &str)> {
    let (wildcard, host) = split_field(field)?;
    match normalize_host(host).ok()? {
        Cow::Borrowed(key) if key.len() == host.len() => Some((wildcard, key)),
        _ => None,
    }
}

/// A UTF-8 field as `(is_wildcard, host or suffix)`, not normalised.
fn split_field(field: &[u8]) -> Option<(bool, &str)> {
    let field = std::str::from_utf8(field).ok()?;
    Some(match field.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, field),
    })
}

fn shown(wildcard: bool, key: &str) -> String {
    if wildcard {
        format!("*.{key}")
    } else {
        key.to_owned()
    }
}

/// Changes found against a previous table, on their way into a new one.
struct Changes<'a> {
    diff: Diff,
    /// `(is_wildcard, key, new entry)`; `None` removes the key.
    entries: Vec<(bool, &'a str, Option<Entry>)>,
}

impl<'a> Changes<'a> {
    fn new() -> Self {
        Changes {
            diff: Diff::default(),
            entries: Vec::new(),
        }
    }

    /// Records `field = value`. `Some(true)` when the table already had the
    /// field (changed or not), `Some(false)` when it is new, `None` when the
    /// entry needs the full build (not normal, invalid value).
    fn upsert(&mut self, previous: &RouteTable, field: &'a [u8], value: &[u8]) -> Option<bool> {
        let (wildcard, key) = split_field(field)?;
        // A field equal to a key of the table is in normal form already
        // (keys are normalised): only the others need the check.
        let known = match previous.get(wildcard, key) {
            Some(Entry::Valid(route)) => {
                if route.value.as_bytes() == value {
                    return Some(true);
                }
                self.diff.changed.push_with(|| shown(wildcard, key));
                true
            }
            Some(Entry::Invalid) => return None,
            None => {
                normal_field(field)?;
                self.diff.added.push_with(|| shown(wildcard, key));
                false
            }
        };
        let backends = parse_backends_bytes(value).ok()?;
        let route = Route::new(std::str::from_utf8(value).ok()?, backends);
        self.entries
            .push((wildcard, key, Some(Entry::Valid(Arc::new(route)))));
        Some(known)
    }

    fn remove(&mut self, wildcard: bool, key: &'a str) {
        self.diff.removed.push_with(|| shown(wildcard, key));
        self.entries.push((wildcard, key, None));
    }

    /// The new table: the previous base, a copy of its delta with the
    /// changes, folded when it has grown too large.
    fn finish(mut self, previous: &RouteTable) -> (RouteTable, Diff) {
        let mut delta = previous.delta.clone();
        for (wildcard, key, entry) in self.entries {
            let in_base = previous.base.map(wildcard).contains_key(key);
            let map = delta.map_mut(wildcard);
            if entry.is_none() && !in_base {
                map.remove(key);
            } else {
                map.insert(key.into(), entry);
            }
        }
        let mut table = RouteTable {
            base: previous.base.clone(),
            len: previous.len() + self.diff.added.len() - self.diff.removed.len(),
            delta,
            invalid: Vec::new(),
            version: previous.version,
            built_at: SystemTime::now(),
            watermark: None,
            source: TableSource::Redis,
        };
        if table.delta.len() > compaction_threshold(table.base.len()) {
            table = table.compacted();
        }
        self.diff.sort();
        (table, self.diff)
    }
}

/// Whether the fast paths may run on top of `previous`: it holds only
/// valid routes (the rules for invalid ones live in the full build).
fn patchable(previous: &RouteTable) -> bool {
    previous.is_loaded() && previous.invalid.is_empty()
}

/// The fast path of [`RouteTable::update`]; `None` sends the caller to the
/// full build.
fn patch<E: AsRef<[u8]>>(raw: &[(E, E)], previous: &RouteTable) -> Option<(RouteTable, Diff)> {
    if !patchable(previous) {
        return None;
    }
    let mut changes = Changes::new();
    let mut matched = 0;
    for (field, value) in raw {
        if changes.upsert(previous, field.as_ref(), value.as_ref())? {
            matched += 1;
        }
    }
    if matched < previous.len() {
        // Keys gone from the hash: the only case that needs every name.
        let present: HashSet<(bool, &str), foldhash::fast::RandomState> = raw
            .iter()
            .filter_map(|(field, _)| normal_field(field.as_ref()))
            .collect();
        for wildcard in [false, true] {
            for (key, _) in previous.iter_map(wildcard) {
                if !present.contains(&(wildcard, key)) {
                    changes.remove(wildcard, key);
                }
            }
        }
    }
    Some(changes.finish(previous))
}

impl RouteTable {
    /// The table that follows `previous` when the hash is known to differ
    /// from the one `previous` was read from by exactly these entries set
    /// (`upserts`, unchanged ones allowed) and these fields deleted. `None`
    /// when the changes need the full build (the caller then reads and
    /// compares everything with [`RouteTable::update`]).
    pub fn apply<E: AsRef<[u8]>>(
        upserts: &[(E, E)],
        removed: &[E],
        previous: &RouteTable,
    ) -> Option<(RouteTable, Diff)> {
        if !patchable(previous) {
            return None;
        }
        let mut changes = Changes::new();
        for (field, value) in upserts {
            changes.upsert(previous, field.as_ref(), value.as_ref())?;
        }
        for field in removed {
            let (wildcard, key) = normal_field(field.as_ref())?;
            // Deleting what the table does not have: it was not read from
            // the hash the caller thinks.
            previous.get(wildcard, key)?;
            changes.remove(wildcard, key);
        }
        Some(changes.finish(previous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::testing::{raw, served};
    use crate::routes::Lookup;

    /// `update` and a full build from scratch agree on what is served, on
    /// the diff, and on the size, through a sequence of changes.
    #[test]
    fn patched_tables_equal_full_builds() {
        let steps: Vec<Vec<(&str, &str)>> = vec![
            vec![
                ("a.com", "10.0.0.1:80"),
                ("b.com", "10.0.0.2:80"),
                ("*.w.com", "10.0.0.3:80"),
            ],
            vec![
                ("a.com", "10.0.0.9:80"),
                ("b.com", "10.0.0.2:80"),
                ("*.w.com", "10.0.0.3:80"),
            ],
            vec![
                ("a.com", "10.0.0.9:80"),
                ("*.w.com", "10.0.0.4:80"),
                ("c.com", "10.0.0.5:80"),
            ],
            vec![
                ("a.com", "10.0.0.9:80"),
                ("*.w.com", "10.0.0.4:80"),
                ("b.com", "10.0.0.2:80"),
            ],
            // Not normal: full build.
            vec![("A.com", "10.0.0.9:80")],
            vec![("a.com", "10.0.0.9:80"), ("x.com", "bad")],
            vec![("a.com", "10.0.0.9:80")],
            vec![("a.com", "10.0.0.9:80")],
            vec![],
        ];
        let mut current = RouteTable::unloaded();
        for step in steps {
            let entries = raw(&step);
            let (patched, diff) = RouteTable::update(&entries, &current);
            let (built, built_diff) = RouteTable::build_with_diff(&entries, &current);
            assert_eq!(served(&patched), served(&built), "{step:?}");
            assert_eq!(diff, built_diff, "{step:?}");
            assert_eq!(patched.len(), built.len(), "{step:?}");
            assert_eq!(patched.invalid().len(), built.invalid().len(), "{step:?}");
            assert_eq!(diff, patched.diff(&current), "{step:?}");
            current = patched;
        }
    }

    #[test]
    fn a_change_goes_to_the_delta_and_unchanged_routes_are_shared() {
        let v1 = RouteTable::update(
            &raw(&[("a.com", "10.0.0.1:80"), ("b.com", "10.0.0.2:80")]),
            &RouteTable::unloaded(),
        )
        .0;
        let (v2, diff) = RouteTable::update(
            &raw(&[("a.com", "10.0.0.1:80"), ("b.com", "10.0.0.3:80")]),
            &v1,
        );
        assert_eq!(diff.changed, ["b.com"]);
        assert!(Arc::ptr_eq(&v1.base, &v2.base), "the base is shared");
        assert_eq!(v2.delta.len(), 1);
        let (Lookup::Route(a1), Lookup::Route(a2)) = (v1.lookup("a.com"), v2.lookup("a.com"))
        else {
            panic!("routes expected");
        };
        assert!(Arc::ptr_eq(a1, a2), "health marks travel with the route");
        let Lookup::Route(b2) = v2.lookup("b.com") else {
            panic!("route expected");
        };
        assert_eq!(&*b2.value, "10.0.0.3:80");
        // Removing a key that only the delta has leaves no tombstone.
        let (v3, diff) = RouteTable::update(
            &raw(&[
                ("a.com", "10.0.0.1:80"),
                ("b.com", "10.0.0.3:80"),
                ("n.com", "10.0.0.4:80"),
            ]),
            &v2,
        );
        assert_eq!(diff.added, ["n.com"]);
        let (v4, diff) = RouteTable::update(
            &raw(&[("a.com", "10.0.0.1:80"), ("b.com", "10.0.0.3:80")]),
            &v3,
        );
        assert_eq!(diff.removed, ["n.com"]);
        assert_eq!(v4.delta.len(), 1);
        assert!(matches!(v4.lookup("n.com"), Lookup::NotFound));
        // A removed base key hides it, and the wildcard answers instead.
        let v5 = RouteTable::update(
            &raw(&[("*.com", "10.0.0.7:80"), ("b.com", "10.0.0.3:80")]),
            &v4,
        )
        .0;
        let Lookup::Route(fallback) = v5.lookup("a.com") else {
            panic!("wildcard expected");
        };
        assert_eq!(&*fallback.value, "10.0.0.7:80");
    }

    #[test]
    fn a_large_delta_is_folded_into_a_new_base() {
        let hosts: Vec<String> = (0..2000).map(|i| format!("h{i}.com")).collect();
        let mut entries: Vec<(&str, &str)> =
            hosts.iter().map(|h| (h.as_str(), "10.0.0.1:80")).collect();
        let mut table = RouteTable::update(&raw(&entries), &RouteTable::unloaded()).0;
        for i in 0..600 {
            entries[i].1 = if i % 2 == 0 {
                "10.0.0.2:80"
            } else {
                "10.0.0.3:80"
            };
            table = RouteTable::update(&raw(&entries), &table).0;
            assert!(table.delta.len() <= compaction_threshold(table.base.len()));
        }
        assert!(table.delta.len() < 600, "folded at least once");
        assert_eq!(table.len(), 2000);
        let Lookup::Route(route) = table.lookup("h598.com") else {
            panic!("route expected");
        };
        assert_eq!(&*route.value, "10.0.0.2:80");
    }
}
