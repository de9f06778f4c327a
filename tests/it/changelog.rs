//! The change log (ARCHITECTURE.md, "The change log"): a logged change is
//! patched from the log, a plain write still works by a full read, the
//! two mixed end in the hash's exact state, and a reconnect replays the
//! log. Every test starts its own redis-server, backends and proxy.

use crate::support::{test_config, Backend, ProxyHandle, RedisServer};
use fred::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard::sync::changelog::{queue_del, queue_set};
use switchyard::sync::redis::{connect, parse_time, Connection, Role};

const BY_LOG: &str = "switchyard_reload_builds_total{how=\"log\"}";
const EVENT_READS: &str = "switchyard_resyncs_total{reason=\"event\"}";

/// A controller's connection: writes logged changes with the library's
/// helper, as `switchyard route set/del` do.
struct Controller {
    conn: Connection,
}

impl Controller {
    async fn new(redis: &RedisServer) -> Controller {
        let config = test_config(&redis.url());
        let (conn, ()) = connect(&config.sync, Role::Commands, |_| ())
            .await
            .expect("connect");
        Controller { conn }
    }

    /// One transaction of changes (`None`: delete); returns its Redis time.
    async fn write(&self, changes: &[(&str, Option<&str>)]) -> u64 {
        let trx = self.conn.client.multi();
        for (field, value) in changes {
            match value {
                Some(value) => queue_set(&trx, "routes", field, value).await.unwrap(),
                None => queue_del(&trx, "routes", field).await.unwrap(),
            }
        }
        let _: () = trx
            .custom(
                fred::types::CustomCommand::new_static("TIME", None, false),
                Vec::<fred::types::Value>::new(),
            )
            .await
            .unwrap();
        let replies: fred::types::Value = trx.exec(true).await.unwrap();
        parse_time(replies.into_array().last().unwrap()).unwrap()
    }

    async fn set(&self, field: &str, value: &str) -> u64 {
        self.write(&[(field, Some(value))]).await
    }

    async fn del(&self, field: &str) -> u64 {
        self.write(&[(field, None)]).await
    }
}

async fn serves(proxy: &ProxyHandle, host: &str, backend: &str) -> bool {
    let r = proxy.get(host, "/").await;
    r.status == 200 && r.body.contains(backend)
}

async fn readyz(proxy: &ProxyHandle) -> serde_json::Value {
    proxy.admin_get("/readyz").await.json()
}

async fn ready_proxy(config: switchyard::config::Config) -> ProxyHandle {
    let proxy = ProxyHandle::start(config).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
    proxy
}

/// The routes the proxy serves, as field → value.
async fn served_routes(proxy: &ProxyHandle) -> BTreeMap<String, String> {
    let routes = proxy.routes().await;
    routes["routes"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(host, r)| Some((host.clone(), r["value"].as_str()?.to_owned())))
        .collect()
}

/// `n` routes to `target`, named by `pattern` with `{i}` for the number.
fn fill_routes(redis: &RedisServer, n: usize, pattern: &str, target: &str) {
    let mut fill = String::new();
    for i in 0..n {
        let host = pattern.replace("{i}", &i.to_string());
        fill.push_str(&format!("HSET routes {host} {target}\n"));
    }
    redis.pipe(&fill);
}

/// The routes hash, as field → value.
fn hash(redis: &RedisServer) -> BTreeMap<String, String> {
    let out = redis.cli(&["HGETALL", "routes"]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks_exact(2)
        .map(|p| (p[0].to_owned(), p[1].to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_change_is_patched_from_the_log_without_reading_the_hash() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    // Enough routes that a whole read would show (DUMP).
    fill_routes(&redis, 1000, "bg{i}.cloud.com", &blue.target());
    let controller = Controller::new(&redis).await;
    controller.set("app.cloud.com", &blue.target()).await;
    let proxy = ready_proxy(test_config(&redis.url())).await;
    assert!(serves(&proxy, "app.cloud.com", "blue").await);
    let reads_before = redis.command_calls();

    controller.set("app.cloud.com", &green.target()).await;
    assert_eventually!(
        serves(&proxy, "app.cloud.com", "green").await,
        "logged change not live"
    );
    controller.set("new.cloud.com", &blue.target()).await;
    assert_eventually!(
        serves(&proxy, "new.cloud.com", "blue").await,
        "logged addition not live"
    );
    controller.del("new.cloud.com").await;
    assert_eventually!(
        proxy.get("new.cloud.com", "/").await.status == 404,
        "logged deletion not live"
    );
    assert!(proxy.metric(BY_LOG).await >= 3.0);
    assert_eq!(proxy.metric(EVENT_READS).await, 0.0, "a whole read ran");
    let after = redis.command_calls();
    for command in ["dump", "hgetall", "hscan"] {
        assert_eq!(
            after.get(command),
            reads_before.get(command),
            "{command} ran for a logged change"
        );
    }
    assert!(after.get("xrange") > reads_before.get("xrange"));
    assert!(proxy.metric("switchyard_change_log_entries_total").await >= 3.0);
    proxy.shutdown().await;
}

/// The README's two commands, sent by any client (here redis-cli), are a
/// logged change too; a plain `HSET` still works, by a whole read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_commands_of_the_readme_and_a_plain_hset_both_work() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    redis.hset("app.cloud.com", &blue.target());
    redis.hset("other.cloud.com", &blue.target());
    let proxy = ready_proxy(test_config(&redis.url())).await;
    redis.pipe(&format!(
        "MULTI\nHSET routes app.cloud.com {g}\nXADD routes:log MAXLEN ~ 10000 * op set field app.cloud.com value {g}\nEXEC\n",
        g = green.target()
    ));
    assert_eventually!(
        serves(&proxy, "app.cloud.com", "green").await,
        "logged change (redis-cli) not live"
    );
    assert_eq!(proxy.metric(BY_LOG).await, 1.0);
    assert_eq!(proxy.metric(EVENT_READS).await, 0.0);

    redis.hset("other.cloud.com", &green.target());
    assert_eventually!(
        serves(&proxy, "other.cloud.com", "green").await,
        "plain HSET not live"
    );
    assert!(proxy.metric(EVENT_READS).await >= 1.0, "no whole read");
    proxy.shutdown().await;
}

/// The hazard the follower's rule leaves to the table: a plain `HDEL g`
/// followed at once by a logged delete of a field the hash does not have
/// (which sends no hash event, so its log event comes right after the
/// plain write's). The table refuses to patch the missing field and a
/// whole read follows: `g` is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_delete_of_a_missing_field_does_not_hide_a_plain_write() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    redis.hset("g.cloud.com", &blue.target());
    redis.hset("keep.cloud.com", &blue.target());
    let proxy = ready_proxy(test_config(&redis.url())).await;
    // One pipeline: the two writes' events are adjacent.
    redis.pipe(
        "HDEL routes g.cloud.com\nMULTI\nHDEL routes never.cloud.com\nXADD routes:log MAXLEN ~ 10000 * op del field never.cloud.com\nEXEC\n",
    );
    assert_eventually!(
        proxy.get("g.cloud.com", "/").await.status == 404,
        "the plain HDEL was hidden by the logged no-op"
    );
    assert!(serves(&proxy, "keep.cloud.com", "blue").await);
    proxy.shutdown().await;
}

/// Any interleaving of logged and plain writes (sets and deletes, some in
/// one transaction, some pipelined back to back) ends with the table
/// equal to a full build of the hash: the patch path of the log and the
/// fallbacks agree with the truth (issue 27.1's rule, at the sync level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_logged_and_plain_writes_end_in_the_hash_state() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let controller = Controller::new(&redis).await;
    let hosts: Vec<String> = (0..40).map(|i| format!("h{i}.cloud.com")).collect();
    for host in &hosts[..20] {
        redis.hset(host, &blue.target());
    }
    let proxy = ready_proxy(test_config(&redis.url())).await;
    let backend = |i: u32| format!("10.0.{}.{}:80", i / 250, i % 250 + 1);
    for seed in 0..8u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut pipe = String::new();
        for step in 0..60u32 {
            let host = &hosts[rng.random_range(0..hosts.len())];
            let value = backend(step + seed as u32 * 100);
            match rng.random_range(0..6) {
                0 => controller.set(host, &value).await.ignore(),
                1 => controller.del(host).await.ignore(),
                2 => {
                    let other = &hosts[rng.random_range(0..hosts.len())];
                    controller
                        .write(&[(host, Some(&value)), (other, None)])
                        .await
                        .ignore()
                }
                3 => pipe.push_str(&format!("HSET routes {host} {value}\n")),
                4 => pipe.push_str(&format!("HDEL routes {host}\n")),
                _ => pipe.push_str(&format!(
                    "MULTI\nHSET routes {host} {value}\nXADD routes:log MAXLEN ~ 10000 * op set field {host} value {value}\nEXEC\n"
                )),
            }
            if rng.random_bool(0.2) && !pipe.is_empty() {
                redis.pipe(&std::mem::take(&mut pipe));
            }
        }
        if !pipe.is_empty() {
            redis.pipe(&pipe);
        }
        let want = hash(&redis);
        assert_eventually!(
            served_routes(&proxy).await == want,
            "seed {seed}: served {:?}\n hash {:?}",
            served_routes(&proxy).await,
            want
        );
    }
    assert!(proxy.metric(BY_LOG).await >= 1.0);
    assert_eq!(proxy.metric("switchyard_drift_total").await, 0.0);
    proxy.shutdown().await;
}

trait Ignore {
    fn ignore(self);
}
impl<T> Ignore for T {
    fn ignore(self) {}
}

/// The watermark of a logged change passes the write's own Redis time
/// (what `--wait` compares), and a trimmed log means a whole read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_passes_a_logged_write_and_a_trimmed_log_means_a_whole_read() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let controller = Controller::new(&redis).await;
    controller.set("app.cloud.com", &blue.target()).await;
    let proxy = ready_proxy(test_config(&redis.url())).await;
    let written = controller.set("app.cloud.com", &green.target()).await;
    assert_eventually!(
        readyz(&proxy).await["watermark_us"]
            .as_u64()
            .is_some_and(|w| w > written),
        "the watermark never passed the write: {}",
        readyz(&proxy).await
    );
    assert!(serves(&proxy, "app.cloud.com", "green").await);

    // Trim the log past the entry the replica last saw.
    redis.cli(&["XTRIM", "routes:log", "MAXLEN", "0"]);
    let reads = proxy.metric(EVENT_READS).await;
    controller.set("app.cloud.com", &blue.target()).await;
    assert_eventually!(
        serves(&proxy, "app.cloud.com", "blue").await,
        "change after the trim not live"
    );
    assert!(proxy.metric(EVENT_READS).await > reads, "no whole read");
    // The whole read found the log's position again: logged changes go
    // through the log from there.
    let by_log = proxy.metric(BY_LOG).await;
    controller.set("app.cloud.com", &green.target()).await;
    assert_eventually!(
        serves(&proxy, "app.cloud.com", "green").await,
        "change not live"
    );
    assert!(proxy.metric(BY_LOG).await > by_log);
    proxy.shutdown().await;
}

/// After a reconnect to the same server the log is replayed first (the
/// logged changes made while away are live before the hash is read
/// whole), then the hash is read whole: a plain write made meanwhile sent
/// its event to no one, and is live too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_replays_the_log_then_reads_the_hash() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let controller = Controller::new(&redis).await;
    controller.set("app.cloud.com", &blue.target()).await;
    redis.hset("plain.cloud.com", &blue.target());
    let mut config = test_config(&redis.url());
    // Away long enough for the writes below to land meanwhile.
    config.sync.tuning.backoff_min = Duration::from_millis(800);
    config.sync.tuning.backoff_max = Duration::from_millis(800);
    let proxy = ready_proxy(config).await;
    let replay = "switchyard_resyncs_total{reason=\"replay\"}";
    let reconnect = "switchyard_resyncs_total{reason=\"reconnect\"}";

    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    controller.set("app.cloud.com", &green.target()).await;
    controller.set("second.cloud.com", &blue.target()).await;
    // A plain change of a value (the hash's length does not move).
    redis.hset("plain.cloud.com", &green.target());
    assert_eventually!(
        proxy.metric(reconnect).await >= 1.0,
        "no whole read after the reconnect"
    );
    // Each followed hash replays its log: the routes hash's, and the
    // certs hash's (empty here), one after the other (the routes hash's
    // whole read may come before the certs hash's replay).
    assert_eventually!(
        proxy.metric(replay).await == 2.0,
        "the log was not replayed"
    );
    assert!(serves(&proxy, "app.cloud.com", "green").await);
    assert!(serves(&proxy, "second.cloud.com", "blue").await);
    assert!(
        serves(&proxy, "plain.cloud.com", "green").await,
        "the plain write made while away is not live"
    );
    proxy.shutdown().await;
}

/// A whole read by `HSCAN` of a large hash takes seconds (~4 s at
/// 1,000,000 routes); the periodic one must not hold logged changes back
/// until it ends. With scans of thousands of pages running back to back, a
/// logged change written in the middle of one goes live before that scan
/// completes (the completed periodic reads, counted at their end, have not
/// moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_change_goes_live_during_a_long_scan() {
    const PERIODIC_DONE: &str = "switchyard_sync_duration_seconds_count{reason=\"periodic\"}";
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    fill_routes(&redis, 20_000, "h{i}.scan.test", &blue.target());
    redis.cli(&["HSET", "routes", "app.cloud.com", &blue.target()]);
    let mut config = test_config(&redis.url());
    config.sync.tuning.scan_threshold = 0;
    // 5 fields a page: a scan is ~4,000 round trips, a second or more.
    config.sync.tuning.scan_count = 5;
    config.sync.resync_interval = Duration::from_millis(100);
    config.sync.tuning.periodic_spacing = 0;
    let proxy = ready_proxy(config).await;
    // Wait for a periodic scan to be under way: HSCAN calls still rising
    // after one completed.
    let done = proxy.metric(PERIODIC_DONE).await;
    assert_eventually!(
        proxy.metric(PERIODIC_DONE).await > done,
        "no periodic read completed"
    );
    let calls = redis.calls("hscan");
    assert_eventually!(redis.calls("hscan") > calls + 100, "no scan under way");
    let done = proxy.metric(PERIODIC_DONE).await;
    Controller::new(&redis)
        .await
        .write(&[("app.cloud.com", Some(&green.target()))])
        .await;
    assert_eventually!(
        serves(&proxy, "app.cloud.com", "green").await,
        "logged change not live"
    );
    assert_eq!(
        proxy.metric(PERIODIC_DONE).await,
        done,
        "the change went live only after the scan under way had ended"
    );
    proxy.shutdown().await;
}

/// Logged changes written while periodic reads run back to back, each
/// read's table built on a blocking thread while the served table follows
/// the log: the proxy ends serving the hash's exact state, and no change
/// is counted as drift (the read is compared with the table as of the
/// same log position; without that, both variants count 2-3). Once by
/// `DUMP`, once by `HSCAN`.
async fn logged_changes_during_periodic_reads(by_scan: bool) {
    const PERIODIC_DONE: &str = "switchyard_sync_duration_seconds_count{reason=\"periodic\"}";
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    fill_routes(&redis, 5_000, "h{i}.bulk.test", &blue.target());
    let mut config = test_config(&redis.url());
    config.sync.tuning.build_off_reactor_above = 0;
    config.sync.tuning.follow_log_every = Duration::from_millis(1);
    if by_scan {
        config.sync.tuning.scan_threshold = 0;
        config.sync.tuning.scan_count = 100;
    }
    config.sync.resync_interval = Duration::from_millis(100);
    config.sync.tuning.periodic_spacing = 0;
    let proxy = ready_proxy(config).await;
    let periodic = proxy.metric(PERIODIC_DONE).await;
    let controller = Controller::new(&redis).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(27);
    let targets = [blue.target(), green.target()];
    let started = std::time::Instant::now();
    let mut writes = 0;
    // At least 400 writes, over at least five periodic reads.
    while writes < 400 || proxy.metric(PERIODIC_DONE).await < periodic + 5.0 {
        let field = format!("f{}.live.test", rng.random_range(0..40));
        if rng.random_range(0..6) == 0 {
            controller.del(&field).await;
        } else {
            controller
                .set(&field, &targets[rng.random_range(0..2)])
                .await;
        }
        writes += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "periodic reads did not run"
        );
    }
    let want = hash(&redis);
    assert_eventually!(
        served_routes(&proxy).await == want,
        "a logged change was lost"
    );
    assert_eq!(
        proxy.metric("switchyard_drift_total").await,
        0.0,
        "logged changes counted as drift"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_changes_during_periodic_dump_reads_are_neither_lost_nor_drift() {
    logged_changes_during_periodic_reads(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_changes_during_periodic_scans_are_neither_lost_nor_drift() {
    logged_changes_during_periodic_reads(true).await;
}

/// A plain write after logged ones is still read by the payload diff (the
/// logged fields are looked up in the new payload), not by comparing every
/// entry; and the table ends exact, including a field a logged change set
/// and a plain write then set back to its value in the older payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_write_after_logged_ones_is_read_by_the_payload_diff() {
    const BY_PAYLOAD_DIFF: &str = "switchyard_reload_builds_total{how=\"payload_diff\"}";
    const BY_COMPARE: &str = "switchyard_reload_builds_total{how=\"compare\"}";
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    fill_routes(&redis, 1000, "bg{i}.cloud.com", &blue.target());
    redis.cli(&["HSET", "routes", "app.cloud.com", &blue.target()]);
    let proxy = ready_proxy(test_config(&redis.url())).await;
    // A plain write: the event's read keeps its payload.
    redis.cli(&["HSET", "routes", "plain1.cloud.com", &green.target()]);
    assert_eventually!(
        serves(&proxy, "plain1.cloud.com", "green").await,
        "plain write not live"
    );
    let compares = proxy.metric(BY_COMPARE).await;
    let diffs = proxy.metric(BY_PAYLOAD_DIFF).await;
    let controller = Controller::new(&redis).await;
    controller.set("app.cloud.com", &green.target()).await;
    controller.set("logged.cloud.com", &green.target()).await;
    assert_eventually!(
        serves(&proxy, "logged.cloud.com", "green").await,
        "logged write not live"
    );
    // Plain writes: one sets the logged field back to its value in the
    // older payload (the payload diff alone cannot see that change).
    redis.cli(&["HSET", "routes", "app.cloud.com", &blue.target()]);
    assert_eventually!(
        serves(&proxy, "app.cloud.com", "blue").await,
        "a plain write over a logged field not live"
    );
    redis.cli(&["HSET", "routes", "plain2.cloud.com", &green.target()]);
    assert_eventually!(
        serves(&proxy, "plain2.cloud.com", "green").await,
        "plain write not live"
    );
    assert_eq!(served_routes(&proxy).await, hash(&redis));
    assert_eq!(
        proxy.metric(BY_COMPARE).await,
        compares,
        "a read compared every entry"
    );
    assert!(proxy.metric(BY_PAYLOAD_DIFF).await >= diffs + 2.0);
    proxy.shutdown().await;
}

/// The periodic resync of a large dict reads it by `HSCAN` pages, never by
/// one `DUMP` that would block Redis (~30 ms at 100,000 routes); boot
/// still reads it by `DUMP`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_resync_of_a_large_dict_reads_it_by_pages() {
    const PERIODIC_DONE: &str = "switchyard_sync_duration_seconds_count{reason=\"periodic\"}";
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    fill_routes(&redis, 12_000, "h{i}.dict.test", &blue.target());
    assert_eq!(
        redis.cli(&["OBJECT", "ENCODING", "routes"]).trim(),
        "hashtable"
    );
    let mut config = test_config(&redis.url());
    config.sync.resync_interval = Duration::from_millis(300);
    config.sync.tuning.periodic_spacing = 0;
    let proxy = ready_proxy(config).await;
    assert_eq!(redis.calls("dump"), 1, "boot reads by DUMP");
    assert_eventually!(
        proxy.metric(PERIODIC_DONE).await >= 1.0,
        "no periodic resync"
    );
    assert!(redis.calls("hscan") >= 12, "the periodic read did not page");
    assert_eq!(redis.calls("dump"), 1, "the periodic read used DUMP");
    assert!(serves(&proxy, "h11999.dict.test", "blue").await);
    proxy.shutdown().await;
}
