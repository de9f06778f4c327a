//! The blast-radius guard (README.md, "Mass removals are held"), with
//! three replicas: `DEL`, `FLUSHDB`, `RENAME` and a Redis restarted empty
//! are held (every replica keeps serving and says so); a confirmation
//! applies the removal; writing the routes back lifts the hold; a real
//! 10 % bulk removal applies at once.

use crate::support::{test_config, Backend, ProxyHandle, RedisServer};

const ROUTES: usize = 20;

async fn replicas(redis: &RedisServer) -> Vec<ProxyHandle> {
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let mut config = test_config(&redis.url());
        config.sync.max_removal_fraction = 0.5;
        proxies.push(ProxyHandle::start(config).await);
    }
    for proxy in &proxies {
        assert_eventually!(proxy.ready().await, "replica never ready");
    }
    proxies
}

fn fill(redis: &RedisServer, target: &str) {
    let mut lines = String::new();
    for i in 0..ROUTES {
        lines.push_str(&format!("HSET routes app{i}.cloud.com {target}\n"));
    }
    redis.pipe(&lines);
}

async fn serves_all(proxy: &ProxyHandle) -> bool {
    for i in 0..ROUTES {
        if proxy.get(&format!("app{i}.cloud.com"), "/").await.status != 200 {
            return false;
        }
    }
    true
}

async fn readyz(proxy: &ProxyHandle) -> (u16, serde_json::Value) {
    let r = proxy.admin_get("/readyz").await;
    (r.status, r.json())
}

/// Every replica holds: still serving every route, `/readyz` 200 with
/// the numbers, the metric set, the replica status saying so.
async fn assert_held(proxies: &[ProxyHandle], redis: &RedisServer, what: &str) {
    for proxy in proxies {
        assert_eventually!(
            proxy.metric("switchyard_removals_held").await == 1.0,
            "{what}: not held: {}",
            readyz(proxy).await.1
        );
        assert!(serves_all(proxy).await, "{what}: stopped serving");
        let (status, body) = readyz(proxy).await;
        assert_eq!(status, 200, "{what}: {body}");
        let held = &body["held"][0];
        assert_eq!(held["key"], "routes", "{what}: {body}");
        assert_eq!(held["held"]["removed"], ROUTES, "{what}: {body}");
        assert_eq!(held["held"]["serving"], ROUTES, "{what}: {body}");
    }
    // `switchyard status` reads it from the replica registry.
    assert_eventually!(
        {
            let registry = redis.cli(&["HVALS", "routes:replicas"]);
            registry.lines().filter(|l| l.contains("\"held\"")).count() == proxies.len()
                && registry.contains(&format!("\"current\":{ROUTES}"))
        },
        "{what}: the replica registry does not say held: {}",
        redis.cli(&["HVALS", "routes:replicas"])
    );
}

async fn assert_lifted(proxies: &[ProxyHandle], what: &str) {
    for proxy in proxies {
        assert_eventually!(
            proxy.metric("switchyard_removals_held").await == 0.0,
            "{what}: still held"
        );
        assert_eq!(readyz(proxy).await.1["held"], serde_json::json!([]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_is_held_until_confirmed_then_applies_everywhere() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    fill(&redis, &blue.target());
    let proxies = replicas(&redis).await;
    for proxy in &proxies {
        assert_eventually!(serves_all(proxy).await, "not served");
    }
    redis.cli(&["DEL", "routes"]);
    assert_held(&proxies, &redis, "DEL").await;
    for proxy in &proxies {
        assert_eq!(proxy.metric("switchyard_removal_holds_total").await, 1.0);
    }
    // What `switchyard route accept-removal` writes.
    redis.cli(&["SET", "routes:accept-removal", "1", "PX", "60000"]);
    for proxy in &proxies {
        assert_eventually!(
            proxy.get("app0.cloud.com", "/").await.status == 404,
            "the confirmed removal was not applied"
        );
    }
    assert_lifted(&proxies, "confirmed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushdb_and_rename_are_held_and_writing_back_lifts_the_hold() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    fill(&redis, &blue.target());
    let proxies = replicas(&redis).await;
    for proxy in &proxies {
        assert_eventually!(serves_all(proxy).await, "not served");
    }
    // FLUSHDB sends no event: the ping tick's check finds it.
    redis.cli(&["FLUSHDB"]);
    assert_held(&proxies, &redis, "FLUSHDB").await;
    fill(&redis, &blue.target());
    assert_lifted(&proxies, "written back").await;

    redis.cli(&["RENAME", "routes", "routes-old"]);
    assert_held(&proxies, &redis, "RENAME").await;
    redis.cli(&["RENAME", "routes-old", "routes"]);
    assert_lifted(&proxies, "renamed back").await;
    for proxy in &proxies {
        assert!(serves_all(proxy).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_is_held() {
    let mut redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    fill(&redis, &blue.target());
    let proxies = replicas(&redis).await;
    for proxy in &proxies {
        assert_eventually!(serves_all(proxy).await, "not served");
    }
    redis.kill();
    redis.spawn();
    assert_held(&proxies, &redis, "restart").await;
    for proxy in &proxies {
        assert_eventually!(
            readyz(proxy).await.1["redis"] == "connected",
            "not reconnected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_bulk_removal_of_ten_percent_applies() {
    let redis = RedisServer::start();
    let blue = Backend::echo("blue").await;
    fill(&redis, &blue.target());
    let proxies = replicas(&redis).await;
    for proxy in &proxies {
        assert_eventually!(serves_all(proxy).await, "not served");
    }
    // 2 of 20 routes, in one command.
    redis.cli(&["HDEL", "routes", "app0.cloud.com", "app1.cloud.com"]);
    for proxy in &proxies {
        assert_eventually!(
            proxy.get("app1.cloud.com", "/").await.status == 404,
            "the 10 % removal was not applied"
        );
        assert_eq!(proxy.get("app2.cloud.com", "/").await.status, 200);
        assert_eq!(proxy.metric("switchyard_removals_held").await, 0.0);
    }
}
