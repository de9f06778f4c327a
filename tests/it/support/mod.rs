//! The one support API of the integration tests. Real parts only:
//!
//! - [`RedisServer`]: a private redis-server (or Valkey) per test, on a free
//!   port, built with whatever it needs (password, TLS, ACL users, Sentinel,
//!   replica, a chosen server binary, extra arguments); [`server_binaries`]
//!   lists every server binary this machine has, for the compatibility pass.
//! - [`Backend`]: real HTTP backends (JSON echo, scripted per request, raw
//!   socket, WebSocket echo) and addresses that refuse or never answer.
//! - [`ProxyHandle`] (in-process, `switchyard::run` on ephemeral ports) and
//!   [`ProxyProcess`] (the built binary): the proxy under test, asked through
//!   [`Endpoints`] (`get`, `serves`, `readyz`, `metric`, `wait_ready`, ...).
//! - [`Scenario`]: a Redis, named backends, routes and ready proxies in one
//!   builder, for the prologue most tests share.
//! - Clients: hyper-based ([`send`], [`http_get`]: one request per
//!   connection; [`HttpClient`]: a keep-alive pool), raw ([`RawClient`]: exact
//!   bytes out, answers parsed off the socket), and [`Load`] (bounded request
//!   loops counting failures by phase).
//! - `assert_eventually!`, whose patience `SWITCHYARD_TEST_PATIENCE_MS` raises.

/// Polls an async condition every 10 ms until it holds or patience runs
/// out, then panics with the message.
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

mod backend;
mod client;
mod load;
mod proxy;
mod raw;
mod redis;
mod scenario;

pub use backend::{accepts, full_backlog, full_body, refusing_addr, Backend};
pub use client::{http_get, request, send, try_send, HttpClient, CALL_TIMEOUT};
pub use load::Load;
pub use proxy::{switchyard_binary, test_config, Endpoints, ProxyHandle, ProxyProcess};
pub use raw::{find, header_values, raw_request, read_head, read_until, RawClient};
pub use redis::{server_binaries, RedisServer, ServerBinary};
pub use scenario::Scenario;

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

/// A port that was free a moment ago and that no other caller in this
/// process got, for a server started on it (Redis, Pebble, the binary).
///
/// Not a `bind(0)` port: those come from the kernel's ephemeral range,
/// where every outgoing connection also takes its local port, so one
/// could take the port between this lookup and the server's `bind` (a
/// suite run saw Pebble fail with "address already in use"), and the next
/// `bind(0)` may hand the same port out again. Ports here come from
/// outside that range, in turn from a per-process offset.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (first, count) = ports_outside_the_ephemeral_range();
    let offset = std::process::id().wrapping_mul(7_919) % count;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (first + (offset + n) % count) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The first port and the length of a range no outgoing connection takes
/// a local port from: below the kernel's ephemeral range when it leaves
/// room there (Linux's default starts at 32768), else above it.
fn ports_outside_the_ephemeral_range() -> (u32, u32) {
    const FLOOR: u32 = 10_000;
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999));
    if low >= FLOOR + 5_000 {
        (FLOOR, low - FLOOR)
    } else if high <= 60_000 {
        (high + 1, 65_535 - high)
    } else {
        // No room outside it: the bind check alone guards.
        (FLOOR, 20_000)
    }
}
