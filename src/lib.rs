//! Switchyard: a dynamic HTTP reverse proxy whose routing table lives in a
//! Redis hash and is pushed to every replica by keyspace notifications.
//!
//! Map of the crate:
//! - [`config`]: flags and environment into a typed [`config::Config`].
//! - [`routes`]: the immutable [`routes::RouteTable`], route parsing, host normalisation.
//! - [`sync`]: Redis → table: notifications, subscribe-then-load, coalesced resyncs, backoff,
//!   shared reads (one replica reads a large hash, the others apply its delta).
//! - [`state`]: what sync, proxy and admin share (the `ArcSwap` and status).
//! - [`proxy`]: the request path: host → route → backend, headers, upgrades.
//! - [`server`]: accept loop, HTTP/1 + HTTP/2, limits, graceful shutdown.
//! - [`admin`]: `/healthz`, `/readyz`, `/routes`, `/metrics`.
//! - [`metrics`]: Prometheus metrics.
//! - [`replicas`]: replica status keys, `status`, `route set --wait`.
//! - [`snapshot`]: the on-disk copy of the last table.
//! - [`cli`]: the `route` and `status` commands.
//! - [`tls`]: certificates (files, the certs hash, sealed keys), SNI, the handshake, `cert`.
//! - [`acme`]: automatic certificates: which hosts, one order per host across replicas.
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod replicas;
pub mod routes;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod sync;
pub mod tls;

use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs a proxy on already-bound listeners until `shutdown` resolves, then
/// drains in-flight requests (up to the configured deadline) and returns.
/// Tests bind `127.0.0.1:0` and call this directly. Sync, admin and the
/// accept loop run on the caller's runtime; with `worker_threads > 1`
/// connections are served on threads of their own (see [`server`]).
pub async fn run(
    config: config::Config,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let state = state::SharedState::new();
    let stop = CancellationToken::new();
    let sync_task = tokio::spawn(sync::run(
        config.sync.clone(),
        state.clone(),
        stop.child_token(),
    ));
    let _tls_files = tls::start(&config.tls, &state, stop.child_token());
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        state.clone(),
        stop.child_token(),
    ));
    server::serve(
        proxy_listener,
        state.clone(),
        config.proxy.clone(),
        config.server.clone(),
        shutdown,
    )
    .await;
    stop.cancel();
    let _ = sync_task.await;
    let _ = admin_task.await;
}
