//! The replica registry and `--wait` (README "Replicas and `--wait`"):
//! replicas register in one hash and announce on its channel; `status`
//! reads only that hash; `--wait` is told by announcements, stops waiting
//! for replicas that leave or die, says when there is nothing to wait for,
//! and fails distinctly when no replica is live. Replicas here are real
//! proxies (in-process, or the binary when a signal matters); "ghost"
//! entries written by hand stand for a replica that lags or holds.

use crate::cli::{assert_contains, assert_exit, stderr, stdout, switchyard_async};
use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const REGISTRY: &str = "routes:replicas";

fn redis_time_us(redis: &RedisServer) -> u64 {
    let out = redis.cli(&["TIME"]);
    let mut parts = out.split_whitespace().map(|p| p.parse::<u64>().unwrap());
    parts.next().unwrap() * 1_000_000 + parts.next().unwrap()
}

/// A registry entry for a replica that does not exist: live for ten
/// minutes, with the given watermark (a replica that lags behind it).
fn ghost(redis: &RedisServer, id: &str, watermark: u64, held: Option<(usize, usize)>) -> Value {
    let mut entry = json!({
        "id": id, "table_version": 1, "watermark": watermark, "routes": 3, "invalid": 0,
        "last_sync_ms": null, "notifications": "keyspace", "redis": "connected", "source": "redis",
        "expires_us": redis_time_us(redis) + 600_000_000,
    });
    if let Some((current, next)) = held {
        entry["held"] = json!({ "current": current, "next": next });
    }
    redis.cli(&["HSET", REGISTRY, id, &entry.to_string()]);
    entry
}

fn in_registry(redis: &RedisServer, id: &str) -> bool {
    redis.cli(&["HEXISTS", REGISTRY, id]).trim() == "1"
}

async fn start_replicas(redis: &RedisServer, ids: &[&str]) -> Vec<ProxyHandle> {
    let mut replicas = Vec::new();
    for id in ids {
        let mut config = test_config(&redis.url());
        config.sync.replica_id = (*id).into();
        replicas.push(ProxyHandle::start(config).await);
    }
    for id in ids {
        assert_eventually!(in_registry(redis, id), "{id} never registered");
    }
    replicas
}

/// `switchyard ARGS --redis-url URL`, off the runtime.
async fn run(redis: &RedisServer, args: &[&str]) -> std::process::Output {
    let url = redis.url();
    let mut all = args.to_vec();
    all.extend(["--redis-url", &url]);
    switchyard_async(&all).await
}

/// Waits until a `--wait` in progress has subscribed to the registry's channel.
async fn until_subscribed(redis: &RedisServer, subscribers: u32) {
    assert_eventually!(
        redis
            .cli(&["PUBSUB", "NUMSUB", REGISTRY])
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse::<u32>().ok())
            >= Some(subscribers),
        "the wait never subscribed"
    );
}

/// `route set HOST VALUE --wait --timeout 60s` in a task of its own,
/// returned once it waits (subscribed to the registry's channel), so that
/// the test can change the registry under it.
async fn set_and_wait_subscribed(
    redis: &RedisServer,
    host: &str,
    value: &str,
) -> tokio::task::JoinHandle<std::process::Output> {
    let url = redis.url();
    let args = [
        "route",
        "set",
        host,
        value,
        "--wait",
        "--timeout",
        "60s",
        "--redis-url",
        &url,
    ]
    .map(str::to_owned);
    let waiting = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        switchyard_async(&args).await
    });
    until_subscribed(redis, 1).await;
    waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_once_every_replica_serves_the_change() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    redis.hset("app.cloud.com", &blue.target());
    let replicas = start_replicas(&redis, &["r1", "r2", "r3"]).await;
    let status = stdout(&run(&redis, &["status"]).await);
    for id in ["r1", "r2", "r3"] {
        assert!(status.contains(id), "{status}");
    }
    assert!(status.contains("3 live replica(s)"), "{status}");

    let mut took = Vec::new();
    for (i, target) in [&green, &blue].iter().cycle().take(10).enumerate() {
        let value = target.target();
        let started = Instant::now();
        // `--wait` before the host: it never takes a positional as its value.
        let out = run(
            &redis,
            &[
                "route",
                "set",
                "--wait",
                "app.cloud.com",
                &value,
                "--timeout",
                "5s",
            ],
        )
        .await;
        took.push(started.elapsed());
        assert!(out.status.success(), "run {i}: {}", stderr(&out));
        assert_contains(&stdout(&out), "live on 3 replica(s)");
        // The whole promise of --wait: no polling needed afterwards.
        for r in &replicas {
            assert_eq!(
                r.get("app.cloud.com", "/").await.backend().as_deref(),
                Some(target.name.as_str())
            );
        }
    }
    took.sort();
    println!(
        "route set --wait with 3 replicas (process start included): p50 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_is_told_by_announcements_not_only_by_polling() {
    let redis = RedisServer::start();
    let entry = ghost(&redis, "ghost", 1, None);
    let waiting = set_and_wait_subscribed(&redis, "a.cloud.com", "10.0.0.1:80").await;
    // Announce a watermark past any write, on the channel only: the
    // registry keeps the old one, so only the announcement can end the wait.
    let mut announced = entry.clone();
    announced["watermark"] = json!(redis_time_us(&redis) + 60_000_000);
    announced["event"] = json!("status");
    redis.cli(&["PUBLISH", REGISTRY, &announced.to_string()]);
    let out = waiting.await.unwrap();
    assert_exit(&out, 0);
    assert_contains(&stdout(&out), "live on 1 replica(s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_missing_route_with_wait_is_a_no_op_at_once() {
    let redis = RedisServer::start();
    let _replica = start_replicas(&redis, &["r1"]).await;
    let started = Instant::now();
    let out = run(
        &redis,
        &[
            "route",
            "del",
            "never-existed.cloud.com",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "no route for never-existed.cloud.com: nothing deleted (no change to wait for)\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for a change that never comes: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_set_says_so_and_its_wait_completes() {
    let redis = RedisServer::start();
    redis.hset("app.cloud.com", "10.0.0.1:80");
    let _replicas = start_replicas(&redis, &["r1", "r2"]).await;
    let out = run(
        &redis,
        &["route", "set", "app.cloud.com", "10.0.0.1:80", "--wait"],
    )
    .await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with("app.cloud.com -> 10.0.0.1:80 (unchanged)\n"),
        "{text}"
    );
    assert!(text.contains("live on 2 replica(s)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_with_no_live_replica_fails_with_68_unless_allowed() {
    let redis = RedisServer::start();
    let out = run(
        &redis,
        &["route", "set", "a.cloud.com", "10.0.0.1:80", "--wait"],
    )
    .await;
    assert_exit(&out, 68);
    assert_contains(&stderr(&out), "no replica is live");
    assert_contains(&stderr(&out), "--allow-no-replicas");
    assert!(
        stdout(&out).contains("a.cloud.com -> 10.0.0.1:80"),
        "the write is reported"
    );
    assert_eq!(
        redis.cli(&["HGET", "routes", "a.cloud.com"]).trim(),
        "10.0.0.1:80"
    );

    // An entry whose deadline passed is not a live replica either.
    let mut dead = ghost(&redis, "dead", 1, None);
    dead["expires_us"] = json!(redis_time_us(&redis) - 1);
    redis.cli(&["HSET", REGISTRY, "dead", &dead.to_string()]);
    let out = run(&redis, &["route", "del", "a.cloud.com", "--wait"]).await;
    assert_exit(&out, 68);

    let out = run(
        &redis,
        &[
            "route",
            "set",
            "a.cloud.com",
            "10.0.0.2:80",
            "--wait",
            "--allow-no-replicas",
        ],
    )
    .await;
    assert_exit(&out, 0);
    assert_contains(&stdout(&out), "no live replica: nothing to wait for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_named_and_the_wait_costs_redis_a_few_reads() {
    let redis = RedisServer::start();
    ghost(&redis, "ghost", 1, None);
    let mut polling = ghost(&redis, "poller", 1, None);
    polling["notifications"] = json!("polling");
    redis.cli(&["HSET", REGISTRY, "poller", &polling.to_string()]);
    let before = redis.command_calls();
    let started = Instant::now();
    let out = run(
        &redis,
        &["route", "set", "a.cloud.com", "10.0.0.1:80", "--wait=2s"],
    )
    .await;
    let waited = started.elapsed();
    let after = redis.command_calls();
    assert_exit(&out, 75);
    let text = stderr(&out);
    assert!(
        text.contains("2 of 2 live replica(s) had not caught up after 2s"),
        "{text}"
    );
    assert!(text.contains("ghost"), "{text}");
    assert!(text.contains("poller (no notifications"), "{text}");
    // Told, not polling: a registry read every 250 ms at most (the old
    // wait scanned the database every 2 ms).
    let reads = after.get("hgetall").unwrap_or(&0) - before.get("hgetall").unwrap_or(&0);
    let bound = (waited.as_millis() / 250) as u64 + 2;
    assert!(
        reads <= bound,
        "{reads} registry reads in {waited:?} (bound {bound})"
    );
    assert_eq!(after.get("scan"), None, "the database was scanned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_gracefully_leaves_status_and_wait_at_once() {
    let redis = RedisServer::start();
    redis.hset("app.cloud.com", "10.0.0.1:80");
    let mut replicas = start_replicas(&redis, &["stays", "goes"]).await;
    let mut process = ProxyProcess::start(|cmd| {
        cmd.args(["--redis-url", &redis.url(), "--replica-id", "process"]);
    });
    process.wait_ready().await;
    assert_eventually!(
        in_registry(&redis, "process"),
        "the process never registered"
    );

    // SIGTERM: gone from the registry by the time the process has exited.
    process.signal("TERM");
    assert_eq!(process.wait_exit().code(), Some(0));
    assert!(
        !in_registry(&redis, "process"),
        "a stopped replica stayed registered"
    );
    // In-process: gone once `run` has returned.
    replicas.pop().unwrap().shutdown().await;
    assert!(
        !in_registry(&redis, "goes"),
        "a stopped replica stayed registered"
    );
    let status = stdout(&run(&redis, &["status"]).await);
    assert!(status.contains("1 live replica(s)"), "{status}");
    assert!(
        !status.contains("goes") && !status.contains("process"),
        "{status}"
    );
    let out = run(
        &redis,
        &["route", "set", "app.cloud.com", "10.0.0.2:80", "--wait=5s"],
    )
    .await;
    assert_exit(&out, 0);
    assert_contains(&stdout(&out), "live on 1 replica(s)");

    // A replica leaving while a wait waits for it is no longer waited for.
    ghost(&redis, "ghost", 1, None);
    let waiting = set_and_wait_subscribed(&redis, "app.cloud.com", "10.0.0.3:80").await;
    redis.cli(&["HDEL", REGISTRY, "ghost"]);
    redis.cli(&["PUBLISH", REGISTRY, r#"{"event":"left","id":"ghost"}"#]);
    let out = waiting.await.unwrap();
    assert_exit(&out, 0);
    assert_contains(&stdout(&out), "not waited for: ghost (left)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_died_stops_counting_within_seconds() {
    let redis = RedisServer::start();
    redis.hset("app.cloud.com", "10.0.0.1:80");
    let _stays = start_replicas(&redis, &["stays"]).await;
    let mut process = ProxyProcess::start(|cmd| {
        cmd.args(["--redis-url", &redis.url(), "--replica-id", "dies"]);
    });
    process.wait_ready().await;
    assert_eventually!(in_registry(&redis, "dies"), "never registered");
    process.signal("KILL");
    process.wait_exit();
    // Its entry stays until its deadline (3 s); a wait started now ends
    // once the deadline has passed, not at its own timeout.
    let started = Instant::now();
    let out = run(
        &redis,
        &[
            "route",
            "set",
            "app.cloud.com",
            "10.0.0.2:80",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_exit(&out, 0);
    assert_contains(&stdout(&out), "not waited for: dies (stopped reporting)");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let status = stdout(&run(&redis, &["status"]).await);
    assert!(status.contains("1 live replica(s)"), "{status}");
    assert!(
        status.contains("stopped reporting (not counted): dies"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_entries_carry_a_deadline_in_redis_time() {
    let redis = RedisServer::start();
    let _replica = start_replicas(&redis, &["r1"]).await;
    let entry: Value = serde_json::from_str(redis.cli(&["HGET", REGISTRY, "r1"]).trim()).unwrap();
    let now = redis_time_us(&redis);
    let expires = entry["expires_us"].as_u64().unwrap();
    assert!(
        expires > now + 1_000_000 && expires <= now + 3_100_000,
        "deadline {expires} vs Redis time {now}: {entry}"
    );
    assert_eq!(entry["id"], "r1");
    assert!(entry["watermark"].as_u64().unwrap() <= now);
    let json: Value =
        serde_json::from_str(&stdout(&run(&redis, &["status", "--json"]).await)).unwrap();
    assert_eq!(json["live"][0]["id"], "r1", "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_costs_the_same_with_500000_unrelated_keys() {
    let redis = RedisServer::builder()
        .args(["--enable-debug-command", "yes"])
        .start();
    let _replicas = start_replicas(&redis, &["r1", "r2"]).await;
    // Redis's own time for one `status` (microseconds in INFO commandstats).
    let redis_usec = |redis: &RedisServer| -> u64 {
        redis
            .cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                l.split("usec=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let mut cost = Vec::new();
    for populate in [false, true] {
        if populate {
            redis.cli(&["DEBUG", "POPULATE", "500000", "unrelated"]);
        }
        redis.cli(&["CONFIG", "RESETSTAT"]);
        let started = Instant::now();
        let out = run(&redis, &["status"]).await;
        let took = started.elapsed();
        assert_contains(&stdout(&out), "2 live replica(s)");
        let calls = redis.command_calls();
        assert!(
            !calls.contains_key("scan") && !calls.contains_key("keys"),
            "{calls:?}"
        );
        cost.push(redis_usec(&redis));
        println!(
            "status (populated: {populate}): {took:?} wall, {} µs in Redis",
            cost.last().unwrap()
        );
    }
    // The replicas' own refreshes are in the count too: a bound, not a ratio.
    assert!(
        cost[1] < 5_000,
        "status cost Redis {} µs with 500,000 keys",
        cost[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_removal_writes_a_short_lived_confirmation_and_status_shows_holds() {
    let redis = RedisServer::start();
    let out = run(&redis, &["route", "accept-removal"]).await;
    assert_exit(&out, 0);
    assert_contains(&stdout(&out), "no replica holds one right now");
    let value: u64 = redis
        .cli(&["GET", "routes:accept-removal"])
        .trim()
        .parse()
        .unwrap();
    let now_ms = redis_time_us(&redis) / 1000;
    assert!(
        value <= now_ms && value + 10_000 > now_ms,
        "{value} vs {now_ms}"
    );
    let ttl: i64 = redis
        .cli(&["PTTL", "routes:accept-removal"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");

    ghost(
        &redis,
        "holder",
        redis_time_us(&redis) + 60_000_000,
        Some((1000, 0)),
    );
    let out = run(&redis, &["route", "accept-removal"]).await;
    assert_contains(&stdout(&out), "holder (1000 -> 0 routes)");
    let status = stdout(&run(&redis, &["status"]).await);
    assert!(
        status.contains("held: removal of 1000 to 0 routes"),
        "{status}"
    );
    // A holding replica is never counted as serving a write.
    let out = run(
        &redis,
        &["route", "set", "a.cloud.com", "10.0.0.1:80", "--wait=600ms"],
    )
    .await;
    assert_exit(&out, 75);
    assert_contains(&stderr(&out), "holder (holds a removal of 1000 to 0 routes");
}
