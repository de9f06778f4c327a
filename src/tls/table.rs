//! The certificates of the certs hash: an immutable host → certificate
//! table, built whole from the hash's raw entries or patched field by
//! field (with the same result, by construction: both settle a host with
//! [`settle`]), and looked up by SNI without allocating.
//!
//! Rules (README.md, "HTTPS"), the same as the route table's where they
//! can be: a field is a host name or `*.suffix`, normalised like a route's
//! field; a value that does not load is reported (host and reason) and the
//! host's last valid certificate keeps serving while it is within its
//! validity period; one bad value never affects another host. Where
//! several fields name the same host (`App.com` and `app.com`), the field
//! in normal form counts, else the smallest, whatever order Redis returns
//! them in; the others are reported as duplicates.

use super::certs::{self, CertError, LoadedCert};
use super::seal::Sealer;
use crate::routes::{parse_field, Diff, FieldKey, RedisMicros, TableSource};
use bytes::Bytes;
use compact_str::CompactString;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

type HostMap = HashMap<CompactString, Arc<HostCert>, foldhash::fast::RandomState>;

/// A host as `(is_wildcard, host or suffix)`, normalised.
type HostKey = (bool, CompactString);

/// Fields and values as read, borrowed from the read.
type RawPairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// What loading a value depends on besides the value and its host.
#[derive(Clone, Copy)]
pub struct LoadContext<'a> {
    /// Opens sealed keys; `None` without `--certs-secret-file`.
    pub sealer: Option<&'a Sealer>,
    /// Validity periods are checked against this time. A patch rechecks
    /// only the hosts it touches: a certificate that expires while nothing
    /// changes is dropped at the next full build (the periodic resync).
    pub now: SystemTime,
}

/// What the table holds for one host.
#[derive(Debug)]
pub struct HostCert {
    /// Every field of the hash naming this host, with its value, the one
    /// that counts first. Usually one.
    fields: Vec<(Bytes, Bytes)>,
    /// What is served: the first field's certificate when it loads, else
    /// the host's last valid certificate, while within its validity.
    serving: Option<Arc<LoadedCert>>,
    /// Why the first field's value is not served, if it is not.
    problem: Option<CertError>,
    /// The value `serving` was loaded from: the first field's, or the
    /// host's last valid one (what the snapshot keeps, so a replica that
    /// boots from it serves what this one served).
    served_value: Option<Bytes>,
}

impl HostCert {
    pub fn serving(&self) -> Option<&Arc<LoadedCert>> {
        self.serving.as_ref()
    }

    pub fn problem(&self) -> Option<&CertError> {
        self.problem.as_ref()
    }

    /// The field that counts (the others are duplicates).
    pub fn field(&self) -> &[u8] {
        &self.fields[0].0
    }

    fn value(&self) -> &[u8] {
        &self.fields[0].1
    }
}

/// A field that names no host (not UTF-8, not a host name): reported,
/// never served.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BadField {
    field: Bytes,
    value: Bytes,
    reason: String,
}

/// A hash entry not served as written, with why (admin `/certs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidCert {
    pub field: String,
    pub reason: String,
    /// The host's last valid certificate keeps serving in its place.
    pub serving_previous: bool,
}

/// An immutable certificate table. Cheap to patch: hosts are shared by
/// `Arc` with the table a patch starts from, and only the hosts a change
/// names are settled again.
#[derive(Debug)]
pub struct CertTable {
    exact: HostMap,
    /// Wildcard fields by suffix (`*.cloud.com` is stored as `cloud.com`).
    wildcard: HostMap,
    bad_fields: Arc<Vec<BadField>>,
    pub version: u64,
    pub built_at: SystemTime,
    pub source: TableSource,
    /// Redis time (µs) such that every write to the hash before it is in
    /// the table (set by the sync loop when it installs the table).
    pub watermark: Option<RedisMicros>,
    /// What opens sealed keys for the builds and patches that follow this
    /// table (the sync side's load context, carried from table to table).
    sealer: Option<Arc<Sealer>>,
}

impl CertTable {
    /// The table before anything is loaded.
    pub fn unloaded() -> CertTable {
        CertTable {
            exact: HostMap::default(),
            wildcard: HostMap::default(),
            bad_fields: Arc::default(),
            version: 0,
            built_at: SystemTime::now(),
            source: TableSource::None,
            watermark: None,
            sealer: None,
        }
    }

    /// The table before anything is loaded, whose builds and patches open
    /// sealed keys with `sealer` (`--certs-secret-file`).
    pub fn unloaded_with(sealer: Option<Arc<Sealer>>) -> CertTable {
        CertTable {
            sealer,
            ..CertTable::unloaded()
        }
    }

    /// What opens sealed keys for the builds and patches that follow.
    pub fn sealer(&self) -> Option<&Arc<Sealer>> {
        self.sealer.as_ref()
    }

    /// The load context of the tables that follow this one, at `now`.
    pub fn context_at(&self, now: SystemTime) -> LoadContext<'_> {
        LoadContext {
            sealer: self.sealer.as_deref(),
            now,
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.source != TableSource::None
    }

    /// The certificate for a server name (normalised): the exact host's,
    /// else the longest wildcard's, as routes are looked up. A host whose
    /// certificate does not load (and had none before) falls through to
    /// the wildcards: a certificate that covers it may still be there.
    pub fn lookup(&self, name: &str) -> Option<&Arc<LoadedCert>> {
        if let Some(cert) = self.exact.get(name).and_then(|h| h.serving()) {
            return Some(cert);
        }
        if !self.wildcard.is_empty() {
            let mut rest = name;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(cert) = self.wildcard.get(suffix).and_then(|h| h.serving()) {
                    return Some(cert);
                }
                rest = suffix;
            }
        }
        None
    }

    /// The certificate served under the host's own field, wildcards left
    /// out (automatic certificates are only ever written there).
    pub fn exact(&self, name: &str) -> Option<&Arc<LoadedCert>> {
        self.exact.get(name).and_then(|h| h.serving())
    }

    /// Whether the hash this table was made from has this very field.
    pub fn has_field(&self, field: &[u8]) -> bool {
        if self.bad_fields.iter().any(|b| &b.field[..] == field) {
            return true;
        }
        host_key(field).is_ok_and(|(wildcard, name)| {
            self.get(wildcard, &name)
                .is_some_and(|h| h.fields.iter().any(|(f, _)| &f[..] == field))
        })
    }

    /// Hosts in the table (with or without a certificate served).
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds the table from every entry of the hash. Hosts whose fields
    /// and values did not change since `previous` are carried over (the
    /// same `Arc`) when still within their validity period; other values
    /// are loaded again.
    pub fn build<E: AsRef<[u8]>>(
        raw: &[(E, E)],
        previous: &CertTable,
        ctx: LoadContext<'_>,
    ) -> (CertTable, Diff) {
        let mut groups: HashMap<HostKey, RawPairs<'_>> = HashMap::with_capacity(raw.len());
        let mut bad = Vec::new();
        for (field, value) in raw {
            let (field, value) = (field.as_ref(), value.as_ref());
            match host_key(field) {
                Ok(key) => groups.entry(key).or_default().push((field, value)),
                Err(reason) => bad.push(BadField {
                    field: Bytes::copy_from_slice(field),
                    value: Bytes::copy_from_slice(value),
                    reason,
                }),
            }
        }
        bad.sort_by(|a, b| a.field.cmp(&b.field));
        let mut table = CertTable {
            exact: HostMap::default(),
            wildcard: HostMap::default(),
            bad_fields: Arc::new(bad),
            version: previous.version,
            built_at: SystemTime::now(),
            source: TableSource::Redis,
            watermark: previous.watermark,
            sealer: previous.sealer.clone(),
        };
        for ((wildcard, name), fields) in groups {
            let host = settle(wildcard, &name, fields, previous.get(wildcard, &name), ctx);
            table.map_mut(wildcard).insert(name, host);
        }
        let diff = table.diff(previous);
        (table, diff)
    }

    /// The table after field-level changes (`None` deletes the field),
    /// equal to [`CertTable::build`] of the hash with those changes applied
    /// (with the same `now`), in time proportional to the change.
    pub fn apply<F: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        changes: &[(F, Option<V>)],
        ctx: LoadContext<'_>,
    ) -> (CertTable, Diff) {
        #[allow(clippy::type_complexity)] // (field, new value or deletion) per host
        let mut touched: HashMap<HostKey, Vec<(&[u8], Option<&[u8]>)>> = HashMap::new();
        let mut bad = (*self.bad_fields).clone();
        for (field, value) in changes {
            let (field, value) = (field.as_ref(), value.as_ref().map(AsRef::as_ref));
            match host_key(field) {
                Ok(key) => touched.entry(key).or_default().push((field, value)),
                Err(reason) => {
                    bad.retain(|b| b.field != field);
                    if let Some(value) = value {
                        bad.push(BadField {
                            field: Bytes::copy_from_slice(field),
                            value: Bytes::copy_from_slice(value),
                            reason,
                        });
                    }
                }
            }
        }
        bad.sort_by(|a, b| a.field.cmp(&b.field));
        let bad_count_changed = bad.len() != self.bad_fields.len();
        let mut table = CertTable {
            exact: self.exact.clone(),
            wildcard: self.wildcard.clone(),
            bad_fields: if *bad == *self.bad_fields {
                self.bad_fields.clone()
            } else {
                Arc::new(bad)
            },
            version: self.version,
            built_at: SystemTime::now(),
            source: TableSource::Redis,
            watermark: self.watermark,
            sealer: self.sealer.clone(),
        };
        let mut keys: Vec<_> = touched.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let mut diff = Diff::default();
        for ((wildcard, name), edits) in keys {
            let before = self.get(wildcard, &name);
            let mut fields: RawPairs<'_> = before
                .map(|h| h.fields.iter().map(|(f, v)| (&f[..], &v[..])).collect())
                .unwrap_or_default();
            for (field, value) in edits {
                fields.retain(|(f, _)| *f != field);
                if let Some(value) = value {
                    fields.push((field, value));
                }
            }
            let after = if fields.is_empty() {
                table.map_mut(wildcard).remove(&name);
                None
            } else {
                let host = settle(wildcard, &name, fields, before, ctx);
                table.map_mut(wildcard).insert(name.clone(), host.clone());
                Some(host)
            };
            record(&mut diff, wildcard, &name, before, after.as_ref());
        }
        if diff.is_empty() && bad_count_changed {
            diff.changed.push_with(|| "(invalid entries)".into());
        }
        (table, diff)
    }

    /// What changed from `old` to `self`, host by host.
    pub fn diff(&self, old: &CertTable) -> Diff {
        let mut diff = Diff::default();
        for wildcard in [false, true] {
            let mut keys: Vec<&CompactString> = self
                .map(wildcard)
                .keys()
                .chain(
                    old.map(wildcard)
                        .keys()
                        .filter(|k| !self.map(wildcard).contains_key(*k)),
                )
                .collect();
            keys.sort();
            for key in keys {
                record(
                    &mut diff,
                    wildcard,
                    key,
                    old.get(wildcard, key),
                    self.get(wildcard, key),
                );
            }
        }
        if diff.is_empty() && old.bad_fields.len() != self.bad_fields.len() {
            diff.changed.push_with(|| "(invalid entries)".into());
        }
        diff
    }

    fn map(&self, wildcard: bool) -> &HostMap {
        if wildcard {
            &self.wildcard
        } else {
            &self.exact
        }
    }

    fn map_mut(&mut self, wildcard: bool) -> &mut HostMap {
        if wildcard {
            &mut self.wildcard
        } else {
            &mut self.exact
        }
    }

    fn get(&self, wildcard: bool, name: &str) -> Option<&Arc<HostCert>> {
        self.map(wildcard).get(name)
    }

    /// Every host (`*.suffix` for wildcards) with what it holds, sorted.
    pub fn hosts(&self) -> Vec<(String, &HostCert)> {
        let mut out: Vec<(String, &HostCert)> = self
            .exact
            .iter()
            .map(|(k, h)| (shown(false, k), &**h))
            .chain(self.wildcard.iter().map(|(k, h)| (shown(true, k), &**h)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every entry of the hash not served as written, sorted by field.
    pub fn invalid(&self) -> Vec<InvalidCert> {
        let mut out: Vec<InvalidCert> = self
            .bad_fields
            .iter()
            .map(|b| InvalidCert {
                field: String::from_utf8_lossy(&b.field).into_owned(),
                reason: b.reason.clone(),
                serving_previous: false,
            })
            .collect();
        // Only hosts with a problem or a duplicate are named: a swap logs
        // the new invalid entries, and formatting every host (of 1,000)
        // for that was most of a patch's cost.
        let hosts = [false, true].into_iter().flat_map(|wildcard| {
            self.map(wildcard)
                .iter()
                .filter(|(_, h)| h.problem.is_some() || h.fields.len() > 1)
                .map(move |(name, h)| (shown(wildcard, name), &**h))
        });
        for (host, cert) in hosts {
            if let Some(problem) = &cert.problem {
                out.push(InvalidCert {
                    field: String::from_utf8_lossy(cert.field()).into_owned(),
                    reason: problem.to_string(),
                    serving_previous: cert.serving.is_some(),
                });
            }
            for (field, _) in &cert.fields[1..] {
                out.push(InvalidCert {
                    field: String::from_utf8_lossy(field).into_owned(),
                    reason: format!(
                        "duplicate of another field for {host} (the field {:?} is used)",
                        String::from_utf8_lossy(cert.field())
                    ),
                    serving_previous: false,
                });
            }
        }
        out.sort_by(|a, b| a.field.cmp(&b.field));
        out
    }

    /// Counts for the metrics: hosts served a certificate, entries not
    /// served as written, and the earliest end of validity served.
    pub fn stats(&self) -> CertStats {
        let mut stats = CertStats {
            invalid: self.bad_fields.len(),
            ..CertStats::default()
        };
        for host in self.exact.values().chain(self.wildcard.values()) {
            stats.invalid += host.fields.len() - 1 + usize::from(host.problem.is_some());
            if let Some(cert) = &host.serving {
                stats.loaded += 1;
                stats.earliest_not_after = Some(
                    stats
                        .earliest_not_after
                        .map_or(cert.info.not_after, |t| t.min(cert.info.not_after)),
                );
            }
        }
        stats
    }

    /// Each field whose value is not served while its host serves its last
    /// valid value instead, with that value (for the snapshot file).
    pub fn for_each_last_valid(&self, mut visit: impl FnMut(&[u8], &[u8])) {
        for host in self.exact.values().chain(self.wildcard.values()) {
            if let (Some(_), Some(value)) = (&host.problem, &host.served_value) {
                visit(host.field(), value);
            }
        }
    }

    /// Every entry of the hash as read, for the snapshot file (sealed keys
    /// stay sealed there).
    pub fn raw_entries(&self) -> Vec<(Bytes, Bytes)> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .flat_map(|h| h.fields.iter().cloned())
            .chain(
                self.bad_fields
                    .iter()
                    .map(|b| (b.field.clone(), b.value.clone())),
            )
            .collect()
    }
}

/// See [`CertTable::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertStats {
    pub loaded: usize,
    pub invalid: usize,
    /// Unix seconds.
    pub earliest_not_after: Option<i64>,
}

/// A field as `(is_wildcard, host or suffix)`, normalised.
fn host_key(field: &[u8]) -> Result<HostKey, String> {
    let field = std::str::from_utf8(field).map_err(|_| "field is not UTF-8".to_owned())?;
    match parse_field(field).map_err(|e| format!("field: {e}"))? {
        FieldKey::Exact(host) => Ok((false, host.into())),
        FieldKey::Wildcard(suffix) => Ok((true, suffix.into())),
        FieldKey::Default => Err(
            "field: `*` names no host; the default certificate comes from --tls-cert".to_owned(),
        ),
    }
}

fn field_key(wildcard: bool, name: &str) -> FieldKey {
    if wildcard {
        FieldKey::Wildcard(name.to_owned())
    } else {
        FieldKey::Exact(name.to_owned())
    }
}

/// The one rule for a host, used by the full build and the patch alike:
/// given every field naming the host (with its value) and what the host
/// held before, what it holds now.
fn settle(
    wildcard: bool,
    name: &str,
    mut fields: RawPairs<'_>,
    before: Option<&Arc<HostCert>>,
    ctx: LoadContext<'_>,
) -> Arc<HostCert> {
    // The field in normal form first, then the others by their bytes: the
    // same winner whatever order the hash was read in.
    if fields.len() > 1 {
        let normal = |field: &[u8]| {
            let bare = if wildcard {
                field.strip_prefix(b"*.")
            } else {
                Some(field)
            };
            bare == Some(name.as_bytes())
        };
        fields.sort_by(|a, b| (!normal(a.0), a.0).cmp(&(!normal(b.0), b.0)));
    }
    let (_, value) = fields[0];
    let in_time = |cert: &Arc<LoadedCert>| cert.info.check_time(ctx.now).is_ok();
    // The host's certificate from before, when it was loaded from this
    // very value: no need to parse it again.
    let reusable = before.filter(|b| b.problem.is_none() && b.value() == value);
    if let Some(before) = reusable {
        let same_fields = before.fields.len() == fields.len()
            && before
                .fields
                .iter()
                .zip(&fields)
                .all(|((f0, v0), (f1, v1))| &f0[..] == *f1 && &v0[..] == *v1);
        if same_fields && before.serving.as_ref().is_some_and(in_time) {
            return before.clone();
        }
    }
    let loaded = match reusable.and_then(|b| b.serving.clone()) {
        Some(cert) => cert.info.check_time(ctx.now).map(|()| cert),
        None => {
            certs::load(value, Some(&field_key(wildcard, name)), ctx.sealer, ctx.now).map(Arc::new)
        }
    };
    // Keep the bytes already held for unchanged fields: only new values
    // are copied out of the read.
    let held = |field: &[u8], value: &[u8]| {
        before.and_then(|b| {
            b.fields
                .iter()
                .find(|(f, v)| &f[..] == field && &v[..] == value)
                .cloned()
        })
    };
    let fields: Vec<(Bytes, Bytes)> = fields
        .into_iter()
        .map(|(f, v)| {
            held(f, v).unwrap_or_else(|| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
        })
        .collect();
    let (serving, served_value, problem) = match loaded {
        Ok(cert) => (Some(cert), Some(fields[0].1.clone()), None),
        Err(problem) => match before.filter(|b| b.serving.as_ref().is_some_and(in_time)) {
            Some(b) => (b.serving.clone(), b.served_value.clone(), Some(problem)),
            None => (None, None, Some(problem)),
        },
    };
    Arc::new(HostCert {
        fields,
        serving,
        problem,
        served_value,
    })
}

/// A host as the admin view and the logs name it (`*.suffix` for a
/// wildcard).
fn shown(wildcard: bool, name: &str) -> String {
    if wildcard {
        format!("*.{name}")
    } else {
        name.to_owned()
    }
}

/// Adds a host's change, if any, to `diff`.
fn record(
    diff: &mut Diff,
    wildcard: bool,
    name: &str,
    before: Option<&Arc<HostCert>>,
    after: Option<&Arc<HostCert>>,
) {
    let shown = || shown(wildcard, name);
    match (before, after) {
        (None, Some(_)) => diff.added.push_with(shown),
        (Some(_), None) => diff.removed.push_with(shown),
        (Some(a), Some(b)) if !Arc::ptr_eq(a, b) && !same_host(a, b) => {
            diff.changed.push_with(shown)
        }
        _ => {}
    }
}

fn same_host(a: &HostCert, b: &HostCert) -> bool {
    fn leaf(h: &HostCert) -> Option<&[u8]> {
        h.serving.as_ref().map(|c| c.leaf())
    }
    a.fields == b.fields && leaf(a) == leaf(b) && a.problem == b.problem
}

impl CertTable {
    /// What the table serves, in a form tests compare: each host with its
    /// fields, the leaf it serves and its problem; then the bad fields.
    #[cfg(test)]
    pub(crate) fn served(&self) -> Vec<String> {
        use base64::Engine;
        let digest = |der: &[u8]| {
            let d = ring::digest::digest(&ring::digest::SHA256, der);
            base64::engine::general_purpose::STANDARD.encode(&d.as_ref()[..8])
        };
        let mut out: Vec<String> = self
            .hosts()
            .into_iter()
            .map(|(host, h)| {
                let fields: Vec<String> = h
                    .fields
                    .iter()
                    .map(|(f, v)| format!("{}={}", String::from_utf8_lossy(f), digest(v)))
                    .collect();
                format!(
                    "{host} {fields:?} serving={:?} from={:?} problem={:?}",
                    h.serving.as_ref().map(|c| digest(c.leaf())),
                    h.served_value.as_ref().map(|v| digest(v)),
                    h.problem.as_ref().map(ToString::to_string)
                )
            })
            .collect();
        out.extend(self.bad_fields.iter().map(|b| format!("{b:?}")));
        out
    }
}

#[cfg(test)]
mod tests {
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
        let v1 = CertTable::build(
            &raw(&[("a.com", &a1.value()), ("b.com", &b1.value())]),
            &CertTable::unloaded(),
            ctx(),
        )
        .0;
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
        let v1 = CertTable::build(
            &raw(&[("a.com", &a1.value()), ("b.com", &b1.value())]),
            &CertTable::unloaded(),
            ctx(),
        )
        .0;
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
        let previous = CertTable::build(
            &raw(&[("a.com", &a1.value())]),
            &CertTable::unloaded(),
            ctx(),
        )
        .0;
        let rebuilt = CertTable::build(&v2.raw_entries(), &previous, ctx()).0;
        assert_eq!(rebuilt.served(), v2.served());
    }

    #[test]
    fn an_expired_last_valid_certificate_is_not_kept() {
        let ca = TestCa::new();
        let a = ca.leaf_valid(&["a.com"], days(-10), days(1));
        let v1 = CertTable::build(
            &raw(&[("a.com", &a.value())]),
            &CertTable::unloaded(),
            ctx(),
        )
        .0;
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
        let t = CertTable::build(
            &raw(&[("*.cloud.com", &wild.value()), ("app.cloud.com", "garbage")]),
            &CertTable::unloaded(),
            ctx(),
        )
        .0;
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
            let t = CertTable::build(&raw(&read), &CertTable::unloaded(), ctx()).0;
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
        let value = format!(
            "{}{}",
            a.chain_pem,
            sealer.seal("a.com", a.key_pem.as_bytes())
        );
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
        let v1 = CertTable::build(
            &raw(&[("a.com", &a.value())]),
            &CertTable::unloaded(),
            ctx(),
        )
        .0;
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
}
