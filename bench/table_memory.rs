//! The memory a route table takes: builds a table of N routes (default
//! 100,000) the way `make bench` fills the hash (`h<i>.bench.test`, four
//! backends) and with one distinct backend per route, and prints the
//! process's resident memory before and after each build.
//!
//! `cargo run --release --example table_memory [N]`

use bytes::Bytes;
use switchyard::routes::RouteTable;

/// This process's resident set, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn measure(what: &str, entries: Vec<(Bytes, Bytes)>) -> RouteTable {
    let n = entries.len();
    let before = rss_kib();
    let table = RouteTable::build(&entries, &RouteTable::unloaded());
    let after = rss_kib();
    // The entries are the read, not the table: freed before the next one.
    drop(entries);
    println!(
        "{what}: {n} routes, RSS +{:.1} MiB ({:.0} bytes per route)",
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / n as f64
    );
    table
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let shared = [
        "127.0.0.1:41001",
        "127.0.0.1:41002",
        "127.0.0.1:41003",
        "127.0.0.1:41004",
    ];
    let bench_like = (0..n)
        .map(|i| {
            (
                Bytes::from(format!("h{i}.bench.test")),
                Bytes::from_static(shared[i % shared.len()].as_bytes()),
            )
        })
        .collect();
    let a = measure("four backends", bench_like);
    let distinct = (0..n)
        .map(|i| {
            (
                Bytes::from(format!("app{i}.cloud.example")),
                Bytes::from(format!(
                    "10.{}.{}.{}:3000",
                    (i >> 16) & 255,
                    (i >> 8) & 255,
                    i & 255
                )),
            )
        })
        .collect();
    let b = measure("a backend per route", distinct);
    assert_eq!((a.len(), b.len()), (n, n));
}
