//! The on-disk snapshot: the last table of every followed hash, so that a
//! proxy booting while Redis is unreachable serves what it served before,
//! and one booting while a host's value is invalid serves that host's last
//! valid route like the replicas that saw it valid (README.md,
//! "Snapshot").
//!
//! What is stored, per followed key: the hash's raw entries (field, value),
//! and for a field whose value is invalid while its key serves an older
//! valid value, that value. Rebuilding a table from the two gives the table
//! the writer served ([`HashImage::route_table`]).
//!
//! The file: one header line, `switchyard-snapshot 2 crc32=… length=…`,
//! then a JSON body (`{"keys": {"routes": {"version", "watermark",
//! "entries", "last_valid"}}}`; bytes that are not UTF-8 are arrays of
//! numbers). Written by one thread per file ([`SnapshotWriter`]): the latest
//! table of each key wins, writes never overlap, each goes to its own temp
//! file, is fsynced and renamed over the file, whose former version is kept
//! as `<file>.prev`. A reader checks the length and checksum, and falls
//! back to `<file>.prev`, saying so, when the file is damaged.
//!
//! In parts: this module owns what is stored ([`SnapshotSource`],
//! [`HashImage`]) and the reading at boot ([`load`], [`load_into`]);
//! `format` the bytes of a file, `writer` the thread that writes it.

mod format;
#[cfg(test)]
mod tests;
mod writer;

pub use writer::{Report, SnapshotWriter};

use crate::routes::{RawEntry, RedisMicros, RouteTable, TableSource};
use crate::state::SharedState;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{error, info, warn};

/// Why a snapshot could not be read or written.
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

/// What a followed hash's table gives the snapshot: enough to rebuild it
/// in another process. The route table is one; a table of another
/// followed hash (certificates) can be another.
pub trait SnapshotSource: Send + Sync {
    fn version(&self) -> u64;
    fn watermark(&self) -> Option<RedisMicros>;
    /// Every field of the hash with its value.
    fn for_each_field(&self, visit: &mut dyn FnMut(&[u8], &[u8]));
    /// Each field whose value is invalid while the table serves its key's
    /// last valid value instead, with that value.
    fn for_each_last_valid(&self, visit: &mut dyn FnMut(&[u8], &[u8]));
}

impl SnapshotSource for RouteTable {
    fn version(&self) -> u64 {
        self.version
    }

    fn watermark(&self) -> Option<RedisMicros> {
        self.watermark
    }

    fn for_each_field(&self, visit: &mut dyn FnMut(&[u8], &[u8])) {
        RouteTable::for_each_field(self, visit)
    }

    fn for_each_last_valid(&self, visit: &mut dyn FnMut(&[u8], &[u8])) {
        RouteTable::for_each_last_valid(self, |field, value| visit(field, value.as_bytes()))
    }
}

impl SnapshotSource for crate::tls::CertTable {
    fn version(&self) -> u64 {
        self.version
    }

    fn watermark(&self) -> Option<RedisMicros> {
        self.watermark
    }

    fn for_each_field(&self, visit: &mut dyn FnMut(&[u8], &[u8])) {
        for (field, value) in self.raw_entries() {
            visit(&field[..], &value[..]);
        }
    }

    fn for_each_last_valid(&self, visit: &mut dyn FnMut(&[u8], &[u8])) {
        crate::tls::CertTable::for_each_last_valid(self, visit)
    }
}

/// One followed hash as a snapshot holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashImage {
    pub version: u64,
    pub watermark: Option<RedisMicros>,
    /// Every field of the hash with its value, bytes as stored.
    pub entries: Vec<RawEntry>,
    /// Fields whose value was invalid, with the value they last had valid.
    pub last_valid: Vec<RawEntry>,
}

impl HashImage {
    /// The image of a table, taken now.
    pub fn of(source: &dyn SnapshotSource) -> HashImage {
        fn copy(list: &mut Vec<RawEntry>) -> impl FnMut(&[u8], &[u8]) + '_ {
            |f, v| list.push((Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
        }
        let mut image = HashImage {
            version: source.version(),
            watermark: source.watermark(),
            ..HashImage::default()
        };
        source.for_each_field(&mut copy(&mut image.entries));
        source.for_each_last_valid(&mut copy(&mut image.last_valid));
        image
    }

    /// The route table the image was taken of: the last valid values
    /// first, as the table a build of the entries follows, so an invalid
    /// value keeps serving the route it kept serving in the writer.
    pub fn route_table(&self) -> RouteTable {
        let last_valid = RouteTable::build(&self.last_valid, &RouteTable::unloaded());
        let mut table = RouteTable::build(&self.entries, &last_valid);
        table.version = self.version;
        table.watermark = self.watermark;
        table.source = TableSource::Snapshot;
        table
    }
}

impl HashImage {
    /// The certificate table the image was taken of, as [`HashImage::route_table`]
    /// does for routes: validity checked at `now`, sealed keys opened with
    /// the sealer `seed` carries (the table follows `seed`'s).
    pub fn cert_table(
        &self,
        seed: &crate::tls::CertTable,
        now: SystemTime,
    ) -> crate::tls::CertTable {
        use crate::tls::CertTable;
        let last_valid = CertTable::build(&self.last_valid, seed, seed.context_at(now)).0;
        let mut table = CertTable::build(&self.entries, &last_valid, seed.context_at(now)).0;
        table.version = self.version;
        table.watermark = self.watermark;
        table.source = TableSource::Snapshot;
        table
    }
}

/// A snapshot file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The image of each followed key, by key name. A format 1 file holds
    /// one image of unknown key, under "".
    pub images: BTreeMap<String, HashImage>,
}

impl Snapshot {
    /// The image of a followed key.
    pub fn image(&self, key: &str) -> Option<&HashImage> {
        self.images.get(key).or_else(|| self.images.get(""))
    }

    /// The route table of a followed key.
    pub fn route_table(&self, key: &str) -> Option<RouteTable> {
        self.image(key).map(HashImage::route_table)
    }
}

/// A snapshot as a booting proxy finds it.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    /// The file it came from: the snapshot, or its previous version.
    pub path: PathBuf,
    /// Why the newer file was not used, when the previous version was.
    pub skipped: Option<SnapshotError>,
}

/// Where the previous version of a snapshot file is kept.
pub fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".prev");
    path.with_file_name(name)
}

/// Reads the snapshot at `path`, or, when that file is missing or
/// damaged, its previous version (saying why in [`Loaded::skipped`]).
/// `Ok(None)` when there is neither; the error of `path` when neither
/// reads.
pub fn load(path: &Path) -> Result<Option<Loaded>, SnapshotError> {
    let newest = read(path);
    if let Ok(Some(snapshot)) = newest {
        return Ok(Some(Loaded {
            snapshot,
            path: path.into(),
            skipped: None,
        }));
    }
    let previous = previous_path(path);
    match (newest, read(&previous)) {
        (Ok(_), Ok(None)) => Ok(None),
        (newest, Ok(Some(snapshot))) => Ok(Some(Loaded {
            snapshot,
            path: previous,
            skipped: newest.err(),
        })),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

/// Loads the snapshot's table of `key` into `state` if no table is loaded
/// yet. A missing file is normal; a damaged one is reported in the status
/// (and the previous version served if it is good).
pub fn load_into(path: &Path, key: &str, state: &SharedState) {
    let loaded = match load(path) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return,
        Err(e) => {
            error!(error = %e, "ignoring the snapshot");
            state.status().snapshot_error = Some(e.to_string());
            return;
        }
    };
    if let Some(skipped) = &loaded.skipped {
        error!(error = %skipped, using = %loaded.path.display(), "snapshot damaged; using its previous version");
        state.status().snapshot_error = Some(format!(
            "{skipped}; serving its previous version {}",
            loaded.path.display()
        ));
    }
    let Some(table) = loaded.snapshot.route_table(key) else {
        warn!(path = %loaded.path.display(), key, "the snapshot holds no table of this key");
        return;
    };
    if state.table().is_loaded() {
        return;
    }
    info!(path = %loaded.path.display(), routes = table.len(), version = table.version, "serving the snapshot until Redis answers");
    state.swap_table(Arc::new(table));
}

/// Reads and checks one snapshot file; `Ok(None)` when there is no file.
pub fn read(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
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
    format::decode(&bytes)
        .map(Some)
        .map_err(|reason| SnapshotError::Corrupt {
            path: path.into(),
            reason,
        })
}
