//! Shared reads (`sync::shared`): for a large hash one replica reads after
//! a change and publishes the delta; the others apply it. Each test starts
//! its own redis-server and real in-process proxies (and, for the log
//! check, the real binary).

use crate::support::*;
use bytes::Bytes;
use std::time::Duration;
use switchyard::config::Config;

/// Routes in the hash, and the (lowered) threshold above which reads are
/// shared: 2,000 routes are a hashtable in Redis (above its listpack
/// limit), read with DUMP.
const ROUTES: usize = 2_000;
const THRESHOLD: usize = 1_000;

const APPLIED: &str = "switchyard_shared_deltas_applied_total";
const PUBLISHED: &str = "switchyard_shared_deltas_published_total";
const DEADLINE: &str = "switchyard_shared_own_reads_total{reason=\"deadline\"}";
const MISMATCH: &str = "switchyard_shared_own_reads_total{reason=\"mismatch\"}";
const READ_YOURSELVES: &str = "switchyard_shared_own_reads_total{reason=\"read_yourselves\"}";

fn shared_config(redis: &RedisServer) -> Config {
    let mut config = test_config(&redis.url());
    config.sync.shared_read_threshold = THRESHOLD;
    config
}

/// `ROUTES` hosts `h<i>.big.test`, all on `target`, in one HSET.
fn fill(redis: &RedisServer, target: &str) {
    let mut command = String::from("HSET routes");
    for i in 0..ROUTES {
        command.push_str(&format!(" h{i}.big.test {target}"));
    }
    command.push('\n');
    redis.pipe(&command);
}

fn dumps(redis: &RedisServer) -> u64 {
    redis.command_calls().get("dump").copied().unwrap_or(0)
}

async fn serves(proxy: &ProxyHandle, host: &str, backend: &str) -> bool {
    proxy.get(host, "/").await.backend().as_deref() == Some(backend)
}

async fn all_serve(proxies: &[&ProxyHandle], host: &str, backend: &str) -> bool {
    for proxy in proxies {
        if !serves(proxy, host, backend).await {
            return false;
        }
    }
    true
}

async fn all_404(proxies: &[&ProxyHandle], host: &str) -> bool {
    for proxy in proxies {
        if proxy.get(host, "/").await.status != 404 {
            return false;
        }
    }
    true
}

/// `/readyz`'s `shared_reads`: role, reader, reason.
async fn shared_reads(proxy: &ProxyHandle) -> serde_json::Value {
    proxy.admin_get("/readyz").await.json()["shared_reads"].clone()
}

async fn role(proxy: &ProxyHandle) -> String {
    shared_reads(proxy).await["role"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The index of the one reader when every other replica follows it (by id).
fn the_reader(seen: &[serde_json::Value], ids: &[String]) -> Option<usize> {
    let readers: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i]["role"] == "reader")
        .collect();
    match readers[..] {
        [r] if (0..seen.len())
            .all(|i| i == r || (seen[i]["role"] == "follower" && seen[i]["reader"] == ids[r])) =>
        {
            Some(r)
        }
        _ => None,
    }
}

/// Waits until exactly one of `proxies` is the reader and every other
/// follows it; returns the reader's index.
async fn settled(proxies: &[&ProxyHandle], ids: &[String]) -> usize {
    let mut seen = Vec::new();
    assert_eventually!(
        {
            seen.clear();
            for proxy in proxies {
                seen.push(shared_reads(proxy).await);
            }
            the_reader(&seen, ids).is_some()
        },
        "roles never settled: {seen:?}"
    );
    the_reader(&seen, ids).unwrap()
}

async fn ready(config: Config) -> ProxyHandle {
    let proxy = start_proxy_with(config).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
    proxy
}

/// `n` replicas with shared reads on, each config adjusted by `tweak`
/// first; their replica ids and handles, in start order.
async fn replicas(
    redis: &RedisServer,
    n: usize,
    tweak: impl Fn(&mut Config),
) -> (Vec<String>, Vec<ProxyHandle>) {
    let mut ids = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..n {
        let mut config = shared_config(redis);
        tweak(&mut config);
        ids.push(config.sync.replica_id.clone());
        proxies.push(ready(config).await);
    }
    (ids, proxies)
}

/// The lease key's value.
fn lease_holder(redis: &RedisServer) -> String {
    redis.cli(&["GET", "routes:reader"]).trim().to_owned()
}

// ---------------------------------------------------------------------------

/// Three replicas over a large hash: a change, a new host and an HDEL reach
/// all three, Redis serves one DUMP per change in all (not one per
/// replica), and the two followers apply the reader's deltas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_read_per_change() {
    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    fill(&redis, &blue.target());
    let (ids, proxies) = replicas(&redis, 3, |c| {
        // A follower that falls back would show up as a DUMP too: give the
        // reader's delta all the time a slow machine might need, so that
        // only a real failure to share can read.
        c.sync.shared_read_wait_min = patience();
        c.sync.shared_read_wait_max = patience();
    })
    .await;
    let all: Vec<&ProxyHandle> = proxies.iter().collect();
    let r = settled(&all, &ids).await;
    assert_eq!(lease_holder(&redis), ids[r]);
    let followers: Vec<&ProxyHandle> = (0..3).filter(|&i| i != r).map(|i| &proxies[i]).collect();

    // One change first: from here on, every replica's table came from a
    // read or delta after the roles settled.
    redis.hset("h0.big.test", &green.target());
    assert_eventually!(
        all_serve(&all, "h0.big.test", "green").await,
        "first change"
    );

    let before = dumps(&redis);
    let mut applied = Vec::new();
    for f in &followers {
        applied.push(f.metric(APPLIED).await);
    }
    let published = proxies[r].metric(PUBLISHED).await;

    redis.hset("h1.big.test", &green.target());
    assert_eventually!(all_serve(&all, "h1.big.test", "green").await, "change");
    redis.hset("new.big.test", &green.target());
    assert_eventually!(all_serve(&all, "new.big.test", "green").await, "new host");
    redis.hdel("h2.big.test");
    assert_eventually!(all_404(&all, "h2.big.test").await, "hdel");
    assert!(all_serve(&all, "h3.big.test", "blue").await);

    let reads = dumps(&redis) - before;
    eprintln!("3 changes, 3 replicas: {reads} DUMPs");
    assert_eq!(reads, 3, "one DUMP per change in all, not one per replica");
    assert!(proxies[r].metric(PUBLISHED).await >= published + 3.0);
    for (f, before) in followers.iter().zip(applied) {
        assert!(f.metric(APPLIED).await >= before + 3.0);
        assert_eq!(f.metric(DEADLINE).await, 0.0);
        assert_eq!(f.metric(MISMATCH).await, 0.0);
        assert_eq!(
            f.metric("switchyard_route_table_routes").await,
            ROUTES as f64
        );
    }
    // The replica says who reads.
    let readyz = proxies[r].admin_get("/readyz").await.json();
    assert_eq!(readyz["shared_reads"]["role"], "reader", "{readyz}");
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

/// The reader stops: it gives the lease back, another replica takes it and
/// publishes, and changes keep reaching the replicas that remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_reader_stops_another_takes_over() {
    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    fill(&redis, &blue.target());
    let mut ids = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let config = shared_config(&redis);
        ids.push(config.sync.replica_id.clone());
        proxies.push(Some(ready(config).await));
    }
    let all: Vec<&ProxyHandle> = proxies.iter().flatten().collect();
    let r = settled(&all, &ids).await;
    proxies[r].take().unwrap().shutdown().await;
    let ids: Vec<String> = (0..3).filter(|&i| i != r).map(|i| ids[i].clone()).collect();
    let rest: Vec<&ProxyHandle> = proxies.iter().flatten().collect();

    // Changes reach the two that remain, whoever reads for them.
    redis.hset("h1.big.test", &green.target());
    assert_eventually!(
        all_serve(&rest, "h1.big.test", "green").await,
        "change after the reader stopped"
    );
    let n = settled(&rest, &ids).await;
    assert_eq!(lease_holder(&redis), ids[n], "the new reader holds the key");
    let f = 1 - n;
    let published = rest[n].metric(PUBLISHED).await;
    let applied = rest[f].metric(APPLIED).await;
    redis.hset("h2.big.test", &green.target());
    assert_eventually!(
        all_serve(&rest, "h2.big.test", "green").await,
        "change under the new reader"
    );
    assert_eventually!(
        rest[n].metric(PUBLISHED).await > published && rest[f].metric(APPLIED).await > applied,
        "the new reader's delta was not published and applied"
    );
    drop(rest);
    for proxy in proxies.into_iter().flatten() {
        proxy.shutdown().await;
    }
}

/// A reader that died holding the lease (the key names a replica that no
/// longer runs): changes still arrive, through each follower's own read
/// once its deadline passes; when the lease is gone a live replica takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_reader_costs_a_deadline_until_its_lease_goes() {
    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    fill(&redis, &blue.target());
    let (ids, proxies) = replicas(&redis, 2, |_| {}).await;
    let all: Vec<&ProxyHandle> = proxies.iter().collect();
    settled(&all, &ids).await;

    // The lease now names a ghost: the reader's renewal sees it and steps
    // down (it never overwrites another holder).
    for _ in 0..2 {
        // The renewal that saw the ghost also set its expiry to one lease
        // term (and a replica may have taken the key meanwhile): set it
        // again, and see every replica follow it, before any change.
        redis.cli(&["SET", "routes:reader", "ghost", "PX", "60000"]);
        assert_eventually!(
            {
                let mut ghosted = true;
                for proxy in &all {
                    let shared = shared_reads(proxy).await;
                    ghosted &= shared["role"] == "follower" && shared["reader"] == "ghost";
                }
                ghosted
            },
            "the replicas did not follow the ghost"
        );
    }
    redis.hset("h1.big.test", &green.target());
    assert_eventually!(
        all_serve(&all, "h1.big.test", "green").await,
        "change under a dead reader"
    );
    for proxy in &all {
        assert_eventually!(
            proxy.metric(DEADLINE).await >= 1.0,
            "no deadline read counted"
        );
        assert_eq!(role(proxy).await, "follower");
    }

    // The lease goes (expiry, here a DEL): a live replica takes it.
    redis.cli(&["DEL", "routes:reader"]);
    let r = settled(&all, &ids).await;
    assert_eq!(lease_holder(&redis), ids[r]);
    let published = all[r].metric(PUBLISHED).await;
    redis.hset("h2.big.test", &green.target());
    assert_eventually!(
        all_serve(&all, "h2.big.test", "green").await,
        "change under the new reader"
    );
    assert_eventually!(
        all[r].metric(PUBLISHED).await > published,
        "the new reader published nothing"
    );
    drop(all);
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

/// Followers whose table differs from the reader's (here: they applied a
/// delta no reader sent, naming a route Redis does not have) get a delta
/// that does not start from their content, read the hash themselves, and
/// converge on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_table_differs_reads_itself_and_converges() {
    use fred::prelude::ClientLike;
    use switchyard::sync::redis::{connect, publish, Role};
    use switchyard::sync::shared::{self, Change, ChangeSet, Delta, ReadId};

    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    fill(&redis, &blue.target());
    let (ids, proxies) = replicas(&redis, 3, |_| {}).await;
    let all: Vec<&ProxyHandle> = proxies.iter().collect();
    let r = settled(&all, &ids).await;
    let followers: Vec<&ProxyHandle> = (0..3).filter(|&i| i != r).map(|i| &proxies[i]).collect();

    // A delta from the content every replica holds to one Redis never had.
    let (conn, ()) = connect(&test_config(&redis.url()).sync, Role::Commands, |_| ())
        .await
        .expect("connect");
    let payload: fred::types::Value = conn
        .client
        .custom(
            fred::types::CustomCommand::new_static("DUMP", None, false),
            vec!["routes"],
        )
        .await
        .unwrap();
    let crc = shared::payload_crc(payload.as_bytes().unwrap()).unwrap();
    let now = switchyard::sync::redis::server_time(&conn.client)
        .await
        .unwrap();
    let bogus = Change::Delta(Delta {
        read: ReadId {
            reader: 0xbad,
            seq: 1,
        },
        base_crc: crc,
        new_crc: !crc,
        watermark: now,
        read_micros: 1_000,
        changes: ChangeSet {
            upserts: vec![(
                Bytes::from_static(b"phantom.big.test"),
                Bytes::from(green.target()),
            )],
            removed: Vec::new(),
        },
    });
    publish(
        &conn.client,
        "routes:changes",
        Bytes::from(shared::encode(&bogus)),
    )
    .await
    .unwrap();
    assert_eventually!(
        all_serve(&followers, "phantom.big.test", "green").await,
        "the followers did not apply the delta"
    );
    assert_eq!(
        proxies[r].get("phantom.big.test", "/").await.status,
        404,
        "the reader applies no one's deltas"
    );

    // The next real change: the reader's delta starts from the real
    // content, not theirs.
    redis.hset("h1.big.test", &green.target());
    assert_eventually!(all_serve(&all, "h1.big.test", "green").await, "change");
    assert_eventually!(
        all_404(&all, "phantom.big.test").await,
        "the followers did not converge on Redis"
    );
    for f in &followers {
        assert!(f.metric(MISMATCH).await >= 1.0, "no mismatch read counted");
    }
    // And they are back in step: the change after is a delta again.
    let applied: Vec<f64> = {
        let mut v = Vec::new();
        for f in &followers {
            v.push(f.metric(APPLIED).await);
        }
        v
    };
    redis.hset("h2.big.test", &green.target());
    assert_eventually!(all_serve(&all, "h2.big.test", "green").await, "change");
    for (f, before) in followers.iter().zip(applied) {
        assert_eventually!(
            f.metric(APPLIED).await > before,
            "no delta applied after converging"
        );
    }
    conn.close();
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// Without the rights: exactly as before, one warning.
// ---------------------------------------------------------------------------

/// The binary as a child process, killed on drop, its stdout lines on a
/// channel.
struct Switchyard {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    admin: std::net::SocketAddr,
    listen: std::net::SocketAddr,
}

impl Switchyard {
    fn start(url: &str, id: &str) -> Switchyard {
        use std::io::BufRead;
        let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["--listen", &listen.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--redis-url", url, "--replica-id", id])
            .args(["--shared-read-threshold", &THRESHOLD.to_string()])
            .args(["--log-format", "json", "--access-log", "false"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // Anything on stderr (a panic) becomes an ERROR line of its own.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let line = serde_json::json!({"level": "ERROR", "stderr": line}).to_string();
                if err_tx.send(line).is_err() {
                    return;
                }
            }
        });
        Switchyard {
            child,
            lines,
            admin,
            listen,
        }
    }

    /// Whether `host` is answered by `backend`; a transport error is a
    /// no, unless the process has exited.
    async fn serves(&mut self, host: &str, backend: &str) -> bool {
        let request = crate::support::client::try_get(self.listen, host, "/");
        match tokio::time::timeout(Duration::from_secs(5), request).await {
            Ok(Ok(r)) => r.backend().as_deref() == Some(backend),
            _ => {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("the binary exited ({status}): {:#?}", self.logged());
                }
                false
            }
        }
    }

    /// `/readyz` as JSON; Null until it answers 200 (the process binds its
    /// admin port a moment after it starts: a refused connection is a "not
    /// yet", not a failure).
    async fn readyz(&self) -> serde_json::Value {
        match tokio::time::timeout(
            Duration::from_secs(1),
            crate::support::client::try_get(self.admin, "localhost", "/readyz"),
        )
        .await
        {
            Ok(Ok(r)) if r.status == 200 => r.json(),
            _ => serde_json::Value::Null,
        }
    }

    /// Every line logged so far, as JSON.
    fn logged(&self) -> Vec<serde_json::Value> {
        self.lines
            .try_iter()
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user with every right shared reads need but PUBLISH: the replica that
/// takes the lease finds out at its first read, says so once, gives the
/// lease back, and from then on every replica reads for itself; changes
/// propagate as without shared reads, and nothing else complains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_publish_rights_every_replica_reads_itself_after_one_warning() {
    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    fill(&redis, &blue.target());
    let acl = "on >pw resetkeys ~routes ~routes:replicas ~routes:reader resetchannels \
               &__keyspace@0__:routes &__keyspace@0__:routes:reads &routes:changes &routes:replicas \
               -@all +select +ping +subscribe +config|get +config|set +multi +exec +time \
               +hgetall +dump +hlen +hscan +set +getex +hset +hdel +client|id +info";
    let mut args = vec!["ACL", "SETUSER", "nopub"];
    args.extend(acl.split_whitespace());
    assert_eq!(redis.cli(&args).trim(), "OK");
    assert_eq!(redis.cli(&["ACL", "LOG", "RESET"]).trim(), "OK");
    let url = format!("redis://nopub:pw@127.0.0.1:{}/0", redis.port);

    let mut binary = Switchyard::start(&url, "binary");
    let mut config = test_config(&url);
    config.sync.shared_read_threshold = THRESHOLD;
    let proxy = ready(config).await;
    assert_eventually!(binary.readyz().await["ready"] == true, "binary never ready");

    // Whoever takes the lease fails at its first marked read; the other
    // then takes it and fails too. Changes propagate all along.
    let mut i = 0;
    assert_eventually!(
        {
            i += 1;
            let host = format!("h{i}.big.test");
            redis.hset(&host, &green.target());
            let mut live = false;
            let deadline = tokio::time::Instant::now() + patience();
            while !live && tokio::time::Instant::now() < deadline {
                live = serves(&proxy, &host, "green").await && binary.serves(&host, "green").await;
            }
            assert!(live, "change {i} did not propagate");
            binary.readyz().await["shared_reads"]["role"] == "off" && role(&proxy).await == "off"
        },
        "shared reads were not turned off on both replicas"
    );
    let details = shared_reads(&proxy).await;
    assert!(
        details["reason"]
            .as_str()
            .is_some_and(|r| r.contains("publish") || r.contains("PUBLISH")),
        "{details}"
    );

    // From now on: exactly as without shared reads, one DUMP per replica
    // per change, no waiting.
    let before = dumps(&redis);
    for j in 0..3 {
        let host = format!("h{}.big.test", 1000 + j);
        redis.hset(&host, &green.target());
        assert_eventually!(
            serves(&proxy, &host, "green").await && binary.serves(&host, "green").await,
            "change {j}"
        );
    }
    assert_eq!(dumps(&redis) - before, 6, "two replicas, three changes");
    assert_eq!(proxy.metric(DEADLINE).await, 0.0);
    assert_eq!(proxy.metric(PUBLISHED).await, 0.0);

    // Redis refused PUBLISH and nothing else.
    let log = redis.cli(&["ACL", "LOG"]);
    let objects: Vec<&str> = log
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "object")
        .map(|w| w[1])
        .collect();
    assert!(!objects.is_empty(), "no denial logged: {log}");
    assert!(objects.iter().all(|o| *o == "publish"), "{objects:?}");

    // The binary said so once, at WARN, and logged no other warning or error.
    let logged = binary.logged();
    let loud: Vec<&serde_json::Value> = logged
        .iter()
        .filter(|l| matches!(l["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    assert_eq!(loud.len(), 1, "{loud:#?}");
    assert!(
        loud[0].to_string().contains("shared reads off"),
        "{:#?}",
        loud[0]
    );
    proxy.shutdown().await;
}

/// The ACL line the README recommends, shared-reads rights included.
const ACL_WITH_SHARED_READS: &str = "on >pw resetkeys ~routes ~routes:replicas ~routes:reader \
     resetchannels &__keyspace@0__:routes &__keyspace@0__:routes:reads &routes:changes &routes:replicas \
     -@all +select +ping +subscribe +publish +config|get +config|set +multi +exec +time \
     +hgetall +dump +hlen +hscan +set +getex +hset +hdel +client|id +info";

/// With the README's ACL line, reads are shared and Redis refuses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_line_shares_reads_without_a_denial() {
    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    fill(&redis, &blue.target());
    let mut args = vec!["ACL", "SETUSER", "switchyard"];
    args.extend(ACL_WITH_SHARED_READS.split_whitespace());
    assert_eq!(redis.cli(&args).trim(), "OK");
    assert_eq!(redis.cli(&["ACL", "LOG", "RESET"]).trim(), "OK");
    let url = format!("redis://switchyard:pw@127.0.0.1:{}/0", redis.port);
    let mut ids = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let mut config = test_config(&url);
        config.sync.shared_read_threshold = THRESHOLD;
        ids.push(config.sync.replica_id.clone());
        proxies.push(ready(config).await);
    }
    let all: Vec<&ProxyHandle> = proxies.iter().collect();
    let r = settled(&all, &ids).await;
    let applied = all[1 - r].metric(APPLIED).await;
    redis.hset("h1.big.test", &green.target());
    assert_eventually!(all_serve(&all, "h1.big.test", "green").await, "change");
    assert_eventually!(
        all[1 - r].metric(APPLIED).await > applied,
        "the follower applied no delta"
    );
    // Every shared-reads command ran, the reader's lease renewal too.
    for command in ["publish", "getex", "subscribe", "set"] {
        assert_eventually!(
            redis.command_calls().contains_key(command),
            "{command} never ran: {:?}",
            redis.command_calls()
        );
    }
    drop(all);
    for proxy in proxies {
        proxy.shutdown().await;
    }
    let log = redis.cli(&["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "denied: {log}");
}

/// A table with an invalid entry takes no delta (the full build owns the
/// rules for those), so a follower holding one reads at once, as without
/// shared reads, instead of waiting for a delta it could not apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_an_invalid_entry_reads_at_once() {
    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    fill(&redis, &blue.target());
    redis.hset("bad.big.test", "not a route");
    let (ids, proxies) = replicas(&redis, 2, |c| {
        // Longer than the test's patience: a follower left waiting for a
        // delta would fail here, one that waited for "read yourselves"
        // shows in its counter below.
        c.sync.shared_read_wait_min = patience() * 2;
        c.sync.shared_read_wait_max = patience() * 2;
    })
    .await;
    let all: Vec<&ProxyHandle> = proxies.iter().collect();
    let r = settled(&all, &ids).await;
    let follower = all[1 - r];
    assert_eq!(follower.get("bad.big.test", "/").await.status, 502);
    let before = dumps(&redis);
    redis.hset("h1.big.test", &green.target());
    assert_eventually!(all_serve(&all, "h1.big.test", "green").await, "change");
    assert_eq!(dumps(&redis) - before, 2, "each replica read");
    assert_eq!(follower.metric(APPLIED).await, 0.0);
    assert_eq!(follower.metric(DEADLINE).await, 0.0);
    assert_eq!(follower.metric(MISMATCH).await, 0.0);
    // Nor did it wait for the reader to say "read yourselves" (which the
    // reader does: it has no delta for a table with an invalid entry).
    assert_eq!(follower.metric(READ_YOURSELVES).await, 0.0);
    assert!(
        all[r]
            .metric("switchyard_shared_read_yourselves_published_total")
            .await
            >= 1.0
    );
    drop(all);
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

/// The periodic resync is the safety net; with shared reads the reader's
/// own periodic read (a delta, usually empty, checked by content identity)
/// covers the followers: they skip theirs while a reader's read confirmed
/// their table within the interval, instead of each asking Redis for a
/// full DUMP that would delay the reader's next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_leave_the_periodic_resync_to_the_reader() {
    const PERIODIC: &str = "switchyard_resyncs_total{reason=\"periodic\"}";
    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    fill(&redis, &blue.target());
    let (ids, proxies) = replicas(&redis, 3, |c| {
        c.sync.resync_interval = Duration::from_millis(700);
        c.sync.shared_read_wait_min = patience();
        c.sync.shared_read_wait_max = patience();
    })
    .await;
    let all: Vec<&ProxyHandle> = proxies.iter().collect();
    let r = settled(&all, &ids).await;
    redis.hset("h0.big.test", &green.target());
    assert_eventually!(all_serve(&all, "h0.big.test", "green").await, "change");

    let before = dumps(&redis);
    let mut periodic = Vec::new();
    for proxy in &proxies {
        periodic.push(proxy.metric(PERIODIC).await);
    }
    assert_eventually!(
        proxies[r].metric(PERIODIC).await >= periodic[r] + 5.0,
        "the reader made no periodic reads"
    );
    let reader_reads = proxies[r].metric(PERIODIC).await - periodic[r];
    let reads = dumps(&redis) - before;
    eprintln!("{reader_reads} periodic reads of the reader, {reads} DUMPs in all");
    for i in (0..3).filter(|&i| i != r) {
        let own = proxies[i].metric(PERIODIC).await - periodic[i];
        // One may slip in where the follower's period ends just before
        // the reader's periodic delta arrives.
        assert!(own <= 1.0, "follower {i} made {own} periodic reads");
        assert!(proxies[i].metric(APPLIED).await > 0.0);
    }
    assert!(
        reads as f64 <= reader_reads + 3.0,
        "{reads} DUMPs for {reader_reads} periodic reads of the reader"
    );
    assert!(all_serve(&all, "h1.big.test", "blue").await);
    for proxy in proxies {
        proxy.shutdown().await;
    }
}
