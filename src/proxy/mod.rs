//! The request path: host → route → backend, forwarded on pooled
//! keep-alive HTTP/1.1 connections, bodies streamed both ways, upgrades
//! tunnelled. Both client protocols share one policy ([`policy`]) and one
//! backend layer ([`upstream`]): HTTP/1.x is served by the proxy's own
//! driver ([`h1`]), HTTP/2 by hyper's server, whose requests are forwarded
//! over the same backend connections ([`h2`]).
//!
//! The seam for other transports (TLS): any client stream that implements
//! [`io::Socket`], with a [`ConnInfo`], is served by
//! `server::serve_connection`.
//!
//! Architecture invariant: nothing here awaits Redis. A lookup is one
//! `ArcSwap` load and one hash lookup (plus one per label for wildcards).

mod error;
pub mod h1;
pub mod h2;
pub mod headers;
pub mod idle;
pub mod io;
pub mod policy;
pub mod proxy_protocol;
pub mod tunnel;
pub mod upstream;

pub use error::ProxyError;

use crate::config::ProxyConfig;
use crate::state::SharedState;
use bytes::Bytes;
use io::{Dialer, Socket, TcpDialer};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use upstream::{Pool, PoolConfig};

/// Idle backend connections are closed after this long.
const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const BACKEND_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Bodies up to this size are buffered when the route has several
/// backends, so that a refused connection can be retried elsewhere.
const REPLAY_BUFFER_LIMIT: u64 = 64 * 1024;

/// What the request path knows of a client connection besides its bytes;
/// whoever accepts a connection (plain TCP, PROXY protocol, TLS) fills it.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client: the TCP peer, or the source a PROXY protocol header
    /// named. Forwarding headers and `--trusted-proxies` use it.
    pub peer: SocketAddr,
    /// The connection is TLS: `X-Forwarded-Proto: https`.
    pub tls: bool,
    /// ALPN chose `h2`: HTTP/2 from the first byte, no preface sniffing.
    pub h2: bool,
}

impl ConnInfo {
    /// A plain TCP connection from `peer`.
    pub fn plain(peer: SocketAddr) -> ConnInfo {
        ConnInfo {
            peer,
            tls: false,
            h2: false,
        }
    }
}

/// One worker's request path: its backend pool and its tunnels.
pub struct Proxy<D: Dialer = TcpDialer> {
    state: Arc<SharedState>,
    /// Backend connections of both protocols' requests.
    pool: Pool<D>,
    config: ProxyConfig,
    /// Upgraded (WebSocket) tunnels: connection tasks no longer see them,
    /// so they are tracked here and closed after the shutdown deadline.
    tunnels: TaskTracker,
    close_tunnels: CancellationToken,
}

impl Proxy {
    pub fn new(state: Arc<SharedState>, config: ProxyConfig) -> Proxy {
        let dialer = TcpDialer {
            tcp_keepalive: BACKEND_TCP_KEEPALIVE,
        };
        Proxy::with_dialer(state, config, dialer)
    }
}

impl<D: Dialer> Proxy<D> {
    /// A proxy whose backend connections come from `dialer`.
    pub fn with_dialer(state: Arc<SharedState>, config: ProxyConfig, dialer: D) -> Proxy<D> {
        let pool = Pool::new(
            dialer,
            PoolConfig {
                connect_timeout: config.connect_timeout,
                idle_timeout: BACKEND_IDLE_TIMEOUT,
            },
        );
        Proxy {
            state,
            pool,
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

    /// Whether `client` is a proxy of ours (`--trusted-proxies`), whose
    /// forwarding headers are kept and appended to.
    pub fn trusts(&self, client: IpAddr) -> bool {
        let client = headers::client_ip(client);
        self.config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&client))
    }

    /// An upgraded connection after a relayed 101: both streams, with the
    /// bytes each side sent past the handshake, copied both ways until
    /// either closes, `--tunnel-idle-timeout` passes in silence, or the
    /// shutdown deadline.
    fn tunnel<C: Socket, U: Socket>(
        &self,
        client: C,
        client_rest: Bytes,
        upstream: U,
        upstream_rest: Bytes,
    ) {
        let idle = self.config.tunnel_idle_timeout;
        let close = self.close_tunnels.clone();
        self.tunnels.spawn(async move {
            let copy = tunnel::run(client, &client_rest, upstream, &upstream_rest, idle);
            tokio::select! {
                copied = copy => if let Err(e) = copied {
                    tracing::debug!(error = %e, "tunnel closed");
                },
                _ = close.cancelled() => tracing::debug!("tunnel closed at shutdown"),
            }
        });
    }
}
