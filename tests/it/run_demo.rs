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
