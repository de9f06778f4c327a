//! `make run` (scripts/run-demo.sh) checks before it touches anything: a
//! busy proxy port, or a routes key that already has a demo host, stops it
//! before it builds, starts a process, or writes to Redis.

use crate::support::*;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run_demo(env: &[(&str, String)]) -> (Output, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/run-demo.sh"))
        .env_remove("ROUTES_KEY")
        .env_remove("SWITCHYARD_DEMO_BIN_DIR")
        .envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().unwrap();
    (out, started.elapsed())
}

/// Connections Redis has accepted so far (this question's own included).
fn connections(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_busy_port_stops_the_demo_before_it_touches_redis() {
    let redis = RedisServer::start();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    for (proxy, admin) in [(busy_port, free_port()), (free_port(), busy_port)] {
        let before = connections(&redis);
        let (out, took) = run_demo(&[
            ("REDIS_URL", redis.url()),
            ("PROXY_PORT", proxy.to_string()),
            ("ADMIN_PORT", admin.to_string()),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains(&format!("port {busy_port} is busy")),
            "{text}"
        );
        assert!(!text.contains("building"), "built before checking: {text}");
        // Only this question's own connection: the script never connected.
        assert_eq!(connections(&redis), before + 1, "the demo talked to Redis");
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
}

#[test]
fn a_routes_key_with_a_demo_host_is_never_overwritten() {
    let redis = RedisServer::start();
    redis.cli(&["HSET", "mine", "blue.localhost", "10.9.9.9:80"]);
    let (out, _) = run_demo(&[
        ("REDIS_URL", redis.url()),
        ("PROXY_PORT", free_port().to_string()),
        ("ADMIN_PORT", free_port().to_string()),
        ("ROUTES_KEY", "mine".into()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("mine already has a route for blue.localhost"),
        "{text}"
    );
    assert!(!text.contains("building"), "{text}");
    assert_eq!(
        redis
            .cli(&["HGETALL", "mine"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["blue.localhost", "10.9.9.9:80"]
    );
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "1");
}

/// The whole demo with the test build's binaries: it serves its routes
/// from a key of its own, leaves the real `routes` alone, and at exit
/// stops everything and removes what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_from_its_own_key_and_removes_it_at_exit() {
    use std::io::BufRead;
    let redis = RedisServer::start();
    redis.hset("real.example.com", "10.0.0.1:80");
    let (proxy_port, admin_port) = (free_port(), free_port());
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_switchyard"))
        .parent()
        .unwrap()
        .to_owned();
    assert!(bin_dir.join("demo_backend").exists(), "{bin_dir:?}");
    let mut demo = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/run-demo.sh"))
        .env_remove("ROUTES_KEY")
        .env("SWITCHYARD_DEMO_BIN_DIR", &bin_dir)
        .env("REDIS_URL", redis.url())
        .env("PROXY_PORT", proxy_port.to_string())
        .env("ADMIN_PORT", admin_port.to_string())
        .env("BLUE_PORT", free_port().to_string())
        .env("GREEN_PORT", free_port().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + patience() * 2;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.starts_with("Switchyard is running"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = demo.kill();
                panic!("the demo never ran:\n{}", seen.join("\n"));
            }
        }
    }
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let answer = http_get(proxy, "blue.localhost", "/").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.starts_with("hello from blue"),
        "{}",
        answer.body
    );
    let key = format!("switchyard-demo-{}", demo.id());
    assert_eq!(redis.cli(&["HLEN", &key]).trim(), "3");
    assert_eq!(redis.cli(&["HLEN", "routes"]).trim(), "1");

    let ok = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = tokio::task::block_in_place(|| demo.wait()).unwrap();
    assert_eq!(status.code(), Some(143));
    assert_eq!(
        redis
            .cli(&["EXISTS", &key, &format!("{key}:replicas")])
            .trim(),
        "0"
    );
    assert_eq!(
        redis.cli(&["HGET", "routes", "real.example.com"]).trim(),
        "10.0.0.1:80"
    );
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "the demo's proxy still runs"
    );
}
