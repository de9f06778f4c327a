//! Patches: the next table from field-level changes ([`RouteTable::apply`])
//! or from a fresh read of the whole hash compared with the table
//! ([`RouteTable::update`]), in time proportional to what changed.
//!
//! A patch touches only the keys its fields name, and for each of them
//! runs the same rule as the full build (`spellings::resolve`) over every
//! field naming the key, the untouched spellings included: so a patch
//! gives exactly the table the full build gives for the same hash. The
//! changed keys go to the table's delta layer, folded into a new base when
//! it grows.

use super::field::{normal_key, parse_field_bytes, split_field, FieldKey};
use super::spellings::{fields_of, resolve, set_field, Fields};
use super::{Delta, Diff, RouteTable, TableSource};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// A change to one field: its new value, or `None` for a deleted field.
pub type FieldChange<'a> = (Cow<'a, [u8]>, Option<&'a [u8]>);

/// Past this many delta keys the delta is folded into a new base: every
/// patch copies the delta, the fold copies the base, so the delta may grow
/// with the table, within bounds. Also the most changes a patch takes
/// from [`RouteTable::update`] before the full build is cheaper.
fn compaction_threshold(base_len: usize) -> usize {
    (base_len / 32).clamp(512, 8192)
}

impl RouteTable {
    /// The table that follows `self` when the hash changed by exactly
    /// these fields, in order: each a field and its new value, `None` for
    /// a deleted field (setting a field to the value it has, or deleting
    /// one the hash does not have, changes nothing). Equal to the full
    /// build of the hash after the changes, with `self` as the previous
    /// table; `O(changes)` plus a copy of the delta.
    pub fn apply<F: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        changes: &[(F, Option<V>)],
    ) -> (RouteTable, Diff) {
        let mut spellings = self.spellings.clone();
        let mut spellings_changed = false;
        // The fields naming each touched key, as they become.
        let mut touched: BTreeMap<FieldKey, Fields> = BTreeMap::new();
        for (field, value) in changes {
            let (field, value) = (field.as_ref(), value.as_ref().map(AsRef::as_ref));
            let key = match normal_key(field) {
                Some((kind, name)) => FieldKey::of(kind, name),
                None => match parse_field_bytes(field) {
                    Ok(key) => key,
                    Err(_) => {
                        if spellings.unnamed_value(field) != value {
                            Arc::make_mut(&mut spellings).set_unnamed(field, value);
                            spellings_changed = true;
                        }
                        continue;
                    }
                },
            };
            let fields = touched.entry(key).or_insert_with_key(|key| {
                let (kind, name) = (key.kind(), key.name());
                fields_of(&self.spellings, kind, name, self.get(kind, name))
            });
            set_field(fields, field, value);
        }
        let mut delta = self.delta.clone();
        let mut diff = Diff::default();
        for (key, fields) in touched {
            let (kind, name) = (key.kind(), key.name());
            let before = self.get(kind, name);
            let (after, kept) = if fields.is_empty() {
                (None, None)
            } else {
                let resolved = resolve(kind, name, &fields, before);
                (Some(resolved.held), (!resolved.plain).then_some(fields))
            };
            if spellings.fields(kind, name) != kept.as_ref() {
                Arc::make_mut(&mut spellings).set(kind, name, kept);
                spellings_changed = true;
            }
            diff.record(kind, name, before, after.as_ref());
            delta.set(&self.base, kind, name, after);
        }
        diff.finish(spellings_changed);
        let mut table = RouteTable::assemble(
            self.base.clone(),
            delta,
            spellings,
            self.invalid.clone(),
            TableSource::Redis,
        );
        if spellings_changed {
            table.refresh_invalid();
        }
        table.version = self.version;
        if table.delta.len() > compaction_threshold(table.base.len()) {
            table = table.compacted();
        }
        (table, diff)
    }

    /// The table that follows `previous` given a complete read of the hash
    /// (each field once), and what changed. Same result as
    /// [`RouteTable::build_with_diff`]; when few entries changed, a
    /// comparison that allocates nothing for unchanged entries and an
    /// [`RouteTable::apply`] of the rest.
    pub fn update<E: AsRef<[u8]>>(raw: &[(E, E)], previous: &RouteTable) -> (RouteTable, Diff) {
        if previous.is_loaded() {
            let limit = compaction_threshold(previous.base.len());
            if let Some(changes) = previous.changes_to(raw, limit) {
                return previous.apply(&changes);
            }
        }
        RouteTable::build_with_diff(raw, previous)
    }

    /// The field changes from the hash this table holds to `raw`; `None`
    /// past `limit` of them.
    fn changes_to<'r, E: AsRef<[u8]>>(
        &self,
        raw: &'r [(E, E)],
        limit: usize,
    ) -> Option<Vec<FieldChange<'r>>> {
        let mut changes = Vec::new();
        // Fields of this table's hash that the read has too, changed or not.
        let mut present = 0;
        for (field, value) in raw {
            let (field, value) = (field.as_ref(), value.as_ref());
            match self.value_of(field) {
                Some(held) if held == value => {
                    present += 1;
                    continue;
                }
                Some(_) => present += 1,
                None => {}
            }
            if changes.len() == limit {
                return None;
            }
            changes.push((Cow::Borrowed(field), Some(value)));
        }
        let fields = self.len - self.spellings.key_count() + self.spellings.field_count();
        if present < fields {
            // Fields gone from the hash: the only case that needs every name.
            let read: HashSet<&[u8], foldhash::fast::RandomState> =
                raw.iter().map(|(field, _)| field.as_ref()).collect();
            let mut gone = Vec::new();
            self.for_each_field(|field, _| {
                if !read.contains(field) {
                    gone.push(field.to_vec());
                }
            });
            if changes.len() + gone.len() > limit {
                return None;
            }
            changes.extend(gone.into_iter().map(|field| (Cow::Owned(field), None)));
        }
        Some(changes)
    }

    /// The value `field` has in the hash this table holds, if it has it.
    fn value_of(&self, field: &[u8]) -> Option<&[u8]> {
        // A field that is a key of the table is that key's normal spelling
        // (keys are normalised): the common case needs no normalisation.
        if let Some((kind, name)) = split_field(field) {
            if let Some(held) = self.get(kind, name) {
                if !self.spellings.names(kind, name) {
                    // A key outside the spellings holds a route.
                    return held.route().map(|route| route.value().as_bytes());
                }
            }
        }
        self.spellings.value_of(field)
    }

    /// The same table with the delta folded into a new base.
    fn compacted(&self) -> RouteTable {
        let mut base = (*self.base).clone();
        for entry in self.delta.iter() {
            match &entry.held {
                Some(held) => base.insert(entry.kind, &entry.key, held.clone()),
                None => base.remove(entry.kind, &entry.key),
            };
        }
        let mut table = RouteTable::assemble(
            Arc::new(base),
            Delta::default(),
            self.spellings.clone(),
            self.invalid.clone(),
            self.source,
        );
        table.version = self.version;
        table.built_at = self.built_at;
        table.watermark = self.watermark;
        table
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fields, raw, served};
    use super::super::{Lookup, RawEntry, SharedRoute};
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn value_at(table: &RouteTable, host: &str) -> Option<String> {
        match table.lookup(host) {
            Lookup::Route(route) => Some(route.value().to_owned()),
            Lookup::Invalid => Some("INVALID".to_owned()),
            Lookup::NotFound => None,
        }
    }

    /// More routes than Redis keeps in a listpack, as in the issue.
    fn many(n: usize) -> Vec<RawEntry> {
        (0..n)
            .map(|i| {
                (
                    Bytes::from(format!("h{i}.example.com")),
                    Bytes::from_static(b"10.1.0.1:80"),
                )
            })
            .collect()
    }

    fn set(field: &str, value: &str) -> [(Bytes, Option<Bytes>); 1] {
        [(
            Bytes::copy_from_slice(field.as_bytes()),
            Some(Bytes::copy_from_slice(value.as_bytes())),
        )]
    }

    fn del(field: &str) -> [(Bytes, Option<Bytes>); 1] {
        [(Bytes::copy_from_slice(field.as_bytes()), None)]
    }

    /// Issue 27.1: `HSET routes App.example.com X`, `HSET routes
    /// app.example.com Y`, `HDEL routes app.example.com` leaves the hash
    /// routing the host through `App.example.com`; so must the table, on
    /// every patch path, for every other spelling too.
    #[test]
    fn deleting_one_spelling_of_a_host_keeps_the_other_one() {
        for (other, key, host) in [
            ("App.example.com", "app.example.com", "app.example.com"),
            ("app.example.com.", "app.example.com", "app.example.com"),
            ("app.example.com:8080", "app.example.com", "app.example.com"),
            (
                "*.Wild.example.com",
                "*.wild.example.com",
                "x.wild.example.com",
            ),
        ] {
            let start = RouteTable::build(&many(600), &RouteTable::unloaded());
            // Field-level changes, as a change log gives them.
            let (t, _) = start.apply(&set(other, "10.0.0.1:80"));
            assert_eq!(
                value_at(&t, host).as_deref(),
                Some("10.0.0.1:80"),
                "{other}"
            );
            let (t, diff) = t.apply(&set(key, "10.0.0.2:80"));
            assert_eq!(
                value_at(&t, host).as_deref(),
                Some("10.0.0.2:80"),
                "{other}"
            );
            assert_eq!(diff.changed.len(), 1);
            assert_eq!(t.invalid().len(), 1, "the shadowed spelling is reported");
            let (t, diff) = t.apply(&del(key));
            assert_eq!(
                value_at(&t, host).as_deref(),
                Some("10.0.0.1:80"),
                "{other}"
            );
            assert_eq!(diff.changed.len(), 1, "{other}: {diff:?}");
            assert!(t.invalid().is_empty());
            let (t, _) = t.apply(&del(other));
            assert_eq!(value_at(&t, host), None, "{other}");
            assert_eq!(t.len(), 600);

            // Whole reads compared with the table.
            let mut hash = many(600);
            hash.extend(raw(&[(other, "10.0.0.1:80")]));
            let (t, _) = RouteTable::update(&hash, &start);
            hash.extend(raw(&[(key, "10.0.0.2:80")]));
            let (t, _) = RouteTable::update(&hash, &t);
            assert_eq!(
                value_at(&t, host).as_deref(),
                Some("10.0.0.2:80"),
                "{other}"
            );
            hash.pop();
            let (t, _) = RouteTable::update(&hash, &t);
            assert_eq!(
                value_at(&t, host).as_deref(),
                Some("10.0.0.1:80"),
                "{other}"
            );
            let full = RouteTable::build(&hash, &RouteTable::unloaded());
            assert_eq!(served(&t), served(&full));
        }
    }

    /// The other half of the rule: while the normal spelling is there, a
    /// change of the shadowed one serves nothing new, and its removal
    /// leaves the winner alone.
    #[test]
    fn a_shadowed_spelling_never_overrides_the_winner() {
        let t = RouteTable::build(&many(600), &RouteTable::unloaded());
        let (t, _) = t.apply(&set("app.example.com", "10.0.0.2:80"));
        let (t, diff) = t.apply(&set("App.example.com", "10.0.0.1:80"));
        assert_eq!(
            value_at(&t, "app.example.com").as_deref(),
            Some("10.0.0.2:80")
        );
        assert_eq!(diff.changed, ["(invalid entries)"]);
        let (t, diff) = t.apply(&del("App.example.com"));
        assert_eq!(
            value_at(&t, "app.example.com").as_deref(),
            Some("10.0.0.2:80")
        );
        assert_eq!(diff.changed, ["(invalid entries)"]);
        assert!(t.invalid().is_empty());
        // Two non-normal spellings: the smallest wins, whichever came first.
        let (t, _) = t.apply(&set("b.example.com.", "10.0.0.3:80"));
        let (t, _) = t.apply(&set("B.example.com", "10.0.0.4:80"));
        assert_eq!(
            value_at(&t, "b.example.com").as_deref(),
            Some("10.0.0.4:80")
        );
    }

    #[test]
    fn an_invalid_value_keeps_the_last_valid_route_through_patches() {
        let t = RouteTable::build(&many(600), &RouteTable::unloaded());
        let (t, _) = t.apply(&set("a.com", "10.0.0.1:80"));
        let (t, diff) = t.apply(&set("a.com", "nonsense"));
        assert!(diff.is_empty() || diff.changed == ["(invalid entries)"]);
        assert_eq!(value_at(&t, "a.com").as_deref(), Some("10.0.0.1:80"));
        assert!(t.invalid()[0].serving_previous);
        let (t, _) = t.apply(&set("*", "bad"));
        assert_eq!(value_at(&t, "unknown.org").as_deref(), Some("INVALID"));
        let (t, _) = t.apply(&set("*", "10.0.0.9:80"));
        assert_eq!(value_at(&t, "unknown.org").as_deref(), Some("10.0.0.9:80"));
        let (t, _) = t.apply(&del("a.com"));
        assert_eq!(value_at(&t, "a.com").as_deref(), Some("10.0.0.9:80"));
        assert!(t.invalid().is_empty());
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
        assert!(
            SharedRoute::ptr_eq(a1, a2),
            "health marks travel with the route"
        );
        assert_eq!(value_at(&v2, "b.com").as_deref(), Some("10.0.0.3:80"));
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
        assert_eq!(value_at(&v5, "a.com").as_deref(), Some("10.0.0.7:80"));
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
        assert_eq!(value_at(&table, "h598.com").as_deref(), Some("10.0.0.2:80"));
    }

    /// One operation on the hash in the property test below.
    #[derive(Debug, Clone)]
    enum Op {
        Set(usize, usize),
        Del(usize),
        /// Sets the first `n` of the base's hosts to one value: a bulk
        /// write, enough to fill the delta past its fold.
        Bulk(usize, usize),
    }

    /// Spellings of a few keys (case, trailing dot, port, wildcard case,
    /// the default route) and fields that name nothing.
    const FIELDS: &[&[u8]] = &[
        b"a.t",
        b"A.t",
        b"a.t.",
        b"a.t:8080",
        b"A.T.:80",
        b"b.t",
        b"B.t",
        b"*.w.t",
        b"*.W.t",
        b"*.w.t.",
        b"*",
        b"h3.base.t",
        b"H3.base.t",
        b"not a host",
        b"\xff.t",
    ];
    const VALUES: &[&str] = &[
        "10.0.0.1:80",
        "10.0.0.2:80",
        "10.0.0.1:80,10.0.0.3:80",
        " 10.0.0.4:80",
        "nope",
        "",
    ];
    const BASE: usize = 600;
    const PROBES: &[&str] = &[
        "a.t",
        "b.t",
        "x.w.t",
        "w.t",
        "h3.base.t",
        "h5.base.t",
        "zz.org",
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..FIELDS.len(), 0..VALUES.len()).prop_map(|(f, v)| Op::Set(f, v)),
            3 => (0..FIELDS.len()).prop_map(Op::Del),
            1 => (1..BASE, 0..VALUES.len()).prop_map(|(n, v)| Op::Bulk(n, v)),
        ]
    }

    fn assert_same(a: &RouteTable, b: &RouteTable, what: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(served(a), served(b), "{}", what);
        prop_assert_eq!(a.invalid(), b.invalid(), "{}", what);
        prop_assert_eq!(a.len(), b.len(), "{}", what);
        prop_assert_eq!(fields(a), fields(b), "{}", what);
        for host in PROBES {
            prop_assert_eq!(value_at(a, host), value_at(b, host), "{} {}", what, host);
        }
        Ok(())
    }

    fn same_diff(a: &Diff, b: &Diff) -> bool {
        let names_agree = |x: &super::super::Names, y: &super::super::Names| {
            x.len() == y.len() && (x.len() > super::super::Names::KEPT || x.kept() == y.kept())
        };
        names_agree(&a.added, &b.added)
            && names_agree(&a.changed, &b.changed)
            && names_agree(&a.removed, &b.removed)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Issue 27.1's rule: after every operation of a random sequence of
        /// sets and deletes over mixed spellings and invalid values, the
        /// table patched field by field (`apply`), the table patched from
        /// whole reads (`update`) and the full build of the hash are the
        /// same table, and each says the same changed.
        #[test]
        fn patched_tables_equal_full_builds(ops in proptest::collection::vec(op(), 1..40)) {
            let mut hash: BTreeMap<Vec<u8>, Vec<u8>> = (0..BASE)
                .map(|i| (format!("h{i}.base.t").into_bytes(), b"10.2.0.1:80".to_vec()))
                .collect();
            let entries = |hash: &BTreeMap<Vec<u8>, Vec<u8>>| -> Vec<(Vec<u8>, Vec<u8>)> {
                hash.iter().map(|(f, v)| (f.clone(), v.clone())).collect()
            };
            let mut built = RouteTable::build(&entries(&hash), &RouteTable::unloaded());
            let mut applied = RouteTable::build(&entries(&hash), &RouteTable::unloaded());
            let mut updated = RouteTable::build(&entries(&hash), &RouteTable::unloaded());
            for (step, op) in ops.iter().enumerate() {
                let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = match *op {
                    Op::Set(f, v) => vec![(FIELDS[f].to_vec(), Some(VALUES[v].as_bytes().to_vec()))],
                    Op::Del(f) => vec![(FIELDS[f].to_vec(), None)],
                    Op::Bulk(n, v) => (0..n)
                        .map(|i| (format!("h{i}.base.t").into_bytes(), Some(VALUES[v].as_bytes().to_vec())))
                        .collect(),
                };
                for (field, value) in &changes {
                    match value {
                        Some(value) => hash.insert(field.clone(), value.clone()),
                        None => hash.remove(field),
                    };
                }
                let what = format!("step {step}: {op:?}");
                let (b, built_diff) = RouteTable::build_with_diff(&entries(&hash), &built);
                let (a, applied_diff) = applied.apply(&changes);
                let (u, updated_diff) = RouteTable::update(&entries(&hash), &updated);
                assert_same(&a, &b, &what)?;
                assert_same(&u, &b, &what)?;
                prop_assert!(same_diff(&applied_diff, &built_diff), "{}: {:?} vs {:?}", what, applied_diff, built_diff);
                prop_assert!(same_diff(&updated_diff, &built_diff), "{}: {:?} vs {:?}", what, updated_diff, built_diff);
                prop_assert!(same_diff(&a.diff(&applied), &built_diff), "{}", what);
                (built, applied, updated) = (b, a, u);
            }
        }
    }

    /// The property test's operations do fold the delta (else it would
    /// not test the fold).
    #[test]
    fn a_bulk_write_folds_the_delta() {
        let hosts: Vec<String> = (0..BASE).map(|i| format!("h{i}.base.t")).collect();
        let entries: Vec<(&str, &str)> =
            hosts.iter().map(|h| (h.as_str(), "10.2.0.1:80")).collect();
        let t = RouteTable::build(&raw(&entries), &RouteTable::unloaded());
        let bulk: Vec<(Vec<u8>, Option<&[u8]>)> = hosts[..600]
            .iter()
            .map(|h| (h.as_bytes().to_vec(), Some(&b"10.0.0.1:80"[..])))
            .collect();
        let (patched, diff) = t.apply(&bulk);
        assert_eq!(diff.changed.len(), 600);
        assert!(!Arc::ptr_eq(&patched.base, &t.base), "folded");
        assert!(patched.delta.is_empty());
    }
}
