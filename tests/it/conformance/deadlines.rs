//! Items 4 and 5 of issue 25: a request body read has a deadline
//! (`--body-read-timeout`, then 408 and close), and a response body being
//! relayed obeys the idle timeout. Flags are given as on the command
//! line, so a test names the flag the operator will type.

use super::recorder::{Recorder, Reply, Then};
use super::replay::RawClient;
use crate::support::*;
use std::time::Duration;
use switchyard::config::{Cli, Config};

/// The suite's config with these command-line flags applied (sync
/// settings stay the quick test ones).
pub fn config_with_flags(redis: &RedisServer, flags: &[&str]) -> Config {
    use clap::Parser;
    let args = std::iter::once("switchyard").chain(flags.iter().copied());
    let cli = Cli::try_parse_from(args)
        .unwrap_or_else(|e| panic!("the proxy does not take {flags:?}: {e}"));
    let mut config = Config::from_args(&redis.url(), &cli.redis, &cli.serve).unwrap();
    let base = super::runner::suite_config(&redis.url());
    config.sync = base.sync;
    config.proxy.access_log = false;
    config.proxy.connect_timeout = base.proxy.connect_timeout;
    config.server.shutdown_timeout = base.server.shutdown_timeout;
    config.server.worker_threads = base.server.worker_threads;
    config
}

async fn ready(redis: &RedisServer, config: Config) -> ProxyHandle {
    let proxy = ProxyHandle::start(config).await;
    assert_eventually!(
        proxy.ready().await && proxy.metric("switchyard_route_table_routes").await == 1.0,
        "proxy never loaded the route"
    );
    let _ = redis;
    proxy
}

/// Item 4: `Content-Length: 65536` and one byte, then silence. With one
/// backend (the body streams) and two (the body is read whole for a
/// possible replay), and after a `100 Continue` the proxy sent itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_and_a_close() {
    for (backends, expect) in [(1, false), (2, false), (2, true)] {
        let redis = RedisServer::start();
        let a = Recorder::start(Vec::new()).await;
        let b = Recorder::start(Vec::new()).await;
        let targets: Vec<String> = [&a, &b][..backends].iter().map(|r| r.target()).collect();
        redis.hset("slow.test", &targets.join(","));
        let proxy = ready(
            &redis,
            config_with_flags(&redis, &["--body-read-timeout", "500ms"]),
        )
        .await;
        let mut client = RawClient::connect(proxy.addr).await;
        let expect_line = if expect {
            "Expect: 100-continue\r\n"
        } else {
            ""
        };
        client
            .send(
                format!(
                    "POST / HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 65536\r\n{expect_line}\r\n"
                )
                .as_bytes(),
            )
            .await;
        if expect {
            let interim = client.answer().await;
            assert_eq!(interim.status, 100, "{backends} backend(s), Expect");
        }
        client.send(b"x").await;
        let started = std::time::Instant::now();
        let resp = client
            .answer_within(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{backends} backend(s), expect {expect}: {e}"));
        assert_eq!(resp.status, 408, "{backends} backend(s), expect {expect}");
        assert!(resp.header("x-request-id").is_some());
        assert!(
            client.closed_within(Duration::from_secs(3)).await.is_some(),
            "the connection stayed open after the 408"
        );
        assert!(started.elapsed() < Duration::from_secs(4));
        proxy.shutdown().await;
    }
}

/// Item 5: a backend that sends a head and 10 of 100 body bytes, then
/// stalls, does not keep the client connection open past the idle
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_cut_at_the_idle_timeout() {
    let redis = RedisServer::start();
    let a = Recorder::start(vec![Reply::new(
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .then(Then::Stall)])
    .await;
    redis.hset("stall.test", &a.target());
    let mut config = super::runner::suite_config(&redis.url());
    config.server.idle_timeout = Duration::from_secs(1);
    let proxy = ready(&redis, config).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: stall.test\r\n\r\n")
        .await;
    let got = client
        .closed_within(Duration::from_secs(6))
        .await
        .expect("the client connection outlived the idle timeout by 5 s while the body stalled");
    assert!(
        got.ends_with(b"0123456789"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    proxy.shutdown().await;
}
