//! Keeps the route table in step with the Redis hash (DESIGN 3).
//!
//! One task runs sessions. A session connects two clients (commands and
//! subscriber), turns notifications on, subscribes, confirms the
//! subscription, and only then loads the hash. It then reloads whenever the
//! table is dirty: a keyspace event, a lagging event receiver, or the
//! periodic resync. Any connection loss ends the session, and the next
//! session starts again from "subscribe, then load", so a reconnect is
//! always followed by a full resync. Events are hints; resyncs give
//! correctness.

pub mod dump;
pub mod redis;

use crate::config::SyncConfig;
use crate::metrics::ResyncReason;
use crate::replicas;
use crate::routes::{RouteTable, TableSource};
use crate::snapshot;
use crate::state::{NotificationMode, RedisState, SharedState};
use dump::DumpError;
use fred::prelude::*;
use fred::types::KeyspaceEvent;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Above this many entries the table is built on a blocking thread so the
/// reactor keeps serving while a large hash is parsed.
const BUILD_OFF_REACTOR_ABOVE: usize = 10_000;
/// How many host names a diff log line names per category.
const DIFF_LOG_NAMES: usize = 20;

/// Runs the sync loop until `shutdown` is cancelled.
pub async fn run(config: SyncConfig, state: Arc<SharedState>, shutdown: CancellationToken) {
    if let Some(path) = &config.snapshot_file {
        snapshot::load_into(path, &state);
    }
    let mut syncer = Syncer {
        channel: keyspace_channel(&config),
        config,
        state,
        loaded_from_redis: false,
        last_size: 0,
        dump_refused: false,
        dump_unreadable_up_to: 0,
        last_dump: None,
    };
    let mut backoff = Backoff::new(syncer.config.backoff_min, syncer.config.backoff_max);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = syncer.session(&shutdown) => outcome,
        };
        match outcome {
            SessionEnd::Shutdown => return,
            SessionEnd::Failed { error, loaded } => {
                if loaded {
                    backoff.reset();
                }
                syncer.set_redis_state(RedisState::Down, Some(error.clone()));
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "redis sync session ended; serving the last table");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The keyspace channel of the routes key in the configured database.
pub fn keyspace_channel(config: &SyncConfig) -> String {
    format!(
        "__keyspace@{}__:{}",
        config.redis.database.unwrap_or(0),
        config.routes_key
    )
}

enum SessionEnd {
    Shutdown,
    Failed { error: String, loaded: bool },
}

struct Syncer {
    config: SyncConfig,
    state: Arc<SharedState>,
    channel: String,
    /// Whether any load from Redis succeeded yet: the first one is a "boot"
    /// resync, later session starts are "reconnect" resyncs.
    loaded_from_redis: bool,
    /// Size of the last read, to choose how to read (see `read_method`).
    last_size: usize,
    /// `DUMP` was refused (ACL) or misread in this session: read with
    /// `HGETALL`.
    dump_refused: bool,
    /// The server returned a DUMP we do not read (a listpack) at this size:
    /// read with `HGETALL` until the hash is twice as large (the server's
    /// `hash-max-listpack-entries` may be above our `dump_threshold`).
    dump_unreadable_up_to: usize,
    /// The payload of the last DUMP read, so that the next one is compared
    /// with it rather than with the whole table (see `dump::diff_payloads`).
    last_dump: Option<LastDump>,
}

/// A DUMP payload and the version of the table that reflects it.
struct LastDump {
    payload: bytes::Bytes,
    version: u64,
}

/// What a build produces.
struct Built {
    table: RouteTable,
    diff: crate::routes::Diff,
    /// Entries in the hash.
    size: usize,
    /// The DUMP payload read, copied out of the client's read buffer.
    dump: Option<bytes::Bytes>,
}

/// Most entries a payload diff decodes before it declines (a rehash has
/// reordered the hash) and the whole read is compared instead.
const PAYLOAD_DIFF_MAX_ENTRIES: usize = 1024;

/// The next table from a read: from the difference with the last DUMP when
/// there is one and it is small, else by comparing every entry.
fn build_table(
    read: redis::HashRead,
    last_dump: Option<LastDump>,
    previous: &RouteTable,
) -> Result<Built, DumpError> {
    // An exact-size copy: the payload is a slice of the client's read
    // buffer, which may be twice as large.
    let dump = read
        .dump_payload()
        .map(|p| bytes::Bytes::copy_from_slice(p));
    if let (Some(last), Some(payload)) = (&last_dump, &dump) {
        if let Ok(Some(changes)) =
            dump::diff_payloads(&last.payload, payload, PAYLOAD_DIFF_MAX_ENTRIES)
        {
            if let Some((table, diff)) =
                RouteTable::apply(&changes.upserts, &changes.removed, previous)
            {
                return Ok(Built {
                    size: table.len(),
                    table,
                    diff,
                    dump,
                });
            }
        }
    }
    let entries = read.entries()?;
    let (table, diff) = RouteTable::update(&entries, previous);
    Ok(Built {
        table,
        diff,
        size: entries.len(),
        dump,
    })
}

impl Syncer {
    async fn session(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        let mut loaded = false;
        match self.session_inner(shutdown, &mut loaded).await {
            Ok(()) => SessionEnd::Shutdown,
            Err(error) => SessionEnd::Failed { error, loaded },
        }
    }

    async fn session_inner(
        &mut self,
        shutdown: &CancellationToken,
        loaded: &mut bool,
    ) -> Result<(), String> {
        self.set_redis_state(RedisState::Connecting, None);
        let (mut command, ()) = redis::connect(&self.config, redis::Role::Commands, |_| ())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let subscriber = redis::connect(&self.config, redis::Role::Subscriber, |c| {
            c.keyspace_event_rx()
        })
        .await;
        let (mut subscriber, mut events) = match subscriber {
            Ok(ok) => ok,
            Err(e) => {
                command.close();
                return Err(format!("connect subscriber: {e}"));
            }
        };
        let result = self
            .serve_session(&mut command, &mut subscriber, &mut events, shutdown, loaded)
            .await;
        command.close();
        subscriber.close();
        self.state.metrics.redis_connected.set(0);
        result
    }

    async fn serve_session(
        &mut self,
        command: &mut redis::Connection,
        subscriber: &mut redis::Connection,
        events: &mut tokio::sync::broadcast::Receiver<KeyspaceEvent>,
        shutdown: &CancellationToken,
        loaded: &mut bool,
    ) -> Result<(), String> {
        self.set_redis_state(RedisState::Connected, None);
        self.state.metrics.redis_connected.set(1);
        // A new connection may come with other rights (or be another server
        // with other settings), and the resync that follows a reconnect
        // compares everything.
        self.dump_refused = false;
        self.dump_unreadable_up_to = 0;
        self.last_dump = None;

        // 1. Notifications on (merged; a refusal means polling mode).
        let mut mode = self.setup_notifications(&command.client).await?;
        // 2. Subscribe and confirm before the first load.
        if let Err(e) = redis::subscribe_confirmed(&subscriber.client, &self.channel).await {
            if !redis::is_refusal(&e) {
                return Err(format!("subscribe: {e}"));
            }
            error!(channel = %self.channel, error = %e, "SUBSCRIBE refused: changes arrive only with the periodic resync");
            mode = NotificationMode::Polling {
                reason: format!("subscribe refused: {e}"),
            };
        }
        self.set_notification_mode(mode);

        // 3. The full resync that follows every (re)subscribe.
        let mut dirty = Some(if self.loaded_from_redis {
            ResyncReason::Reconnect
        } else {
            ResyncReason::Boot
        });
        let start = tokio::time::Instant::now();
        let mut periodic = tokio::time::interval_at(
            start + self.config.resync_interval,
            self.config.resync_interval,
        );
        periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping =
            tokio::time::interval_at(start + self.config.ping_interval, self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval_at(
            start + self.config.status_interval,
            self.config.status_interval,
        );
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            if let Some(reason) = dirty.take() {
                // Drain what is already queued first: those events are
                // covered by the read we are about to make.
                self.drain_events(events)?;
                self.resync(&command.client, reason).await?;
                *loaded = true;
                continue;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                r = &mut command.task => return Err(format!("command connection closed: {}", join_reason(r))),
                r = &mut subscriber.task => return Err(format!("subscriber connection closed: {}", join_reason(r))),
                event = events.recv() => match event {
                    Ok(event) => {
                        if self.is_routes_event(&event) {
                            self.state.metrics.notifications_received.inc();
                            debug!(op = %event.operation, "keyspace event");
                            dirty = Some(ResyncReason::Event);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        warn!(lost = n, "keyspace event receiver lagged; resyncing");
                        self.state.metrics.events_lost.inc();
                        dirty = Some(ResyncReason::Event);
                    }
                    Err(RecvError::Closed) => return Err("event stream closed".into()),
                },
                _ = periodic.tick() => {
                    let mode = self.recheck_notifications(&command.client).await?;
                    self.set_notification_mode(mode);
                    dirty = Some(ResyncReason::Periodic);
                }
                _ = ping.tick() => {
                    // Finds half-open connections; a subscriber is otherwise silent.
                    let (a, b) = tokio::join!(
                        command.client.ping::<fred::types::Value>(None),
                        subscriber.client.ping::<fred::types::Value>(None)
                    );
                    a.map_err(|e| format!("command ping: {e}"))?;
                    b.map_err(|e| format!("subscriber ping: {e}"))?;
                }
                _ = status_tick.tick() => self.publish_status(&command.client).await,
            }
        }
    }

    fn drain_events(
        &self,
        events: &mut tokio::sync::broadcast::Receiver<KeyspaceEvent>,
    ) -> Result<(), String> {
        loop {
            match events.try_recv() {
                Ok(event) => {
                    if self.is_routes_event(&event) {
                        self.state.metrics.notifications_received.inc();
                    }
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                    self.state.metrics.events_lost.inc();
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => return Ok(()),
                Err(tokio::sync::broadcast::error::TryRecvError::Closed) => {
                    return Err("event stream closed".into())
                }
            }
        }
    }

    fn is_routes_event(&self, event: &KeyspaceEvent) -> bool {
        event.key.as_bytes() == self.config.routes_key.as_bytes()
            && event.db == self.config.redis.database.unwrap_or(0)
    }

    async fn setup_notifications(&self, client: &Client) -> Result<NotificationMode, String> {
        match redis::ensure_notifications(client).await {
            Ok(Some(flags)) => {
                info!(%flags, "turned keyspace notifications on (CONFIG SET notify-keyspace-events)");
                Ok(NotificationMode::Keyspace)
            }
            Ok(None) => Ok(NotificationMode::Keyspace),
            Err(e) if redis::is_refusal(&e) => {
                error!(
                    error = %e,
                    resync_interval = ?self.config.resync_interval,
                    "CANNOT TURN ON KEYSPACE NOTIFICATIONS (CONFIG refused). Route changes will only be \
                     picked up by the periodic resync. Grant +config to this user or set \
                     notify-keyspace-events to include Kghxe on the server."
                );
                Ok(NotificationMode::Polling {
                    reason: format!("CONFIG refused: {e}"),
                })
            }
            Err(e) => Err(format!("notification setup: {e}")),
        }
    }

    /// At each periodic resync: someone may have switched notifications
    /// off at runtime; turn them back on, and retry after a refusal.
    async fn recheck_notifications(&self, client: &Client) -> Result<NotificationMode, String> {
        let before = self.state.status().notifications.clone();
        let mode = self.setup_notifications(client).await?;
        if before == NotificationMode::Keyspace && mode == NotificationMode::Keyspace {
            // setup_notifications logged if it had to turn them back on.
        }
        Ok(mode)
    }

    fn read_method(&self) -> redis::ReadMethod {
        if self.last_size > self.config.scan_threshold {
            redis::ReadMethod::HScan
        } else if self.last_size > self.config.dump_threshold
            && self.last_size > self.dump_unreadable_up_to.saturating_mul(2)
            && !self.dump_refused
        {
            redis::ReadMethod::Dump
        } else {
            redis::ReadMethod::HGetAll
        }
    }

    async fn resync(&mut self, client: &Client, reason: ResyncReason) -> Result<(), String> {
        let started = Instant::now();
        let metrics = &self.state.metrics;
        metrics.resync(reason);
        if self.last_size == 0 {
            // Size unknown (first read, or the hash was empty): one O(1)
            // HLEN so that a huge hash is never read with one blocking HGETALL.
            match redis::hash_len(client, &self.config.routes_key).await {
                Ok(len) => self.last_size = len,
                // WRONGTYPE, NOPERM: the read below reports it.
                Err(e) if redis::is_refusal(&e) => {}
                Err(e) => return Err(format!("HLEN: {e}")),
            }
        }
        let method = self.read_method();
        let read_started = Instant::now();
        let mut result = redis::read_hash(client, &self.config.routes_key, method).await;
        if let (redis::ReadMethod::Dump, Err(e)) = (method, &result) {
            if redis::is_refusal(e) {
                // An ACL without +dump: HGETALL does the same job, slower to
                // decode; not worth asking again this session.
                warn!(error = %e, "DUMP refused; reading the hash with HGETALL (grant +dump for faster reloads of large hashes)");
                self.dump_refused = true;
                result =
                    redis::read_hash(client, &self.config.routes_key, redis::ReadMethod::HGetAll)
                        .await;
            }
        }
        let read = match result {
            Ok(read) => read,
            Err(e) if redis::is_refusal(&e) => {
                // WRONGTYPE, NOPERM...: keep the table, say why, try again later.
                error!(error = %e, key = %self.config.routes_key, "reading the routes hash failed; keeping the current table");
                self.state.status().last_error = Some(format!("read: {e}"));
                return Ok(());
            }
            Err(e) => return Err(format!("read routes: {e}")),
        };
        let read_took = read_started.elapsed();
        if read.dump_unreadable {
            self.dump_unreadable_up_to = self.last_size;
        }
        let watermark = read.watermark;
        let previous = self.state.table_full();
        // The last DUMP read, if the current table was made from it.
        let last_dump = self
            .last_dump
            .take()
            .filter(|last| last.version == previous.version);
        let build = {
            let previous = previous.clone();
            move || build_table(read, last_dump, &previous)
        };
        let build_started = Instant::now();
        let built = if self.last_size > BUILD_OFF_REACTOR_ABOVE {
            tokio::task::spawn_blocking(build)
                .await
                .map_err(|e| format!("build: {e}"))?
        } else {
            build()
        };
        let Built {
            mut table,
            diff,
            size,
            dump,
        } = match built {
            Ok(built) => built,
            Err(e) => {
                // Redis sent a payload this proxy misreads: say so, and
                // read with HGETALL from now on (this session).
                error!(error = %e, "could not decode the DUMP of the routes hash; reading with HGETALL");
                self.dump_refused = true;
                return Box::pin(self.resync(client, reason)).await;
            }
        };
        let build_took = build_started.elapsed();
        self.last_size = size;
        table.watermark = Some(watermark);
        let source_changed = previous.source != TableSource::Redis;
        let swapped = !diff.is_empty() || source_changed;
        let version = previous.version + u64::from(swapped);
        self.last_dump = dump.map(|payload| LastDump { payload, version });
        if swapped {
            table.version = version;
            let table = Arc::new(table);
            self.state.swap_table(table.clone());
            log_diff(reason, &diff, &table);
            log_new_invalid(&previous, &table);
            if let Some(path) = &self.config.snapshot_file {
                snapshot::save_in_background(path.clone(), table, self.state.clone());
            }
        }
        if reason == ResyncReason::Periodic && !diff.is_empty() && !source_changed {
            metrics.drift.inc();
            warn!(
                changes = diff.len(),
                "periodic resync found drift: a notification was lost"
            );
        }
        if previous.len() > BUILD_OFF_REACTOR_ABOVE {
            // Freeing a large table is work too: not on the reactor.
            tokio::task::spawn_blocking(move || drop(previous));
        }
        self.loaded_from_redis = true;
        {
            let mut status = self.state.status();
            status.last_sync = Some(SystemTime::now());
            status.watermark = Some(watermark);
            status.last_error = None;
        }
        metrics
            .sync_duration
            .with_label_values(&[reason.as_str()])
            .observe(started.elapsed().as_secs_f64());
        debug!(reason = reason.as_str(), swapped, read = ?read_took, build = ?build_took, took = ?started.elapsed(), "resync done");
        self.publish_status(client).await;
        Ok(())
    }

    async fn publish_status(&self, client: &Client) {
        if let Err(e) = replicas::publish(client, &self.config, &self.state).await {
            debug!(error = %e, "publishing replica status failed");
        }
    }

    fn set_redis_state(&self, redis: RedisState, error: Option<String>) {
        let mut status = self.state.status();
        if status.redis != redis {
            status.redis = redis;
            status.redis_since = SystemTime::now();
        }
        if error.is_some() {
            status.last_error = error;
        }
        if redis != RedisState::Connected {
            self.state.metrics.redis_connected.set(0);
        }
    }

    fn set_notification_mode(&self, mode: NotificationMode) {
        self.state
            .metrics
            .notifications_enabled
            .set((mode == NotificationMode::Keyspace) as i64);
        self.state.status().notifications = mode;
    }
}

/// At most this many invalid entries are logged one by one per swap.
const INVALID_LOG_LINES: usize = 50;

/// Logs each invalid entry once: those that were not already invalid with
/// the same value in the previous table (100,000 bad entries must not mean
/// 100,000 log lines at every reload).
fn log_new_invalid(previous: &RouteTable, table: &RouteTable) {
    let before: std::collections::HashSet<(&str, &str)> = previous
        .invalid()
        .iter()
        .map(|e| (e.field.as_str(), e.value.as_str()))
        .collect();
    let mut fresh = table
        .invalid()
        .iter()
        .filter(|e| !before.contains(&(e.field.as_str(), e.value.as_str())));
    for entry in fresh.by_ref().take(INVALID_LOG_LINES) {
        warn!(host = %entry.field, value = %entry.value, reason = %entry.reason,
              serving_previous = entry.serving_previous, "invalid route");
    }
    let more = fresh.count();
    if more > 0 {
        warn!(
            more,
            total = table.invalid().len(),
            "more invalid routes: see the admin /routes view"
        );
    }
}

fn join_reason(result: Result<Result<(), Error>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "closed".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    }
}

fn log_diff(reason: ResyncReason, diff: &crate::routes::Diff, table: &RouteTable) {
    let names = |v: &crate::routes::Names| {
        let mut s = v
            .kept()
            .iter()
            .take(DIFF_LOG_NAMES)
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        if v.len() > DIFF_LOG_NAMES {
            s.push_str(&format!(",… ({} more)", v.len() - DIFF_LOG_NAMES));
        }
        s
    };
    info!(
        reason = reason.as_str(),
        version = table.version,
        routes = table.len(),
        invalid = table.invalid().len(),
        added = %names(&diff.added),
        changed = %names(&diff.changed),
        removed = %names(&diff.removed),
        "route table swapped"
    );
}

/// Capped exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The next delay: the current step plus up to 10 % jitter (so that
    /// replicas do not reconnect in lockstep), then the step doubles.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.1);
        (base + jitter).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(110));
        assert!(delays[1] >= Duration::from_millis(200) && delays[1] <= Duration::from_millis(220));
        assert!(delays[5] <= Duration::from_secs(1));
        assert!(delays[5] >= Duration::from_millis(900));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(110));
    }
}
