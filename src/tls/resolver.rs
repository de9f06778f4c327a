//! The certificates a replica serves and the choice among them by SNI:
//! the table from the certs hash (installed only by the sync loop) and
//! the default certificate from `--tls-cert`/`--tls-key` (installed only
//! by the file watcher). Choosing does no I/O and takes no lock: an
//! atomic load of the table, and of the default when the table has
//! nothing for the name (README.md, "HTTPS").

use super::certs::LoadedCert;
use super::table::{CertStats, CertTable};
use crate::metrics::TlsMetrics;
use crate::routes::normalize_host;
use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// The default certificate, with where it came from.
#[derive(Debug)]
pub struct DefaultCert {
    pub cert: Arc<LoadedCert>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub loaded_at: SystemTime,
}

/// The last failed load of the certificate files, kept for `/certs` until
/// a load succeeds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileProblem {
    pub reason: String,
    #[serde(serialize_with = "unix_ms")]
    pub at: SystemTime,
    /// The previous default certificate keeps serving.
    pub serving_previous: bool,
}

fn unix_ms<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    s.serialize_u64(ms)
}

/// Every certificate a replica may serve.
pub struct CertStore {
    /// From the certs hash; stored only by the sync loop.
    table: ArcSwap<CertTable>,
    /// From the files; stored only by the file watcher.
    default: ArcSwapOption<DefaultCert>,
    file_problem: Mutex<Option<FileProblem>>,
}

impl Default for CertStore {
    fn default() -> Self {
        CertStore {
            table: ArcSwap::from_pointee(CertTable::unloaded()),
            default: ArcSwapOption::empty(),
            file_problem: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("hosts", &self.table.load().len())
            .field("default", &self.default.load().is_some())
            .finish()
    }
}

impl CertStore {
    /// The certificate for a client's server name: the table's (exact,
    /// then longest wildcard), else the default. `None` when neither has
    /// one: the handshake is refused.
    pub fn choose(&self, server_name: Option<&str>) -> Option<Arc<LoadedCert>> {
        if let Some(name) = server_name.and_then(|n| normalize_host(n).ok()) {
            if let Some(cert) = self.table.load().lookup(&name) {
                return Some(cert.clone());
            }
        }
        self.default.load().as_ref().map(|d| d.cert.clone())
    }

    /// Whether a client asking for `host` gets a certificate naming it:
    /// the table's, or the default one when its names cover the host
    /// (what `--redirect-https` asks).
    pub fn has_certificate_for(&self, host: &str) -> bool {
        let Ok(host) = normalize_host(host) else {
            return false;
        };
        if self.table.load().lookup(&host).is_some() {
            return true;
        }
        let key = crate::routes::FieldKey::Exact(host.into_owned());
        self.default
            .load()
            .as_ref()
            .is_some_and(|d| d.cert.info.covers(&key))
    }

    /// The table from the certs hash: one atomic load.
    pub fn table(&self) -> Guard<Arc<CertTable>> {
        self.table.load()
    }

    /// The table as an owned `Arc`, for holders across awaits.
    pub fn table_full(&self) -> Arc<CertTable> {
        self.table.load_full()
    }

    pub fn default_cert(&self) -> Option<Arc<DefaultCert>> {
        self.default.load_full()
    }

    pub fn file_problem(&self) -> MutexGuard<'_, Option<FileProblem>> {
        self.file_problem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs a table built from the certs hash. The sync loop's to
    /// call (ARCHITECTURE.md: only the sync module stores tables; the tidy
    /// tests check it).
    pub(crate) fn install_table(&self, table: Arc<CertTable>, metrics: &TlsMetrics) {
        self.table.store(table);
        self.update_gauges(metrics);
    }

    /// Installs a new default certificate (the file watcher's to call).
    pub(crate) fn install_default(&self, cert: DefaultCert, metrics: &TlsMetrics) {
        self.default.store(Some(Arc::new(cert)));
        *self.file_problem() = None;
        self.update_gauges(metrics);
    }

    pub(crate) fn report_file_problem(&self, reason: String) {
        *self.file_problem() = Some(FileProblem {
            reason,
            at: SystemTime::now(),
            serving_previous: self.default.load().is_some(),
        });
    }

    /// Counts of the table with the default certificate added.
    pub fn stats(&self) -> CertStats {
        let mut stats = self.table.load().stats();
        if let Some(default) = self.default.load().as_ref() {
            stats.loaded += 1;
            let not_after = default.cert.info.not_after;
            stats.earliest_not_after = Some(
                stats
                    .earliest_not_after
                    .map_or(not_after, |t| t.min(not_after)),
            );
        }
        if self.file_problem().is_some() {
            stats.invalid += 1;
        }
        stats
    }

    fn update_gauges(&self, metrics: &TlsMetrics) {
        let stats = self.stats();
        metrics.certificates.set(stats.loaded as i64);
        metrics.invalid_certificates.set(stats.invalid as i64);
        metrics
            .earliest_not_after
            .set(stats.earliest_not_after.unwrap_or(0));
    }

    /// Refreshes the gauges after a change that installed nothing (a
    /// failed file load).
    pub(crate) fn refresh_gauges(&self, metrics: &TlsMetrics) {
        self.update_gauges(metrics);
    }
}

/// rustls's view of a [`CertStore`].
pub struct Resolver(pub Arc<crate::state::SharedState>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Resolver").field(&self.0.certs).finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .certs
            .choose(hello.server_name())
            .map(|cert| cert.certified.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::tls::certs;
    use crate::tls::table::LoadContext;
    use crate::tls::testing::TestCa;
    use bytes::Bytes;

    fn table(entries: &[(&str, String)]) -> Arc<CertTable> {
        let raw: Vec<(Bytes, Bytes)> = entries
            .iter()
            .map(|(f, v)| (Bytes::from(f.to_string()), Bytes::from(v.clone())))
            .collect();
        let ctx = LoadContext {
            sealer: None,
            now: SystemTime::now(),
        };
        Arc::new(CertTable::build(&raw, &CertTable::unloaded(), ctx).0)
    }

    fn names(cert: Option<Arc<LoadedCert>>) -> Option<Vec<String>> {
        cert.map(|c| c.info.names.clone())
    }

    #[test]
    fn exact_then_wildcard_then_default_then_nothing() {
        let ca = TestCa::new();
        let store = CertStore::default();
        let metrics = Metrics::new();
        store.install_table(
            table(&[
                ("app.cloud.com", ca.leaf(&["app.cloud.com"]).value()),
                ("*.cloud.com", ca.leaf(&["*.cloud.com"]).value()),
            ]),
            &metrics.tls,
        );
        assert_eq!(
            names(store.choose(Some("app.cloud.com"))).unwrap(),
            ["app.cloud.com"]
        );
        assert_eq!(
            names(store.choose(Some("APP.cloud.com."))).unwrap(),
            ["app.cloud.com"]
        );
        assert_eq!(
            names(store.choose(Some("x.cloud.com"))).unwrap(),
            ["*.cloud.com"]
        );
        assert_eq!(names(store.choose(Some("other.org"))), None);
        assert_eq!(names(store.choose(None)), None);
        assert_eq!(metrics.tls.certificates.get(), 2);

        let default = ca.leaf(&["default.example"]);
        store.install_default(
            DefaultCert {
                cert: Arc::new(
                    certs::load(default.value().as_bytes(), None, None, SystemTime::now()).unwrap(),
                ),
                cert_file: "c.pem".into(),
                key_file: "k.pem".into(),
                loaded_at: SystemTime::now(),
            },
            &metrics.tls,
        );
        assert_eq!(
            names(store.choose(Some("other.org"))).unwrap(),
            ["default.example"]
        );
        assert_eq!(names(store.choose(None)).unwrap(), ["default.example"]);
        assert_eq!(
            names(store.choose(Some("not a name!"))).unwrap(),
            ["default.example"]
        );
        assert_eq!(
            names(store.choose(Some("x.cloud.com"))).unwrap(),
            ["*.cloud.com"]
        );
        assert_eq!(metrics.tls.certificates.get(), 3);
        assert!(metrics.tls.earliest_not_after.get() > 0);
    }
}
