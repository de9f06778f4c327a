//! Request policy, one definition for both protocols (the HTTP/1 driver
//! and the HTTP/2 path call it): which route serves a host, the order a
//! route's backends are tried in (round-robin, healthy first), what a
//! failed attempt means (failure kind, dead marks, retry or give up, the
//! replay rule), the ACME HTTP-01 answers the proxy gives itself, and the
//! access-log record.

use super::upstream::UpstreamError;
use super::ProxyError;
use crate::acme::challenges::{Challenges, PATH_PREFIX};
use crate::config::ProxyConfig;
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::routes::{Backend, BackendAddr, Lookup, Route, SharedRoute};
use crate::state::SharedState;
use bytes::Bytes;
use http::Version;
use std::net::IpAddr;
use std::time::Duration;

/// The route serving `host` (normalised), or the answer when there is
/// none: `503` before the first table, `502` for an invalid value, `404`.
pub fn route(state: &SharedState, host: &str) -> Result<SharedRoute, ProxyError> {
    let table = state.table();
    if !table.is_loaded() {
        return Err(ProxyError::NotReady);
    }
    match table.lookup(host) {
        Lookup::Route(route) => Ok(route.clone()),
        Lookup::Invalid => Err(ProxyError::InvalidRoute),
        Lookup::NotFound => Err(ProxyError::NoRoute),
    }
}

/// The proxy's own answer to an ACME HTTP-01 challenge: the key
/// authorization of a known, unexpired token, for `GET
/// /.well-known/acme-challenge/<token>` on the cleartext listener
/// (README.md, "Automatic certificates"). `None` sends the request to its
/// route as usual (an app may run its own ACME client). Any other path
/// costs one prefix comparison.
pub fn acme_challenge(
    challenges: &Challenges,
    tls: bool,
    method: &str,
    path: &str,
) -> Option<Bytes> {
    let token = path.strip_prefix(PATH_PREFIX)?;
    if tls || method != "GET" {
        return None;
    }
    challenges.answer(token)
}

/// The backends of `route` in the order one request tries them:
/// round-robin start, healthy ones first, those marked down last (so that
/// when all are down they are still tried rather than failing at once).
pub fn backends(route: &Route, now_ms: u64) -> impl Iterator<Item = &Backend> + '_ {
    route.pick_order(now_ms)
}

/// RFC 9110 §9.2.2, as [`http::Method::is_idempotent`] defines it: the one
/// definition the proxy uses. Standard methods are matched without
/// allocating; an extension method is never idempotent.
pub fn is_idempotent(method: &str) -> bool {
    http::Method::from_bytes(method.as_bytes()).is_ok_and(|m| m.is_idempotent())
}

/// How far a failed attempt got with its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Nothing was sent: the connection was refused or timed out.
    Nothing,
    /// Some of the request may have reached the backend; no byte of a
    /// response came back.
    Request,
    /// A response had begun: whatever happens next, the request was
    /// processed.
    Response,
}

impl Reached {
    /// What a failure tells by itself: a dial error sent nothing, anything
    /// later may have (callers that saw response bytes say `Response`).
    pub fn of(error: &UpstreamError) -> Reached {
        match error {
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout => Reached::Nothing,
            _ => Reached::Request,
        }
    }
}

/// Whether a failed request may be sent again (to the same backend on a
/// new connection, or to the next one). RFC 9110 §9.2.2 and nginx's
/// default: once any byte of a request may have reached a backend, only an
/// idempotent method may be replayed, and never after a response byte
/// arrived. `resendable`: the body is still at hand (none, or buffered).
pub fn may_replay(reached: Reached, idempotent: bool, resendable: bool) -> bool {
    resendable
        && match reached {
            Reached::Nothing => true,
            Reached::Request => idempotent,
            Reached::Response => false,
        }
}

/// One request's attempt that failed, as the policy judges it.
#[derive(Debug)]
pub struct Failed<'e> {
    pub error: &'e UpstreamError,
    pub reached: Reached,
    /// No backend is left to try.
    pub last: bool,
    pub idempotent: bool,
    /// The body is still at hand (none, or buffered, or not begun).
    pub resendable: bool,
}

/// Records a failed attempt on `backend` (metric, debug line, dead mark
/// when it refused, timed out connecting or reset) and decides: `None` to
/// try the next backend, or the answer to give.
pub fn attempt_failed(
    metrics: &Metrics,
    config: &ProxyConfig,
    backend: &Backend,
    now_ms: u64,
    failed: Failed<'_>,
) -> Option<ProxyError> {
    let kind = failed.error.kind();
    tracing::debug!(backend = %backend.authority, ?kind, reached = ?failed.reached, error = %failed.error, "upstream attempt failed");
    metrics.upstream_error(kind);
    if failed.reached == Reached::Nothing || kind == UpstreamErrorKind::Reset {
        backend.mark_down(now_ms, config.dead_backend_ttl.as_millis() as u64);
    }
    if failed.last || !may_replay(failed.reached, failed.idempotent, failed.resendable) {
        return Some(ProxyError::Upstream(kind));
    }
    metrics.upstream_retries.inc();
    None
}

/// A backend answered: it is up again if it was marked down.
pub fn attempt_answered(backend: &Backend, now_ms: u64) {
    if backend.is_down(now_ms) {
        backend.mark_up();
    }
}

/// No answer head within `--response-header-timeout`: `504`, never
/// retried (the request may be running).
pub fn response_timed_out(metrics: &Metrics) -> ProxyError {
    let kind = UpstreamErrorKind::ResponseTimeout;
    metrics.upstream_error(kind);
    ProxyError::Upstream(kind)
}

/// What the access log says of a request, gathered only when it is on.
/// Both protocols fill the same record and log it with [`Access::log`],
/// refused requests (`400`, `408`, `431`, `505`) included.
#[derive(Debug, Clone)]
pub struct Access {
    pub client: IpAddr,
    /// `-` when the head could not be read.
    pub method: String,
    pub host: String,
    /// The target as the backend sees it: path and query.
    pub path: String,
    pub version: Version,
    pub user_agent: String,
    /// The backend of the last attempt.
    pub backend: Option<BackendAddr>,
    /// From the request's first byte sent to the backend until its answer
    /// head arrived.
    pub backend_time: Option<Duration>,
}

impl Access {
    /// A request whose head could not be read: only the client is known.
    pub fn unreadable(client: IpAddr) -> Access {
        Access {
            client,
            method: "-".into(),
            host: "-".into(),
            path: "-".into(),
            version: Version::HTTP_11,
            user_agent: "-".into(),
            backend: None,
            backend_time: None,
        }
    }

    /// One line at info level, target `access`: `bytes` is the response
    /// body as sent, `duration` from the request's start until its answer
    /// ended, both rounded to microseconds.
    pub fn log(&self, status: u16, bytes: u64, duration: Duration, request_id: &[u8]) {
        tracing::info!(
            target: "access",
            client = %self.client,
            method = %self.method,
            host = %self.host,
            path = %self.path,
            version = ?self.version,
            status,
            bytes,
            duration_us = duration.as_micros() as u64,
            user_agent = %self.user_agent,
            request_id = %String::from_utf8_lossy(request_id),
            backend = %self.backend.as_ref().map_or("-", |b| b.as_str()),
            backend_us = self.backend_time.map_or(0, |t| t.as_micros() as u64),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acme_challenges_are_answered_on_cleartext_gets_of_known_tokens_only() {
        let far = i64::MAX / 2;
        let challenges = Challenges::answering(&[("tok", &format!("{far} tok.key"))]);
        let path = "/.well-known/acme-challenge/tok";
        assert_eq!(
            acme_challenge(&challenges, false, "GET", path).as_deref(),
            Some(&b"tok.key"[..])
        );
        assert_eq!(acme_challenge(&challenges, true, "GET", path), None, "TLS");
        assert_eq!(acme_challenge(&challenges, false, "POST", path), None);
        assert_eq!(acme_challenge(&challenges, false, "HEAD", path), None);
        for other in [
            "/.well-known/acme-challenge/other",
            "/.well-known/acme-challenge/",
            "/tok",
            "/x/.well-known/acme-challenge/tok",
        ] {
            assert_eq!(acme_challenge(&challenges, false, "GET", other), None);
        }
    }

    #[test]
    fn idempotent_methods_are_rfc_9110s() {
        for m in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
            assert!(is_idempotent(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "PURGE", ""] {
            assert!(!is_idempotent(m), "{m}");
        }
    }

    #[test]
    fn replay_needs_an_idempotent_method_once_the_request_may_have_arrived() {
        assert!(may_replay(Reached::Nothing, false, true));
        assert!(!may_replay(Reached::Nothing, true, false), "body gone");
        assert!(may_replay(Reached::Request, true, true));
        assert!(!may_replay(Reached::Request, false, true), "POST twice");
        assert!(!may_replay(Reached::Response, true, true), "answer begun");
    }

    #[test]
    fn a_failed_attempt_is_retried_only_when_the_rule_allows() {
        let metrics = Metrics::new();
        let config = crate::config::Config::new("redis://127.0.0.1:1/0")
            .unwrap()
            .proxy;
        let table = crate::routes::RouteTable::build(
            &[("a.test", "10.0.0.1:1,10.0.0.2:1")],
            &crate::routes::RouteTable::unloaded(),
        );
        let crate::routes::Lookup::Route(route) = table.lookup("a.test") else {
            panic!("no route");
        };
        let backend = &route.backends[0];
        let refused = UpstreamError::Connect(std::io::ErrorKind::ConnectionRefused.into());
        let failed = |error, last, idempotent| Failed {
            reached: Reached::of(error),
            error,
            last,
            idempotent,
            resendable: true,
        };
        assert_eq!(
            attempt_failed(
                &metrics,
                &config,
                backend,
                1,
                failed(&refused, false, false)
            ),
            None,
            "never sent: retried whatever the method"
        );
        assert!(backend.is_down(2), "a refusing backend is marked down");
        attempt_answered(backend, 2);
        assert!(!backend.is_down(2));
        let closed = UpstreamError::Closed;
        assert_eq!(
            attempt_failed(&metrics, &config, backend, 1, failed(&closed, false, false)),
            Some(ProxyError::Upstream(UpstreamErrorKind::Reset)),
            "a POST that may have arrived is not sent again"
        );
        assert_eq!(
            attempt_failed(&metrics, &config, backend, 1, failed(&closed, false, true)),
            None
        );
        assert_eq!(
            attempt_failed(&metrics, &config, backend, 1, failed(&refused, true, true)),
            Some(ProxyError::Upstream(UpstreamErrorKind::Refused)),
            "none left"
        );
        assert_eq!(metrics.upstream_retries.get(), 2);
    }
}
