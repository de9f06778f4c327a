//! Criterion micro-benchmarks of the route table:
//! - `lookup`: `RouteTable::lookup` at 1,000 and 1,000,000 routes: exact
//!   hit, wildcard hit, miss;
//! - `reload`: what a change costs the proxy once it has been read, one
//!   value changed, at 1,000 and 100,000 routes (Redis time not
//!   included): the full build (`RouteTable::build` from the previous
//!   table, plus `diff`); `RouteTable::update`, a whole read compared with
//!   the table; `RouteTable::apply`, the one field change itself.
//!
//! Each iteration looks up the next host of a pre-shuffled list (4,096
//! different hosts), so a large table is measured with realistic cache
//! misses rather than one hot key. Run with `cargo bench --bench lookup`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use switchyard::routes::{Lookup, RouteTable};

const WILDCARDS: usize = 100;
const PROBES: usize = 4096;

/// `h<i>.bench.test` for every route plus `*.w<j>.bench.test` wildcards.
fn table(routes: usize) -> RouteTable {
    let t = RouteTable::build(&entries(routes), &RouteTable::unloaded());
    assert!(t.invalid().is_empty());
    t
}

fn entries(routes: usize) -> Vec<(Bytes, Bytes)> {
    let mut entries: Vec<(Bytes, Bytes)> = (0..routes)
        .map(|i| {
            (
                Bytes::from(format!("h{i}.bench.test")),
                Bytes::from(format!(
                    "10.{}.{}.{}:8080",
                    (i >> 16) & 255,
                    (i >> 8) & 255,
                    i & 255
                )),
            )
        })
        .collect();
    entries.extend((0..WILDCARDS).map(|j| {
        (
            Bytes::from(format!("*.w{j}.bench.test")),
            Bytes::from_static(b"10.200.0.1:8080"),
        )
    }));
    entries
}

/// A cheap deterministic shuffle (xorshift), so runs are comparable.
fn spread(n: usize, range: usize) -> Vec<usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % range as u64) as usize
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .throughput(Throughput::Elements(1));
    for routes in [1_000usize, 1_000_000] {
        let t = table(routes);
        let exact: Vec<String> = spread(PROBES, routes)
            .into_iter()
            .map(|i| format!("h{i}.bench.test"))
            .collect();
        let wildcard: Vec<String> = spread(PROBES, WILDCARDS)
            .into_iter()
            .enumerate()
            .map(|(k, j)| format!("app{k}.w{j}.bench.test"))
            .collect();
        let miss: Vec<String> = (0..PROBES)
            .map(|k| format!("nohost{k}.example.org"))
            .collect();
        for (name, hosts, want_route) in [
            ("exact_hit", &exact, true),
            ("wildcard_hit", &wildcard, true),
            ("miss", &miss, false),
        ] {
            // Sanity: the probes do what their name says.
            assert_eq!(matches!(t.lookup(&hosts[0]), Lookup::Route(_)), want_route);
            group.bench_with_input(BenchmarkId::new(name, routes), hosts, |b, hosts| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (PROBES - 1);
                    let hit = matches!(t.lookup(black_box(&hosts[i])), Lookup::Route(_));
                    black_box(hit)
                })
            });
        }
    }
    group.finish();
}

fn bench_reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    for routes in [1_000usize, 100_000] {
        let before = entries(routes);
        let previous = RouteTable::build(&before, &RouteTable::unloaded());
        let mut after = before.clone();
        after[routes / 2].1 = Bytes::from_static(b"10.255.255.1:9999");
        group.bench_with_input(
            BenchmarkId::new("build_and_diff_one_change", routes),
            &after,
            |b, after| {
                b.iter(|| {
                    let table = RouteTable::build(after, &previous);
                    let diff = table.diff(&previous);
                    assert_eq!(diff.len(), 1);
                    black_box(table)
                })
            },
        );
        // A whole read: compare it with the table, patch the delta.
        group.bench_with_input(
            BenchmarkId::new("update_one_change", routes),
            &after,
            |b, after| {
                b.iter(|| {
                    let (table, diff) = RouteTable::update(after, &previous);
                    assert_eq!(diff.len(), 1);
                    black_box(table)
                })
            },
        );
        // A field-level change (what a change log gives): patch the delta.
        let change = [(
            after[routes / 2].0.clone(),
            Some(after[routes / 2].1.clone()),
        )];
        group.bench_with_input(
            BenchmarkId::new("apply_one_change", routes),
            &change,
            |b, change| {
                b.iter(|| {
                    let (table, diff) = previous.apply(change);
                    assert_eq!(diff.len(), 1);
                    black_box(table)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_reload);
criterion_main!(benches);
