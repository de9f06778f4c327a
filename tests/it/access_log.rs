//! The access log of the real binary: one structured line per request in
//! `--log-format json`, and none with `--access-log false`; text lines
//! without terminal colours when stdout is not a terminal.

use crate::support::*;

/// The binary on `redis`, with `extra` flags and `RUST_LOG=info`.
fn start_binary(redis: &RedisServer, extra: &[&str]) -> ProxyProcess {
    ProxyProcess::start(|cmd| {
        cmd.args(["--redis-url", &redis.url()])
            .args(extra)
            .env("RUST_LOG", "info");
    })
}

fn is_access(v: &serde_json::Value) -> bool {
    v.get("target").and_then(|t| t.as_str()) == Some("access")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_structured_line_per_request() {
    let redis = RedisServer::start();
    let backend = Backend::echo("blue").await;
    redis.hset("app.cloud.com", &backend.target());
    let proxy = start_binary(&redis, &["--log-format", "json"]);
    proxy.wait_ready().await;

    let response = send(
        proxy.addr,
        request("POST", "app.cloud.com", "/orders?id=7", &[], "hello"),
    )
    .await;
    assert_eq!(response.status, 200);
    let id = response.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let line = proxy
        .wait_json_line(|v| is_access(v) && v["path"] == "/orders?id=7")
        .0
        .expect("no access log line for the request");
    // The fields of README.md's Serving section, for both protocols.
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["host"], "app.cloud.com");
    assert_eq!(line["version"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    let body_len = response.body.len() as u64;
    assert_eq!(line["bytes"].as_u64(), Some(body_len), "{line}");
    assert!(line["duration_us"].as_u64().is_some(), "{line}");
    assert!(line["user_agent"].is_string(), "{line}");
    assert_eq!(line["request_id"], id.as_str());
    assert_eq!(line["backend"], backend.target());
    let backend_us = line["backend_us"].as_u64().expect("backend time");
    assert!(
        backend_us <= line["duration_us"].as_u64().unwrap(),
        "{line}"
    );

    // Unknown hosts are logged too, with their status.
    assert_eq!(proxy.get("nowhere.cloud.com", "/x").await.status, 404);
    let line = proxy
        .wait_json_line(|v| is_access(v) && v["host"] == "nowhere.cloud.com")
        .0
        .expect("no access log line for the 404");
    assert_eq!(line["status"], 404);
    assert_eq!(line["backend"], "-");

    // So are requests refused before routing, with what could be read.
    let r = raw_request(
        proxy.addr,
        b"GET /bad HTTP/1.1\r\nHost: a b\r\nUser-Agent: probe/1\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    let line = proxy
        .wait_json_line(|v| is_access(v) && v["status"] == 400)
        .0
        .expect("no access log line for the 400");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/bad");
    assert_eq!(line["request_id"], r.header("x-request-id").unwrap());
    let r = raw_request(proxy.addr, b"\x01\x02 nonsense\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let line = proxy
        .wait_json_line(|v| is_access(v) && v["status"] == 400 && v["method"] == "-")
        .0
        .expect("no access log line for an unreadable head");
    assert_eq!(line["client"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_can_be_switched_off() {
    let redis = RedisServer::start();
    let backend = Backend::echo("blue").await;
    redis.hset("app.cloud.com", &backend.target());
    let proxy = start_binary(&redis, &["--log-format", "json", "--access-log", "false"]);
    proxy.wait_ready().await;
    for _ in 0..5 {
        assert_eq!(proxy.get("app.cloud.com", "/").await.status, 200);
    }
    // A request's log line would be written before its response is sent;
    // give the non-blocking writer a moment by waiting for a later line:
    // a route change logs "route table swapped".
    redis.hset("other.cloud.com", &backend.target());
    let (swapped, seen) = proxy.wait_json_line(|v| {
        v.get("fields")
            .and_then(|f| f.get("message"))
            .and_then(|m| m.as_str())
            == Some("route table swapped")
            || v.get("message").and_then(|m| m.as_str()) == Some("route table swapped")
    });
    assert!(swapped.is_some(), "no swap line seen");
    assert_eq!(seen.iter().filter(|v| is_access(v)).count(), 0, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_to_a_pipe_has_no_terminal_colours() {
    let redis = RedisServer::start();
    let backend = Backend::echo("blue").await;
    redis.hset("app.cloud.com", &backend.target());
    let proxy = start_binary(&redis, &[]);
    proxy.wait_ready().await;
    assert_eq!(proxy.get("app.cloud.com", "/").await.status, 200);
    let (access, seen) =
        proxy.wait_line(|line| line.contains("app.cloud.com") && line.contains("access"));
    assert!(access.is_some(), "no text access line; saw {seen:?}");
    for line in &seen {
        assert!(
            !line.contains('\x1b'),
            "escape codes in a piped log line: {line:?}"
        );
    }
    assert!(
        seen.iter().any(|l| l.contains(" INFO ")),
        "plain level names expected: {seen:?}"
    );
}
