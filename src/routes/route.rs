//! A route and its backends, as the request path uses them: the backend
//! addresses, a health mark per backend, a round-robin cursor. One
//! allocation per route and one for its backend's address in the common
//! case (one backend written as its own address): a table of 100,000
//! routes is mostly these.

use super::parse::{parse_backends_bytes, RouteError};
use compact_str::CompactString;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// A backend of a route. Its health mark lives here so that a route whose
/// value did not change keeps its marks across reloads (the whole `Route`
/// is carried over by `Arc`).
#[derive(Debug)]
pub struct Backend {
    pub authority: BackendAddr,
    /// [`now_ms`] until which the backend is considered down; 0 when
    /// healthy.
    down_until_ms: AtomicU64,
}

impl Backend {
    fn new(authority: BackendAddr) -> Self {
        Backend {
            authority,
            down_until_ms: AtomicU64::new(0),
        }
    }

    pub fn is_down(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub fn mark_down(&self, now_ms: u64, ttl_ms: u64) {
        self.down_until_ms
            .store(now_ms.saturating_add(ttl_ms).max(1), Ordering::Relaxed);
    }

    pub fn mark_up(&self) {
        self.down_until_ms.store(0, Ordering::Relaxed);
    }
}

/// A backend's `host:port` as [`parse_backends`](super::parse_backends)
/// validated it: an IPv4 address, a bracketed IPv6 address or a lower-case
/// DNS name, and a port from 1 to 65535. Kept inline (up to 24 bytes, which
/// every IPv4 `ip:port` fits) rather than as an `http::uri::Authority`,
/// which is one more allocation per route: 3 MB at 100,000 routes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BackendAddr(CompactString);

impl BackendAddr {
    /// Only the parser makes one, from text it has checked.
    pub(super) fn validated(text: &str) -> BackendAddr {
        BackendAddr(CompactString::from(text))
    }

    /// `host:port`, as routes and logs spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host, without an IPv6 address's brackets (what a resolver
    /// takes).
    pub fn host(&self) -> &str {
        let (host, _) = self.split();
        host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        // The parser checked the port's digits and range.
        self.split().1.parse().unwrap_or(80)
    }

    /// The port follows the last colon (an IPv6 host's own colons are
    /// inside its brackets, before it).
    fn split(&self) -> (&str, &str) {
        self.0.rsplit_once(':').unwrap_or((&self.0, ""))
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

/// Milliseconds since the first call: a monotonic clock cheap enough for the
/// request path, used for backend health marks.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// [`now_ms`] of an instant already read (the request path reads the clock
/// once per request and derives the rest).
pub fn ms_at(at: Instant) -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // +1 so that "0" can mean "never marked".
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_millis() as u64
        + 1
}

/// The backends of a route, in the order written; a slice to its users.
///
/// Why two shapes: nearly every route is one `ip:port`, and then the
/// value as written *is* the backend's authority, so the value needs no
/// copy of its own, the backend sits inside the route's allocation and no
/// round-robin cursor is needed. Both shapes fit in the size of one
/// `Backend`.
#[derive(Debug)]
pub enum Backends {
    /// One backend whose authority is the route's value, byte for byte.
    One(Backend),
    /// Any other value (several backends, spaces, upper case).
    Several(Box<Several>),
}

/// The backends of a route that is not one address written as itself.
#[derive(Debug)]
pub struct Several {
    list: Box<[Backend]>,
    /// The value as written.
    value: Box<str>,
    /// Round-robin cursor. An atomic, not a lock: the table stays
    /// shareable.
    next: AtomicU32,
}

impl Deref for Backends {
    type Target = [Backend];

    #[inline]
    fn deref(&self) -> &[Backend] {
        match self {
            Backends::One(backend) => std::slice::from_ref(backend),
            Backends::Several(several) => &several.list,
        }
    }
}

/// A route as tables and requests share it. `triomphe`'s `Arc` has no
/// weak count, so a route of one backend takes a 48-byte allocation
/// instead of std's 64 (glibc's size classes): 1.6 MB at 100,000 routes.
/// Routes are never weakly referenced.
pub type SharedRoute = triomphe::Arc<Route>;

/// A valid route: its backends (and, through them, the value as written).
#[derive(Debug)]
pub struct Route {
    pub backends: Backends,
}

impl Route {
    /// Parses a route value (bytes as stored in Redis).
    pub(super) fn parse(value: &[u8]) -> Result<Route, RouteError> {
        let mut authorities = parse_backends_bytes(value)?;
        let backends = match &authorities[..] {
            [one] if one.as_str().as_bytes() == value => {
                Backends::One(Backend::new(authorities.pop().expect("one")))
            }
            _ => Backends::Several(Box::new(Several {
                list: authorities.into_iter().map(Backend::new).collect(),
                // parse_backends_bytes checked it is UTF-8.
                value: String::from_utf8_lossy(value).into(),
                next: AtomicU32::new(0),
            })),
        };
        Ok(Route { backends })
    }

    /// The value as written in Redis.
    pub fn value(&self) -> &str {
        match &self.backends {
            Backends::One(backend) => backend.authority.as_str(),
            Backends::Several(several) => &several.value,
        }
    }

    /// Backends in the order this request should try them: round-robin
    /// start, healthy ones first, down ones last (so that when every backend
    /// is down they are still tried rather than failing at once).
    pub fn pick_order(&self, now_ms: u64) -> impl Iterator<Item = &Backend> + '_ {
        let n = self.backends.len();
        let start = match &self.backends {
            Backends::One(_) => 0,
            Backends::Several(several) => several.next.fetch_add(1, Ordering::Relaxed) as usize % n,
        };
        let rotated = (0..n).map(move |i| &self.backends[(start + i) % n]);
        let healthy = rotated.clone().filter(move |b| !b.is_down(now_ms));
        let down = rotated.filter(move |b| b.is_down(now_ms));
        healthy.chain(down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_backend_written_as_its_address_keeps_no_second_copy() {
        let plain = Route::parse(b"10.0.0.1:80").unwrap();
        assert!(matches!(plain.backends, Backends::One(_)));
        assert_eq!(plain.value(), "10.0.0.1:80");
        for value in [
            "10.0.0.1:80,10.0.0.2:80",
            " 10.0.0.1:80",
            "Worker.Internal:80",
        ] {
            let route = Route::parse(value.as_bytes()).unwrap();
            assert!(matches!(route.backends, Backends::Several(_)), "{value}");
            assert_eq!(route.value(), value, "the value as written");
        }
        assert!(Route::parse(b"nope").is_err());
    }

    #[test]
    fn a_route_is_small() {
        // A table holds one of these per route, in a `SharedRoute` (8
        // more bytes): at 40 bytes glibc serves it from its 48-byte size
        // class, one more byte and it takes 64. Keep it so.
        assert_eq!(std::mem::size_of::<Route>(), std::mem::size_of::<Backend>());
        assert!(std::mem::size_of::<Route>() + std::mem::size_of::<usize>() <= 40);
    }

    #[test]
    fn a_backend_address_splits_into_host_and_port() {
        let route = Route::parse(b"10.0.0.1:80,[::1]:8080,Worker.Internal:3000").unwrap();
        let parts: Vec<_> = route
            .backends
            .iter()
            .map(|b| (b.authority.as_str(), b.authority.host(), b.authority.port()))
            .collect();
        assert_eq!(
            parts,
            [
                ("10.0.0.1:80", "10.0.0.1", 80),
                ("[::1]:8080", "::1", 8080),
                ("worker.internal:3000", "worker.internal", 3000)
            ]
        );
    }

    #[test]
    fn round_robin_skips_down_backends_but_tries_them_when_all_are_down() {
        let route = Route::parse(b"10.0.0.1:80,10.0.0.2:80,10.0.0.3:80").unwrap();
        let firsts: Vec<String> = (0..3)
            .map(|_| {
                route
                    .pick_order(now_ms())
                    .next()
                    .unwrap()
                    .authority
                    .to_string()
            })
            .collect();
        assert_eq!(firsts, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        route.backends[1].mark_down(now_ms(), 60_000);
        for _ in 0..6 {
            let order: Vec<_> = route
                .pick_order(now_ms())
                .map(|b| b.authority.to_string())
                .collect();
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "10.0.0.2:80");
        }
        route.backends[0].mark_down(now_ms(), 60_000);
        route.backends[2].mark_down(now_ms(), 60_000);
        assert_eq!(route.pick_order(now_ms()).count(), 3);
    }
}
