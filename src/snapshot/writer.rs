//! The single writer of a snapshot file: [`SnapshotWriter`], one thread
//! per file that writes the latest table of each followed key (a save
//! during a write is written by the next one; writes never overlap) to a
//! temp file of its own name, fsyncs it, keeps the former file as
//! `<file>.prev` and renames the new one in.

use super::{format, previous_path, SnapshotError, SnapshotSource};
use crate::state::SharedState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};
use tracing::warn;

/// Writes the tables to `path` now, atomically; `temp` is the name of
/// this write's own temp file, beside `path`.
fn write_file(
    path: &Path,
    temp: &Path,
    tables: &BTreeMap<String, Arc<dyn SnapshotSource>>,
) -> std::io::Result<()> {
    // Owner-only: the file may hold private keys (the certs hash's, in
    // plaintext unless sealed: README.md, "Private keys at rest").
    let file = {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(temp)?
    };
    let written = format::encode(file, tables).and_then(|file| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(temp);
        return Err(e);
    }
    if path.exists() {
        std::fs::rename(path, previous_path(path))?;
    }
    std::fs::rename(temp, path)?;
    if let Ok(dir) = std::fs::File::open(directory(path)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn directory(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes tables to one snapshot file from one thread: the latest table
/// of each key wins (tables saved while a write runs are written together
/// by the next one), writes never overlap. Dropping the writer lets the
/// thread finish the write it owes, then end.
pub struct SnapshotWriter {
    shared: Arc<WriterShared>,
}

struct WriterShared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    tables: BTreeMap<String, Arc<dyn SnapshotSource>>,
    /// Saves so far, and saves written (or failed) so far.
    saved: u64,
    done: u64,
    closed: bool,
}

/// How a write ended, for the status report.
pub type Report = Box<dyn Fn(Result<(), SnapshotError>) + Send>;

impl SnapshotWriter {
    /// Starts the writer thread of `path`; `report` hears how each write
    /// ended.
    pub fn start(path: PathBuf, report: Report) -> std::io::Result<SnapshotWriter> {
        let shared = Arc::new(WriterShared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        remove_stale_temps(&path);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || writer_loop(&path, &thread_shared, &*report))?;
        Ok(SnapshotWriter { shared })
    }

    /// A writer that reports into the proxy's status (`/readyz`).
    pub fn for_state(path: PathBuf, state: Arc<SharedState>) -> std::io::Result<SnapshotWriter> {
        SnapshotWriter::start(
            path,
            Box::new(move |result| match result {
                Ok(()) => state.status().snapshot_error = None,
                Err(e) => {
                    warn!(error = %e, "snapshot not written");
                    state.status().snapshot_error = Some(e.to_string());
                }
            }),
        )
    }

    /// Saves `table` as the latest of `key`; returns at once.
    pub fn save(&self, key: &str, table: Arc<dyn SnapshotSource>) {
        let mut pending = self.shared.pending.lock().expect("writer lock");
        pending.tables.insert(key.to_owned(), table);
        pending.saved += 1;
        self.shared.wake.notify_all();
    }

    /// Waits until everything saved so far is written (or failed), at
    /// most `timeout`. True when it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let pending = self.shared.pending.lock().expect("writer lock");
        let target = pending.saved;
        let (pending, _) = self
            .shared
            .wake
            .wait_timeout_while(pending, timeout, |p| p.done < target)
            .expect("writer lock");
        pending.done >= target
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.shared.pending.lock().expect("writer lock").closed = true;
        self.shared.wake.notify_all();
    }
}

fn writer_loop(path: &Path, shared: &WriterShared, report: &dyn Fn(Result<(), SnapshotError>)) {
    let mut writes: u64 = 0;
    loop {
        let (tables, target) = {
            let pending = shared.pending.lock().expect("writer lock");
            let pending = shared
                .wake
                .wait_while(pending, |p| p.done == p.saved && !p.closed)
                .expect("writer lock");
            if pending.done == pending.saved {
                return; // closed, nothing owed
            }
            (pending.tables.clone(), pending.saved)
        };
        writes += 1;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = directory(path).join(format!(".{name}.tmp-{}-{writes}", std::process::id()));
        let result = write_file(path, &temp, &tables).map_err(|source| SnapshotError::Write {
            path: path.into(),
            source,
        });
        // Report before counting the write done: a flush that returns
        // sees the status it led to.
        report(result);
        let mut pending = shared.pending.lock().expect("writer lock");
        pending.done = target;
        shared.wake.notify_all();
    }
}

/// Removes temp files of this snapshot left by writes that never finished
/// (a crash mid-write), once they are old enough not to be another live
/// writer's.
fn remove_stale_temps(path: &Path) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.tmp-");
    let Ok(dir) = std::fs::read_dir(directory(path)) else {
        return;
    };
    let stale = SystemTime::now() - Duration::from_secs(600);
    for entry in dir.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < stale);
        if old && entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
