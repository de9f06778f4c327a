//! The built binary as a process: usage errors, signals, the `route` and
//! `status` commands, and `route set --wait` over three replicas.

use crate::support::*;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("REDIS_URL")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A serving process, killed on drop.
struct Served {
    child: Child,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl Served {
    fn start(configure: impl FnOnce(&mut Command)) -> Served {
        let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.env_remove("REDIS_URL")
            .env("SWITCHYARD_LISTEN", listen.to_string())
            .env("SWITCHYARD_ADMIN_LISTEN", admin.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        configure(&mut cmd);
        Served {
            child: cmd.spawn().unwrap(),
            listen,
            admin,
        }
    }

    async fn wait_ready(&self) {
        assert_eventually!(
            tokio::net::TcpStream::connect(self.admin).await.is_ok(),
            "admin port never opened"
        );
        assert_eventually!(
            http_get(self.admin, "localhost", "/readyz").await.status == 200,
            "never ready"
        );
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit, within patience.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + patience();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
async fn slow_backend(delay: Duration) -> std::net::SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"slow and done")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn shutdown_with_request_in_flight(signal: &str) {
    let redis = RedisServer::start();
    let backend = slow_backend(Duration::from_millis(500)).await;
    redis.hset("slow.cloud.com", &backend.to_string());
    // Configured through the environment (REDIS_URL fallback included).
    let mut proxy = Served::start(|cmd| {
        cmd.env("REDIS_URL", redis.url());
    });
    proxy.wait_ready().await;
    let listen = proxy.listen;
    let in_flight = tokio::spawn(async move { http_get(listen, "slow.cloud.com", "/").await });
    // The request is in flight once the proxy counts the connection.
    assert_eventually!(
        http_get(proxy.admin, "localhost", "/metrics")
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
    let backend = start_backend("blue").await;
    redis.cli(&["HSET", "apps", "app.cloud.com", &backend.target()]);
    let proxy = Served::start(|cmd| {
        cmd.env("SWITCHYARD_REDIS_URL", redis.url())
            .env("REDIS_URL", "redis://127.0.0.1:1/0") // the specific variable wins
            .args(["--routes-key", "apps"]);
    });
    proxy.wait_ready().await;
    assert_eq!(
        http_get(proxy.listen, "app.cloud.com", "/")
            .await
            .backend()
            .as_deref(),
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
    let redis = RedisServer::start();
    let url = redis.url();
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    redis.hset("app.cloud.com", &blue.target());
    let mut replicas = Vec::new();
    for id in ["r1", "r2", "r3"] {
        let mut config = test_config(&url);
        config.sync.replica_id = id.into();
        replicas.push(start_proxy_with(config).await);
    }
    for r in &replicas {
        assert_eventually!(r.ready().await, "replica not ready");
    }
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
