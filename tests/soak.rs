//! Soak test (`make soak` = `cargo test --release --test soak`; issue 5
//! item 7). Runs about 90 s and stops by itself; exits non-zero when a
//! target is missed.
//!
//! 1,000 hosts over 4 backends, steady load from a few concurrent client
//! loops (loopback only, paced and bounded), while a controller rewrites 10
//! routes a second (one every 100 ms). Halfway through, Redis is killed for 10 s and started
//! again. The proxy runs in-process with the production sync settings
//! (30 s periodic resync, 1 s ping, 50 ms..5 s backoff).
//!
//! Figures and targets:
//! - unexpected errors (any non-200 or transport error): 0;
//! - answers from a backend that was not valid for that host during the
//!   request's window: 0. The window of a request is from `LAG` before it
//!   was sent until its answer arrived; a backend is valid in it if the
//!   host's value in Redis named it at some moment of the window (each
//!   rewrite is recorded just before the HSET and closed just after it
//!   returns, so the record always covers what Redis held);
//! - RSS growth from the end of warm-up to the end: under 10 %;
//! - at the end every host is served by its last written backend.

// The integration tests' support tree; the soak uses a part of it.
#[allow(dead_code, unused_imports)]
#[macro_use]
#[path = "it/support/mod.rs"]
mod support;

use fred::prelude::*;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const HOSTS: usize = 1_000;
const BACKENDS: usize = 4;
const CLIENT_LOOPS: usize = 4;
/// Pause between two requests of one loop: at most ~2,000 requests/s in all.
const PACE: Duration = Duration::from_millis(2);
/// 10 rewrites a second, one every 100 ms.
const REWRITES_PER_TICK: usize = 1;
const TICK: Duration = Duration::from_millis(100);
const WARM_UP: Duration = Duration::from_secs(10);
const RUN: Duration = Duration::from_secs(90);
/// The outage starts this long into the run and lasts `OUTAGE`.
const OUTAGE_AT: Duration = Duration::from_secs(35);
const OUTAGE: Duration = Duration::from_secs(10);
/// How long a rewrite may take to reach the proxy before an old answer
/// counts as wrong. Changes normally arrive in milliseconds.
const LAG: Duration = Duration::from_secs(2);
const MAX_RSS_GROWTH: f64 = 0.10;

fn host(i: usize) -> String {
    format!("h{i}.soak.test")
}

/// One value a host had in Redis: backend index, from `start` until `end`
/// (`None`: still current).
#[derive(Clone, Copy)]
struct Span {
    backend: usize,
    start: Instant,
    end: Option<Instant>,
}

/// Every value each host had in Redis during the run.
struct History {
    hosts: Vec<Mutex<Vec<Span>>>,
}

impl History {
    fn new(initial: &[usize], at: Instant) -> History {
        History {
            hosts: initial
                .iter()
                .map(|&backend| {
                    // Room for every rewrite of the run up front, so the
                    // history does not move the RSS figure.
                    let mut spans = Vec::with_capacity(32);
                    spans.push(Span {
                        backend,
                        start: at,
                        end: None,
                    });
                    Mutex::new(spans)
                })
                .collect(),
        }
    }

    /// Before the HSET: the new value may be live from now on.
    fn begin(&self, host: usize, backend: usize) {
        self.hosts[host].lock().unwrap().push(Span {
            backend,
            start: Instant::now(),
            end: None,
        });
    }

    /// After the HSET returned: the previous value is gone from now on.
    fn commit(&self, host: usize) {
        let mut spans = self.hosts[host].lock().unwrap();
        let n = spans.len();
        if n >= 2 && spans[n - 2].end.is_none() {
            spans[n - 2].end = Some(Instant::now());
        }
    }

    /// Was `backend` the host's value at some moment of [from, to]?
    fn valid(&self, host: usize, backend: usize, from: Instant, to: Instant) -> bool {
        self.hosts[host]
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.backend == backend && s.start <= to && s.end.is_none_or(|e| e >= from))
    }

    fn current(&self, host: usize) -> usize {
        self.hosts[host].lock().unwrap().last().unwrap().backend
    }
}

/// Latency histogram buckets of 100 µs up to 100 ms, then one overflow
/// bucket: fixed memory, so the figures do not move the RSS figure.
const LATENCY_BUCKETS: usize = 1_001;
const BUCKET_US: u64 = 100;

struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    wrong_backend: AtomicU64,
    errors_during_outage: AtomicU64,
    requests_during_outage: AtomicU64,
    rewrites: AtomicU64,
    samples: Mutex<Vec<String>>,
    latency: Vec<AtomicU64>,
    max_latency_us: AtomicU64,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            wrong_backend: AtomicU64::new(0),
            errors_during_outage: AtomicU64::new(0),
            requests_during_outage: AtomicU64::new(0),
            rewrites: AtomicU64::new(0),
            samples: Mutex::new(Vec::with_capacity(10)),
            latency: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_latency_us: AtomicU64::new(0),
        }
    }

    fn latency(&self, took: Duration) {
        let us = took.as_micros() as u64;
        let bucket = ((us / BUCKET_US) as usize).min(LATENCY_BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.max_latency_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Upper bound of the bucket holding the `p` quantile.
    fn percentile(&self, p: f64) -> Duration {
        let total: u64 = self.latency.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        let rank = (total as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.latency.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank.max(1) {
                return Duration::from_micros((i as u64 + 1) * BUCKET_US);
            }
        }
        Duration::from_micros(self.max_latency_us.load(Ordering::Relaxed))
    }

    fn sample(&self, what: String) {
        let mut s = self.samples.lock().unwrap();
        if s.len() < 10 {
            s.push(what);
        }
    }
}

/// Resident set size of this process (the proxy runs in-process), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(soak())
}

async fn controller_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.expect("controller connects");
    client
}

async fn soak() -> ExitCode {
    let mut redis = RedisServer::start();
    let mut backends = Vec::new();
    for b in 0..BACKENDS {
        backends.push(Backend::echo(&format!("b{b}")).await);
    }
    let names: Vec<String> = backends.iter().map(|b| b.name.clone()).collect();
    let targets: Arc<Vec<String>> = Arc::new(backends.iter().map(|b| b.target()).collect());
    let initial: Vec<usize> = (0..HOSTS).map(|i| i % BACKENDS).collect();
    let mut lines = String::new();
    for chunk in (0..HOSTS).collect::<Vec<_>>().chunks(100) {
        lines.push_str("HSET routes");
        for &i in chunk {
            lines.push_str(&format!(" {} {}", host(i), targets[initial[i]]));
        }
        lines.push('\n');
    }
    redis.pipe(&lines);

    // Production sync settings; no access log.
    let mut config = switchyard::config::Config::new(&redis.url()).unwrap();
    config.proxy.access_log = false;
    config.sync.replica_id = format!("soak-{}", std::process::id());
    let proxy = ProxyHandle::start(config.clone()).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
    assert_eventually!(
        proxy.get(&host(HOSTS - 1), "/").await.status == 200,
        "routes not loaded"
    );

    let started = Instant::now();
    let history = Arc::new(History::new(&initial, started));
    let counters = Arc::new(Counters::new());
    let in_outage = Arc::new(AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();

    // Client loops.
    let mut loops = Vec::new();
    for n in 0..CLIENT_LOOPS {
        let (history, counters, stop, in_outage) = (
            history.clone(),
            counters.clone(),
            stop.clone(),
            in_outage.clone(),
        );
        let names = names.clone();
        let client = HttpClient::new(proxy.addr);
        loops.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + RUN + Duration::from_secs(30);
            let max_requests = (RUN.as_millis() / PACE.as_millis()) as u64 + 1;
            let mut tick = tokio::time::interval(PACE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for k in 0..max_requests {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = tick.tick() => {}
                }
                let h = (k as usize * CLIENT_LOOPS + n * 7919) % HOSTS;
                let outage = in_outage.load(Ordering::SeqCst);
                let sent = Instant::now();
                let answer = client.try_get(&host(h), "/").await;
                let received = Instant::now();
                counters.latency(received - sent);
                counters.requests.fetch_add(1, Ordering::Relaxed);
                if outage {
                    counters
                        .requests_during_outage
                        .fetch_add(1, Ordering::Relaxed);
                }
                let error = |what: String| {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    if outage {
                        counters
                            .errors_during_outage
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    counters.sample(what);
                };
                match answer {
                    Ok(a) if a.status == 200 => {
                        let backend = a.backend().and_then(|b| names.iter().position(|n| *n == b));
                        match backend {
                            Some(b) if history.valid(h, b, sent - LAG, received) => {}
                            Some(b) => {
                                counters.wrong_backend.fetch_add(1, Ordering::Relaxed);
                                counters.sample(format!(
                                    "{}: answered by b{b}, not valid in its window",
                                    host(h)
                                ));
                            }
                            None => error(format!("{}: 200 without a backend", host(h))),
                        }
                    }
                    Ok(a) => error(format!("{}: status {}", host(h), a.status)),
                    Err(e) => error(format!("{}: {e}", host(h))),
                }
            }
        }));
    }

    // The controller: 10 rewrites every 100 ms, paused while Redis is down
    // (a write during the outage would fail, and one between SAVE and the
    // kill would be lost); it resumes once the proxy has resynced.
    let writing = Arc::new(AtomicBool::new(true));
    let controller = {
        let (history, counters, stop, writing, targets) = (
            history.clone(),
            counters.clone(),
            stop.clone(),
            writing.clone(),
            targets.clone(),
        );
        let url = redis.url();
        tokio::spawn(async move {
            let mut client = controller_client(&url).await;
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next_host = 0usize;
            let mut reconnect = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if !writing.load(Ordering::SeqCst) {
                    reconnect = true;
                    continue;
                }
                if reconnect {
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
                    client = controller_client(&url).await;
                    reconnect = false;
                }
                let mut pairs = Vec::with_capacity(REWRITES_PER_TICK);
                let mut hosts = Vec::with_capacity(REWRITES_PER_TICK);
                for _ in 0..REWRITES_PER_TICK {
                    // Spread over all hosts, in an order that is not the
                    // client loops' order.
                    let h = (next_host * 37) % HOSTS;
                    next_host += 1;
                    let now = history.current(h);
                    let to = (now + 1 + rand::random_range(0..BACKENDS - 1)) % BACKENDS;
                    history.begin(h, to);
                    pairs.push((host(h), targets[to].clone()));
                    hosts.push(h);
                }
                let _: i64 = client.hset("routes", pairs).await.expect("controller HSET");
                for h in hosts {
                    history.commit(h);
                }
                counters
                    .rewrites
                    .fetch_add(REWRITES_PER_TICK as u64, Ordering::Relaxed);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
        })
    };

    // RSS every 10 s, for the figures (fixed memory).
    let rss_series = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut series = Vec::with_capacity(16);
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            while series.len() < 15 {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => series.push(rss_kib()),
                }
            }
            series
        })
    };

    // Warm-up, then the RSS baseline.
    tokio::time::sleep_until((started + WARM_UP).into()).await;
    let rss_warm = rss_kib();

    // The outage (timed: its length is the scenario).
    tokio::time::sleep_until((started + OUTAGE_AT).into()).await;
    writing.store(false, Ordering::SeqCst);
    // Let a write in flight finish before the SAVE.
    tokio::time::sleep(TICK * 2).await;
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    in_outage.store(true, Ordering::SeqCst);
    redis.kill();
    let killed = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    redis.spawn();
    let back = Instant::now();
    in_outage.store(false, Ordering::SeqCst);
    let back_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eventually!(
        proxy.admin_get("/readyz").await.json()["last_sync_ms"]
            .as_u64()
            .is_some_and(|t| t >= back_unix_ms),
        "proxy did not resync after the outage"
    );
    let resynced_after = back.elapsed();
    let outage_len = back - killed;
    writing.store(true, Ordering::SeqCst);

    // Run to the end, then stop everything.
    tokio::time::sleep_until((started + RUN).into()).await;
    stop.cancel();
    controller.await.expect("controller panicked");
    for l in loops {
        l.await.expect("client loop panicked");
    }
    let rss_end = rss_kib();
    let elapsed = started.elapsed();
    let rss_series = rss_series.await.expect("rss sampler");

    // Every host ends on its last written backend.
    let mut stale_at_end = 0;
    let settle = Instant::now() + LAG;
    for h in 0..HOSTS {
        let want = names[history.current(h)].clone();
        loop {
            let got = proxy.get(&host(h), "/").await.backend();
            if got.as_deref() == Some(want.as_str()) {
                break;
            }
            if Instant::now() >= settle {
                stale_at_end += 1;
                counters.sample(format!("{}: {got:?} at the end, want {want}", host(h)));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let invalid = proxy.metric("switchyard_invalid_routes").await;
    let drift = proxy.metric("switchyard_drift_total").await;
    proxy.shutdown().await;

    let c = &counters;
    let requests = c.requests.load(Ordering::Relaxed);
    let errors = c.errors.load(Ordering::Relaxed);
    let wrong = c.wrong_backend.load(Ordering::Relaxed);
    let growth = (rss_end as f64 - rss_warm as f64) / rss_warm as f64;

    let checks = [
        (
            "unexpected errors",
            errors == 0,
            format!("{errors} (target 0)"),
        ),
        (
            "answers from a backend not valid in the window",
            wrong == 0,
            format!("{wrong} (target 0; window = sent - {LAG:?} .. answered)"),
        ),
        (
            "RSS growth after warm-up",
            growth < MAX_RSS_GROWTH,
            format!(
                "{:+.1} % ({} KiB -> {} KiB; target < {:.0} %)",
                growth * 100.0,
                rss_warm,
                rss_end,
                MAX_RSS_GROWTH * 100.0
            ),
        ),
        (
            "hosts not on their last backend at the end",
            stale_at_end == 0,
            format!("{stale_at_end} (target 0)"),
        ),
    ];
    println!();
    println!("SOAK FIGURES ({elapsed:.1?})");
    println!(
        "  {:<48} {}",
        "hosts / backends",
        format!("{HOSTS} / {BACKENDS}")
    );
    println!(
        "  {:<48} {} ({:.0}/s, {CLIENT_LOOPS} loops)",
        "requests",
        requests,
        requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  {:<48} p50 {:?}, p99 {:?}, max {:?}",
        "latency",
        c.percentile(0.50),
        c.percentile(0.99),
        Duration::from_micros(c.max_latency_us.load(Ordering::Relaxed))
    );
    println!(
        "  {:<48} {}",
        "route rewrites",
        c.rewrites.load(Ordering::Relaxed)
    );
    println!(
        "  {:<48} {:?}: {} requests, {} errors; proxy resynced {:?} after Redis's return",
        "Redis outage",
        outage_len,
        c.requests_during_outage.load(Ordering::Relaxed),
        c.errors_during_outage.load(Ordering::Relaxed),
        resynced_after
    );
    println!(
        "  {:<48} invalid routes {invalid}, drift found {drift}",
        "proxy metrics"
    );
    println!(
        "  {:<48} {}",
        "RSS every 10 s (KiB)",
        rss_series
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut failed = false;
    for (name, ok, detail) in &checks {
        println!(
            "  {:<48} {detail}  {}",
            name,
            if *ok { "OK" } else { "FAILED" }
        );
        failed |= !ok;
    }
    let samples = c.samples.lock().unwrap();
    if !samples.is_empty() {
        println!("  first problems:");
        for s in samples.iter() {
            println!("    {s}");
        }
    }
    drop(backends);
    if failed {
        println!("soak: FAILED");
        ExitCode::FAILURE
    } else {
        println!("soak: ok");
        ExitCode::SUCCESS
    }
}
