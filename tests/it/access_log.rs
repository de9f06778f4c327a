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
        .wait_json_line(|v| is_access(v) && v["path"] == "/orders")
        .0
        .expect("no access log line for the request");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["host"], "app.cloud.com");
    assert_eq!(line["status"], 200);
    assert_eq!(line["backend"], backend.target());
    assert_eq!(line["request_id"], id.as_str());
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{line}"
    );
    assert!(line.get("bytes").is_some(), "{line}");

    // Unknown hosts are logged too, with their status.
    assert_eq!(proxy.get("nowhere.cloud.com", "/x").await.status, 404);
    let line = proxy
        .wait_json_line(|v| is_access(v) && v["host"] == "nowhere.cloud.com")
        .0
        .expect("no access log line for the 404");
    assert_eq!(line["status"], 404);
    assert_eq!(line["backend"], "-");
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
