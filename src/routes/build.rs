//! The full build: a whole table from every entry of the hash.

use super::field::{normal_key, parse_field_bytes, FieldKey};
use super::spellings::{resolve, route_for, Fields, Spellings};
use super::{Delta, Diff, Held, Layer, RouteTable, TableSource};
use bytes::Bytes;
use std::sync::Arc;

impl RouteTable {
    /// Builds a table from the entries of the hash (each field once).
    /// Entries whose value did not change since `previous` reuse its
    /// `Route` (keeping health marks and the round-robin cursor); an
    /// invalid value keeps the previous valid route for that host when
    /// there was one.
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
        let mut layer = Layer::with_capacity(raw.len());
        let mut diff = Diff::default();
        // Keys of the new table that the previous table also had.
        let mut carried = 0;
        // Fields that are not a plain key's (see `spellings`), set aside.
        let mut odd: Vec<(FieldKey, Bytes, Bytes)> = Vec::new();
        let mut spellings = Spellings::default();
        for (field, value) in raw {
            let (field, value) = (field.as_ref(), value.as_ref());
            let copy = || (Bytes::copy_from_slice(field), Bytes::copy_from_slice(value));
            // The common case first: a normal field with a valid value,
            // no copy of either.
            if let Some((kind, name)) = normal_key(field) {
                let before = previous.get(kind, name);
                if let Some(route) = route_for(value, before) {
                    let held = Held::Route(route);
                    carried += usize::from(before.is_some());
                    diff.record(kind, name, before, Some(&held));
                    layer.insert(kind, name, held);
                    continue;
                }
            }
            match parse_field_bytes(field) {
                Ok(key) => {
                    let (field, value) = copy();
                    odd.push((key, field, value));
                }
                Err(_) => {
                    spellings.set_unnamed(field, Some(value));
                }
            }
        }
        // Each key with an odd field: all its fields, the plain-looking
        // one included, through the rule.
        odd.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        for group in odd.chunk_by(|a, b| a.0 == b.0) {
            let key = &group[0].0;
            let (kind, name) = (key.kind(), key.name());
            let mut fields: Fields = group
                .iter()
                .map(|(_, f, v)| (f.clone(), v.clone()))
                .collect();
            let plain_one = layer.remove(kind, name);
            if let Some(Held::Route(route)) = &plain_one {
                super::spellings::set_field(
                    &mut fields,
                    &super::field::spelled(kind, name),
                    Some(route.value().as_bytes()),
                );
            }
            let before = previous.get(kind, name);
            let resolved = resolve(kind, name, &fields, before);
            if plain_one.is_none() {
                carried += usize::from(before.is_some());
                diff.record(kind, name, before, Some(&resolved.held));
            }
            layer.insert(kind, name, resolved.held);
            spellings.set(kind, name, Some(fields));
        }
        if carried < previous.len() {
            for (kind, key, held) in previous.keys() {
                let hash = std::hash::BuildHasher::hash_one(&layer.hasher, key);
                if layer.get(kind, hash, key).is_none() {
                    diff.record(kind, key, Some(held), None);
                }
            }
        }
        let changed_spellings = spellings != *previous.spellings;
        diff.finish(changed_spellings);
        let spellings = if changed_spellings {
            Arc::new(spellings)
        } else {
            previous.spellings.clone()
        };
        let mut table = RouteTable::assemble(
            Arc::new(layer),
            Delta::default(),
            spellings,
            Arc::from([]),
            TableSource::Redis,
        );
        table.refresh_invalid();
        table.version = previous.version;
        (table, diff)
    }

    /// Recomputes the invalid entries from the spellings.
    pub(super) fn refresh_invalid(&mut self) {
        let invalid = self
            .spellings
            .invalid_entries(|kind, name| self.get(kind, name));
        self.invalid = invalid.into();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fields, raw, served};
    use super::super::{Entry, Lookup, Names, RawEntry, SharedRoute};
    use super::*;

    fn backend_of(table: &RouteTable, host: &str) -> Option<String> {
        match table.lookup(host) {
            Lookup::Route(r) => Some(r.value().to_string()),
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
    fn the_default_route_answers_for_hosts_nothing_else_names() {
        let t = RouteTable::build(
            &raw(&[
                ("*", "10.0.0.1:80"),
                ("*.cloud.com", "10.0.0.2:80"),
                ("app.cloud.com", "10.0.0.3:80"),
                ("bad.org", "nope"),
            ]),
            &RouteTable::unloaded(),
        );
        assert_eq!(backend_of(&t, "app.cloud.com").unwrap(), "10.0.0.3:80");
        assert_eq!(backend_of(&t, "x.cloud.com").unwrap(), "10.0.0.2:80");
        assert_eq!(backend_of(&t, "other.org").unwrap(), "10.0.0.1:80");
        assert_eq!(backend_of(&t, "localhost").unwrap(), "10.0.0.1:80");
        assert_eq!(backend_of(&t, "bad.org").unwrap(), "INVALID");
        assert_eq!(t.len(), 4);
        assert_eq!(served(&t)[0], ("*".to_owned(), "10.0.0.1:80".to_owned()));
        assert_eq!(t.route_value("*"), Some("10.0.0.1:80"));
        // An invalid default answers 502 for every unknown host, like an
        // invalid wildcard does for its suffix.
        let t = RouteTable::build(&raw(&[("*", "nope")]), &RouteTable::unloaded());
        assert_eq!(backend_of(&t, "any.org").unwrap(), "INVALID");
        let t = RouteTable::build(&raw(&[("a.com", "10.0.0.1:80")]), &RouteTable::unloaded());
        assert_eq!(backend_of(&t, "any.org"), None);
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
        // And the table knows which value it serves in place of which.
        let mut last_valid = Vec::new();
        v3.for_each_last_valid(|f, v| last_valid.push((f.to_vec(), v.to_owned())));
        assert_eq!(last_valid, [(b"a.com".to_vec(), "10.0.0.1:80".to_owned())]);
    }

    #[test]
    fn two_spellings_of_one_host_the_normal_one_wins_else_the_smallest() {
        let t = RouteTable::build(
            &raw(&[
                ("App.example.com", "10.0.0.1:80"),
                ("app.example.com", "10.0.0.2:80"),
                ("b.example.com.", "10.0.0.3:80"),
                ("B.example.com", "10.0.0.4:80"),
            ]),
            &RouteTable::unloaded(),
        );
        assert_eq!(backend_of(&t, "app.example.com").unwrap(), "10.0.0.2:80");
        assert_eq!(backend_of(&t, "b.example.com").unwrap(), "10.0.0.4:80");
        let shadowed: Vec<&str> = t.invalid().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(shadowed, ["App.example.com", "b.example.com."]);
        assert!(
            t.invalid()[0].reason.contains("\"app.example.com\""),
            "{:?}",
            t.invalid()
        );
        // The order Redis lists them in does not matter.
        let mut reversed = raw(&[
            ("App.example.com", "10.0.0.1:80"),
            ("app.example.com", "10.0.0.2:80"),
            ("b.example.com.", "10.0.0.3:80"),
            ("B.example.com", "10.0.0.4:80"),
        ]);
        reversed.reverse();
        let r = RouteTable::build(&reversed, &RouteTable::unloaded());
        assert_eq!(served(&r), served(&t));
        assert_eq!(r.invalid(), t.invalid());
        // Every field is kept, so the table gives the hash back.
        assert_eq!(fields(&t).len(), 4);
    }

    #[test]
    fn unchanged_routes_are_carried_over_by_arc() {
        let v1 = RouteTable::build(&raw(&[("a.com", "10.0.0.1:80")]), &RouteTable::unloaded());
        let v2 = RouteTable::build(&raw(&[("a.com", "10.0.0.1:80")]), &v1);
        let (Lookup::Route(r1), Lookup::Route(r2)) = (v1.lookup("a.com"), v2.lookup("a.com"))
        else {
            panic!("routes expected");
        };
        assert!(SharedRoute::ptr_eq(r1, r2));
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
    fn a_change_only_the_invalid_entries_show_is_still_a_change() {
        let v1 = RouteTable::build(&raw(&[("a.com", "bad1")]), &RouteTable::unloaded());
        let (v2, diff) = RouteTable::build_with_diff(&raw(&[("a.com", "bad2")]), &v1);
        assert_eq!(diff.changed, ["(invalid entries)"]);
        assert_eq!(v2.invalid()[0].value, "bad2");
        let (_, diff) = RouteTable::build_with_diff(&raw(&[("a.com", "bad2")]), &v2);
        assert!(diff.is_empty());
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
                ("*", "10.0.0.8:80"),
            ]),
            &RouteTable::unloaded(),
        );
        for next in [
            vec![
                ("a.com", "10.0.0.1:80"),
                ("b.com", "10.0.0.2:80"),
                ("*.w.com", "10.0.0.3:80"),
                ("x.com", "bad"),
                ("*", "10.0.0.8:80"),
            ],
            vec![
                ("a.com", "10.0.0.9:80"),
                ("c.com", "10.0.0.3:80"),
                ("x.com", "10.0.0.4:80"),
            ],
            vec![
                ("a.com", "bad"),
                ("*.w.com", "10.0.0.5:80"),
                ("A.com", "10.0.0.5:80"),
            ],
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
        assert!(matches!(t.lookup("a.com"), Lookup::Route(r) if r.value() == "10.0.0.1:80"));
        assert_eq!(t.invalid().len(), 3);
        // Raw bytes are kept as they are.
        assert!(fields(&t).iter().any(|(f, _)| f == b"\xff.com"));
    }

    proptest::proptest! {
        /// Fuzz-style: any bytes as fields and values never panic the
        /// builder, every entry is either served or reported, and a valid
        /// entry added beside them is always served.
        #[test]
        fn arbitrary_entries_never_panic_and_never_hide_valid_ones(
            junk in proptest::collection::btree_map(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60),
                0..40),
        ) {
            let mut entries: Vec<RawEntry> = junk
                .into_iter()
                .filter(|(f, _)| f != b"known-good.example")
                .map(|(f, v)| (Bytes::from(f), Bytes::from(v)))
                .collect();
            entries.push((Bytes::from_static(b"known-good.example"), Bytes::from_static(b"10.0.0.1:80")));
            let t = RouteTable::build(&entries, &RouteTable::unloaded());
            proptest::prop_assert!(matches!(t.lookup("known-good.example"), Lookup::Route(_)));
            proptest::prop_assert!(t.len() <= entries.len());
            proptest::prop_assert!(t.invalid().len() <= entries.len());
            // Every entry is served as written or reported; and the table
            // gives back exactly the hash.
            let served_as_written = |f: &[u8], v: &[u8]| {
                std::str::from_utf8(f).ok().and_then(|f| t.route_value(f).map(|r| r.as_bytes() == v)).unwrap_or(false)
            };
            for (f, v) in &entries {
                let reported = t.invalid().iter().any(|i| i.field == String::from_utf8_lossy(f));
                proptest::prop_assert!(served_as_written(f, v) || reported, "{:?}", f);
            }
            let mut given_back = fields(&t);
            let mut hash: Vec<(Vec<u8>, Vec<u8>)> = entries.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect();
            hash.sort();
            given_back.sort();
            proptest::prop_assert_eq!(given_back, hash);
            let _ = t.entries().iter().filter(|(_, e)| matches!(e, Entry::Invalid)).count();
        }
    }
}
