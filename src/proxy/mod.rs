//! The request path: host → route → backend, forwarded on pooled
//! keep-alive connections, bodies streamed both ways, upgrades tunnelled.
//! HTTP/1.x is served on plain sockets by [`h1`]; HTTP/2 by hyper, through
//! [`Proxy::handle`] and hyper's HTTP/1 client ([`pool`]).
//!
//! Architecture invariant: nothing here awaits Redis. A lookup is one
//! `ArcSwap` load and one hash lookup (plus one per label for wildcards).

mod error;
pub mod h1;
pub mod headers;
pub mod policy;
mod pool;
pub mod tunnel;

pub use error::ProxyError;
pub use pool::PooledBody;

use crate::config::ProxyConfig;
use crate::metrics::UpstreamErrorKind;
use crate::routes::{now_ms, Lookup, Route};
use crate::state::SharedState;
use bytes::Bytes;
use headers::{
    add_forwarding_headers, has_conflicting_framing, request_host, strip_hop_by_hop,
    upgrade_protocol, X_REQUEST_ID,
};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use pool::{Pool, PoolConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Body of requests sent upstream: the client's streamed body, or a
/// buffered copy when the request may be replayed on another backend.
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;
/// Body of responses sent to clients: the backend's streamed body, or a
/// short body of our own.
pub type ResponseBody = Either<PooledBody, Full<Bytes>>;

/// Idle backend connections are closed after this long.
const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const BACKEND_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Bodies up to this size are buffered when the route has several
/// backends, so that a refused connection can be retried elsewhere.
const REPLAY_BUFFER_LIMIT: u64 = 64 * 1024;

pub struct Proxy {
    state: Arc<SharedState>,
    /// Backend connections of HTTP/2 clients' requests (hyper's client).
    pool: Pool,
    /// Backend connections of HTTP/1 clients' requests (plain sockets).
    h1_pool: h1::upstream::Pool,
    config: ProxyConfig,
    /// Upgraded (WebSocket) tunnels: hyper's graceful shutdown no longer
    /// sees them, so they are tracked here and closed after the deadline.
    tunnels: TaskTracker,
    close_tunnels: CancellationToken,
}

/// What the access log says of a request.
struct AccessInfo {
    method: Method,
    host: String,
    path: String,
    backend: Option<String>,
    request_id: Option<HeaderValue>,
}

impl Proxy {
    pub fn new(state: Arc<SharedState>, config: ProxyConfig) -> Proxy {
        let pool = Pool::new(PoolConfig {
            connect_timeout: config.connect_timeout,
            idle_timeout: BACKEND_IDLE_TIMEOUT,
            tcp_keepalive: BACKEND_TCP_KEEPALIVE,
        });
        let h1_pool = h1::upstream::Pool::new(h1::upstream::PoolConfig {
            connect_timeout: config.connect_timeout,
            idle_timeout: BACKEND_IDLE_TIMEOUT,
            tcp_keepalive: BACKEND_TCP_KEEPALIVE,
        });
        Proxy {
            state,
            pool,
            h1_pool,
            config,
            tunnels: TaskTracker::new(),
            close_tunnels: CancellationToken::new(),
        }
    }

    /// Waits for upgraded tunnels to finish, closing them when `deadline`
    /// passes first.
    pub async fn drain_tunnels(&self, deadline: Duration) {
        self.tunnels.close();
        if tokio::time::timeout(deadline, self.tunnels.wait())
            .await
            .is_err()
        {
            self.close_tunnels.cancel();
            self.tunnels.wait().await;
        }
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.state.metrics
    }

    pub fn open_tunnels(&self) -> usize {
        self.tunnels.len()
    }

    /// Serves one request of an HTTP/2 client; never fails (errors become
    /// responses).
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ResponseBody> {
        let started = Instant::now();
        let mut access = self.config.access_log.then(|| AccessInfo {
            method: req.method().clone(),
            host: request_host(&req)
                .map(|h| h.into_owned())
                .unwrap_or_default(),
            path: req.uri().path().to_owned(),
            backend: None,
            request_id: None,
        });
        let response = match self.forward(req, peer, &mut access).await {
            Ok(response) => response,
            Err(error) => error_response(error),
        };
        let elapsed = started.elapsed();
        self.state
            .metrics
            .observe_request(response.status().as_u16(), elapsed.as_secs_f64());
        if let Some(a) = access {
            let bytes = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info!(
                target: "access",
                method = %a.method,
                host = %a.host,
                path = %a.path,
                status = response.status().as_u16(),
                backend = a.backend.as_deref().unwrap_or("-"),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                bytes,
                request_id = a.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            );
        }
        response
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        access: &mut Option<AccessInfo>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::ConnectRefused);
        }
        // Differing Content-Lengths hyper rejects itself; the header check
        // keeps the rule true whatever the parser does.
        if has_conflicting_framing(req.headers()) {
            return Err(ProxyError::BadFraming);
        }
        let route: Arc<Route> = {
            let host = request_host(&req).map_err(|_| ProxyError::BadHost)?;
            let table = self.state.table();
            if !table.is_loaded() {
                return Err(ProxyError::NotReady);
            }
            match table.lookup(&host) {
                Lookup::Route(route) => route.clone(),
                Lookup::Invalid => return Err(ProxyError::InvalidRoute),
                Lookup::NotFound => return Err(ProxyError::NoRoute),
            }
        };

        let upgrade = upgrade_protocol(&req);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let original_host = match req.uri().authority() {
            // `host[:port]` without any `userinfo@`: that is not part of a
            // Host header and must not leak to the backend.
            Some(authority) => authority
                .as_str()
                .rsplit('@')
                .next()
                .and_then(|host| HeaderValue::from_str(host).ok()),
            None => req.headers().get(header::HOST).cloned(),
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        headers::strip_underscored(&mut parts.headers);
        if let Some(protocol) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol.clone());
        }
        // The host we routed by is the host the backend sees. HTTP/2 has no
        // Host header; an absolute-form target wins over a Host header sent
        // with it (RFC 9112 3.2.2: a proxy replaces it), so the backend is
        // never told a different host than the one its route was chosen for.
        if let Some(host) = &original_host {
            parts.headers.insert(header::HOST, host.clone());
        }
        add_forwarding_headers(&mut parts.headers, peer.ip(), "http", original_host);
        let request_id = match parts.headers.get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = headers::new_request_id();
                parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        if let Some(a) = access.as_mut() {
            a.request_id = Some(request_id.clone());
        }
        // Origin form (`/path?query`): the backend is addressed by the
        // connection, the host by the Host header.
        let origin_form = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );

        // A body we can send again if the first backend refuses.
        let mut streaming = None;
        let replayable: Option<Bytes> = if body.is_end_stream() {
            Some(Bytes::new())
        } else if route.backends.len() > 1
            && body
                .size_hint()
                .upper()
                .is_some_and(|n| n <= REPLAY_BUFFER_LIMIT)
        {
            let collect = Limited::new(body, REPLAY_BUFFER_LIMIT as usize).collect();
            let collected = tokio::time::timeout(self.config.body_read_timeout, collect)
                .await
                .map_err(|_| ProxyError::BodyTimeout)?
                .map_err(|_| ProxyError::BadFraming)?;
            Some(collected.to_bytes())
        } else {
            streaming = Some(body);
            None
        };

        let attempts = route.backends.len();
        let mut last_error = UpstreamErrorKind::Other;
        for (attempt, backend) in route.pick_order(now_ms()).enumerate() {
            let is_last = attempt + 1 == attempts;
            let body = match (&replayable, streaming.take()) {
                (Some(bytes), _) => Either::Right(Full::new(bytes.clone())),
                (None, Some(body)) => Either::Left(body),
                (None, None) => break,
            };
            let mut upstream = Request::new(body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.version_mut() = Version::HTTP_11;
            *upstream.uri_mut() = origin_form.clone();
            *upstream.headers_mut() = if is_last || replayable.is_none() {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            if let Some(a) = access.as_mut() {
                a.backend = Some(backend.authority.to_string());
            }
            match tokio::time::timeout(
                self.config.response_header_timeout,
                self.pool.send(&backend.authority, upstream),
            )
            .await
            {
                Ok(Ok(response)) => {
                    if backend.is_down(now_ms()) {
                        backend.mark_up();
                    }
                    return self.respond(response, client_upgrade, upgrade, request_id);
                }
                Ok(Err(error)) => {
                    let kind = error.kind();
                    tracing::debug!(backend = %backend.authority, ?kind, %error, "upstream attempt failed");
                    self.state.metrics.upstream_error(kind);
                    let never_sent = matches!(
                        kind,
                        UpstreamErrorKind::Refused | UpstreamErrorKind::ConnectTimeout
                    );
                    if never_sent || kind == UpstreamErrorKind::Reset {
                        backend
                            .mark_down(now_ms(), self.config.dead_backend_ttl.as_millis() as u64);
                    }
                    last_error = kind;
                    let safe = replayable.is_some() && (never_sent || parts.method.is_idempotent());
                    if is_last || !safe {
                        return Err(ProxyError::Upstream(kind));
                    }
                    self.state.metrics.upstream_retries.inc();
                }
                Err(_elapsed) => {
                    self.state
                        .metrics
                        .upstream_error(UpstreamErrorKind::ResponseTimeout);
                    return Err(ProxyError::Upstream(UpstreamErrorKind::ResponseTimeout));
                }
            }
        }
        Err(ProxyError::Upstream(last_error))
    }

    fn respond(
        &self,
        mut response: Response<PooledBody>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        requested: Option<HeaderValue>,
        request_id: HeaderValue,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(client_upgrade), Some(requested)) = (client_upgrade, requested) else {
                return Err(ProxyError::UpgradeMismatch);
            };
            let agreed = response
                .headers()
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .zip(requested.to_str().ok())
                .is_some_and(|(got, want)| got.eq_ignore_ascii_case(want));
            if !agreed {
                return Err(ProxyError::UpgradeMismatch);
            }
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let idle = self.config.tunnel_idle_timeout;
            self.track_tunnel(async move {
                let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!(error = %e, "upgrade failed");
                        return;
                    }
                };
                let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                if let Err(e) = tunnel::run(client, &[], upstream, &[], idle).await {
                    tracing::debug!(error = %e, "tunnel closed");
                }
            });
            return Ok(response.map(Either::Left));
        }
        strip_hop_by_hop(response.headers_mut(), false);
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id);
        Ok(response.map(Either::Left))
    }
}

impl Proxy {
    /// Runs an upgraded connection's byte copy as a tracked tunnel: hyper's
    /// and the HTTP/1 path's graceful shutdown no longer see it, so it is
    /// closed here once the shutdown deadline passes.
    fn track_tunnel(&self, copy: impl std::future::Future<Output = ()> + Send + 'static) {
        let close = self.close_tunnels.clone();
        self.tunnels.spawn(async move {
            tokio::select! {
                _ = copy => {}
                _ = close.cancelled() => tracing::debug!("tunnel closed at shutdown"),
            }
        });
    }

    /// The HTTP/1 path's tunnel: both sockets after a relayed 101, with the
    /// bytes each side sent past the handshake.
    fn tunnel(
        &self,
        client: TcpStream,
        client_rest: Bytes,
        upstream: TcpStream,
        upstream_rest: Bytes,
    ) {
        let idle = self.config.tunnel_idle_timeout;
        self.track_tunnel(async move {
            let copied = tunnel::run(client, &client_rest, upstream, &upstream_rest, idle);
            if let Err(e) = copied.await {
                tracing::debug!(error = %e, "tunnel closed");
            }
        });
    }
}

/// A short plain-text answer of our own.
pub fn error_response(error: ProxyError) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        error.body().as_bytes(),
    ))));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match error {
        ProxyError::NotReady => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        ProxyError::BadHost
        | ProxyError::BadFraming
        | ProxyError::BadRequest
        | ProxyError::BadChunking
        | ProxyError::HeadersTooLarge
        | ProxyError::BadVersion => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}
