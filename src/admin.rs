//! The admin endpoint (README.md, "Admin endpoint"): `/healthz`, `/readyz`,
//! `/routes`, `/certs`, `/tickets`, `/metrics`. Loopback by default; reads
//! shared state, never writes it.

use crate::routes::Entry;
use crate::state::SharedState;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the admin endpoint until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<SharedState>, shutdown: CancellationToken) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &state)) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, state: &SharedState) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(state),
        "/routes" => routes(state),
        "/certs" => json_response(StatusCode::OK, crate::tls::view::certs_json(&state.certs)),
        "/tickets" => json_response(StatusCode::OK, state.tickets.view()),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(&value).expect("json"),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn age_seconds(t: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs_f64()
}

fn readyz(state: &SharedState) -> Response<Full<Bytes>> {
    let table = state.table_full();
    let status = state.status().clone();
    let ready = table.is_loaded() && status.all_loaded();
    let body = json!({
        "ready": ready,
        "source": table.source,
        "redis": status.redis,
        "redis_since_ms": unix_ms(status.redis_since),
        "last_error": status.last_error,
        "notifications": status.notifications,
        "table": {
            "version": table.version,
            "routes": table.len(),
            "invalid": table.invalid().len(),
            "built_at_ms": unix_ms(table.built_at),
            "age_seconds": age_seconds(table.built_at),
        },
        "last_sync_ms": status.last_sync.map(unix_ms),
        "last_sync_age_seconds": status.last_sync.map(age_seconds),
        "watermark_us": status.watermark,
        "snapshot_error": status.snapshot_error,
        "sync": sync_liveness(&status),
        "hashes": status.hashes,
        "held": status.held().map(|(key, held)| json!({ "key": key, "held": held })).collect::<Vec<_>>(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, body)
}

/// Whether the sync loop keeps up: the age of its last successful read
/// against the resync interval (every hash is read at least that often
/// while Redis answers), and how often it was restarted.
fn sync_liveness(status: &crate::state::SyncStatus) -> serde_json::Value {
    json!({
        "last_read_age_seconds": status.last_read_age().map(|a| a.as_secs_f64()),
        "stale_after_seconds": status.stale_after.as_secs_f64(),
        "stale": status.is_stale(),
        "restarts": status.restarts,
    })
}

fn routes(state: &SharedState) -> Response<Full<Bytes>> {
    let table = state.table_full();
    let watermark = state.status().watermark;
    let routes: serde_json::Map<String, serde_json::Value> = table
        .entries()
        .into_iter()
        .map(|(host, entry)| {
            let value = match entry {
                Entry::Valid(route) => json!({
                    "value": route.value(),
                    "backends": route.backends.iter().map(|b| b.authority.to_string()).collect::<Vec<_>>(),
                }),
                Entry::Invalid => json!({ "invalid": true }),
            };
            (host, value)
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "version": table.version,
            "source": table.source,
            "built_at_ms": unix_ms(table.built_at),
            "table_watermark_us": table.watermark,
            "watermark_us": watermark,
            "routes": routes,
            "invalid": table.invalid(),
        }),
    )
}
