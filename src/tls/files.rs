//! The default certificate from `--tls-cert`/`--tls-key`: loaded at
//! start, loaded again when either file's content changes (polled, which
//! also sees a symlink swapped under a mounted secret) or on demand
//! ([`CertFiles::reload`], what SIGHUP calls), and never replaced by a
//! pair that does not load: that is reported (log, metric, `/certs`) and
//! the previous pair keeps serving (README.md, "HTTPS").

use super::certs::{self, CertError};
use super::resolver::DefaultCert;
use crate::state::SharedState;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Why the files were not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{cert} + {key}: {error}")]
    Cert {
        cert: String,
        key: String,
        error: CertError,
    },
}

/// What a look at the files did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileLoad {
    /// The pair loaded and now serves.
    Loaded,
    /// Same contents as at the last look: nothing done.
    Unchanged,
}

/// The certificate and key files and what they held at the last look.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    /// Contents at the last look, loaded or not: a pair that failed is not
    /// loaded (and reported) again until it changes.
    seen: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl CertFiles {
    pub fn new(cert: PathBuf, key: PathBuf) -> CertFiles {
        CertFiles {
            cert,
            key,
            seen: Mutex::new(None),
        }
    }

    /// Reads and loads the pair whatever it held before (SIGHUP).
    pub fn reload(&self, state: &SharedState) -> Result<FileLoad, FileError> {
        self.look(state, true)
    }

    /// Loads the pair if either file changed since the last look.
    pub fn reload_if_changed(&self, state: &SharedState) -> Result<FileLoad, FileError> {
        self.look(state, false)
    }

    fn look(&self, state: &SharedState, always: bool) -> Result<FileLoad, FileError> {
        let contents = read(&self.cert).and_then(|c| Ok((c, read(&self.key)?)));
        let result = contents.and_then(|(cert, key)| {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !always && seen.as_ref().is_some_and(|(c, k)| *c == cert && *k == key) {
                return Ok(FileLoad::Unchanged);
            }
            let mut value = cert.clone();
            value.push(b'\n');
            value.extend_from_slice(&key);
            *seen = Some((cert, key));
            let loaded = certs::load(&value, None, None, SystemTime::now()).map_err(|error| {
                FileError::Cert {
                    cert: self.cert.display().to_string(),
                    key: self.key.display().to_string(),
                    error,
                }
            })?;
            tracing::info!(
                cert = %self.cert.display(),
                names = %loaded.info.names.join(","),
                not_after = %certs::rfc3339(loaded.info.not_after),
                "default certificate loaded"
            );
            state.certs.install_default(
                DefaultCert {
                    cert: Arc::new(loaded),
                    cert_file: self.cert.clone(),
                    key_file: self.key.clone(),
                    loaded_at: SystemTime::now(),
                },
                &state.metrics.tls,
            );
            Ok(FileLoad::Loaded)
        });
        match &result {
            Ok(FileLoad::Loaded) => state.metrics.tls.file_load(true),
            Ok(FileLoad::Unchanged) => {}
            Err(e) => {
                let keeping = state.certs.default_cert().is_some();
                tracing::error!(
                    error = %e,
                    "default certificate not loaded; {}",
                    if keeping {
                        "the previous one keeps serving"
                    } else {
                        "there is none"
                    }
                );
                state.certs.report_file_problem(e.to_string());
                state.certs.refresh_gauges(&state.metrics.tls);
                state.metrics.tls.file_load(false);
            }
        }
        result
    }

    /// Loads the pair now, then looks again every `interval` until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        state: Arc<SharedState>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let _ = self.reload_if_changed(&state);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {
                    let _ = self.reload_if_changed(&state);
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    // Anything larger is not a certificate or a key: refuse to read it all.
    const MAX_FILE_LEN: u64 = certs::MAX_VALUE_LEN as u64;
    let error = |reason: String| FileError::Read {
        path: path.display().to_string(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| error(e.to_string()))?
        .len();
    if len > MAX_FILE_LEN {
        return Err(error(format!("larger than {MAX_FILE_LEN} bytes")));
    }
    std::fs::read(path).map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::{days, TestCa};

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "switchyard-tls-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            // Renamed into place, as a deploy tool does: never half a file.
            let tmp = self.0.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, contents).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn served_names(state: &SharedState) -> Option<Vec<String>> {
        state.certs.choose(None).map(|c| c.info.names.clone())
    }

    #[test]
    fn a_bad_new_pair_is_reported_and_the_old_one_kept() {
        let dir = Dir::new("reload");
        let ca = TestCa::new();
        let (one, two) = (ca.leaf(&["one.example"]), ca.leaf(&["two.example"]));
        let files = CertFiles::new(
            dir.write("cert.pem", &one.chain_pem),
            dir.write("key.pem", &one.key_pem),
        );
        let state = SharedState::new();
        assert_eq!(files.reload_if_changed(&state), Ok(FileLoad::Loaded));
        assert_eq!(served_names(&state).unwrap(), ["one.example"]);
        assert_eq!(files.reload_if_changed(&state), Ok(FileLoad::Unchanged));

        // A new certificate with the old key: refused, the old pair serves.
        dir.write("cert.pem", &two.chain_pem);
        let err = files.reload_if_changed(&state).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the private key does not match the certificate"),
            "{err}"
        );
        assert_eq!(served_names(&state).unwrap(), ["one.example"]);
        let problem = state.certs.file_problem().clone().unwrap();
        assert!(problem.serving_previous);
        // Reported once, not at every look.
        assert_eq!(files.reload_if_changed(&state), Ok(FileLoad::Unchanged));
        assert!(state
            .metrics
            .render()
            .contains("switchyard_tls_file_loads_total{outcome=\"error\"} 1"));

        // The key arrives: the new pair serves, the problem is gone.
        dir.write("key.pem", &two.key_pem);
        assert_eq!(files.reload_if_changed(&state), Ok(FileLoad::Loaded));
        assert_eq!(served_names(&state).unwrap(), ["two.example"]);
        assert!(state.certs.file_problem().is_none());

        // SIGHUP loads even unchanged files.
        assert_eq!(files.reload(&state), Ok(FileLoad::Loaded));

        // Expired, missing: refused too.
        let old = ca.leaf_valid(&["old.example"], days(-9), days(-1));
        dir.write("cert.pem", &old.chain_pem);
        dir.write("key.pem", &old.key_pem);
        assert!(matches!(
            files.reload_if_changed(&state),
            Err(FileError::Cert {
                error: CertError::Expired { .. },
                ..
            })
        ));
        std::fs::remove_file(dir.0.join("key.pem")).unwrap();
        assert!(matches!(
            files.reload_if_changed(&state),
            Err(FileError::Read { .. })
        ));
        assert_eq!(served_names(&state).unwrap(), ["two.example"]);
        assert_eq!(state.metrics.tls.certificates.get(), 1);
        assert_eq!(state.metrics.tls.invalid_certificates.get(), 1);
    }

    #[tokio::test]
    async fn the_watcher_follows_the_files() {
        let dir = Dir::new("watch");
        let ca = TestCa::new();
        let (one, two) = (ca.leaf(&["one.example"]), ca.leaf(&["two.example"]));
        let files = Arc::new(CertFiles::new(
            dir.write("cert.pem", &one.chain_pem),
            dir.write("key.pem", &one.key_pem),
        ));
        let state = SharedState::new();
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(files.clone().watch(
            state.clone(),
            Duration::from_millis(20),
            stop.clone(),
        ));
        crate::tls::testing::eventually(|| {
            served_names(&state) == Some(vec!["one.example".into()])
        })
        .await;
        // Key first, then certificate: the pair is briefly mismatched.
        dir.write("key.pem", &two.key_pem);
        dir.write("cert.pem", &two.chain_pem);
        crate::tls::testing::eventually(|| {
            served_names(&state) == Some(vec!["two.example".into()])
        })
        .await;
        stop.cancel();
        watcher.await.unwrap();
    }
}
