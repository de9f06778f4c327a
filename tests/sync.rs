//! DESIGN 3: the table follows the Redis hash. Each test starts its own
//! redis-server on a free port, its own backends and its own proxy.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_present_at_boot_is_served_and_changes_follow() {
    let redis = RedisServer::start();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    redis.hset("app1.cloud.com", &blue.target());
    let proxy = start_proxy(&redis).await;
    assert_eventually!(proxy.ready().await, "proxy never became ready");
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
