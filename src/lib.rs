//! Switchyard: a dynamic HTTP reverse proxy whose routing table lives in a
//! Redis hash and is pushed to every replica by keyspace notifications.
//!
//! Map of the crate:
//! - [`config`]: flags and environment into a typed [`config::Config`].
//! - [`routes`]: the immutable [`routes::RouteTable`], route parsing, host normalisation.
//! - [`sync`]: Redis → tables: notifications, subscribe-then-read, the change log, the
//!   removal guard, periodic resyncs, backoff, supervision; any number of followed hashes.
//! - [`state`]: what sync, proxy and admin share (the `ArcSwap` and status).
//! - [`proxy`]: the request path: host → route → backend, headers, upgrades.
//! - [`server`]: accept loop, HTTP/1 + HTTP/2, limits, graceful shutdown.
//! - [`admin`]: `/healthz`, `/readyz`, `/routes`, `/metrics`.
//! - [`metrics`]: Prometheus metrics.
//! - [`replicas`]: the replica registry, `status`, `--wait`.
//! - [`snapshot`]: the on-disk copy of the last tables (routes and certificates).
//! - [`cli`]: the `route` and `status` commands, the exit codes.
//! - [`reload`]: reload requests (SIGHUP) for parts that re-read files.
//! - [`tls`]: certificates (files, the certs hash, sealed keys), SNI, the handshake, `cert`.
//! - [`acme`]: automatic certificates: which hosts, one order per host across replicas.
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod reload;
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
    run_reloadable(
        config,
        proxy_listener,
        admin_listener,
        shutdown,
        reload::Reload::new(),
    )
    .await
}

/// [`run`], with reload requests (the binary's SIGHUP) for the parts that
/// can re-read their files while serving.
pub async fn run_reloadable(
    config: config::Config,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    reload: reload::Reload,
) {
    let listeners = Listeners {
        proxy: proxy_listener,
        admin: admin_listener,
        tls: None,
    };
    run_with(config, listeners, shutdown, reload).await
}

/// The sockets a proxy serves, already bound.
pub struct Listeners {
    /// Cleartext proxied traffic.
    pub proxy: TcpListener,
    /// `/healthz`, `/readyz`, `/routes`, `/certs`, `/metrics`.
    pub admin: TcpListener,
    /// Proxied traffic over TLS (`--tls-listen`), when set.
    pub tls: Option<TcpListener>,
}

/// [`run_reloadable`] with every listener, the TLS one included.
pub async fn run_with(
    config: config::Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    reload: reload::Reload,
) {
    let state = state::SharedState::new();
    let stop = CancellationToken::new();
    let acme_on = config.acme.is_some();
    // The followed hashes: the routes hash, the certs hash and, with ACME,
    // the HTTP-01 tokens (more register here, each a value: see
    // `sync::hash`). Ready once every one is loaded.
    let snapshot = sync::snapshot_writer(&config.sync, &state);
    let hashes: sync::HashesFactory = {
        let snapshot = snapshot.clone();
        let (config, tls, state) = (config.sync.clone(), config.tls.clone(), state.clone());
        std::sync::Arc::new(move || {
            let mut hashes = vec![
                sync::routes_hash(&config, &state, snapshot.clone()),
                sync::certs_hash(&config, &tls, &state, snapshot.clone()),
            ];
            // HTTP-01 tokens, answered from memory (README.md, "Automatic
            // certificates").
            if acme_on {
                hashes.push(sync::challenges_hash(&config, &state));
            }
            hashes
        })
    };
    let sync_task = tokio::spawn(sync::supervise(
        config.sync.clone(),
        state.clone(),
        hashes,
        stop.child_token(),
    ));
    if let Some(files) = tls::start(&config.tls, &state, stop.child_token()) {
        // SIGHUP loads the default certificate's files again, changed or not.
        let state = state.clone();
        reload.spawn_listener(stop.child_token(), move || {
            let _ = files.reload(&state);
        });
    }
    // Automatic certificates: the ACME task, when `--acme-domains` is set.
    let acme_task =
        acme_on.then(|| tokio::spawn(acme::run(config.clone(), state.clone(), stop.child_token())));
    let admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        state.clone(),
        stop.child_token(),
    ));
    // Session ticket keys shared through Redis, for replicas that speak TLS.
    let tickets_task = listeners.tls.is_some().then(|| {
        tokio::spawn(tls::tickets::run(
            config.clone(),
            state.clone(),
            stop.child_token(),
        ))
    });
    let tls = listeners.tls.map(|listener| server::TlsListener {
        listener,
        acceptor: std::sync::Arc::new(tls::TlsAcceptor::new(
            state.clone(),
            config.tls.handshake_timeout,
        )),
    });
    server::serve(
        listeners.proxy,
        tls,
        state.clone(),
        config.proxy.clone(),
        config.server.clone(),
        shutdown,
    )
    .await;
    stop.cancel();
    let _ = sync_task.await;
    let _ = admin_task.await;
    if let Some(task) = tickets_task {
        let _ = task.await;
    }
    if let Some(acme_task) = acme_task {
        let _ = acme_task.await;
    }
    if let Some(snapshot) = snapshot {
        // The last table swapped in reaches the file before the process
        // exits (the writer thread would be cut off mid-write otherwise).
        let written =
            tokio::task::spawn_blocking(move || snapshot.flush(std::time::Duration::from_secs(5)))
                .await;
        if !matches!(written, Ok(true)) {
            tracing::warn!("the snapshot file may miss the last table: its write did not finish");
        }
    }
}
