//! State shared by the sync loop (the only writer of the route table), the
//! request path (lock-free reader) and the admin endpoint (reporter).

use crate::metrics::Metrics;
use crate::routes::{RedisMicros, RouteTable};
use crate::sync::guard::Held;
use arc_swap::{ArcSwap, Guard};
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

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
    /// `CONFIG` is refused, so the setting cannot be read: keyspace mode
    /// as soon as an event arrives (the operator may have set it).
    Unconfirmed { reason: String },
    /// Notifications unavailable (off and `CONFIG SET` refused, subscribe
    /// refused): changes arrive only with the periodic resync.
    Polling { reason: String },
}

/// One followed hash, as `/readyz` and the replica status show it.
#[derive(Debug, Clone, Serialize)]
pub struct HashStatus {
    pub key: String,
    /// A table is served (from Redis or the snapshot).
    pub loaded: bool,
    /// A removal the guard holds (see `sync::guard`).
    pub held: Option<Held>,
    /// `on`, or `off: why` (every change then costs a full read).
    pub change_log: String,
    /// The last successful read of it.
    #[serde(skip)]
    pub last_read: Option<SystemTime>,
}

/// What the sync loop reports about itself (admin `/readyz`, replica status).
#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    pub redis: RedisState,
    pub redis_since: SystemTime,
    pub last_error: Option<String>,
    pub notifications: NotificationMode,
    /// Last successful read of any followed hash, whether or not it
    /// changed anything: the sync loop's liveness.
    pub last_sync: Option<SystemTime>,
    /// Redis time (µs) such that every write to a followed hash before it
    /// is in the tables served (`--wait` relies on it; README.md).
    pub watermark: Option<RedisMicros>,
    /// Why the snapshot file could not be used or written, if it could not.
    pub snapshot_error: Option<String>,
    /// The followed hashes (the routes hash first).
    pub hashes: Vec<HashStatus>,
    /// Times the sync loop was restarted after a panic.
    pub restarts: u64,
    /// A last read older than this is stale: the periodic resync should
    /// have made one (resync interval × `Tuning::stale_after_resyncs`).
    pub stale_after: Duration,
}

impl SyncStatus {
    /// The removals held, by hash key.
    pub fn held(&self) -> impl Iterator<Item = (&str, &Held)> + '_ {
        self.hashes
            .iter()
            .filter_map(|h| h.held.as_ref().map(|held| (h.key.as_str(), held)))
    }

    /// Every followed hash has a table (the routes table is checked by
    /// [`SharedState::is_ready`] itself). Before the followed hashes are
    /// registered, none has: a replica is never ready in between (the
    /// snapshot's routes may be in while its certificates are not yet).
    pub fn all_loaded(&self) -> bool {
        !self.hashes.is_empty() && self.hashes.iter().all(|h| h.loaded)
    }

    /// The sync loop has not read Redis for longer than it should have
    /// (Redis down, or the loop stuck): the tables may be behind.
    pub fn is_stale(&self) -> bool {
        self.last_read_age()
            .is_none_or(|age| age > self.stale_after)
    }

    /// Age of the last successful read.
    pub fn last_read_age(&self) -> Option<std::time::Duration> {
        self.last_sync
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }
}

/// The state every part of the proxy shares.
pub struct SharedState {
    /// Written only by `sync` (and the snapshot loader it calls):
    /// ARCHITECTURE.md, "Only the sync module stores into the ArcSwap".
    table: ArcSwap<RouteTable>,
    status: Mutex<SyncStatus>,
    pub metrics: Metrics,
    /// The certificates served over TLS (see `tls::resolver`).
    pub certs: crate::tls::CertStore,
    /// Session tickets under keys shared through Redis (see `tls::tickets`).
    pub tickets: Arc<crate::tls::tickets::Ticketer>,
    /// ACME HTTP-01 tokens, answered by the cleartext listener (stored
    /// only by `sync`; see `acme::challenges`).
    pub challenges: crate::acme::challenges::Challenges,
}

impl SharedState {
    pub fn new() -> Arc<SharedState> {
        let metrics = Metrics::new();
        let tickets = Arc::new(crate::tls::tickets::Ticketer::new(metrics.registry()));
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
                hashes: Vec::new(),
                restarts: 0,
                stale_after: Duration::from_secs(60),
            }),
            metrics,
            certs: crate::tls::CertStore::default(),
            tickets,
            challenges: Default::default(),
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

    /// Serving: the route table and every other followed hash loaded.
    pub fn is_ready(&self) -> bool {
        self.table().is_loaded() && self.status().all_loaded()
    }
}
