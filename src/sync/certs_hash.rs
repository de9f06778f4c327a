//! The certs hash (`--certs-key`) as a followed hash, exactly like the
//! routes hash: `CertTable` as its [`Table`] (the rules of certificates
//! stay in `crate::tls`), and the shared state's `CertStore` as its
//! [`Home`], with the diff log line, the invalid-entry log lines, the TLS
//! gauges and the snapshot that go with a swap (README.md, "Certificates
//! in Redis").

use super::changelog::Change;
use super::hash::{Home, Table};
use crate::routes::{Diff, RedisMicros, TableSource};
use crate::snapshot::{self, SnapshotWriter};
use crate::state::SharedState;
use crate::tls::seal::Sealer;
use crate::tls::CertTable;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{info, warn};

/// At most this many invalid entries are logged one by one per swap.
const INVALID_LOG_LINES: usize = 50;

impl Table for CertTable {
    type Diff = Diff;

    /// A full build, validity periods checked against now: a certificate
    /// that expired while nothing changed is dropped here (the periodic
    /// resync), and counted as drift like any difference.
    fn from_entries<E: AsRef<[u8]>>(entries: &[(E, E)], served: &Self) -> (Self, Diff) {
        CertTable::build(entries, served, served.context_at(SystemTime::now()))
    }

    fn patch(&self, changes: &[Change]) -> Option<(Self, Diff)> {
        // A deletion of a field the hash does not have sent no hash event
        // (see `follower`): refused, so that a whole read decides.
        let mut present: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        let mut absent: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for change in changes {
            let field = &change.field[..];
            match &change.value {
                Some(_) => {
                    absent.remove(field);
                    present.insert(field);
                }
                None => {
                    let there = present.contains(field)
                        || (!absent.contains(field) && self.has_field(field));
                    if !there {
                        return None;
                    }
                    present.remove(field);
                    absent.insert(field);
                }
            }
        }
        let changes: Vec<(&[u8], Option<&[u8]>)> = changes
            .iter()
            .map(|c| (&c.field[..], c.value.as_deref()))
            .collect();
        Some(self.apply(&changes, self.context_at(SystemTime::now())))
    }

    /// Values are kilobytes of base64 (a chain and a key) that LZF cannot
    /// shrink: a `DUMP` of 1,000 certificates took Redis 29-41 ms, an
    /// `HGETALL` 2-8 ms (and every replica reads it after a plain write).
    const READ_BY_DUMP: bool = false;

    fn len(&self) -> usize {
        CertTable::len(self)
    }
}

/// The certificate table's home: the shared state's `CertStore` (only the
/// sync module installs tables there: ARCHITECTURE.md, "Choosing a
/// certificate does no I/O"), plus the snapshot file.
pub struct CertsHome {
    state: Arc<SharedState>,
    key: String,
    snapshot: Option<Arc<SnapshotWriter>>,
    /// The table patches start from before anything is loaded: empty, but
    /// carrying the sealer every table after it carries.
    seed: Arc<CertTable>,
}

impl CertsHome {
    pub fn new(
        state: Arc<SharedState>,
        key: &str,
        sealer: Option<Sealer>,
        snapshot: Option<Arc<SnapshotWriter>>,
    ) -> CertsHome {
        CertsHome {
            state,
            key: key.to_owned(),
            snapshot,
            seed: Arc::new(CertTable::unloaded_with(sealer.map(Arc::new))),
        }
    }

    /// Serves the certs table of the snapshot at `path` while nothing is
    /// loaded yet (a cold boot with Redis down: README.md, "Snapshot").
    pub fn restore(&self, path: &Path) {
        if self.loaded() {
            return;
        }
        let loaded = match snapshot::load(path) {
            Ok(Some(loaded)) => loaded,
            // Reported by the routes' load of the same file.
            Ok(None) | Err(_) => return,
        };
        // A file written before certificates were followed holds none:
        // what its writer served.
        let empty = snapshot::HashImage::default();
        let image = loaded.snapshot.images.get(&self.key).unwrap_or(&empty);
        let table = image.cert_table(&self.seed, SystemTime::now());
        info!(path = %loaded.path.display(), hosts = table.len(), version = table.version,
              "serving the snapshot's certificates until Redis answers");
        let table = Arc::new(table);
        log_new_invalid(&self.seed, &table);
        self.state
            .certs
            .install_table(table, &self.state.metrics.tls);
    }
}

impl Home<CertTable> for CertsHome {
    fn current(&self) -> Arc<CertTable> {
        let table = self.state.certs.table_full();
        if table.is_loaded() {
            table
        } else {
            self.seed.clone()
        }
    }

    fn serves_redis(&self) -> bool {
        self.state.certs.table().source == TableSource::Redis
    }

    fn loaded(&self) -> bool {
        self.state.certs.table().is_loaded()
    }

    fn install(
        &self,
        mut table: CertTable,
        diff: &Diff,
        watermark: RedisMicros,
        reason: &str,
    ) -> Arc<CertTable> {
        let previous = self.current();
        if diff.is_empty() && previous.source == TableSource::Redis {
            return previous;
        }
        table.watermark = Some(watermark);
        table.version = previous.version + 1;
        table.installed_at = Some(SystemTime::now());
        let table = Arc::new(table);
        self.state
            .certs
            .install_table(table.clone(), &self.state.metrics.tls);
        log_diff(reason, diff, &table);
        log_new_invalid(&previous, &table);
        if let Some(writer) = &self.snapshot {
            writer.save(&self.key, table.clone());
        }
        table
    }
}

/// Logs each invalid entry once: those that were not already invalid for
/// the same reason in the previous table.
fn log_new_invalid(previous: &CertTable, table: &CertTable) {
    let before: std::collections::HashSet<(String, String)> = previous
        .invalid()
        .into_iter()
        .map(|e| (e.field, e.reason))
        .collect();
    let invalid = table.invalid();
    let mut fresh = invalid
        .iter()
        .filter(|e| !before.contains(&(e.field.clone(), e.reason.clone())));
    for entry in fresh.by_ref().take(INVALID_LOG_LINES) {
        warn!(host = %entry.field, reason = %entry.reason,
              serving_previous = entry.serving_previous, "invalid certificate");
    }
    let more = fresh.count();
    if more > 0 {
        warn!(
            more,
            total = invalid.len(),
            "more invalid certificates: see the admin /certs view"
        );
    }
}

fn log_diff(reason: &str, diff: &Diff, table: &CertTable) {
    let names = super::routes_hash::logged_names;
    let stats = table.stats();
    info!(
        reason,
        version = table.version,
        hosts = table.len(),
        served = stats.loaded,
        invalid = stats.invalid,
        added = %names(&diff.added),
        changed = %names(&diff.changed),
        removed = %names(&diff.removed),
        "certificate table swapped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::TestCa;

    #[test]
    fn a_patch_equals_a_full_build_and_refuses_deleting_what_is_not_there() {
        let ca = TestCa::new();
        let (a, b, c) = (
            ca.leaf(&["a.com"]).value(),
            ca.leaf(&["b.com"]).value(),
            ca.leaf(&["c.com"]).value(),
        );
        let seed = CertTable::unloaded();
        let (v1, _) =
            CertTable::from_entries(&[("a.com", a.as_str()), ("b.com", b.as_str())], &seed);
        let (v2, diff) = v1
            .patch(&[
                Change::set("c.com", "garbage"),
                Change::set("c.com", &c),
                Change::delete("b.com"),
                Change::set("bad host!", "x"),
            ])
            .expect("patchable");
        let (full, _) = CertTable::from_entries(
            &[
                ("a.com", a.as_str()),
                ("c.com", c.as_str()),
                ("bad host!", "x"),
            ],
            &v1,
        );
        assert_eq!(v2.served(), full.served());
        assert_eq!((diff.added.len(), diff.removed.len()), (1, 1));
        // Deleting a field the hash does not have: refused (a full read
        // decides); deleting one set earlier in the same batch is fine,
        // deleting it twice is not.
        assert!(v1.patch(&[Change::delete("zzz.com")]).is_none());
        assert!(v1
            .patch(&[Change::set("z.com", &c), Change::delete("z.com")])
            .is_some());
        assert!(v1
            .patch(&[Change::delete("a.com"), Change::delete("a.com")])
            .is_none());
        assert!(v2.patch(&[Change::delete("bad host!")]).is_some());
    }

    #[test]
    fn the_seed_sealer_follows_every_table() {
        use crate::tls::seal::{Purpose, Secret};
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.com"]);
        let secret = Secret::from_bytes(&[7; 32]).unwrap();
        let sealer = Sealer::new(&secret, Purpose::CertKey);
        let value = leaf.sealed_value(&sealer, "a.com");
        let state = SharedState::new();
        let home = CertsHome::new(state.clone(), "routes:certs", Some(sealer), None);
        let (v1, diff) = CertTable::from_entries(&[("a.com", value.as_str())], &home.current());
        let v1 = home.install(v1, &diff, 1, "boot");
        assert!(state.certs.choose(Some("a.com")).unwrap().info.sealed);
        assert_eq!(state.metrics.tls.certificates.get(), 1);
        let (v2, diff) = v1
            .patch(&[Change::set("b.com", &value)])
            .expect("patchable");
        home.install(v2, &diff, 2, "log");
        // Sealed for a.com: does not open under b.com.
        assert!(state.certs.table().exact("b.com").is_none());
        assert!(state.certs.table().exact("a.com").is_some());
        assert_eq!(state.certs.table().version, 2);
        assert_eq!(state.certs.table().watermark, Some(2));
    }
}
