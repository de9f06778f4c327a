//! The built binary as a process: usage errors, signals, the `route` and
//! `status` commands, and `route set --wait` over three replicas.

use crate::support::*;
use std::process::Output;
use std::time::{Duration, Instant};

fn switchyard(args: &[&str]) -> Output {
    switchyard_binary().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn usage_errors_exit_64_with_a_clear_message() {
    for args in [
        &["--resync-interval", "soon"][..],
        &["--listen", "nowhere"],
        &["--no-such-flag"],
        &["--redis-url", "http://x"],
        &["--max-header-size", "10"],
    ] {
        let out = switchyard(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).trim().is_empty(),
            "{args:?} printed no reason"
        );
    }
    assert!(stderr(&switchyard(&["--redis-url", "http://x"])).contains("redis-url"));
    let help = switchyard(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("--resync-interval"));
}

/// A backend that answers after `delay`, to have a response in flight.
async fn slow_backend(delay: Duration) -> Backend {
    Backend::scripted(move |_req| async move {
        tokio::time::sleep(delay).await;
        hyper::Response::new(full_body("slow and done"))
    })
    .await
}

async fn shutdown_with_request_in_flight(signal: &str) {
    let redis = RedisServer::start();
    let backend = slow_backend(Duration::from_millis(500)).await;
    redis.hset("slow.cloud.com", &backend.target());
    // Configured through the environment (REDIS_URL fallback included).
    let mut proxy = ProxyProcess::start(|cmd| {
        cmd.env("REDIS_URL", redis.url());
    });
    proxy.wait_ready().await;
    let listen = proxy.addr;
    let in_flight = tokio::spawn(async move { http_get(listen, "slow.cloud.com", "/").await });
    // The request is in flight once the proxy counts the connection.
    assert_eventually!(
        proxy
            .admin_get("/metrics")
            .await
            .body
            .contains("switchyard_client_connections 1"),
        "request never reached the proxy"
    );
    proxy.signal(signal);
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "slow and done");
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status after {signal}");
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    shutdown_with_request_in_flight("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_the_request_in_flight_finish_then_exits_0() {
    shutdown_with_request_in_flight("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_and_switchyard_env_vars_configure_the_server() {
    let redis = RedisServer::start();
    let backend = Backend::echo("blue").await;
    redis.cli(&["HSET", "apps", "app.cloud.com", &backend.target()]);
    let proxy = ProxyProcess::start(|cmd| {
        cmd.env("SWITCHYARD_REDIS_URL", redis.url())
            .env("REDIS_URL", "redis://127.0.0.1:1/0") // the specific variable wins
            .args(["--routes-key", "apps"]);
    });
    proxy.wait_ready().await;
    assert_eq!(
        proxy.get("app.cloud.com", "/").await.backend().as_deref(),
        Some("blue")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_commands_validate_write_list_and_delete() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ok = switchyard(&[
        "route",
        "set",
        "App.Cloud.com.",
        "10.0.0.5:3000, 10.0.0.6:3000",
        "--redis-url",
        &url,
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        redis.cli(&["HGET", "routes", "app.cloud.com"]).trim(),
        "10.0.0.5:3000, 10.0.0.6:3000"
    );

    for bad in ["nonsense", "10.0.0.1", "a:99999", ""] {
        let out = switchyard(&["route", "set", "bad.cloud.com", bad, "--redis-url", &url]);
        assert_eq!(out.status.code(), Some(65), "{bad:?} accepted");
        assert!(stderr(&out).contains("refusing"), "{}", stderr(&out));
    }
    let out = switchyard(&[
        "route",
        "set",
        "bad host",
        "10.0.0.1:80",
        "--redis-url",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(
        redis.cli(&["HLEN", "routes"]).trim(),
        "1",
        "an invalid route was written"
    );

    redis.hset("hand.cloud.com", "oops");
    let list = switchyard(&["route", "list", "--redis-url", &url]);
    assert!(list.status.success());
    let text = stdout(&list);
    assert!(
        text.contains("app.cloud.com\t10.0.0.5:3000, 10.0.0.6:3000"),
        "{text}"
    );
    assert!(text.contains("hand.cloud.com\toops\t# invalid"), "{text}");

    let del = switchyard(&["route", "del", "app.cloud.com", "--redis-url", &url]);
    assert!(del.status.success());
    assert_eq!(
        redis.cli(&["HEXISTS", "routes", "app.cloud.com"]).trim(),
        "0"
    );

    let down = switchyard(&["route", "list", "--redis-url", "redis://127.0.0.1:1/0"]);
    assert_eq!(
        down.status.code(),
        Some(69),
        "unreachable Redis: {}",
        stderr(&down)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_set_wait_returns_once_every_replica_serves_the_change() {
    let (redis, replicas, [blue, green]) = Scenario::new()
        .backends(["blue", "green"])
        .route("app.cloud.com", "blue")
        .start_replicas(3)
        .await;
    let url = redis.url();
    let url2 = url.clone();
    assert_eventually!(
        {
            let url = url2.clone();
            let out =
                tokio::task::spawn_blocking(move || switchyard(&["status", "--redis-url", &url]))
                    .await
                    .unwrap();
            stdout(&out).contains("3 live replica(s)")
        },
        "status never listed three replicas"
    );
    let status = stdout(&switchyard(&["status", "--redis-url", &url]));
    for id in ["r1", "r2", "r3"] {
        assert!(status.contains(id), "{status}");
    }

    let mut took = Vec::new();
    for (i, target) in [&green, &blue].iter().cycle().take(10).enumerate() {
        let url = url.clone();
        let value = target.target();
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            switchyard(&[
                "route",
                "set",
                "app.cloud.com",
                &value,
                "--wait=5s",
                "--redis-url",
                &url,
            ])
        })
        .await
        .unwrap();
        took.push(started.elapsed());
        assert!(out.status.success(), "run {i}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("live on 3 replica(s)"),
            "{}",
            stdout(&out)
        );
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

    // A replica that never catches up is named, and the exit code says so.
    redis.cli(&[
        "SET",
        "routes:replicas:ghost",
        r#"{"id":"ghost","table_version":1,"watermark":1,"routes":0,"invalid":0,"last_sync_ms":null,"notifications":"keyspace","redis":"connected","source":"redis"}"#,
        "EX",
        "30",
    ]);
    let out = switchyard(&[
        "route",
        "set",
        "app.cloud.com",
        &green.target(),
        "--wait=300ms",
        "--redis-url",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("ghost"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("r1"), "{}", stderr(&out));
}
