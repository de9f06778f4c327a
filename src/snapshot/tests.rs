//! The snapshot end to end: tables saved by the writer, read back (or
//! from `<file>.prev` when the file is damaged) and rebuilt as served.

use super::*;
use crate::routes::Lookup;
use std::sync::Mutex;
use std::time::Duration;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("switchyard-snap-{name}-{}-{n}", std::process::id()));
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
