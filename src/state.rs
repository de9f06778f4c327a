//! State shared by the sync loop (the only writer of the route table), the
//! request path (lock-free reader) and the admin endpoint (reporter).

use crate::metrics::Metrics;
use crate::routes::{RedisMicros, RouteTable};
use arc_swap::{ArcSwap, Guard};
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Redis connection state as the sync loop last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisState {
    Connecting,
    Connected,
    Down,
}

/// How changes reach this replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum NotificationMode {
    /// Not known yet (no connection so far).
    Unknown,
    /// Keyspace notifications on; periodic resync is only the safety net.
    Keyspace,
    /// Notifications unavailable (CONFIG refused, subscribe refused):
    /// changes arrive only with the periodic resync.
    Polling { reason: String },
}

/// This replica's part in shared reads (see `sync::shared`), for `/readyz`
/// and the replica status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedReadsStatus {
    /// `inactive` (small hash, or not decided yet), `reader`, `follower`,
    /// or `off` (refused or disabled; every reload reads for itself).
    pub role: &'static str,
    /// The lease holder, as last seen.
    pub reader: Option<String>,
    /// Why shared reads are off, when they are.
    pub reason: Option<String>,
}

impl Default for SharedReadsStatus {
    fn default() -> Self {
        SharedReadsStatus {
            role: "inactive",
            reader: None,
            reason: None,
        }
    }
}

/// What the sync loop reports about itself (admin `/readyz`, replica status).
#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    pub redis: RedisState,
    pub redis_since: SystemTime,
    pub last_error: Option<String>,
    pub notifications: NotificationMode,
    /// Last successful read of the hash, whether or not it changed anything.
    pub last_sync: Option<SystemTime>,
    /// Redis time reflected by the last successful read (DESIGN 3.7).
    pub watermark: Option<RedisMicros>,
    /// Why the snapshot file could not be used or written, if it could not.
    pub snapshot_error: Option<String>,
    pub shared_reads: SharedReadsStatus,
}

/// The state every part of the proxy shares.
pub struct SharedState {
    /// Written only by `sync` (and the snapshot loader it calls).
    table: ArcSwap<RouteTable>,
    status: Mutex<SyncStatus>,
    pub metrics: Metrics,
    /// The certificates served over TLS (see `tls::resolver`).
    pub certs: crate::tls::CertStore,
}

impl SharedState {
    pub fn new() -> Arc<SharedState> {
        Arc::new(SharedState {
            table: ArcSwap::from_pointee(RouteTable::unloaded()),
            status: Mutex::new(SyncStatus {
                redis: RedisState::Connecting,
                redis_since: SystemTime::now(),
                last_error: None,
                notifications: NotificationMode::Unknown,
                last_sync: None,
                watermark: None,
                snapshot_error: None,
                shared_reads: SharedReadsStatus::default(),
            }),
            metrics: Metrics::new(),
            certs: crate::tls::CertStore::default(),
        })
    }

    /// The current table: one atomic load, no lock.
    #[inline]
    pub fn table(&self) -> Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// The current table as an owned `Arc`, for holders across awaits.
    pub fn table_full(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    pub(crate) fn swap_table(&self, table: Arc<RouteTable>) {
        let m = &self.metrics;
        m.table_routes.set(table.len() as i64);
        m.table_version.set(table.version as i64);
        m.invalid_routes.set(table.invalid().len() as i64);
        let built = table
            .built_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        m.table_age_base.set(built.as_secs() as i64);
        self.table.store(table);
    }

    pub fn status(&self) -> MutexGuard<'_, SyncStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_ready(&self) -> bool {
        self.table().is_loaded()
    }
}
