//! Test support: a real redis-server per test, real HTTP backends, the real
//! proxy in-process (or as a process), and `assert_eventually!`.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod backend;
pub mod client;
pub mod proxy;
pub mod redis;

pub use backend::{start_backend, Backend};
pub use client::{http_get, HttpResponse};
pub use proxy::{start_proxy, start_proxy_with, test_config, ProxyHandle};
pub use redis::RedisServer;

use std::time::Duration;

/// How long `assert_eventually!` waits; raise it on a slow machine with
/// `SWITCHYARD_TEST_PATIENCE_MS`.
pub fn patience() -> Duration {
    let ms = std::env::var("SWITCHYARD_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000);
    Duration::from_millis(ms)
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls an async condition every 10 ms until it holds or patience runs
/// out, then panics with the message and the last value seen.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $crate::support::patience();
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("condition not reached in {:?}: {}", $crate::support::patience(), format!($($msg)+));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }};
}
