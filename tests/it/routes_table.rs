//! The route table through the real proxy and a real Redis: two spellings
//! of one host (issue 27.1), the default route (`*`), and a booting replica
//! that takes a host's last valid route from its snapshot (28.10).

use crate::support::*;
use std::path::{Path, PathBuf};

async fn served_by(proxy: &ProxyHandle, host: &str) -> (u16, Option<String>) {
    let r = proxy.get(host, "/").await;
    (r.status, r.backend())
}

/// More routes than Redis keeps in a listpack by default, so the proxy
/// reads the hash with `DUMP` and patches its table from the difference.
fn fill(redis: &RedisServer, n: usize, target: &str) {
    let lines: String = (0..n)
        .map(|i| format!("HSET routes h{i}.fill.test {target}\n"))
        .collect();
    redis.pipe(&lines);
}

/// The command sequence, and its variants: the second spelling of
/// a host is deleted while the first still names it; the host must keep
/// being routed through the first (it answered 404 until a restart).
async fn two_spellings_keep_the_host_routed(redis: &RedisServer) {
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    let other = Backend::echo("other").await;
    fill(redis, 600, &other.target());
    let proxy = ProxyHandle::start(test_config(&redis.url())).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
    for (spelling, normal, host) in [
        ("App.example.com", "app.example.com", "app.example.com"),
        ("app.example.com.", "app.example.com", "app.example.com"),
        ("app.example.com:8080", "app.example.com", "app.example.com"),
        (
            "*.Wild.example.com",
            "*.wild.example.com",
            "x.wild.example.com",
        ),
    ] {
        redis.hset(spelling, &blue.target());
        assert_eventually!(
            served_by(&proxy, host).await == (200, Some("blue".into())),
            "{spelling}: first spelling not served"
        );
        redis.hset(normal, &green.target());
        assert_eventually!(
            served_by(&proxy, host).await == (200, Some("green".into())),
            "{spelling}: the normal spelling wins"
        );
        redis.hdel(normal);
        assert_eventually!(
            served_by(&proxy, host).await == (200, Some("blue".into())),
            "{spelling}: after HDEL {normal}, {spelling} still names the host: {:?}",
            served_by(&proxy, host).await
        );
        // A later, unrelated change does not lose it either.
        redis.hset("h0.fill.test", &green.target());
        assert_eventually!(
            served_by(&proxy, "h0.fill.test").await.1.as_deref() == Some("green"),
            "unrelated change"
        );
        assert_eq!(
            served_by(&proxy, host).await,
            (200, Some("blue".into())),
            "{spelling}"
        );
        redis.hdel(spelling);
        assert_eventually!(
            served_by(&proxy, host).await.0 == 404,
            "{spelling}: gone once no field names it"
        );
        redis.hset("h0.fill.test", &other.target());
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spellings_of_a_host_in_a_large_dict_hash() {
    let redis = RedisServer::start();
    two_spellings_keep_the_host_routed(&redis).await;
    assert_eq!(
        redis.cli(&["OBJECT", "ENCODING", "routes"]).trim(),
        "hashtable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spellings_of_a_host_in_a_large_listpack_hash() {
    let redis = RedisServer::builder()
        .args(["--hash-max-listpack-entries", "4096"])
        .start();
    two_spellings_keep_the_host_routed(&redis).await;
    assert_eq!(
        redis.cli(&["OBJECT", "ENCODING", "routes"]).trim(),
        "listpack"
    );
}

/// `*` answers for every host nothing else names, below every wildcard;
/// it shows in the admin view like any route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_route_serves_hosts_without_a_route() {
    let redis = RedisServer::start();
    let fallback = Backend::echo("fallback").await;
    let wild = Backend::echo("wild").await;
    let app = Backend::echo("app").await;
    redis.hset("app.cloud.test", &app.target());
    redis.hset("*.cloud.test", &wild.target());
    let proxy = ProxyHandle::start(test_config(&redis.url())).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
    assert_eq!(served_by(&proxy, "nobody.org").await.0, 404);

    redis.hset("*", &fallback.target());
    assert_eventually!(
        served_by(&proxy, "nobody.org").await == (200, Some("fallback".into())),
        "the default route"
    );
    assert_eq!(
        served_by(&proxy, "localhost").await.1.as_deref(),
        Some("fallback")
    );
    assert_eq!(
        served_by(&proxy, "x.cloud.test").await.1.as_deref(),
        Some("wild")
    );
    assert_eq!(
        served_by(&proxy, "app.cloud.test").await.1.as_deref(),
        Some("app")
    );
    let routes = proxy.routes().await;
    assert_eq!(
        routes["routes"]["*"]["value"],
        fallback.target(),
        "{routes}"
    );

    // An invalid default answers 502 (the previous one keeps serving while
    // there was one), deleting it gives 404 back.
    redis.hset("*", "nonsense");
    assert_eventually!(
        proxy.routes().await["invalid"][0]["field"] == "*",
        "invalid default not reported"
    );
    assert_eq!(
        served_by(&proxy, "nobody.org").await.1.as_deref(),
        Some("fallback")
    );
    redis.hdel("*");
    assert_eventually!(
        served_by(&proxy, "nobody.org").await.0 == 404,
        "default removed"
    );
    proxy.shutdown().await;
}

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-routes-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the snapshot says `host`'s value (or, with `last_valid`, its last
/// valid value) is, if it says one.
fn in_snapshot(path: &Path, host: &str, last_valid: bool) -> Option<String> {
    let snapshot = switchyard::snapshot::read(path).ok()??;
    let image = snapshot.image("routes")?;
    let list = if last_valid {
        &image.last_valid
    } else {
        &image.entries
    };
    list.iter()
        .find(|(field, _)| &field[..] == host.as_bytes())
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
}

/// Issue 28.10: a host's value turns invalid; the replica running keeps
/// serving its last valid route. A replica started now, with its snapshot,
/// serves that route too rather than 502 (and reports the invalid value);
/// one started without a snapshot has nothing better than 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booting_replica_takes_the_last_valid_route_from_its_snapshot() {
    let dir = TempDir::new("last-valid");
    let snapshot = dir.path().join("routes.snap");
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    redis.hset("keep.test", &blue.target());
    redis.hset("other.test", &blue.target());

    let mut config = test_config(&redis.url());
    config.sync.snapshot_file = Some(snapshot.clone());
    let running = ProxyHandle::start(config.clone()).await;
    assert_eventually!(running.ready().await, "first replica never became ready");
    redis.hset("keep.test", "10.0.0.1:not-a-port");
    assert_eventually!(
        in_snapshot(&snapshot, "keep.test", true) == Some(blue.target()),
        "the snapshot does not carry the last valid value"
    );
    assert_eq!(
        served_by(&running, "keep.test").await.1.as_deref(),
        Some("blue")
    );
    running.shutdown().await;

    // The replica comes back while the value is still invalid.
    let restarted = ProxyHandle::start(config.clone()).await;
    assert_eventually!(
        restarted.admin_get("/readyz").await.json()["source"] == "redis",
        "restarted replica never loaded from Redis"
    );
    assert_eq!(
        served_by(&restarted, "keep.test").await,
        (200, Some("blue".into())),
        "a booting replica answered what the running ones did not"
    );
    let invalid = &restarted.routes().await["invalid"];
    assert_eq!(invalid[0]["field"], "keep.test", "{invalid}");
    assert_eq!(invalid[0]["serving_previous"], true, "{invalid}");
    // Fixed in Redis: the new value serves.
    let green = Backend::echo("green").await;
    redis.hset("keep.test", &green.target());
    assert_eventually!(
        served_by(&restarted, "keep.test").await.1.as_deref() == Some("green"),
        "fixed value not served"
    );
    assert_eventually!(
        in_snapshot(&snapshot, "keep.test", false) == Some(green.target()),
        "snapshot not rewritten"
    );
    restarted.shutdown().await;

    // A replica that saw the host valid, was down while it turned invalid,
    // and boots now: its snapshot holds the value as valid.
    redis.hset("keep.test", "still:wrong");
    let booted = ProxyHandle::start(config).await;
    assert_eventually!(
        booted.admin_get("/readyz").await.json()["source"] == "redis",
        "replica never loaded from Redis"
    );
    assert_eq!(
        served_by(&booted, "keep.test").await.1.as_deref(),
        Some("green")
    );
    booted.shutdown().await;

    // Without a snapshot there is no last valid route to take.
    let fresh = ProxyHandle::start(test_config(&redis.url())).await;
    assert_eventually!(fresh.ready().await, "fresh replica never became ready");
    assert_eq!(served_by(&fresh, "keep.test").await.0, 502);
    assert_eq!(
        served_by(&fresh, "other.test").await.1.as_deref(),
        Some("blue")
    );
    fresh.shutdown().await;
}

/// Issue 27.4: a damaged snapshot never leaves a replica booting without
/// Redis with nothing, silently: it serves the previous version of the
/// file and says why in `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_boots_from_its_previous_version_and_says_so() {
    let dir = TempDir::new("damaged");
    let snapshot = dir.path().join("routes.snap");
    let mut redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    let green = Backend::echo("green").await;
    redis.hset("a.snap.test", &blue.target());
    let mut config = test_config(&redis.url());
    config.sync.snapshot_file = Some(snapshot.clone());
    let proxy = ProxyHandle::start(config.clone()).await;
    assert_eventually!(
        in_snapshot(&snapshot, "a.snap.test", false) == Some(blue.target()),
        "snapshot not written"
    );
    redis.hset("a.snap.test", &green.target());
    assert_eventually!(
        in_snapshot(&snapshot, "a.snap.test", false) == Some(green.target()),
        "snapshot not rewritten"
    );
    proxy.shutdown().await;
    let previous = switchyard::snapshot::previous_path(&snapshot);
    assert_eq!(
        in_snapshot(&previous, "a.snap.test", false),
        Some(blue.target())
    );

    // The newest file is cut short (a full disk, say), and Redis is down.
    let bytes = std::fs::read(&snapshot).unwrap();
    std::fs::write(&snapshot, &bytes[..bytes.len() / 2]).unwrap();
    redis.kill();
    let proxy = ProxyHandle::start(config).await;
    assert_eventually!(proxy.ready().await, "not ready from the previous snapshot");
    let body = proxy.admin_get("/readyz").await.json();
    assert_eq!(body["source"], "snapshot", "{body}");
    let error = body["snapshot_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("corrupt snapshot") && error.contains("previous version"),
        "{body}"
    );
    assert_eq!(
        served_by(&proxy, "a.snap.test").await.1.as_deref(),
        Some("blue")
    );
    proxy.shutdown().await;
}
