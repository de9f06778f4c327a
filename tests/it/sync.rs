//! The table follows the Redis hash (ARCHITECTURE.md, "src/sync"). Each test starts its own
//! redis-server on a free port, its own backends and its own proxy.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_present_at_boot_is_served_and_changes_follow() {
    let (redis, proxy, [blue, green]) = Scenario::new()
        .backends(["blue", "green"])
        .route("app1.cloud.com", "blue")
        .start()
        .await;
    assert_eq!(
        proxy.get("app1.cloud.com", "/").await.backend().as_deref(),
        Some("blue")
    );

    // A new host becomes routable.
    redis.hset("app2.cloud.com", &green.target());
    assert_eventually!(
        proxy.get("app2.cloud.com", "/").await.backend().as_deref() == Some("green"),
        "new host"
    );
    // A changed route moves.
    redis.hset("app1.cloud.com", &green.target());
    assert_eventually!(
        proxy.get("app1.cloud.com", "/").await.backend().as_deref() == Some("green"),
        "moved route"
    );
    // HDEL gives 404.
    redis.hdel("app1.cloud.com");
    assert_eventually!(proxy.get("app1.cloud.com", "/").await.status == 404, "hdel");
    // DEL empties the table.
    redis.cli(&["DEL", "routes"]);
    assert_eventually!(proxy.get("app2.cloud.com", "/").await.status == 404, "del");
    // RENAME away empties it too.
    redis.hset("app3.cloud.com", &blue.target());
    assert_eventually!(proxy.get("app3.cloud.com", "/").await.status == 200, "app3");
    redis.cli(&["RENAME", "routes", "routes-old"]);
    assert_eventually!(
        proxy.get("app3.cloud.com", "/").await.status == 404,
        "rename"
    );
    assert!(
        proxy.ready().await,
        "an empty table is still a loaded table"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn watermark(proxy: &ProxyHandle) -> u64 {
    proxy.readyz().await.1["watermark_us"].as_u64().unwrap_or(0)
}

const BOOT: &str = "switchyard_resyncs_total{reason=\"boot\"}";
const EVENT: &str = "switchyard_resyncs_total{reason=\"event\"}";
const RECONNECT: &str = "switchyard_resyncs_total{reason=\"reconnect\"}";
const PERIODIC: &str = "switchyard_resyncs_total{reason=\"periodic\"}";
const RECEIVED: &str = "switchyard_notifications_received_total";
/// Every session reads each followed hash: the routes hash and the certs
/// hash (README.md, "Certificates in Redis").
const FOLLOWED_HASHES: f64 = 2.0;

// ---------------------------------------------------------------------------
// Coalesced reads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_hsets_costs_few_reloads_and_ends_in_the_final_table() {
    let (redis, proxy, [blue, green]) = Scenario::new().backends(["blue", "green"]).start().await;

    // 1,000 writes over 250 hosts, four rounds; each round flips every
    // host's target, so the final table proves the last write won.
    const HOSTS: usize = 250;
    let target = |i: usize| {
        if (i / HOSTS + i % 2) % 2 == 0 {
            blue.target()
        } else {
            green.target()
        }
    };
    // One transaction: Redis runs the 1,000 writes back to back and sends
    // their 1,000 events together, before it can answer the read the first
    // event starts. Sent one by one (redis-cli waits for each reply), the
    // burst would last as long as the machine makes it, and the reload
    // count with it (188 to 257 on a busy two-core VM).
    let mut lines = String::from("MULTI\n");
    for i in 0..1000 {
        lines.push_str(&format!(
            "HSET routes h{}.cloud.com {}\n",
            i % HOSTS,
            target(i)
        ));
    }
    lines.push_str("EXEC\n");
    redis.pipe(&lines);

    // Every event is counted (the receiver is deep enough not to lag).
    assert_eventually!(
        proxy.metric(RECEIVED).await == 1000.0,
        "notifications received: {}",
        proxy.metric(RECEIVED).await
    );
    // Round 3 is the last: odd hosts end on blue, even hosts on green.
    assert_eventually!(
        proxy.routes().await["routes"].as_object().map(|m| m.len()) == Some(HOSTS),
        "route count"
    );
    for k in [0, 1, 2, 3, 124, 125, 248, 249] {
        let want = if k % 2 == 1 { "blue" } else { "green" };
        assert_eventually!(
            proxy.serves(&format!("h{k}.cloud.com"), want).await,
            "h{k} should be served by {want}"
        );
    }
    let routes = proxy.routes().await;
    assert_eq!(
        routes["routes"]["h7.cloud.com"]["value"].as_str(),
        Some(blue.target().as_str())
    );
    assert_eq!(
        routes["routes"]["h8.cloud.com"]["value"].as_str(),
        Some(green.target().as_str())
    );

    let reloads = proxy.metric(EVENT).await;
    eprintln!(
        "burst: 1000 HSETs, {} notifications, {reloads} event reloads",
        proxy.metric(RECEIVED).await
    );
    assert!(reloads >= 1.0, "the burst caused no reload");
    // The first event's read, then one for all the events that queued up
    // behind it (a few more if the events reach the sync loop in parts).
    assert!(
        reloads <= 10.0,
        "{reloads} reloads for 1000 events: not coalesced"
    );
    assert_eq!(proxy.metric(BOOT).await, FOLLOWED_HASHES);
    assert_eq!(proxy.metric(RECONNECT).await, 0.0);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Every reconnect is followed by a resync
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_the_subscriber_is_down_is_live_after_the_reconnect() {
    let (redis, proxy, [blue, green]) = Scenario::new()
        .backends(["blue", "green"])
        .route("app.cloud.com", "blue")
        .start()
        .await;
    assert!(proxy.serves("app.cloud.com", "blue").await);
    assert_eq!(proxy.metric(RECONNECT).await, 0.0);

    // Kill the subscriber and change the route in one transaction: the
    // write certainly happens while no subscriber exists, so its keyspace
    // event is lost for good and only the reconnect resync can bring it.
    // (test_config sets the periodic resync to an hour.)
    redis.hset_while_subscribers_are_killed("app.cloud.com", &green.target());
    assert_eventually!(
        proxy.serves("app.cloud.com", "green").await,
        "the change made while the subscriber was down never went live"
    );
    assert!(proxy.metric(RECONNECT).await >= 1.0);
    assert_eq!(proxy.metric(PERIODIC).await, 0.0);
    // The write's event went nowhere: only the reconnect resync brought it.
    assert_eq!(proxy.metric(RECEIVED).await, 0.0);

    // And the new subscription works: the next change arrives by event.
    redis.hset("app.cloud.com", &blue.target());
    assert_eventually!(
        proxy.serves("app.cloud.com", "blue").await,
        "after resubscribe"
    );
    assert_eq!(proxy.metric(PERIODIC).await, 0.0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_different_data_old_table_meanwhile_new_data_after() {
    let mut redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    redis.hset("old.cloud.com", &blue.target());
    let proxy = ProxyHandle::start_ready(test_config(&redis.url())).await;
    assert!(proxy.serves("old.cloud.com", "blue").await);

    // Outage: the last table keeps serving, /readyz says Redis is down.
    redis.kill();
    assert_eventually!(
        proxy.readyz().await.1["redis"] != "connected",
        "proxy did not notice the outage"
    );
    for _ in 0..20 {
        assert!(
            proxy.serves("old.cloud.com", "blue").await,
            "request failed while Redis was down"
        );
    }
    let (code, details) = proxy.readyz().await;
    assert_eq!(code, 200, "still ready on the last table: {details}");

    // Back, empty, notifications off (CONFIG SET is not persisted), then
    // given different data.
    redis.spawn();
    redis.hset("new.cloud.com", &green.target());
    assert_eventually!(
        proxy.serves("new.cloud.com", "green").await,
        "the new data never went live"
    );
    assert_eventually!(
        proxy.get("old.cloud.com", "/").await.status == 404,
        "the old route outlived the restart"
    );
    assert!(proxy.metric(RECONNECT).await >= 1.0);
    let flags = redis.cli(&["CONFIG", "GET", "notify-keyspace-events"]);
    let flags = flags.lines().nth(1).unwrap_or_default();
    assert!(
        ['K', 'g', 'h', 'x', 'e'].iter().all(|c| flags.contains(*c)),
        "notifications not re-enabled after the restart: {flags:?}"
    );

    // A change after the restart arrives by notification (periodic is 1 h).
    let received = proxy.metric(RECEIVED).await;
    redis.hset("new.cloud.com", &blue.target());
    assert_eventually!(
        proxy.serves("new.cloud.com", "blue").await,
        "change after the restart"
    );
    assert!(proxy.metric(RECEIVED).await > received);
    assert_eq!(proxy.metric(PERIODIC).await, 0.0);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Notifications refused; changes that send no event
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_refused_changes_converge_by_periodic_resync() {
    let redis = RedisServer::builder()
        .acl_user("proxy", "on >pw ~* &* +@all -config")
        .start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    redis.hset("app.cloud.com", &blue.target());
    let mut config = test_config(&format!("redis://proxy:pw@127.0.0.1:{}/0", redis.port));
    config.sync.resync_interval = std::time::Duration::from_millis(500);
    let proxy = ProxyHandle::start_ready(config).await;
    assert!(proxy.serves("app.cloud.com", "blue").await);

    // CONFIG is refused, so the proxy cannot know whether the operator set
    // the flags: "unconfirmed" until an event arrives (none will here).
    let (_, details) = proxy.readyz().await;
    assert_eq!(details["notifications"]["mode"], "unconfirmed", "{details}");
    assert!(
        details["notifications"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("CONFIG")),
        "{details}"
    );
    assert_eq!(proxy.metric("switchyard_notifications_enabled").await, 0.0);
    // The proxy could not turn them on, and did not pretend to.
    let flags = redis.cli(&["CONFIG", "GET", "notify-keyspace-events"]);
    assert_eq!(flags.lines().nth(1).unwrap_or_default(), "");

    redis.hset("app.cloud.com", &green.target());
    assert_eventually!(
        proxy.serves("app.cloud.com", "green").await,
        "change never converged in polling mode"
    );
    assert!(proxy.metric(PERIODIC).await >= 1.0);
    assert_eq!(proxy.metric(RECEIVED).await, 0.0);
    proxy.shutdown().await;
}

/// Issue 28.6: with `CONFIG` denied by ACL but `notify-keyspace-events`
/// set by the operator, the mode reported is the truth: "unconfirmed"
/// until an event arrives, then "keyspace"; with `CONFIG GET` allowed, the
/// setting is read and reported at once, and flags without `t` (the old
/// README's `Kghxe`) still follow logged changes, by whole reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notification_mode_reported_is_the_truth_when_config_is_denied() {
    let redis = RedisServer::builder()
        .acl_user("noconfig", "on >pw ~* &* +@all -config")
        .acl_user("getonly", "on >pw ~* &* +@all -config +config|get")
        .start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    redis.cli(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
    redis.hset("app.cloud.com", &blue.target());
    let url = |user: &str| format!("redis://{user}:pw@127.0.0.1:{}/0", redis.port);
    let mode = |body: serde_json::Value| body["notifications"]["mode"].clone();

    let proxy = ProxyHandle::start_ready(test_config(&url("noconfig"))).await;
    assert_eq!(mode(proxy.readyz().await.1), "unconfirmed");
    assert_eq!(proxy.metric("switchyard_notifications_enabled").await, 0.0);
    redis.hset("app.cloud.com", &green.target());
    // Live by notification (the periodic resync is an hour away).
    assert_eventually!(
        proxy.serves("app.cloud.com", "green").await,
        "change not live"
    );
    assert_eventually!(
        mode(proxy.readyz().await.1) == "keyspace",
        "mode not confirmed by the event"
    );
    assert_eq!(proxy.metric("switchyard_notifications_enabled").await, 1.0);
    proxy.shutdown().await;

    // CONFIG GET allowed, SET denied, flags without `t`.
    redis.cli(&["CONFIG", "SET", "notify-keyspace-events", "Kghxe"]);
    let proxy = ProxyHandle::start_ready(test_config(&url("getonly"))).await;
    let body = proxy.readyz().await.1;
    assert_eq!(mode(body.clone()), "keyspace", "{body}");
    assert!(
        body["hashes"][0]["change_log"]
            .as_str()
            .is_some_and(|s| s.contains("lacks `t`")),
        "{body}"
    );
    redis.pipe(&format!(
        "MULTI\nHSET routes app.cloud.com {b}\nXADD routes:log MAXLEN ~ 10000 * op set field app.cloud.com value {b}\nEXEC\n",
        b = blue.target()
    ));
    assert_eventually!(
        proxy.serves("app.cloud.com", "blue").await,
        "logged change not live without stream events"
    );
    let flags = redis.notify_flags();
    assert!(
        !flags.contains('t'),
        "the proxy changed the setting: {flags}"
    );
    proxy.shutdown().await;

    // CONFIG GET allowed, SET denied, notifications off: polling, said so.
    redis.cli(&["CONFIG", "SET", "notify-keyspace-events", ""]);
    let proxy = ProxyHandle::start_ready(test_config(&url("getonly"))).await;
    assert_eq!(mode(proxy.readyz().await.1), "polling");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushdb_sends_no_event_and_is_found_by_the_ping_tick_check_as_drift() {
    // No periodic resync: the ping tick's check finds it.
    let (redis, proxy, [_blue]) = Scenario::new()
        .backends(["blue"])
        .route("app.cloud.com", "blue")
        .start()
        .await;
    assert!(proxy.serves("app.cloud.com", "blue").await);
    assert_eq!(proxy.readyz().await.1["notifications"]["mode"], "keyspace");
    assert_eq!(proxy.metric("switchyard_notifications_enabled").await, 1.0);
    assert_eq!(proxy.metric("switchyard_drift_total").await, 0.0);

    redis.cli(&["FLUSHDB"]);
    assert_eventually!(
        proxy.get("app.cloud.com", "/").await.status == 404,
        "FLUSHDB never converged"
    );
    assert_eventually!(
        proxy.metric("switchyard_drift_total").await >= 1.0,
        "FLUSHDB was not counted as drift"
    );
    assert_eq!(proxy.metric(RECEIVED).await, 0.0, "FLUSHDB sent an event?");
    assert!(
        proxy
            .metric("switchyard_resyncs_total{reason=\"check\"}")
            .await
            >= 1.0
    );
    assert!(proxy.ready().await);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// One bad entry never affects the others
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_value_is_isolated_reported_and_keeps_the_last_valid_route() {
    let (redis, proxy, [blue, green]) = Scenario::new()
        .backends(["blue", "green"])
        .route("a.cloud.com", "blue")
        .route("b.cloud.com", "green")
        .start()
        .await;
    assert!(proxy.serves("a.cloud.com", "blue").await);
    assert_eq!(proxy.metric("switchyard_invalid_routes").await, 0.0);

    // a: valid, then invalid. c: never valid.
    redis.hset("a.cloud.com", "10.0.0.1");
    redis.hset("c.cloud.com", "not a route");
    assert_eventually!(
        proxy.metric("switchyard_invalid_routes").await == 2.0,
        "invalid_routes metric: {}",
        proxy.metric("switchyard_invalid_routes").await
    );
    // Every other host still served; a keeps its last valid route.
    assert!(proxy.serves("b.cloud.com", "green").await);
    assert!(proxy.serves("a.cloud.com", "blue").await);
    assert_eq!(proxy.get("c.cloud.com", "/").await.status, 502);

    let routes = proxy.routes().await;
    let invalid = routes["invalid"].as_array().expect("invalid list");
    let find = |field: &str| {
        invalid
            .iter()
            .find(|e| e["field"] == field)
            .unwrap_or_else(|| panic!("{field} not listed as invalid: {routes}"))
    };
    let a = find("a.cloud.com");
    assert_eq!(a["value"], "10.0.0.1");
    assert_eq!(a["serving_previous"], true);
    assert!(
        a["reason"].as_str().is_some_and(|r| r.contains("no port")),
        "{a}"
    );
    let c = find("c.cloud.com");
    assert_eq!(c["serving_previous"], false);
    assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()), "{c}");
    assert_eq!(invalid.len(), 2);
    // The serving route of a is still the old value.
    assert_eq!(
        routes["routes"]["a.cloud.com"]["value"].as_str(),
        Some(blue.target().as_str())
    );
    assert_eq!(routes["routes"]["c.cloud.com"]["invalid"], true);

    // Fixing the value clears the report.
    redis.hset("a.cloud.com", &green.target());
    redis.hdel("c.cloud.com");
    assert_eventually!(
        proxy.serves("a.cloud.com", "green").await,
        "fixed value not served"
    );
    assert_eventually!(
        proxy.metric("switchyard_invalid_routes").await == 0.0,
        "invalid_routes did not return to 0"
    );
    assert_eq!(proxy.get("c.cloud.com", "/").await.status, 404);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// The request path never awaits Redis
// ---------------------------------------------------------------------------

/// Sends `n` GETs with `Host: host` over one keep-alive client, 50 at a
/// time, and returns the status codes seen.
async fn many_gets(addr: std::net::SocketAddr, host: &str, n: usize) -> Vec<u16> {
    let client = HttpClient::new(addr);
    let mut statuses = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch = (i..n.min(i + 50)).map(|j| {
            let (client, host) = (client.clone(), host.replace("{}", &j.to_string()));
            async move {
                let r = client.try_get(&host, &format!("/r{j}")).await;
                r.expect("request failed").status
            }
        });
        statuses.extend(futures_util::future::join_all(batch).await);
        i += 50;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_get_404_and_no_request_reaches_redis() {
    let (redis, proxy, [blue]) = Scenario::new()
        .backends(["blue"])
        .route("known.cloud.com", "blue")
        .start()
        .await;
    assert!(proxy.serves("known.cloud.com", "blue").await);

    let before = redis.command_calls();
    let started = std::time::Instant::now();
    let unknown = many_gets(proxy.addr, "unknown-{}.example.org", 500).await;
    let known = many_gets(proxy.addr, "known.cloud.com", 500).await;
    let after = redis.command_calls();
    let elapsed = started.elapsed();

    assert!(
        unknown.iter().all(|s| *s == 404),
        "unknown hosts: {unknown:?}"
    );
    assert!(known.iter().all(|s| *s == 200), "known host: {known:?}");
    assert!(blue.count() >= 500);

    let moved: std::collections::BTreeMap<&str, u64> = after
        .iter()
        .map(|(k, v)| (k.as_str(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    eprintln!("redis commands during 1000 requests: {moved:?}");
    // What may move: the test's own INFO, the proxy's PINGs (both
    // connections, every 200 ms) with its existence check (EXISTS), and
    // its registry entry (`HSET` + `PUBLISH` on the status timer). Those
    // are timers, not requests: their count does not depend on how many
    // requests ran.
    for (command, delta) in &moved {
        assert!(
            matches!(
                *command,
                "info" | "ping" | "exists" | "set" | "hset" | "publish"
            ),
            "redis executed {delta} × {command} while serving requests: {moved:?}"
        );
    }
    for command in [
        "hgetall", "dump", "hscan", "hget", "exec", "multi", "time", "get",
    ] {
        assert!(!moved.contains_key(command), "{command} moved: {moved:?}");
    }
    // A timer-driven count follows the clock, not the requests: at most
    // three commands per ping tick (200 ms: two PINGs and an EXISTS) and
    // two per status tick (500 ms: HSET and PUBLISH), plus a tick of each
    // at both ends, plus the INFO. On a loaded machine the 1,000 requests
    // take longer and the timers tick more; one command per request would
    // still be far over this budget.
    let timers: u64 = moved.values().sum();
    let ticks = |period_ms: u128| (elapsed.as_millis() / period_ms) as u64 + 2;
    let budget = 3 * ticks(200) + 2 * ticks(500) + 1;
    assert!(
        timers <= budget && timers < 500,
        "{timers} commands for 1000 requests in {elapsed:?} (budget {budget}): {moved:?}"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Not ready before the first load
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_before_redis_is_unready_then_serves_once_loaded() {
    let mut redis = RedisServer::reserved();
    let blue = Backend::echo("blue").await;
    let proxy = ProxyHandle::start(test_config(&redis.url())).await;

    // Let it fail at least once, then check it is honest about it.
    assert_eventually!(
        proxy.readyz().await.1["last_error"].is_string(),
        "no connection error reported"
    );
    let (code, details) = proxy.readyz().await;
    assert_eq!(code, 503, "{details}");
    assert_eq!(details["ready"], false);
    assert_ne!(details["redis"], "connected", "{details}");
    let r = proxy.get("app.cloud.com", "/").await;
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert_eq!(proxy.metric(BOOT).await, 0.0);

    redis.spawn();
    redis.hset("app.cloud.com", &blue.target());
    assert_eventually!(proxy.ready().await, "never ready after Redis appeared");
    assert_eventually!(
        proxy.serves("app.cloud.com", "blue").await,
        "route never served"
    );
    let (code, details) = proxy.readyz().await;
    assert_eq!(code, 200);
    assert_eq!(details["redis"], "connected");
    assert_eq!(details["source"], "redis");
    assert_eq!(proxy.metric(BOOT).await, FOLLOWED_HASHES);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Empty is a table; the watermark always advances
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_hash_is_a_table_and_the_watermark_advances_on_a_no_op_resync() {
    let (redis, proxy, [blue]) = Scenario::new().backends(["blue"]).start().await;
    let (code, details) = proxy.readyz().await;
    assert_eq!(code, 200, "{details}");
    assert_eq!(details["table"]["routes"], 0);
    assert_eq!(proxy.get("anything.cloud.com", "/").await.status, 404);
    assert!(details["watermark_us"].as_u64().is_some(), "{details}");

    redis.hset("app.cloud.com", &blue.target());
    assert_eventually!(proxy.serves("app.cloud.com", "blue").await, "new route");
    assert_eventually!(
        proxy.metric(EVENT).await >= 1.0,
        "the HSET was not an event resync"
    );
    let version = proxy.readyz().await.1["table"]["version"].clone();
    let w1 = watermark(&proxy).await;
    let events = proxy.metric(EVENT).await;

    // The same value again: an event, a reload that changes nothing. The
    // watermark still moves past the Redis time taken before the write,
    // which is what `route set --wait` relies on (README.md, "--wait").
    let redis_time = || {
        let out = redis.cli(&["TIME"]);
        let mut parts = out.lines().map(|l| l.trim().parse::<u64>().unwrap());
        parts.next().unwrap() * 1_000_000 + parts.next().unwrap()
    };
    let before_write = redis_time();
    assert!(w1 < before_write);
    redis.hset("app.cloud.com", &blue.target());
    assert_eventually!(
        proxy.metric(EVENT).await > events && watermark(&proxy).await > before_write,
        "watermark did not pass the write: {} -> {} (write after {})",
        w1,
        watermark(&proxy).await,
        before_write
    );
    let (_, details) = proxy.readyz().await;
    assert_eq!(details["table"]["version"], version, "no-op reload swapped");
    assert!(watermark(&proxy).await <= redis_time());
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Sync reasons
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_boot_resync_per_hash_and_nothing_else_at_start() {
    let (_redis, proxy, []) = Scenario::new().start().await;
    assert_eq!(proxy.metric(BOOT).await, FOLLOWED_HASHES);
    assert_eq!(proxy.metric(EVENT).await, 0.0);
    assert_eq!(proxy.metric(RECONNECT).await, 0.0);
    assert_eq!(proxy.metric(PERIODIC).await, 0.0);
    assert_eq!(proxy.metric("switchyard_notifications_enabled").await, 1.0);
    assert_eq!(proxy.readyz().await.1["notifications"]["mode"], "keyspace");
    // The boot load swapped in version 1.
    assert_eq!(proxy.metric("switchyard_route_table_version").await, 1.0);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// Large hashes: read with DUMP, patched in place
// ---------------------------------------------------------------------------

/// `DUMP` decoding (sync::dump) reads exactly what `HGETALL` reads, over
/// the string encodings Redis picks by content: plain, integers, and
/// LZF-compressed long strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_hash_read_with_dump_equals_hgetall() {
    use switchyard::sync::redis::{connect, read_hash, ReadMethod, Role};
    let redis = RedisServer::start();
    let long = "x".repeat(40);
    let mut commands = String::new();
    for i in 0..3000 {
        let (field, value) = match i % 4 {
            0 => (format!("h{i}.dump.test"), format!("127.0.0.1:{}", 1000 + i)),
            1 => (format!("{i}"), format!("{}", i * 7)),
            2 => (format!("{long}-{i}.dump.test"), format!("{long}:{i}")),
            _ => (format!("ü{i}.dump.test"), String::new()),
        };
        commands.push_str(&format!("HSET routes \"{field}\" \"{value}\"\n"));
    }
    redis.pipe(&commands);
    assert_dump_reads_what_hgetall_reads(&redis, 3000).await;
    assert!(redis.calls("dump") >= 1);
    // A missing key is an empty hash, as with HGETALL.
    let config = test_config(&redis.url());
    let (conn, ()) = connect(&config.sync, Role::Commands, |_| ())
        .await
        .expect("connect");
    let empty = read_hash(&conn.client, "no-such-key", None, ReadMethod::Dump, 10_000)
        .await
        .expect("dump of a missing key");
    assert!(empty.entries().unwrap().is_empty());
    conn.close();
}

/// Reads the routes hash with `DUMP` and with `HGETALL` and checks that
/// both give the same `len` entries, the DUMP decoded (no fallback).
async fn assert_dump_reads_what_hgetall_reads(redis: &RedisServer, len: usize) {
    use switchyard::sync::redis::{connect, read_hash, ReadMethod, Role};
    let config = test_config(&redis.url());
    let (conn, ()) = connect(&config.sync, Role::Commands, |_| ())
        .await
        .expect("connect");
    let dump = read_hash(&conn.client, "routes", None, ReadMethod::Dump, 10_000)
        .await
        .expect("dump read");
    assert!(!dump.dump_unreadable, "the DUMP was not decoded");
    let mut dumped = dump.entries().expect("dump decoded");
    let hgetall = read_hash(&conn.client, "routes", None, ReadMethod::HGetAll, 10_000)
        .await
        .expect("hgetall read");
    let mut listed = hgetall.entries().unwrap();
    dumped.sort();
    listed.sort();
    assert_eq!(dumped.len(), len);
    assert!(dumped == listed, "DUMP and HGETALL disagree");
    conn.close();
}

/// With a hash above the DUMP threshold, changes, new hosts and removals
/// follow as usual (they go through the patch path), and the reloads are
/// DUMPs, not HGETALLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_a_large_hash_follow_through_dump_reloads() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let mut commands = String::new();
    // Above Redis's default hash-max-listpack-entries (128): the hashtable
    // encoding (the listpack one has its own test below).
    for i in 0..1000 {
        commands.push_str(&format!("HSET routes h{i}.big.test {}\n", blue.target()));
    }
    redis.pipe(&commands);
    let mut config = test_config(&redis.url());
    config.sync.tuning.dump_threshold = 600;
    let proxy = ProxyHandle::start_ready(config).await;
    assert!(proxy.serves("h7.big.test", "blue").await);
    let hgetalls = redis.calls("hgetall");

    redis.hset("h7.big.test", &green.target());
    assert_eventually!(proxy.serves("h7.big.test", "green").await, "change");
    redis.hset("new.big.test", &green.target());
    assert_eventually!(proxy.serves("new.big.test", "green").await, "new host");
    redis.hdel("h8.big.test");
    assert_eventually!(proxy.get("h8.big.test", "/").await.status == 404, "hdel");
    redis.hdel("new.big.test");
    assert_eventually!(
        proxy.get("new.big.test", "/").await.status == 404,
        "hdel new"
    );
    assert!(proxy.serves("h9.big.test", "blue").await);
    assert_eq!(proxy.metric("switchyard_route_table_routes").await, 999.0);

    let calls = redis.command_calls();
    assert!(calls.get("dump").copied().unwrap_or(0) >= 4, "{calls:?}");
    assert_eq!(
        calls.get("hgetall").copied().unwrap_or(0),
        hgetalls,
        "{calls:?}"
    );
    proxy.shutdown().await;
}

/// A server that keeps a hash this size as a listpack (its
/// `hash-max-listpack-entries` raised above the route count, as
/// bench/README.md advises for the cheapest DUMPs) answers DUMP with one
/// listpack: it is decoded like the hashtable encoding (every element
/// encoding Redis picks: small and large integers, short and long
/// strings), and changes reload by payload diff, with no HGETALL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_redis_keeps_as_a_listpack_is_read_with_dump() {
    let redis = RedisServer::builder()
        .args([
            "--hash-max-listpack-entries",
            "4096",
            "--hash-max-listpack-value",
            "128",
        ])
        .start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let mut commands = String::new();
    for i in 0..1000 {
        commands.push_str(&format!("HSET routes h{i}.lp.test {}\n", blue.target()));
    }
    // Fields and values Redis stores as integers of every width, and
    // strings past 63 bytes (a two-byte length): invalid routes, read all
    // the same (and deleted before the proxy starts: a table with invalid
    // routes is rebuilt, not patched).
    let long = "x".repeat(100);
    let mut odd_fields = Vec::new();
    for (i, n) in [5i64, -5, 1234, -100_000, 100_000_000, 1 << 40]
        .iter()
        .enumerate()
    {
        commands.push_str(&format!("HSET routes {n} {}\n", -n * 3));
        commands.push_str(&format!("HSET routes {long}{i}.lp.test {n}\n"));
        odd_fields.extend([n.to_string(), format!("{long}{i}.lp.test")]);
    }
    redis.pipe(&commands);
    assert_eq!(
        redis.cli(&["OBJECT", "ENCODING", "routes"]).trim(),
        "listpack"
    );
    assert_dump_reads_what_hgetall_reads(&redis, 1012).await;
    for field in &odd_fields {
        redis.hdel(field);
    }
    assert_eq!(
        redis.cli(&["OBJECT", "ENCODING", "routes"]).trim(),
        "listpack"
    );

    let proxy = ProxyHandle::start_ready(test_config(&redis.url())).await;
    assert!(proxy.serves("h7.lp.test", "blue").await);
    let hgetalls = redis.calls("hgetall");
    let by_diff = "switchyard_reload_builds_total{how=\"payload_diff\"}";
    let diffs = proxy.metric(by_diff).await;
    for i in 0..3 {
        let host = format!("h{i}.lp.test");
        redis.hset(&host, &green.target());
        assert_eventually!(proxy.serves(&host, "green").await, "change {i}");
    }
    redis.hset("new.lp.test", &green.target());
    assert_eventually!(proxy.serves("new.lp.test", "green").await, "new host");
    redis.hdel("h8.lp.test");
    assert_eventually!(proxy.get("h8.lp.test", "/").await.status == 404, "hdel");
    assert!(proxy.serves("h9.lp.test", "blue").await);
    let calls = redis.command_calls();
    assert_eq!(
        calls.get("hgetall").copied().unwrap_or(0),
        hgetalls,
        "{calls:?}"
    );
    assert!(
        proxy.metric(by_diff).await >= diffs + 5.0,
        "listpack reloads did not use the payload diff"
    );
    proxy.shutdown().await;
}

/// A hash that grew past a power of two is rehashed by Redis a step per
/// write for about as many writes again, and every step moves entries to
/// another place in the DUMP. Reloads must still patch only what changed
/// (the payload diff matches entries by their bytes, not their place)
/// rather than fall back to comparing every entry: that fallback is what
/// made a 100,000-route reload take tens of milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_redis_is_rehashing_still_reloads_by_payload_diff() {
    // DEBUG HTSTATS-KEY shows the rehash under way.
    let redis = RedisServer::builder()
        .args(["--enable-debug-command", "yes"])
        .start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let mut commands = String::new();
    // 1,000 entries: a dict of 1,024 buckets.
    for i in 0..1000 {
        commands.push_str(&format!("HSET routes h{i}.rehash.test {}\n", blue.target()));
    }
    redis.pipe(&commands);
    let mut config = test_config(&redis.url());
    config.sync.tuning.dump_threshold = 600;
    let proxy = ProxyHandle::start_ready(config).await;
    // 100 more: the dict starts growing to 2,048 buckets at the 1,025th.
    for i in 0..100 {
        redis.hset(&format!("n{i}.rehash.test"), &blue.target());
    }
    assert_eventually!(
        proxy.serves("n99.rehash.test", "blue").await,
        "growth never served"
    );
    let stats = redis.cli(&["DEBUG", "HTSTATS-KEY", "routes"]);
    assert!(
        stats.contains("rehashing target"),
        "the hash is not being rehashed: {stats}"
    );
    let by_diff = "switchyard_reload_builds_total{how=\"payload_diff\"}";
    let by_compare = "switchyard_reload_builds_total{how=\"compare\"}";
    let (diffs, compares) = (proxy.metric(by_diff).await, proxy.metric(by_compare).await);
    for i in 0..20 {
        let (to, name) = if i % 2 == 0 {
            (&green, "green")
        } else {
            (&blue, "blue")
        };
        redis.hset("h7.rehash.test", &to.target());
        assert_eventually!(proxy.serves("h7.rehash.test", name).await, "change {i}");
    }
    let stats = redis.cli(&["DEBUG", "HTSTATS-KEY", "routes"]);
    assert!(
        stats.contains("rehashing target"),
        "rehash finished: {stats}"
    );
    assert!(
        proxy.metric(by_diff).await >= diffs + 20.0,
        "reloads did not use the payload diff"
    );
    assert_eq!(
        proxy.metric(by_compare).await,
        compares,
        "a reload compared every entry while the hash was rehashing"
    );
    proxy.shutdown().await;
}
