//! The certificate table against certificates made by a test CA: SNI
//! lookups, full builds, patches, and what invalid values leave serving.

use super::*;
use crate::tls::seal::{Purpose, Secret};
use crate::tls::testing::{days, Leaf, TestCa};
use proptest::prelude::*;
use std::sync::OnceLock;

fn ctx() -> LoadContext<'static> {
    LoadContext {
        sealer: None,
        now: SystemTime::now(),
    }
}

fn raw(entries: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
    entries
        .iter()
        .map(|(f, v)| (Bytes::from(f.to_string()), Bytes::from(v.to_string())))
        .collect()
}

/// The table a first full build makes of `entries`.
fn first_build(entries: &[(&str, &str)]) -> CertTable {
    CertTable::build(&raw(entries), &CertTable::unloaded(), ctx()).0
}

fn serving_names(table: &CertTable, name: &str) -> Option<Vec<String>> {
    table.lookup(name).map(|c| c.info.names.clone())
}

#[test]
fn exact_beats_wildcard_and_the_longest_wildcard_wins() {
    let ca = TestCa::new();
    let (app, wild, eu) = (
        ca.leaf(&["app.cloud.com"]),
        ca.leaf(&["*.cloud.com"]),
        ca.leaf(&["*.eu.cloud.com"]),
    );
    let (t, diff) = CertTable::build(
        &raw(&[
            ("App.Cloud.com", &app.value()),
            ("*.cloud.com", &wild.value()),
            ("*.eu.cloud.com", &eu.value()),
        ]),
        &CertTable::unloaded(),
        ctx(),
    );
    assert_eq!(diff.added.len(), 3);
    assert_eq!(
        serving_names(&t, "app.cloud.com").unwrap(),
        ["app.cloud.com"]
    );
    assert_eq!(serving_names(&t, "x.cloud.com").unwrap(), ["*.cloud.com"]);
    assert_eq!(
        serving_names(&t, "x.eu.cloud.com").unwrap(),
        ["*.eu.cloud.com"]
    );
    assert_eq!(serving_names(&t, "a.b.cloud.com").unwrap(), ["*.cloud.com"]);
    assert_eq!(serving_names(&t, "cloud.com"), None);
    assert_eq!(serving_names(&t, "other.org"), None);
    assert_eq!(
        t.stats(),
        CertStats {
            loaded: 3,
            invalid: 0,
            earliest_not_after: Some(
                [&app, &wild, &eu]
                    .iter()
                    .map(|l| not_after(l))
                    .min()
                    .unwrap()
            )
        }
    );
}

fn not_after(leaf: &Leaf) -> i64 {
    certs::inspect(leaf.value().as_bytes()).unwrap().not_after
}

#[test]
fn a_bad_value_keeps_the_last_valid_certificate_and_is_reported() {
    let ca = TestCa::new();
    let (a1, b1) = (ca.leaf(&["a.com"]), ca.leaf(&["b.com"]));
    let v1 = first_build(&[("a.com", &a1.value()), ("b.com", &b1.value())]);
    let mismatched = format!("{}{}", a1.chain_pem, b1.key_pem);
    let (v2, diff) = CertTable::build(
        &raw(&[
            ("a.com", &mismatched),
            ("b.com", &b1.value()),
            ("c.com", "garbage"),
            ("bad host!", "x"),
        ]),
        &v1,
        ctx(),
    );
    assert_eq!(diff.changed, ["a.com"]);
    assert_eq!(diff.added, ["c.com"]);
    assert_eq!(serving_names(&v2, "a.com").unwrap(), ["a.com"]);
    assert_eq!(serving_names(&v2, "c.com"), None);
    assert_eq!(
        v2.invalid(),
        [
            InvalidCert {
                field: "a.com".into(),
                reason: "the private key does not match the certificate".into(),
                serving_previous: true
            },
            InvalidCert {
                field: "bad host!".into(),
                reason: "field: malformed host".into(),
                serving_previous: false
            },
            InvalidCert {
                field: "c.com".into(),
                reason: CertError::NoCertificate.to_string(),
                serving_previous: false
            },
        ]
    );
    assert_eq!(v2.stats().loaded, 2);
    assert_eq!(v2.stats().invalid, 3);
    // Sticky: the next reload still serves the last valid certificate.
    let v3 = CertTable::build(&raw(&[("a.com", &mismatched)]), &v2, ctx()).0;
    assert_eq!(serving_names(&v3, "a.com").unwrap(), ["a.com"]);
    // Unchanged hosts are carried over, not loaded again.
    let v4 = CertTable::build(&raw(&[("b.com", &b1.value())]), &v2, ctx()).0;
    assert!(Arc::ptr_eq(
        v4.lookup("b.com").unwrap(),
        v2.lookup("b.com").unwrap()
    ));
}

#[test]
fn the_last_valid_value_is_what_a_snapshot_rebuilds_from() {
    let ca = TestCa::new();
    let (a1, b1) = (ca.leaf(&["a.com"]), ca.leaf(&["b.com"]));
    let v1 = first_build(&[("a.com", &a1.value()), ("b.com", &b1.value())]);
    let mut last_valid = Vec::new();
    v1.for_each_last_valid(|f, v| last_valid.push((f.to_vec(), v.to_vec())));
    assert!(last_valid.is_empty(), "every value is served as written");
    let v2 = CertTable::build(
        &raw(&[("a.com", "garbage"), ("b.com", &b1.value())]),
        &v1,
        ctx(),
    )
    .0;
    v2.for_each_last_valid(|f, v| last_valid.push((f.to_vec(), v.to_vec())));
    assert_eq!(
        last_valid,
        [(b"a.com".to_vec(), a1.value().into_bytes())],
        "a.com serves its last valid value"
    );
    // Rebuilt elsewhere from the entries with the last valid values as
    // the previous table: the same certificates.
    let previous = first_build(&[("a.com", &a1.value())]);
    let rebuilt = CertTable::build(&v2.raw_entries(), &previous, ctx()).0;
    assert_eq!(rebuilt.served(), v2.served());
}

#[test]
fn an_expired_last_valid_certificate_is_not_kept() {
    let ca = TestCa::new();
    let a = ca.leaf_valid(&["a.com"], days(-10), days(1));
    let v1 = first_build(&[("a.com", &a.value())]);
    let later = LoadContext {
        sealer: None,
        now: SystemTime::now() + std::time::Duration::from_secs(days(2) as u64),
    };
    let (v2, diff) = CertTable::build(&raw(&[("a.com", &a.value())]), &v1, later);
    assert_eq!(diff.changed, ["a.com"]);
    assert!(v2.lookup("a.com").is_none());
    assert!(v2.invalid()[0].reason.starts_with("expired at "));
    let v3 = CertTable::build(&raw(&[("a.com", "garbage")]), &v1, later).0;
    assert!(v3.lookup("a.com").is_none());
}

#[test]
fn a_broken_exact_host_falls_back_to_its_wildcard() {
    let ca = TestCa::new();
    let wild = ca.leaf(&["*.cloud.com"]);
    let t = first_build(&[("*.cloud.com", &wild.value()), ("app.cloud.com", "garbage")]);
    assert_eq!(serving_names(&t, "app.cloud.com").unwrap(), ["*.cloud.com"]);
}

#[test]
fn two_spellings_of_a_host_settle_on_the_normal_one_in_any_order() {
    let ca = TestCa::new();
    let (one, two) = (ca.leaf(&["a.com"]), ca.leaf(&["a.com"]));
    let entries = [("A.com", one.value()), ("a.com", two.value())];
    for order in [[0, 1], [1, 0]] {
        let read: Vec<(&str, &str)> = order
            .iter()
            .map(|&i| (entries[i].0, entries[i].1.as_str()))
            .collect();
        let t = first_build(&read);
        assert_eq!(t.lookup("a.com").unwrap().leaf(), leaf_der(&two));
        assert_eq!(t.invalid().len(), 1);
        assert_eq!(t.invalid()[0].field, "A.com");
        assert!(t.invalid()[0].reason.starts_with("duplicate"));
    }
}

fn leaf_der(leaf: &Leaf) -> Vec<u8> {
    certs::load(leaf.value().as_bytes(), None, None, SystemTime::now())
        .unwrap()
        .leaf()
        .to_vec()
}

#[test]
fn sealed_values_need_the_secret() {
    let ca = TestCa::new();
    let a = ca.leaf(&["a.com"]);
    let secret = Secret::from_bytes(&[9; 32]).unwrap();
    let sealer = Sealer::new(&secret, Purpose::CertKey);
    let value = a.sealed_value(&sealer, "a.com");
    let entries = raw(&[("a.com", &value)]);
    let with = LoadContext {
        sealer: Some(&sealer),
        now: SystemTime::now(),
    };
    let t = CertTable::build(&entries, &CertTable::unloaded(), with).0;
    assert!(t.lookup("a.com").unwrap().info.sealed);
    let t = CertTable::build(&entries, &CertTable::unloaded(), ctx()).0;
    assert!(t.lookup("a.com").is_none());
    assert_eq!(
        t.invalid()[0].reason,
        "the private key is sealed and this process has no --certs-secret-file"
    );
}

#[test]
fn apply_names_only_what_changed() {
    let ca = TestCa::new();
    let (a, b) = (ca.leaf(&["a.com"]), ca.leaf(&["b.com"]));
    let v1 = first_build(&[("a.com", &a.value())]);
    let (v2, diff) = v1.apply(&[("b.com", Some(b.value())), ("a.com", None)], ctx());
    assert_eq!(diff.added, ["b.com"]);
    assert_eq!(diff.removed, ["a.com"]);
    assert!(v2.lookup("a.com").is_none());
    assert!(v2.lookup("b.com").is_some());
    let (_, diff) = v2.apply(&[("b.com", Some(b.value()))], ctx());
    assert!(diff.is_empty());
    assert_eq!(v2.raw_entries().len(), 1);
}

/// A small pool of values for the property test: made once (key
/// generation is the slow part), each meaning something different for
/// the hosts it may be written to.
fn pool() -> &'static Vec<String> {
    static POOL: OnceLock<Vec<String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let ca = TestCa::new();
        let (a, a2, wild, b) = (
            ca.leaf(&["a.com"]),
            ca.leaf(&["a.com", "x.a.com"]),
            ca.leaf(&["*.a.com"]),
            ca.leaf(&["b.com"]),
        );
        vec![
            a.value(),
            a2.value(),
            wild.value(),
            b.value(),
            format!("{}{}", a.chain_pem, b.key_pem),
            ca.leaf_valid(&["a.com"], days(-9), days(-1)).value(),
            "garbage".into(),
        ]
    })
}

const FIELDS: [&str; 7] = [
    "a.com", "A.com", "a.com.", "x.a.com", "*.a.com", "b.com", "bad host",
];

fn change() -> impl Strategy<Value = (usize, Option<usize>)> {
    (0..FIELDS.len(), proptest::option::of(0..7usize))
}

fn hash_after(
    hash: &mut std::collections::BTreeMap<usize, usize>,
    changes: &[(usize, Option<usize>)],
) {
    for &(f, v) in changes {
        match v {
            Some(v) => hash.insert(f, v),
            None => hash.remove(&f),
        };
    }
}

fn entries_of(
    hash: &std::collections::BTreeMap<usize, usize>,
    reversed: bool,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = hash
        .iter()
        .map(|(&f, &v)| (FIELDS[f].to_owned(), pool()[v].clone()))
        .collect();
    if reversed {
        out.reverse();
    }
    out
}

fn as_changes(changes: &[(usize, Option<usize>)]) -> Vec<(String, Option<String>)> {
    changes
        .iter()
        .map(|&(f, v)| (FIELDS[f].to_owned(), v.map(|v| pool()[v].clone())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of field-level patches gives the table a full build
    /// of the same hash gives, from the same previous table, whatever
    /// order the hash is read in.
    #[test]
    fn patched_tables_equal_full_builds(
        steps in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..6),
        reversed in any::<bool>(),
    ) {
        let ctx = ctx();
        let mut hash = std::collections::BTreeMap::new();
        let mut table = CertTable::unloaded();
        for step in &steps {
            hash_after(&mut hash, step);
            let (patched, patch_diff) = table.apply(&as_changes(step), ctx);
            let (built, build_diff) = CertTable::build(&entries_of(&hash, reversed), &table, ctx);
            prop_assert_eq!(patched.served(), built.served());
            prop_assert_eq!(patched.stats(), built.stats());
            prop_assert_eq!(patched.invalid(), built.invalid());
            prop_assert_eq!(&patch_diff, &build_diff);
            prop_assert_eq!(patched.diff(&table), build_diff);
            table = patched;
        }
    }
}
