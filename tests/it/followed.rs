//! Followed hashes are values (ARCHITECTURE.md, "Followed hashes"): a
//! second hash with a small table type of its own is followed beside the
//! routes, by the same session, against a real redis-server. The same
//! table type shows that the periodic resync compares Redis with the table
//! as served (drift repaired even when Redis did not change), and that a
//! panic in the sync loop restarts it.

use crate::support::{test_config, RedisServer};
use arc_swap::ArcSwap;
use bytes::Bytes;
use fred::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard::state::{RedisState, SharedState};
use switchyard::sync::changelog::{queue_set, Change};
use switchyard::sync::{self, FollowedHash, HashNames, Home, Table, TableDiff};
use tokio_util::sync::CancellationToken;

/// A table of raw key → value, that panics when it meets the field
/// `panic` (to test supervision), and whose patch has a bug on purpose: a
/// change of the field `drop-me` also loses the field `a` (as the
/// two-spellings bug of issue 27.1 lost a host), to test that the safety
/// net finds what a patch got wrong.
#[derive(Debug, Clone, Default, PartialEq)]
struct Kv(BTreeMap<Bytes, Bytes>);

#[derive(Debug, Default)]
struct KvDiff {
    added: usize,
    removed: usize,
    changed: usize,
}

impl TableDiff for KvDiff {
    fn is_empty(&self) -> bool {
        self.added + self.removed + self.changed == 0
    }
    fn added(&self) -> usize {
        self.added
    }
    fn removed(&self) -> usize {
        self.removed
    }
}

fn diff(old: &Kv, new: &Kv) -> KvDiff {
    let mut d = KvDiff::default();
    for (k, v) in &new.0 {
        match old.0.get(k) {
            None => d.added += 1,
            Some(w) if w != v => d.changed += 1,
            Some(_) => {}
        }
    }
    d.removed = old.0.keys().filter(|k| !new.0.contains_key(*k)).count();
    d
}

impl Table for Kv {
    type Diff = KvDiff;

    fn from_entries<E: AsRef<[u8]>>(entries: &[(E, E)], served: &Self) -> (Self, KvDiff) {
        let table = Kv(entries
            .iter()
            .map(|(f, v)| {
                assert!(f.as_ref() != b"panic", "the test table was asked to panic");
                (
                    Bytes::copy_from_slice(f.as_ref()),
                    Bytes::copy_from_slice(v.as_ref()),
                )
            })
            .collect());
        let d = diff(served, &table);
        (table, d)
    }

    fn patch(&self, changes: &[Change]) -> Option<(Self, KvDiff)> {
        let mut table = self.clone();
        for change in changes {
            assert!(
                &change.field[..] != b"panic",
                "the test table was asked to panic"
            );
            match &change.value {
                Some(value) => {
                    table.0.insert(change.field.clone(), value.clone());
                    if &change.field[..] == b"drop-me" {
                        table.0.remove(&Bytes::from_static(b"a"));
                    }
                }
                None => {
                    table.0.remove(&change.field)?;
                }
            }
        }
        let d = diff(self, &table);
        Some((table, d))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Where the test table is served from; the test reads (and tampers
/// with) it directly.
#[derive(Default)]
struct KvHome {
    table: ArcSwap<Kv>,
    loaded: AtomicBool,
}

#[derive(Clone)]
struct KvHandle(Arc<KvHome>);

impl Home<Kv> for KvHandle {
    fn current(&self) -> Arc<Kv> {
        self.0.table.load_full()
    }
    fn serves_redis(&self) -> bool {
        self.0.loaded.load(Ordering::SeqCst)
    }
    fn loaded(&self) -> bool {
        self.0.loaded.load(Ordering::SeqCst)
    }
    fn install(&self, table: Kv, diff: &KvDiff, _watermark: u64, _reason: &str) -> Arc<Kv> {
        if diff.is_empty() && self.loaded() {
            return self.current();
        }
        let table = Arc::new(table);
        self.0.table.store(table.clone());
        self.0.loaded.store(true, Ordering::SeqCst);
        table
    }
}

impl KvHandle {
    fn get(&self, field: &str) -> Option<String> {
        self.current()
            .0
            .get(field.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// The sync loop (supervised) following `routes` and `extra`.
struct Running {
    state: Arc<SharedState>,
    extra: KvHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(config: switchyard::config::Config) -> Running {
        let state = SharedState::new();
        let extra = KvHandle(Arc::default());
        let stop = CancellationToken::new();
        let hashes: sync::HashesFactory = {
            let (config, state, extra) = (config.sync.clone(), state.clone(), extra.clone());
            Arc::new(move || {
                vec![
                    sync::routes_hash(&config, &state, None),
                    Box::new(FollowedHash::<Kv, _>::new(
                        HashNames::new("extra", 0),
                        extra.clone(),
                        state.clone(),
                        config.tuning,
                        0.5,
                    )),
                ]
            })
        };
        let task = tokio::spawn(sync::supervise(
            config.sync.clone(),
            state.clone(),
            hashes,
            stop.clone(),
        ));
        Running {
            state,
            extra,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("sync did not stop")
            .unwrap();
    }
}

fn config(redis: &RedisServer) -> switchyard::config::Config {
    let mut config = test_config(&redis.url());
    // Read with DUMP whatever the size: the payload diff must not hide
    // drift from a periodic resync.
    config.sync.tuning.dump_threshold = 0;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hash_is_followed_and_readiness_waits_for_every_hash() {
    let redis = RedisServer::start();
    redis.hset("app.cloud.com", "10.0.0.1:80");
    // `extra` cannot be read yet (a string, not a hash).
    redis.cli(&["SET", "extra", "not a hash"]);
    let run = Running::start(config(&redis));
    assert_eventually!(run.state.table().is_loaded(), "routes never loaded");
    assert!(!run.state.is_ready(), "ready before every hash is loaded");
    redis.cli(&["DEL", "extra"]);
    redis.cli(&["HSET", "extra", "a", "1"]);
    assert_eventually!(
        run.state.is_ready() && run.extra.get("a").as_deref() == Some("1"),
        "never ready"
    );

    // Plain writes and logged changes reach it, like the routes.
    redis.cli(&["HSET", "extra", "b", "2"]);
    assert_eventually!(run.extra.get("b").as_deref() == Some("2"), "plain write");
    let by_log = || {
        run.state
            .metrics
            .render()
            .lines()
            .find(|l| l.starts_with("switchyard_reload_builds_total{how=\"log\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = by_log();
    let (conn, ()) =
        sync::redis::connect(&config(&redis).sync, sync::redis::Role::Commands, |_| ())
            .await
            .unwrap();
    let trx = conn.client.multi();
    queue_set(&trx, "extra", "c", "3").await.unwrap();
    let _: fred::types::Value = trx.exec(true).await.unwrap();
    assert_eventually!(run.extra.get("c").as_deref() == Some("3"), "logged change");
    assert!(by_log() > before, "not patched from the log");
    // The routes still follow too.
    redis.hset("app.cloud.com", "10.0.0.2:80");
    assert_eventually!(
        run.state.table().route_value("app.cloud.com") == Some("10.0.0.2:80"),
        "routes stopped following"
    );
    assert_eq!(run.state.status().hashes.len(), 2);
    conn.close();
    run.stop().await;
}

/// Issue 27.2: the safety net compares Redis with the table as served.
/// A patch gets the table wrong (the test table's deliberate bug) while
/// the DUMP payload read with it is right, so the next DUMP payload is
/// identical to it: one periodic resync still repairs the table and
/// counts the drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_resync_repairs_drift_even_when_redis_did_not_change() {
    let redis = RedisServer::start();
    // Past 512 fields: a dict on every server (Redis 6 keeps a smaller
    // hash as a ziplist, which is read with HGETALL, not DUMP).
    let mut fill = String::from("HSET extra a 1 b 2");
    for i in 0..600 {
        fill.push_str(&format!(" f{i} {i}"));
    }
    redis.pipe(&format!("{fill}\n"));
    let mut config = config(&redis);
    config.sync.resync_interval = Duration::from_millis(1500);
    let run = Running::start(config);
    assert_eventually!(run.state.is_ready(), "never ready");
    assert_eq!(run.state.metrics.drift.get(), 0);
    // A plain write: read with DUMP, patched from the payload diff, by
    // the buggy patch. Redis still has `a`; the table lost it.
    redis.cli(&["HSET", "extra", "drop-me", "1"]);
    assert_eventually!(
        run.extra.get("drop-me").is_some() && run.extra.get("a").is_none(),
        "the patch bug did not show"
    );
    assert_eventually!(
        run.extra.get("a").as_deref() == Some("1"),
        "the periodic resync did not repair the drift"
    );
    assert!(run.state.metrics.drift.get() >= 1, "drift not counted");
    run.stop().await;
}

/// Issue 27.3: a panic in the sync loop restarts it (counted, reported),
/// the tables keep serving meanwhile, and it follows again once the cause
/// is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_sync_loop_restarts_it() {
    let redis = RedisServer::start();
    redis.hset("app.cloud.com", "10.0.0.1:80");
    redis.cli(&["HSET", "extra", "a", "1"]);
    let mut config = config(&redis);
    config.sync.tuning.backoff_min = Duration::from_millis(100);
    config.sync.tuning.backoff_max = Duration::from_millis(100);
    let run = Running::start(config);
    assert_eventually!(run.state.is_ready(), "never ready");
    redis.cli(&["HSET", "extra", "panic", "1"]);
    assert_eventually!(
        run.state.metrics.sync_restarts.get() >= 1,
        "the panic did not restart the loop"
    );
    assert!(run.state.status().restarts >= 1);
    // Meanwhile the tables serve what they had.
    assert!(run.state.is_ready());
    assert_eq!(
        run.state.table().route_value("app.cloud.com"),
        Some("10.0.0.1:80")
    );
    redis.cli(&["HDEL", "extra", "panic"]);
    redis.hset("app.cloud.com", "10.0.0.2:80");
    assert_eventually!(
        run.state.table().route_value("app.cloud.com") == Some("10.0.0.2:80")
            && run.state.status().redis == RedisState::Connected,
        "the restarted loop does not follow"
    );
    run.stop().await;
}
