//! The servers we claim (README.md, "Redis and Valkey versions"): the core
//! sync scenarios once per server binary this machine has (see
//! `support::server_binaries`; `.ci/install-servers` provides Redis 6.0,
//! 7.4, Valkey 8.1 and 9.1 beside Debian's Redis 7.0), all servers at
//! once, each with its own server, backends and proxy.

use crate::support::*;
use std::future::Future;

/// Runs `scenario` against every server binary concurrently; fails naming
/// every server it failed on.
async fn on_every_server<F, Fut>(scenario: F)
where
    F: Fn(&'static ServerBinary) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runs: Vec<_> = server_binaries()
        .iter()
        .map(|server| (server, tokio::spawn(scenario(server))))
        .collect();
    let mut failed = Vec::new();
    for (server, run) in runs {
        match run.await {
            Ok(()) => println!("{}: ok", server.version),
            Err(e) => failed.push(format!(
                "{} ({}): {e}",
                server.version,
                server.path.display()
            )),
        }
    }
    assert!(failed.is_empty(), "failed on: {failed:#?}");
}

/// A proxy on `server` with `app.compat.test` and `h<i>.compat.test` (i <
/// `routes`) on `blue`, and `config` applied.
async fn scene_on(
    server: &ServerBinary,
    routes: usize,
    config: impl Fn(&mut switchyard::config::Config) + Send + Sync + 'static,
) -> (RedisServer, ProxyHandle, [Backend; 2]) {
    let mut scenario = Scenario::new()
        .redis(RedisServer::builder().binary(server))
        .backends(["blue", "green"])
        .route("app.compat.test", "blue")
        .config(config);
    for i in 0..routes {
        scenario = scenario.route(&format!("h{i}.compat.test"), "blue");
    }
    scenario.start().await
}

/// Boot load, then every kind of change by notification: a new host, a
/// moved route, HDEL, DEL; the proxy turned notifications on itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_follow_by_notification_on_every_server() {
    on_every_server(|server| async move {
        let (redis, proxy, [blue, green]) = scene_on(server, 0, |_| {}).await;
        assert!(proxy.serves("app.compat.test", "blue").await);
        let flags = redis.notify_flags();
        assert!(flags.contains('K'), "notifications not on: {flags:?}");

        redis.hset("new.compat.test", &green.target());
        assert_eventually!(proxy.serves("new.compat.test", "green").await, "new host");
        redis.hset("app.compat.test", &green.target());
        assert_eventually!(proxy.serves("app.compat.test", "green").await, "moved");
        redis.hdel("new.compat.test");
        assert_eventually!(
            proxy.get("new.compat.test", "/").await.status == 404,
            "hdel"
        );
        redis.cli(&["DEL", "routes"]);
        assert_eventually!(proxy.get("app.compat.test", "/").await.status == 404, "del");
        redis.hset("back.compat.test", &blue.target());
        assert_eventually!(proxy.serves("back.compat.test", "blue").await, "after DEL");
        proxy.shutdown().await;
    })
    .await;
}

/// Hashes in both of the server's encodings (the small one, listpack or
/// Redis 6's ziplist, and the hashtable), read with DUMP: served whole, and
/// changes patched in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_and_large_hashes_read_with_dump_on_every_server() {
    on_every_server(|server| async move {
        for routes in [50, 1_000] {
            let (redis, proxy, [_blue, green]) =
                scene_on(server, routes, |c| c.sync.tuning.dump_threshold = 0).await;
            let last = format!("h{}.compat.test", routes - 1);
            assert_eventually!(proxy.serves(&last, "blue").await, "{routes}: last route");
            assert_eq!(
                proxy.metric("switchyard_route_table_routes").await,
                (routes + 1) as f64,
                "{routes} routes"
            );
            redis.hset("h7.compat.test", &green.target());
            assert_eventually!(
                proxy.serves("h7.compat.test", "green").await,
                "{routes}: change"
            );
            redis.hdel("h8.compat.test");
            assert_eventually!(
                proxy.get("h8.compat.test", "/").await.status == 404,
                "{routes}: hdel"
            );
            assert!(redis.calls("dump") >= 1, "{routes}: no DUMP read");
            proxy.shutdown().await;
        }
    })
    .await;
}

/// A change written while the subscriber is disconnected (its event lost
/// for good) is live after the reconnect's resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_missed_while_disconnected_is_live_after_the_reconnect_on_every_server() {
    on_every_server(|server| async move {
        let (redis, proxy, [_blue, green]) = scene_on(server, 0, |_| {}).await;
        redis.hset_while_subscribers_are_killed("app.compat.test", &green.target());
        assert_eventually!(
            proxy.serves("app.compat.test", "green").await,
            "the change missed while disconnected never went live"
        );
        proxy.shutdown().await;
    })
    .await;
}
