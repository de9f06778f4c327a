//! Faults and bad input (issue 5): Redis outages, Sentinel failover, boot
//! from a snapshot, hostile route data, AUTH/ACL/TLS to Redis. Every test
//! starts its own redis-server processes on free ports, its own backends and
//! its own proxy; every load loop targets loopback only and is bounded in
//! count and time. Each test prints its figures (`cargo test --test faults
//! -- --nocapture` shows them).

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};
use switchyard::routes::Lookup;

/// Length of the Redis outage in `redis_outage_under_load_loses_no_request`.
/// The issue asks for 10 s; `make test` uses 3 s to keep CI fast (the
/// behaviour does not depend on the length once the proxy has noticed the
/// outage and backed off to its cap). The soak (`make soak`) runs the full
/// 10 s outage.
const OUTAGE: Duration = Duration::from_secs(3);

/// A change written to a freshly failed-over master must be live within this.
const FAILOVER_CHANGE_BUDGET: Duration = Duration::from_secs(2);

/// `HSET routes host target` for every pair, one redis-cli call.
fn hset_lines(routes: &[(String, String)]) -> String {
    routes
        .iter()
        .map(|(host, target)| format!("HSET routes {host} {target}\n"))
        .collect()
}

/// Polls `cond` every 5 ms until it holds; the time it took, or panic.
async fn time_until<F, Fut>(what: &str, budget: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < budget,
            "{what}: not reached in {budget:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// 1. Redis outage under load
// ---------------------------------------------------------------------------

/// Kill Redis under load, keep it down for `OUTAGE`, start it again: no
/// request for a known route fails before, during or after, and a change
/// made once Redis is back is live quickly.
///
/// Redis comes back with its data (an explicit `SAVE` before the crash, as a
/// production Redis with RDB/AOF would). A Redis that comes back *empty*
/// is a mass removal, held by the guard (see `guard::` tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_under_load_loses_no_request() {
    let mut redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let known: Vec<(String, String)> = (0..20)
        .map(|i| {
            let name = if i % 2 == 0 { "blue" } else { "green" };
            (format!("app{i}.outage.test"), name.to_owned())
        })
        .collect();
    let routes: Vec<(String, String)> = known
        .iter()
        .map(|(h, n)| {
            let b = if n == "blue" { &blue } else { &green };
            (h.clone(), b.target())
        })
        .collect();
    redis.pipe(&hset_lines(&routes));
    // The production reconnect backoff (50 ms doubling to a 500 ms cap), not
    // the test one, so that the "change live after the return" figure is
    // what an operator would see.
    let production = switchyard::config::Config::new(&redis.url()).unwrap();
    let mut config = test_config(&redis.url());
    config.sync.tuning.backoff_min = production.sync.tuning.backoff_min;
    config.sync.tuning.backoff_max = production.sync.tuning.backoff_max;
    let proxy = ProxyHandle::start(config.clone()).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
    for (host, name) in &known {
        assert_eventually!(proxy.serves(host, name).await, "{host} not served");
    }
    // Persist what is there now; the restarted server loads it (RedisServer
    // runs with --save "" but keeps its --dir, so dump.rdb is read at boot).
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");

    let load = Load::start(proxy.addr, known.clone(), 2, Duration::from_millis(2));
    load.wait_sent(0, 50).await;

    // The outage.
    load.stats.set_phase(1);
    redis.kill();
    let killed = Instant::now();
    assert_eventually!(
        proxy.readyz().await.1["redis"] != "connected",
        "the proxy did not notice Redis going away"
    );
    let noticed = killed.elapsed();
    let (code, body) = proxy.readyz().await;
    assert_eq!(code, 200, "still ready on the last table: {body}");
    // Timed outage (documented exception to "no fixed sleeps"): the length
    // of the outage is the scenario.
    tokio::time::sleep(OUTAGE.saturating_sub(killed.elapsed())).await;
    let during = load.stats.sent(1);

    // Redis returns (same port, same data).
    redis.spawn();
    let back = Instant::now();
    load.stats.set_phase(2);
    assert!(
        redis.cli(&["HLEN", "routes"]).trim() == known.len().to_string(),
        "Redis came back without its data"
    );
    redis.hset("fresh.outage.test", &blue.target());
    time_until("change after Redis's return", patience(), || async {
        proxy.serves("fresh.outage.test", "blue").await
    })
    .await;
    let change_live = back.elapsed();
    // Within a second of Redis answering again (issue 27.5: the backoff
    // cap is 500 ms).
    let bound = Duration::from_secs(1);
    assert!(
        change_live <= bound,
        "change live {change_live:?} after the return"
    );
    assert_eventually!(
        proxy.readyz().await.1["redis"] == "connected",
        "not reconnected"
    );
    assert!(
        proxy
            .metric("switchyard_resyncs_total{reason=\"reconnect\"}")
            .await
            >= 1.0
    );
    // Some load after the return, too.
    load.wait_sent(2, 200).await;
    let stats = load.stop().await;

    println!(
        "FIGURES outage: outage {:?} (noticed after {:?}); requests for known routes: \
         before {} (failed {}), during {} (failed {}), after {} (failed {}); \
         change live {:?} after Redis's return (backoff cap {:?})",
        OUTAGE,
        noticed,
        stats.sent(0),
        stats.failed(0),
        during,
        stats.failed(1),
        stats.sent(2),
        stats.failed(2),
        change_live,
        config.sync.tuning.backoff_max,
    );
    assert!(during > 0, "no request was sent during the outage");
    assert_eq!(
        stats.total_failed(),
        0,
        "failed requests for known routes: {:?}",
        stats.samples()
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. Sentinel failover
// ---------------------------------------------------------------------------

/// `SENTINEL replicas mymaster` (flat key/value lines) has `port` as a
/// healthy replica whose link to the master is up.
fn sentinel_knows_replica(sentinel: &RedisServer, port: u16) -> bool {
    let out = sentinel.cli(&["SENTINEL", "replicas", "mymaster"]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    // One replica at most here: read the flat list as pairs.
    let get = |key: &str| {
        lines
            .chunks(2)
            .find(|kv| kv.first() == Some(&key))
            .and_then(|kv| kv.get(1).copied())
    };
    get("port") == Some(&port.to_string())
        && get("flags") == Some("slave")
        && get("master-link-status") == Some("ok")
}

fn sentinel_master_port(sentinel: &RedisServer) -> Option<u16> {
    let out = sentinel.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
    out.lines().nth(1)?.trim().parse().ok()
}

fn has_required_flags(flags: &str) -> bool {
    let all = |s: &str| s.chars().all(|c| flags.contains(c));
    flags.contains('K') && (all("ghxe") || flags.contains('A'))
}

/// A master, a replica and one Sentinel; the proxy follows the Sentinel.
/// Killing the master: the proxy reconnects to the promoted replica, turns
/// notifications on there (CONFIG SET is not replicated), resyncs, and a
/// change written to the new master is live within 2 s of the failover.
/// Requests for known routes never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed_without_failed_requests() {
    let mut master = RedisServer::start();
    let replica = RedisServer::builder().replica_of(master.port).start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let known: Vec<(String, String)> = (0..10)
        .map(|i| (format!("app{i}.sentinel.test"), "blue".to_owned()))
        .collect();
    for (host, _) in &known {
        master.hset(host, &blue.target());
    }
    // Replicated before anything else happens.
    assert_eq!(master.cli(&["WAIT", "1", "5000"]).trim(), "1");
    let sentinel = RedisServer::builder().sentinel_of(master.port).start();
    assert_eventually!(
        sentinel_knows_replica(&sentinel, replica.port),
        "the Sentinel never saw the replica:\n{}",
        sentinel.log()
    );

    let url = format!(
        "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster",
        sentinel.port
    );
    let proxy = ProxyHandle::start(test_config(&url)).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
    for (host, name) in &known {
        assert_eventually!(proxy.serves(host, name).await, "{host} not served");
    }
    assert!(has_required_flags(&master.notify_flags()));
    assert_eq!(
        replica.notify_flags(),
        "",
        "the replica's notification flags are its own (CONFIG SET is not replicated)"
    );

    let load = Load::start(proxy.addr, known.clone(), 2, Duration::from_millis(2));
    load.wait_sent(0, 50).await;

    load.stats.set_phase(1);
    master.kill();
    let killed = Instant::now();
    time_until("Sentinel failover", patience(), || async {
        sentinel_master_port(&sentinel) == Some(replica.port)
    })
    .await;
    let switch = killed.elapsed();
    let failover_at = Instant::now();
    load.stats.set_phase(2);

    // A change written to the new master as soon as the Sentinel names it.
    // (The promotion may still be finishing: retry READONLY for a moment.)
    let deadline = Instant::now() + patience();
    loop {
        let out = replica.cli(&["HSET", "routes", "moved.sentinel.test", &green.target()]);
        if out.trim().parse::<u64>().is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new master refuses writes: {out}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    time_until("change on the new master", patience(), || async {
        proxy.serves("moved.sentinel.test", "green").await
    })
    .await;
    let first_change_since_failover = failover_at.elapsed();
    assert!(
        has_required_flags(&replica.notify_flags()),
        "the proxy did not turn notifications on at the new master: {:?}",
        replica.notify_flags()
    );
    assert_eventually!(
        proxy.readyz().await.1["notifications"]["mode"] == "keyspace",
        "notifications mode after failover"
    );
    // A second change proves the notification path at the new master (the
    // periodic resync is an hour away in the test config).
    replica.hset("second.sentinel.test", &green.target());
    let second_change = time_until("second change on the new master", patience(), || async {
        proxy.serves("second.sentinel.test", "green").await
    })
    .await;
    load.wait_sent(2, 100).await;
    let stats = load.stop().await;

    println!(
        "FIGURES sentinel: failover took {:?} after the master was killed; change written to the \
         new master live {:?} after the failover (budget {:?}); next change live in {:?}; \
         requests for known routes: before {} (failed {}), during failover {} (failed {}), \
         after {} (failed {})",
        switch,
        first_change_since_failover,
        FAILOVER_CHANGE_BUDGET,
        second_change,
        stats.sent(0),
        stats.failed(0),
        stats.sent(1),
        stats.failed(1),
        stats.sent(2),
        stats.failed(2),
    );
    assert!(
        first_change_since_failover <= FAILOVER_CHANGE_BUDGET,
        "change live {first_change_since_failover:?} after the failover"
    );
    assert_eq!(
        stats.total_failed(),
        0,
        "failed requests for known routes: {:?}",
        stats.samples()
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. Boot during an outage with a snapshot
// ---------------------------------------------------------------------------

fn snapshot_has(path: &Path, host: &str, value: &str) -> bool {
    match switchyard::snapshot::read(path).map(|s| s.and_then(|s| s.route_table("routes"))) {
        Ok(Some(table)) => {
            matches!(table.lookup(host), Lookup::Route(route) if route.value() == value)
        }
        _ => false,
    }
}

/// A proxy that booted while Redis was down serves the snapshot the
/// previous run wrote, says so in /readyz, and switches to live data when
/// Redis comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_during_outage_serves_the_snapshot_then_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("routes.json");
    let mut redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    redis.hset("a.snap.test", &blue.target());
    redis.hset("b.snap.test", &blue.target());

    // First run: Redis up; the table is written to the snapshot.
    let mut config = test_config(&redis.url());
    config.sync.snapshot_file = Some(snapshot.clone());
    let proxy = ProxyHandle::start(config.clone()).await;
    assert_eventually!(proxy.ready().await, "first proxy never became ready");
    assert_eventually!(
        snapshot_has(&snapshot, "a.snap.test", &blue.target())
            && snapshot_has(&snapshot, "b.snap.test", &blue.target()),
        "snapshot not written"
    );
    proxy.shutdown().await;

    // Meanwhile the routes change in Redis (persisted), then Redis dies.
    redis.hset("a.snap.test", &green.target());
    redis.hset("c.snap.test", &green.target());
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    redis.kill();

    // Second run: Redis down; the snapshot serves.
    let booted = Instant::now();
    let proxy = ProxyHandle::start(config).await;
    assert_eventually!(proxy.ready().await, "not ready from the snapshot");
    let ready_from_snapshot = booted.elapsed();
    let (code, body) = proxy.readyz().await;
    assert_eq!(code, 200);
    assert_eq!(body["source"], "snapshot", "{body}");
    assert_ne!(body["redis"], "connected", "{body}");
    assert!(body["snapshot_error"].is_null(), "{body}");
    assert!(proxy.serves("a.snap.test", "blue").await);
    assert!(proxy.serves("b.snap.test", "blue").await);
    assert_eq!(proxy.get("c.snap.test", "/").await.status, 404);

    // Redis comes back with the changed routes: live data replaces it.
    redis.spawn();
    let back = Instant::now();
    let switched = time_until("switch to live data", patience(), || async {
        proxy.readyz().await.1["source"] == "redis"
    })
    .await;
    assert!(proxy.serves("a.snap.test", "green").await);
    assert!(proxy.serves("b.snap.test", "blue").await);
    assert!(proxy.serves("c.snap.test", "green").await);
    // And the snapshot follows the live table.
    assert_eventually!(
        snapshot_has(&snapshot, "c.snap.test", &green.target()),
        "snapshot not rewritten from live data"
    );
    println!(
        "FIGURES snapshot: ready from the snapshot {:?} after boot with Redis down; \
         live data {:?} after Redis's return (total {:?})",
        ready_from_snapshot,
        switched,
        back.elapsed()
    );
    proxy.shutdown().await;
}

/// A corrupt snapshot is reported in /readyz and ignored: not ready (503)
/// until Redis comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_snapshot_is_reported_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("routes.json");
    std::fs::write(&snapshot, b"\x00\xffgarbage{{{ not a snapshot \xfe").unwrap();
    let mut redis = RedisServer::reserved();
    let blue = Backend::echo("blue").await;
    let mut config = test_config(&redis.url());
    config.sync.snapshot_file = Some(snapshot.clone());
    let proxy = ProxyHandle::start(config).await;

    assert_eventually!(
        proxy.readyz().await.1["snapshot_error"].is_string(),
        "corrupt snapshot not reported"
    );
    let (code, body) = proxy.readyz().await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["source"], "none", "{body}");
    assert!(
        body["snapshot_error"]
            .as_str()
            .unwrap()
            .contains("corrupt snapshot"),
        "{body}"
    );
    let reported = body["snapshot_error"].clone();
    let r = proxy.get("a.snap.test", "/").await;
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"));

    redis.spawn();
    redis.hset("a.snap.test", &blue.target());
    assert_eventually!(
        proxy.serves("a.snap.test", "blue").await,
        "not served once Redis came"
    );
    // Ready once every followed hash is loaded: the certs hash may be read
    // just after the routes that already serve.
    proxy.wait_ready().await;
    let (code, body) = proxy.readyz().await;
    assert_eq!((code, &body["source"]), (200, &serde_json::json!("redis")));
    // The corrupt file was replaced by a good one.
    assert_eventually!(
        snapshot_has(&snapshot, "a.snap.test", &blue.target()),
        "snapshot not rewritten"
    );
    println!("FIGURES corrupt snapshot: reported as {reported}");
    proxy.shutdown().await;
}

/// Without a snapshot, requests before the first load get 503 with
/// Retry-After, and /readyz is 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_snapshot_and_no_redis_answers_503_with_retry_after() {
    let mut redis = RedisServer::reserved();
    let blue = Backend::echo("blue").await;
    let proxy = ProxyHandle::start(test_config(&redis.url())).await;
    let r = proxy.get("a.none.test", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (code, body) = proxy.readyz().await;
    assert_eq!(code, 503, "{body}");
    assert!(body["snapshot_error"].is_null(), "{body}");
    redis.spawn();
    redis.hset("a.none.test", &blue.target());
    assert_eventually!(
        proxy.serves("a.none.test", "blue").await,
        "after Redis came"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Bad route data at scale
// ---------------------------------------------------------------------------

/// Non-UTF-8 fields and values, an empty value, a 1 MiB value and 100,000
/// invalid entries beside a few valid ones: the proxy stays up, serves the
/// valid hosts, lists the invalid ones, and the metric agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_route_data_at_scale_is_reported_and_the_rest_served() {
    const INVALID_BULK: usize = 100_000;
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let started = Instant::now();

    // 100,000 invalid entries, 1,000 per HSET.
    let mut bulk = String::with_capacity(INVALID_BULK * 40);
    for chunk in 0..INVALID_BULK / 1000 {
        bulk.push_str("HSET routes");
        for i in chunk * 1000..(chunk + 1) * 1000 {
            bulk.push_str(&format!(" bad{i}.bulk.test no-port-{i}"));
        }
        bulk.push('\n');
    }
    // Non-UTF-8 field and value (redis-cli unescapes "\xNN" in quotes), an
    // empty value, and the valid routes.
    bulk.push_str("HSET routes \"\\xff\\xfe.nonutf8.test\" \"127.0.0.1:1\"\n");
    bulk.push_str("HSET routes \"value.nonutf8.test\" \"\\xc3\\x28:80\"\n");
    bulk.push_str("HSET routes \"empty.bad.test\" \"\"\n");
    let valid: Vec<(String, &str)> = (0..5)
        .map(|i| {
            let name = if i % 2 == 0 { "blue" } else { "green" };
            (format!("good{i}.bulk.test"), name)
        })
        .collect();
    for (host, name) in &valid {
        let b = if *name == "blue" { &blue } else { &green };
        bulk.push_str(&format!("HSET routes {host} {}\n", b.target()));
    }
    redis.pipe(&bulk);
    // A 1 MiB value (read from stdin: no command line that long).
    let huge = vec![b'9'; 1024 * 1024];
    redis.cli_stdin(&["HSET", "routes", "huge.bad.test"], &huge);
    let expected_invalid = INVALID_BULK + 4;
    assert_eq!(
        redis.cli(&["HLEN", "routes"]).trim(),
        (expected_invalid + valid.len()).to_string()
    );
    let written = started.elapsed();

    let boot = Instant::now();
    let proxy = ProxyHandle::start(test_config(&redis.url())).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
    let loaded = boot.elapsed();
    for (host, name) in &valid {
        assert!(proxy.serves(host, name).await, "{host} not served");
    }
    for host in ["empty.bad.test", "huge.bad.test", "value.nonutf8.test"] {
        assert_eq!(proxy.get(host, "/").await.status, 502, "{host}");
    }
    assert_eq!(proxy.get("bad7.bulk.test", "/").await.status, 502);
    assert_eq!(
        proxy.metric("switchyard_invalid_routes").await as usize,
        expected_invalid
    );
    let routes = proxy.routes().await;
    let invalid = routes["invalid"].as_array().expect("invalid list");
    assert_eq!(invalid.len(), expected_invalid);
    let reason_of = |field: &str| {
        invalid
            .iter()
            .find(|e| e["field"] == field)
            .map(|e| e["reason"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(
        reason_of("huge.bad.test").as_deref(),
        Some("value is longer than 8192 bytes")
    );
    assert_eq!(reason_of("empty.bad.test").as_deref(), Some("empty value"));
    assert_eq!(
        reason_of("value.nonutf8.test").as_deref(),
        Some("value is not UTF-8")
    );
    assert_eq!(
        reason_of("\u{fffd}\u{fffd}.nonutf8.test").as_deref(),
        Some("field is not UTF-8")
    );
    assert!(reason_of("bad99999.bulk.test").unwrap().contains("no port"));
    let huge_shown = invalid
        .iter()
        .find(|e| e["field"] == "huge.bad.test")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .len();
    assert!(
        huge_shown < 1024,
        "a 1 MiB value is shown truncated, not whole"
    );

    // Changes still follow with a hash this size (reloads now use HSCAN).
    let change = Instant::now();
    redis.hset("good0.bulk.test", &green.target());
    assert_eventually!(proxy.serves("good0.bulk.test", "green").await, "change");
    let change_live = change.elapsed();
    assert!(proxy.ready().await);
    println!(
        "FIGURES bad data: {} invalid entries (+{} valid) written in {:?}; proxy ready in {:?}; \
         invalid reported {} (metric {}); a change live in {:?} with the big hash",
        expected_invalid,
        valid.len(),
        written,
        loaded,
        invalid.len(),
        proxy.metric("switchyard_invalid_routes").await,
        change_live,
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. Security: AUTH, ACL user, TLS
// ---------------------------------------------------------------------------

/// Routes served and a change followed by notification.
async fn works_end_to_end(proxy: &ProxyHandle, redis: &RedisServer, tag: &str) {
    follows_changes(proxy, redis, tag, true).await
}

/// Routes served, plain and logged changes followed by notification; the
/// logged one patched from the log when `by_log`.
async fn follows_changes(proxy: &ProxyHandle, redis: &RedisServer, tag: &str, by_log: bool) {
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let host = format!("app.{tag}.test");
    redis.hset(&host, &blue.target());
    assert_eventually!(proxy.ready().await, "{tag}: never ready");
    assert_eventually!(proxy.serves(&host, "blue").await, "{tag}: not served");
    redis.hset(&host, &green.target());
    assert_eventually!(proxy.serves(&host, "green").await, "{tag}: change");
    // A logged change (README.md, "Changing routes"): patched from the log.
    let logged = proxy
        .metric("switchyard_reload_builds_total{how=\"log\"}")
        .await;
    redis.pipe(&format!(
        "MULTI\nHSET routes {host} {blue}\nXADD routes:log MAXLEN ~ 10000 * op set field {host} value {blue}\nEXEC\n",
        blue = blue.target()
    ));
    assert_eventually!(proxy.serves(&host, "blue").await, "{tag}: logged change");
    let by_log_now = proxy
        .metric("switchyard_reload_builds_total{how=\"log\"}")
        .await
        > logged;
    assert_eq!(by_log_now, by_log, "{tag}: read from the log?");
    let (_, body) = proxy.readyz().await;
    assert_eq!(body["redis"], "connected", "{tag}: {body}");
    assert_eq!(body["notifications"]["mode"], "keyspace", "{tag}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_auth_works() {
    let redis = RedisServer::builder().password("secret").start();
    let proxy = ProxyHandle::start(test_config(&format!(
        "redis://:secret@127.0.0.1:{}/0",
        redis.port
    )))
    .await;
    works_end_to_end(&proxy, &redis, "auth").await;
    proxy.shutdown().await;

    // A wrong password: never ready, and the reason is reported.
    let proxy = ProxyHandle::start(test_config(&format!(
        "redis://:wrong@127.0.0.1:{}/0",
        redis.port
    )))
    .await;
    assert_eventually!(
        proxy.readyz().await.1["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("WRONGPASS") || e.contains("invalid")),
        "auth failure not reported: {}",
        proxy.readyz().await.1
    );
    assert!(!proxy.ready().await);
    proxy.shutdown().await;
}

/// The smallest ACL the proxy needs (the README lists it). Keys: the routes
/// hash and the certs hash, each with its change log and its
/// removal-confirmation key (read only, by the commands below), and the
/// replica registry; channels: the keyspace channels of those six and the
/// registry's; commands: SELECT (the `/0`
/// of the URL), CONFIG GET/SET (notification setup and its periodic
/// recheck), SUBSCRIBE + PING (the subscription barrier and the
/// heartbeat), MULTI TIME HGETALL XREVRANGE EXEC (the atomic read with the
/// log position), DUMP (the same read of a large hash, cheaper to decode),
/// XRANGE (the log), HLEN (size check before a first read), TIME + HSCAN
/// (the read of a huge hash), EXISTS (the ping tick's check, the
/// confirmation key), HSET + PUBLISH + HDEL (the replica registry and its
/// channel).
const PROXY_ACL_STRICT: &str = "on >proxy-pw resetkeys ~routes ~routes:log ~routes:accept-removal \
     ~routes:replicas ~routes:certs ~routes:certs:log ~routes:certs:accept-removal \
     resetchannels &__keyspace@0__:routes &__keyspace@0__:routes:log \
     &__keyspace@0__:routes:accept-removal &routes:replicas &__keyspace@0__:routes:certs \
     &__keyspace@0__:routes:certs:log &__keyspace@0__:routes:certs:accept-removal -@all +select +ping +subscribe \
     +config|get +config|set +multi +exec +time +hgetall +dump +hlen +hscan +xrange +xrevrange \
     +exists +hset +hdel +publish";

/// What fred's connection setup also sends (CLIENT ID, INFO server): it
/// works without them, but every connect then leaves two ACL LOG entries and
/// a fred warning. The recommended line is the strict one plus these.
const PROXY_ACL_SETUP_EXTRAS: &str = "+client|id +info";

/// `ACL LOG` denials as (reason, object) pairs.
fn acl_denials(redis: &RedisServer) -> Vec<(String, String)> {
    let out = redis.cli(&["ACL", "LOG"]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let after = |i: usize| lines.get(i + 1).copied().unwrap_or("").to_owned();
    let mut denials = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if *line == "reason" {
            let object = lines[i..]
                .iter()
                .position(|l| *l == "object")
                .map(|j| after(i + j))
                .unwrap_or_default();
            denials.push((after(i), object));
        }
    }
    denials
}

/// The proxy runs as a user with only the ACL above: boot load, changes by
/// notification, reloads by HSCAN, periodic resyncs with the CONFIG
/// recheck, the status key; and Redis denied it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_acl_user_works() {
    let recommended = format!("{PROXY_ACL_STRICT} {PROXY_ACL_SETUP_EXTRAS}");
    let redis = RedisServer::builder()
        .acl_user("switchyard", &recommended)
        .acl_user("strict", PROXY_ACL_STRICT)
        .acl_user("nodump", &format!("{recommended} -dump"))
        .acl_user("nolog", &format!("{recommended} -xrange -xrevrange"))
        .start();
    assert_eq!(redis.cli(&["ACL", "LOG", "RESET"]).trim(), "OK");

    let url = |user: &str| format!("redis://{user}:proxy-pw@127.0.0.1:{}/0", redis.port);
    let mut config = test_config(&url("switchyard"));
    // Exercise every path: periodic resyncs (CONFIG recheck) and HSCAN reads.
    config.sync.resync_interval = Duration::from_millis(200);
    config.sync.tuning.scan_threshold = 0;
    let proxy = ProxyHandle::start(config).await;
    works_end_to_end(&proxy, &redis, "acl").await;
    assert_eventually!(
        proxy
            .metric("switchyard_resyncs_total{reason=\"periodic\"}")
            .await
            >= 2.0,
        "no periodic resync"
    );
    assert_eventually!(
        redis.cli(&["HLEN", "routes:replicas"]).trim() != "0",
        "not in the replica registry"
    );
    assert!(redis.calls("hscan") > 0, "the HSCAN path was not exercised");
    proxy.shutdown().await;
    let denied = acl_denials(&redis);
    assert!(
        denied.is_empty(),
        "denied with the recommended ACL: {denied:?}"
    );

    // The strict line works too; Redis refuses only fred's setup extras.
    // The strict user reads with DUMP (any size above 0).
    let mut config = test_config(&url("strict"));
    config.sync.tuning.dump_threshold = 0;
    let proxy = ProxyHandle::start(config).await;
    works_end_to_end(&proxy, &redis, "strict").await;
    proxy.shutdown().await;
    assert!(redis.calls("dump") > 0, "the DUMP path was not exercised");
    let denied = acl_denials(&redis);
    assert!(
        denied
            .iter()
            .all(|(_, object)| object == "info" || object.starts_with("client")),
        "denied with the strict ACL: {denied:?}"
    );

    // Without the log's commands: one warning, and every change is read
    // whole (as a plain write would be); nothing else breaks.
    let proxy = ProxyHandle::start(test_config(&url("nolog"))).await;
    follows_changes(&proxy, &redis, "nolog", false).await;
    let (_, body) = proxy.readyz().await;
    assert!(
        body["hashes"][0]["change_log"]
            .as_str()
            .is_some_and(|s| s.starts_with("off")),
        "{body}"
    );
    proxy.shutdown().await;

    // Without +dump: the refusal is noticed and reads go through HGETALL.
    let mut config = test_config(&url("nodump"));
    config.sync.tuning.dump_threshold = 0;
    let proxy = ProxyHandle::start(config).await;
    let before = redis.calls("hgetall");
    works_end_to_end(&proxy, &redis, "nodump").await;
    assert!(
        redis.calls("hgetall") > before,
        "no HGETALL after the DUMP refusal"
    );
    proxy.shutdown().await;

    println!("FIGURES acl (recommended): ACL SETUSER switchyard {recommended}");
    println!("FIGURES acl (strict minimum): ACL SETUSER switchyard {PROXY_ACL_STRICT}");
    println!("FIGURES acl: strict-user denials (harmless): {denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_tls_works() {
    use fred::prelude::{TlsConfig, TlsConnector};
    use fred::rustls::pki_types::pem::PemObject;
    use fred::rustls::pki_types::CertificateDer;
    use fred::types::config::TlsHostMapping;

    let redis = RedisServer::builder().tls().start();
    let (tls_port, ca) = (redis.tls_port(), redis.tls_ca());
    let mut config = test_config(&format!("rediss://127.0.0.1:{tls_port}/0"));
    // rediss:// trusts the system roots; trust the test CA instead.
    let mut roots = fred::rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(fred::rustls::crypto::ring::default_provider());
    let client = fred::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.sync.redis.tls = Some(TlsConfig {
        connector: TlsConnector::from(client),
        hostnames: TlsHostMapping::None,
    });
    let proxy = ProxyHandle::start(config).await;
    works_end_to_end(&proxy, &redis, "tls").await;
    proxy.shutdown().await;

    // The operator's way: the binary with `--redis-url rediss://...` trusts
    // the system roots (rustls-native-certs), which honour SSL_CERT_FILE.
    let binary = ProxyProcess::start(|cmd| {
        cmd.args(["--redis-url", &format!("rediss://127.0.0.1:{tls_port}/0")])
            .args(["--access-log", "false"])
            .env("SSL_CERT_FILE", ca);
    });
    assert_eventually!(
        binary.readyz().await.1["source"] == "redis",
        "binary over rediss:// with SSL_CERT_FILE: {:?}",
        binary.readyz().await
    );
    let blue = Backend::echo("blue").await;
    redis.hset("bin.tls.test", &blue.target());
    assert_eventually!(
        binary.serves("bin.tls.test", "blue").await,
        "the binary does not follow changes over TLS"
    );
    println!(
        "FIGURES tls: rediss://127.0.0.1:{tls_port}/0 with a private CA: served and followed \
         (in-process TlsConfig, and the binary with SSL_CERT_FILE)"
    );
}
