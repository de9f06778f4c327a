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

mod settle;
#[cfg(test)]
mod tests;

use settle::{host_key, record, settle, shown};

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
    /// When the sync side made this the served table (`/certs`: what
    /// `bench/cert_propagation.rs` times a change to).
    pub installed_at: Option<SystemTime>,
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
            installed_at: None,
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
            installed_at: None,
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
            installed_at: None,
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
