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

use crate::routes::{RawEntry, RedisMicros, RouteTable, TableSource};
use crate::state::SharedState;
use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};
use tracing::{error, info, warn};

/// The format written. Format 1 (a JSON object of valid routes, no
/// header) is still read.
const FORMAT: u32 = 2;
const MAGIC: &str = "switchyard-snapshot";

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
    parse(&bytes)
        .map(Some)
        .map_err(|reason| SnapshotError::Corrupt {
            path: path.into(),
            reason,
        })
}

fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.starts_with(b"{") {
        return parse_format_1(bytes);
    }
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let body = &bytes[newline + 1..];
    let (crc, length) = parse_header(header)?;
    if body.len() as u64 != length {
        return Err(format!(
            "{} bytes where the header says {length} (cut short?)",
            body.len()
        ));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let body: BodyIn = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(Snapshot {
        images: body
            .keys
            .into_iter()
            .map(|(key, image)| {
                let pairs =
                    |list: Vec<(Raw, Raw)>| list.into_iter().map(|(f, v)| (f.0, v.0)).collect();
                let image = HashImage {
                    version: image.version,
                    watermark: image.watermark,
                    entries: pairs(image.entries),
                    last_valid: pairs(image.last_valid),
                };
                (key, image)
            })
            .collect(),
    })
}

/// `switchyard-snapshot 2 crc32=0a1b2c3d length=0000000000001234`.
fn parse_header(header: &str) -> Result<(u32, u64), String> {
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err("not a switchyard snapshot".into());
    }
    let format = words.next().unwrap_or_default();
    if format != FORMAT.to_string() {
        return Err(format!("unknown format {format:?}"));
    }
    let mut field = |name: &str| {
        words
            .next()
            .and_then(|w| w.strip_prefix(name))
            .ok_or_else(|| format!("header has no {name}"))
    };
    let crc = u32::from_str_radix(field("crc32=")?, 16).map_err(|e| e.to_string())?;
    let length = field("length=")?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    Ok((crc, length))
}

fn header(crc: u32, length: u64) -> String {
    format!("{MAGIC} {FORMAT} crc32={crc:08x} length={length:016}\n")
}

/// Format 1: the valid routes only, under their normal spelling.
fn parse_format_1(bytes: &[u8]) -> Result<Snapshot, String> {
    #[derive(Deserialize)]
    struct Format1 {
        format: u32,
        version: u64,
        watermark: Option<u64>,
        routes: Vec<(String, String)>,
    }
    let file: Format1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.format != 1 {
        return Err(format!("unknown format {}", file.format));
    }
    let image = HashImage {
        version: file.version,
        watermark: file.watermark,
        entries: file
            .routes
            .into_iter()
            .map(|(f, v)| (f.into_bytes().into(), v.into_bytes().into()))
            .collect(),
        last_valid: Vec::new(),
    };
    Ok(Snapshot {
        images: BTreeMap::from([(String::new(), image)]),
    })
}

#[derive(Deserialize)]
struct BodyIn {
    keys: BTreeMap<String, ImageIn>,
}

#[derive(Deserialize)]
struct ImageIn {
    version: u64,
    watermark: Option<u64>,
    entries: Vec<(Raw, Raw)>,
    last_valid: Vec<(Raw, Raw)>,
}

/// Bytes as the body holds them: a string, or an array of byte values
/// for bytes that are not UTF-8.
struct Raw(Bytes);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw(Bytes::copy_from_slice(v.as_bytes())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(Raw(bytes.into()))
            }
        }
        deserializer.deserialize_any(RawVisitor)
    }
}

/// Bytes for the body (see [`Raw`]).
struct RawOut<'a>(&'a [u8]);

impl Serialize for RawOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serializer.collect_seq(self.0),
        }
    }
}

/// The body, written straight from the tables (no copy of the entries).
struct BodyOut<'a>(&'a BTreeMap<String, Arc<dyn SnapshotSource>>);

impl Serialize for BodyOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            keys: BTreeMap<&'a str, ImageOut<'a>>,
        }
        #[derive(Serialize)]
        struct ImageOut<'a> {
            version: u64,
            watermark: Option<u64>,
            entries: Pairs<'a>,
            last_valid: Pairs<'a>,
        }
        let keys = self
            .0
            .iter()
            .map(|(key, source)| {
                let image = ImageOut {
                    version: source.version(),
                    watermark: source.watermark(),
                    entries: Pairs(&**source, false),
                    last_valid: Pairs(&**source, true),
                };
                (key.as_str(), image)
            })
            .collect();
        Body { keys }.serialize(serializer)
    }
}

/// A source's entries (or last valid values) as a JSON array of pairs.
struct Pairs<'a>(&'a dyn SnapshotSource, bool);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        let mut result = Ok(());
        let mut pair = |field: &[u8], value: &[u8]| {
            if result.is_ok() {
                result = seq.serialize_element(&(RawOut(field), RawOut(value)));
            }
        };
        if self.1 {
            self.0.for_each_last_valid(&mut pair);
        } else {
            self.0.for_each_field(&mut pair);
        }
        result?;
        seq.end()
    }
}

/// A writer that checksums and counts what goes through it.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    length: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.length += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

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
    let written = (|| {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        // The header's fields have a fixed width: room for the real one,
        // written once the body is summed.
        let placeholder = header(0, 0);
        out.write_all(placeholder.as_bytes())?;
        let mut body = Summing {
            inner: out,
            crc: crc32fast::Hasher::new(),
            length: 0,
        };
        serde_json::to_writer(&mut body, &BodyOut(tables))?;
        let (crc, length) = (body.crc.finalize(), body.length);
        let mut file = body.inner.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        file.write_all(header(crc, length).as_bytes())?;
        file.sync_all()
    })();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Lookup;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("switchyard-snap-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn raw(entries: &[(&[u8], &[u8])]) -> Vec<RawEntry> {
        entries
            .iter()
            .map(|(f, v)| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
            .collect()
    }

    fn value_at(table: &RouteTable, host: &str) -> Option<String> {
        match table.lookup(host) {
            Lookup::Route(route) => Some(route.value().to_owned()),
            Lookup::Invalid => Some("INVALID".to_owned()),
            Lookup::NotFound => None,
        }
    }

    fn write_now(path: &Path, tables: &[(&str, Arc<RouteTable>)]) {
        let writer = SnapshotWriter::start(path.into(), Box::new(|r| r.unwrap())).unwrap();
        for (key, table) in tables {
            writer.save(key, table.clone());
        }
        assert!(writer.flush(Duration::from_secs(10)));
    }

    #[test]
    fn a_table_comes_back_as_it_was_served() {
        let dir = TempDir::new("round");
        let path = dir.0.join("routes.snap");
        let v1 = RouteTable::build(
            &raw(&[(b"a.com", b"10.0.0.1:80"), (b"keep.com", b"10.0.0.5:80")]),
            &RouteTable::unloaded(),
        );
        // `keep.com` turns invalid: the table keeps serving its last valid
        // route, and so must a table rebuilt from the snapshot (28.10).
        let mut v2 = RouteTable::build(
            &raw(&[
                (b"a.com", b"10.0.0.1:80"),
                (b"App.com", b"10.0.0.2:80,10.0.0.3:80"),
                (b"*.b.com", b"10.0.0.2:80"),
                (b"*", b"10.0.0.9:80"),
                (b"bad.com", b"nope"),
                (b"keep.com", b"nope"),
                (b"\xff.com", b"\xfe"),
            ]),
            &v1,
        );
        v2.version = 7;
        v2.watermark = Some(1234);
        write_now(&path, &[("routes", Arc::new(v2)), ("other", Arc::new(v1))]);
        let snapshot = read(&path).unwrap().unwrap();
        assert_eq!(snapshot.images.len(), 2);
        let back = snapshot.route_table("routes").unwrap();
        assert_eq!((back.version, back.watermark), (7, Some(1234)));
        assert_eq!(back.source, TableSource::Snapshot);
        assert_eq!(value_at(&back, "a.com").as_deref(), Some("10.0.0.1:80"));
        assert_eq!(
            value_at(&back, "app.com").as_deref(),
            Some("10.0.0.2:80,10.0.0.3:80")
        );
        assert_eq!(value_at(&back, "x.b.com").as_deref(), Some("10.0.0.2:80"));
        assert_eq!(
            value_at(&back, "elsewhere.org").as_deref(),
            Some("10.0.0.9:80")
        );
        assert_eq!(value_at(&back, "bad.com").as_deref(), Some("INVALID"));
        assert_eq!(value_at(&back, "keep.com").as_deref(), Some("10.0.0.5:80"));
        assert_eq!(back.invalid().len(), 3);
        // Every field, bytes as stored.
        let image = snapshot.image("routes").unwrap();
        assert_eq!(image.entries.len(), 7);
        assert!(image
            .entries
            .iter()
            .any(|(f, v)| &f[..] == b"\xff.com" && &v[..] == b"\xfe"));
        assert_eq!(image.last_valid, raw(&[(b"keep.com", b"10.0.0.5:80")]));
        let other = snapshot.route_table("other").unwrap();
        assert_eq!(value_at(&other, "keep.com").as_deref(), Some("10.0.0.5:80"));
    }

    #[test]
    fn damage_is_detected_and_the_previous_version_serves() {
        let dir = TempDir::new("damage");
        let path = dir.0.join("routes.snap");
        let table = |value: &[u8]| {
            Arc::new(RouteTable::build(
                &raw(&[(b"a.com", value)]),
                &RouteTable::unloaded(),
            ))
        };
        write_now(&path, &[("routes", table(b"10.0.0.1:80"))]);
        write_now(&path, &[("routes", table(b"10.0.0.2:80"))]);
        let good = std::fs::read(&path).unwrap();
        // Cut short, a flipped byte, garbage: each is reported as corrupt.
        for damaged in [
            good[..good.len() - 10].to_vec(),
            {
                let mut flipped = good.clone();
                let at = flipped.len() - 5;
                flipped[at] ^= 1;
                flipped
            },
            b"\x00\xffgarbage".to_vec(),
        ] {
            std::fs::write(&path, &damaged).unwrap();
            assert!(matches!(read(&path), Err(SnapshotError::Corrupt { .. })));
            let loaded = load(&path).unwrap().unwrap();
            assert_eq!(loaded.path, previous_path(&path));
            assert!(matches!(
                loaded.skipped,
                Some(SnapshotError::Corrupt { .. })
            ));
            let back = loaded.snapshot.route_table("routes").unwrap();
            assert_eq!(value_at(&back, "a.com").as_deref(), Some("10.0.0.1:80"));
        }
        // Both damaged: an error, not an empty table.
        std::fs::write(previous_path(&path), b"{ not json").unwrap();
        assert!(load(&path).is_err());
        // A crash between the two renames leaves only the previous one.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(previous_path(&path), &good).unwrap();
        assert!(load(&path).unwrap().unwrap().skipped.is_none());
        assert!(load(&dir.0.join("missing.snap")).unwrap().is_none());
    }

    #[test]
    fn a_format_1_file_is_still_read() {
        let dir = TempDir::new("v1");
        let path = dir.0.join("routes.json");
        std::fs::write(
            &path,
            br#"{"format":1,"version":3,"watermark":null,"routes":[["a.com","10.0.0.1:80"],["*.b.com","10.0.0.2:80"]]}"#,
        )
        .unwrap();
        let back = read(&path)
            .unwrap()
            .unwrap()
            .route_table("any-key")
            .unwrap();
        assert_eq!(back.version, 3);
        assert_eq!(value_at(&back, "x.b.com").as_deref(), Some("10.0.0.2:80"));
    }

    /// Issue 27.4: many swaps in a burst, from several threads. One writer,
    /// so writes never interleave; the file is whole at every moment a
    /// reader looks; the last table saved is the one on disk; no temp file
    /// is left behind.
    #[test]
    fn rapid_saves_leave_the_latest_table_whole() {
        let dir = TempDir::new("rapid");
        let path = dir.0.join("routes.snap");
        let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = writes.clone();
        let writer = Arc::new(
            SnapshotWriter::start(
                path.clone(),
                Box::new(move |r| {
                    r.unwrap();
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }),
            )
            .unwrap(),
        );
        let table = |i: usize| {
            let mut entries: Vec<RawEntry> = (0..300)
                .map(|h| {
                    (
                        Bytes::from(format!("h{h}.com")),
                        Bytes::from(format!("10.0.{}.{}:80", i % 250, h % 250)),
                    )
                })
                .collect();
            entries.push((
                Bytes::from_static(b"which.com"),
                Bytes::from(format!("10.9.{}.{}:80", i / 250, i % 250)),
            ));
            let mut t = RouteTable::build(&entries, &RouteTable::unloaded());
            t.version = i as u64;
            Arc::new(t)
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Never a damaged file, whenever one looks.
                    if read(&path).unwrap().is_some() {
                        seen += 1;
                    }
                }
                seen
            })
        };
        const SAVES: usize = 400;
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = writer.clone();
                s.spawn(move || {
                    for i in (t..SAVES).step_by(4) {
                        writer.save("routes", table(i));
                    }
                });
            }
        });
        // The last save, after every other: that table must be the one.
        writer.save("routes", table(SAVES));
        assert!(writer.flush(Duration::from_secs(30)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        let back = read(&path).unwrap().unwrap().route_table("routes").unwrap();
        assert_eq!(back.version, SAVES as u64);
        assert_eq!(
            value_at(&back, "which.com").as_deref(),
            Some("10.9.1.150:80")
        );
        let written = writes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(written >= 1 && written <= SAVES as u64 + 1, "{written}");
        let left: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_write_that_fails_is_reported_and_leaves_the_file_alone() {
        let dir = TempDir::new("fail");
        let path = dir.0.join("routes.snap");
        let table = Arc::new(RouteTable::build(
            &raw(&[(b"a.com", b"10.0.0.1:80")]),
            &RouteTable::unloaded(),
        ));
        write_now(&path, &[("routes", table.clone())]);
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        // The directory is gone: the temp file cannot be created.
        let gone = dir.0.join("gone").join("routes.snap");
        let writer = SnapshotWriter::start(
            gone,
            Box::new(move |r| seen.lock().unwrap().push(r.err().map(|e| e.to_string()))),
        )
        .unwrap();
        writer.save("routes", table);
        assert!(writer.flush(Duration::from_secs(10)));
        let errors = errors.lock().unwrap();
        assert!(
            errors[0]
                .as_deref()
                .is_some_and(|e| e.contains("cannot write snapshot")),
            "{errors:?}"
        );
        assert!(read(&path).unwrap().is_some());
    }
}
