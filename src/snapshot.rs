//! The on-disk snapshot (DESIGN 9): every swapped-in table is written
//! atomically (temp file, fsync, rename), and a proxy that boots while Redis
//! is unreachable serves it until the first live load replaces it.

use crate::routes::{Entry, RawEntry, RouteTable, TableSource};
use crate::state::SharedState;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{info, warn};

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    format: u32,
    version: u64,
    watermark: Option<u64>,
    /// Field → value, as they were last valid.
    routes: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt snapshot {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write snapshot {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the snapshot into `state` if the table is not loaded yet. A
/// missing file is normal; a corrupt one is reported and ignored.
pub fn load_into(path: &Path, state: &SharedState) {
    match read(path) {
        Ok(Some(mut table)) => {
            if state.is_ready() {
                return;
            }
            table.source = TableSource::Snapshot;
            info!(path = %path.display(), routes = table.len(), version = table.version, "serving the snapshot until Redis answers");
            state.swap_table(Arc::new(table));
        }
        Ok(None) => {}
        Err(e) => {
            warn!(error = %e, "ignoring the snapshot");
            state.status().snapshot_error = Some(e.to_string());
        }
    }
}

/// Reads a snapshot file into a table; `Ok(None)` when there is no file.
pub fn read(path: &Path) -> Result<Option<RouteTable>, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.into(),
        reason,
    };
    let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.format != FORMAT {
        return Err(corrupt(format!("unknown format {}", file.format)));
    }
    let raw: Vec<RawEntry> = file
        .routes
        .into_iter()
        .map(|(f, v)| (f.into_bytes().into(), v.into_bytes().into()))
        .collect();
    let mut table = RouteTable::build(&raw, &RouteTable::unloaded());
    table.version = file.version;
    table.watermark = file.watermark;
    table.source = TableSource::Snapshot;
    Ok(Some(table))
}

/// Writes `table` atomically: a temp file beside the target, fsync, rename,
/// fsync of the directory.
pub fn write(path: &Path, table: &RouteTable) -> Result<(), SnapshotError> {
    let err = |source| SnapshotError::Write {
        path: path.into(),
        source,
    };
    let routes = table
        .entries()
        .into_iter()
        .filter_map(|(key, entry)| match entry {
            Entry::Valid(route) => Some((key, route.value().to_string())),
            Entry::Invalid => None,
        })
        .collect();
    let file = SnapshotFile {
        format: FORMAT,
        version: table.version,
        watermark: table.watermark,
        routes,
    };
    let json = serde_json::to_vec(&file).expect("snapshot serialises");
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&json).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes the snapshot on a blocking thread; failures are reported, never fatal.
pub fn save_in_background(path: PathBuf, table: Arc<RouteTable>, state: Arc<SharedState>) {
    tokio::task::spawn_blocking(move || match write(&path, &table) {
        Ok(()) => state.status().snapshot_error = None,
        Err(e) => {
            warn!(error = %e, "snapshot not written");
            state.status().snapshot_error = Some(e.to_string());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Lookup;

    #[test]
    fn round_trips_and_reports_corruption() {
        let dir = std::env::temp_dir().join(format!("switchyard-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.json");
        let raw: Vec<RawEntry> = vec![
            ("a.com".into(), "10.0.0.1:80".into()),
            ("*.b.com".into(), "10.0.0.2:80".into()),
            ("bad.com".into(), "nope".into()),
        ];
        let mut table = RouteTable::build(&raw, &RouteTable::unloaded());
        table.version = 7;
        write(&path, &table).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.version, 7);
        assert_eq!(back.source, TableSource::Snapshot);
        assert!(matches!(back.lookup("a.com"), Lookup::Route(_)));
        assert!(matches!(back.lookup("x.b.com"), Lookup::Route(_)));
        assert!(matches!(back.lookup("bad.com"), Lookup::NotFound));
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(matches!(read(&path), Err(SnapshotError::Corrupt { .. })));
        assert!(read(&dir.join("missing.json")).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
