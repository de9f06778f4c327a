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
//!
//! For a large hash, shared reads (see `shared`) may stand in for a reload:
//! the replica holding the lease marks its reads and publishes what they
//! changed; the others, on an event, wait briefly for that delta (see
//! `follower`) and apply it, and read the hash themselves whenever it does
//! not come or does not fit. Subscriptions, reconnect and periodic resyncs
//! are the same in every role.

pub mod dump;
pub mod follower;
pub mod redis;
pub mod shared;

use crate::config::SyncConfig;
use crate::metrics::ResyncReason;
use crate::replicas;
use crate::routes::{Names, RedisMicros, RouteTable, TableSource};
use crate::snapshot;
use crate::state::{NotificationMode, RedisState, SharedReadsStatus, SharedState};
use bytes::Bytes;
use dump::DumpError;
use follower::{Follower, Outcome, OwnRead};
use fred::prelude::*;
use fred::types::{KeyspaceEvent, Message};
use shared::{Change, ChangeSet, Delta, ReadId, Role};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;
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
        snapshot::load_into(path, &config.routes_key, &state);
    }
    let snapshot = config.snapshot_file.as_ref().and_then(|path| {
        snapshot::SnapshotWriter::for_state(path.clone(), state.clone())
            .map_err(|e| error!(error = %e, "cannot start the snapshot writer"))
            .ok()
    });
    let mut syncer = Syncer {
        channel: keyspace_channel(&config),
        names: SharedNames::new(&config),
        shared: SharedReads::new(config.shared_read_wait_min),
        config,
        state,
        loaded_from_redis: false,
        last_size: 0,
        dump_refused: false,
        dump_unreadable_up_to: 0,
        last_dump: None,
        status_due: None,
        snapshot,
    };
    let mut backoff = Backoff::new(syncer.config.backoff_min, syncer.config.backoff_max);
    loop {
        // The session sees the shutdown itself (and gives the shared-reads
        // lease back); it is dropped only if it takes longer than the grace.
        let outcome = tokio::select! {
            outcome = syncer.session(&shutdown) => outcome,
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => return,
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

/// How long a session may take to end after shutdown: one round trip to
/// give the shared-reads lease back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

enum SessionEnd {
    Shutdown,
    Failed { error: String, loaded: bool },
}

/// The shared-reads key and channels of the configured routes key.
struct SharedNames {
    lease: String,
    changes: String,
    marker_channel: String,
    marker_key: String,
}

impl SharedNames {
    fn new(config: &SyncConfig) -> SharedNames {
        let key = &config.routes_key;
        SharedNames {
            lease: shared::lease_key(key),
            changes: shared::changes_channel(key),
            marker_channel: shared::marker_channel(config.redis.database.unwrap_or(0), key),
            marker_key: shared::marker_key(key),
        }
    }
}

/// The content a table holds, named by the CRC of the DUMP payload it
/// equals (see `shared`), and the Redis time of that read.
#[derive(Debug, Clone, Copy)]
struct Content {
    /// The version of the table it describes: it says nothing about any
    /// other.
    version: u64,
    crc: u64,
    watermark: RedisMicros,
}

/// This replica's part in shared reads.
struct SharedReads {
    /// Refused this session (no right to PUBLISH, SET the lease, SUBSCRIBE
    /// the channels...), and why: every reload reads, as without them.
    off: Option<String>,
    /// The marker and changes channels are subscribed (this session).
    subscribed: bool,
    role: Role,
    /// As reader: this term's id and the last read's number.
    term: ReadId,
    follower: Follower,
    /// What the current table holds, when it came from a DUMP or a delta.
    /// Kept across sessions: it describes the table, not the connection.
    content: Option<Content>,
    /// The latest read-and-build time (own, or the reader's as it
    /// reported): a follower waits three of these for a delta.
    cycle: Duration,
    /// When a reader's read last confirmed this table's content (a delta
    /// applied, or one that found the content already there).
    confirmed_at: Option<tokio::time::Instant>,
}

impl SharedReads {
    fn new(wait: Duration) -> SharedReads {
        SharedReads {
            off: None,
            subscribed: false,
            role: Role::Inactive,
            term: ReadId { reader: 0, seq: 0 },
            follower: Follower::new(wait),
            confirmed_at: None,
            content: None,
            cycle: Duration::ZERO,
        }
    }

    /// The id of the next read, as reader.
    fn next_read(&mut self) -> ReadId {
        self.term.seq += 1;
        self.term
    }
}

struct Syncer {
    config: SyncConfig,
    state: Arc<SharedState>,
    channel: String,
    names: SharedNames,
    shared: SharedReads,
    /// Whether any load from Redis succeeded yet: the first one is a "boot"
    /// resync, later session starts are "reconnect" resyncs.
    loaded_from_redis: bool,
    /// Size of the last read, to choose how to read (see `read_method`).
    last_size: usize,
    /// `DUMP` was refused (ACL) or misread in this session: read with
    /// `HGETALL`.
    dump_refused: bool,
    /// The server returned a DUMP we do not read (a Redis 6 ziplist, say) at
    /// this size: read with `HGETALL` until the hash is twice as large (the
    /// server may keep hashes above our `dump_threshold` in that encoding).
    dump_unreadable_up_to: usize,
    /// The payload of the last DUMP read, so that the next one is compared
    /// with it rather than with the whole table (see `dump::diff_payloads`).
    last_dump: Option<LastDump>,
    /// When to publish the replica status after a read (see
    /// [`STATUS_AFTER_READ`]).
    status_due: Option<tokio::time::Instant>,
    /// Writes each swapped-in table to `--snapshot-file`.
    snapshot: Option<snapshot::SnapshotWriter>,
}

/// The replica status is published this long after a read rather than at
/// once: when a change reaches several replicas, each one's status write
/// would otherwise land in Redis among the other replicas' reads of the
/// same change, and delay them. `route set --wait` sees the new watermark
/// this much later.
const STATUS_AFTER_READ: Duration = Duration::from_millis(10);

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
    /// What changed, field by field, when asked for and known (see
    /// `build_table`).
    changes: Option<ChangeSet>,
    /// Built from the payload diff (else by comparing every entry).
    by_payload_diff: bool,
}

/// Most changes a payload diff hands to `RouteTable::apply`, which patches
/// a delta layer; a bulk rewrite past this is built by comparing every
/// entry instead.
const PAYLOAD_DIFF_MAX_CHANGES: usize = 4096;

/// The next table from a read: from the difference with the last DUMP when
/// there is one and it is small, else by comparing every entry.
///
/// With `want_changes` (the shared-reads reader) it also says what changed
/// field by field, for followers whose table is `previous`'s content: the
/// payload diff it applied, or, when it compared every entry, the diff of
/// the two tables if that is small and every route valid (followers apply
/// nothing else). `None` when neither holds.
fn build_table(
    read: redis::HashRead,
    last_dump: Option<LastDump>,
    previous: &RouteTable,
    want_changes: bool,
) -> Result<Built, DumpError> {
    // An exact-size copy: the payload is a slice of the client's read
    // buffer, which may be twice as large.
    let dump = read
        .dump_payload()
        .map(|p| bytes::Bytes::copy_from_slice(p));
    if let (Some(last), Some(payload)) = (&last_dump, &dump) {
        if let Ok(changes) = dump::diff_payloads(&last.payload, payload)
            .map_err(|e| debug!(error = %e, "payload diff failed; comparing every entry"))
            .and_then(|c| {
                if c.upserts.len() + c.removed.len() <= PAYLOAD_DIFF_MAX_CHANGES {
                    Ok(c)
                } else {
                    Err(())
                }
            })
        {
            if let Some((table, diff)) =
                Some(previous.apply(&field_changes(&changes.upserts, &changes.removed)))
            {
                let changes = want_changes.then(|| ChangeSet {
                    upserts: changes
                        .upserts
                        .iter()
                        .map(|(f, v)| (share(payload, f), share(payload, v)))
                        .collect(),
                    removed: changes
                        .removed
                        .iter()
                        .map(|f| share(&last.payload, f))
                        .collect(),
                });
                return Ok(Built {
                    size: table.len(),
                    table,
                    diff,
                    dump,
                    changes,
                    by_payload_diff: true,
                });
            }
        }
    }
    let entries = read.entries()?;
    let (table, diff) = RouteTable::update(&entries, previous);
    let changes = if want_changes {
        changes_from_diff(&diff, &table, previous)
    } else {
        None
    };
    Ok(Built {
        table,
        diff,
        size: entries.len(),
        dump,
        changes,
        by_payload_diff: false,
    })
}

/// Upserts and removals as the field changes `RouteTable::apply` takes.
fn field_changes<'a, F: AsRef<[u8]>>(
    upserts: &'a [(F, F)],
    removed: &'a [F],
) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
    let set = upserts.iter().map(|(f, v)| (f.as_ref(), Some(v.as_ref())));
    let deleted = removed.iter().map(|f| (f.as_ref(), None));
    set.chain(deleted).collect()
}

/// `part` as a slice of `buf` when it lies inside it (no copy), else a copy.
fn share(buf: &Bytes, part: &[u8]) -> Bytes {
    let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
    let at = part.as_ptr() as usize;
    if at >= start && at + part.len() <= end {
        buf.slice(at - start..at - start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// The field-level changes from `previous` to `table` read off their diff:
/// only when the diff names every host it counts and both tables hold only
/// valid routes (a table key is then exactly one hash field).
fn changes_from_diff(
    diff: &crate::routes::Diff,
    table: &RouteTable,
    previous: &RouteTable,
) -> Option<ChangeSet> {
    if diff.len() > Names::KEPT || !table.invalid().is_empty() || !previous.invalid().is_empty() {
        return None;
    }
    let mut changes = ChangeSet::default();
    for field in diff.added.kept().iter().chain(diff.changed.kept()) {
        let value = table.route_value(field)?;
        changes.upserts.push((
            Bytes::copy_from_slice(field.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        ));
    }
    for field in diff.removed.kept() {
        changes
            .removed
            .push(Bytes::copy_from_slice(field.as_bytes()));
    }
    Some(changes)
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
        let command = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            command = redis::connect(&self.config, redis::Role::Commands, |_| ()) => command,
        };
        let (mut command, ()) = command.map_err(|e| format!("connect: {e}"))?;
        // Both receivers before `init`, so that they miss nothing: keyspace
        // events (and read markers, which travel with them) and other
        // pub/sub messages (shared-reads changes).
        let subscriber = tokio::select! {
            _ = shutdown.cancelled() => {
                command.close();
                return Ok(());
            }
            subscriber = redis::connect(&self.config, redis::Role::Subscriber, |c| {
                (c.keyspace_event_rx(), c.message_rx())
            }) => subscriber,
        };
        let (mut subscriber, (mut events, mut messages)) = match subscriber {
            Ok(ok) => ok,
            Err(e) => {
                command.close();
                return Err(format!("connect subscriber: {e}"));
            }
        };
        let result = self
            .serve_session(
                &mut command,
                &mut subscriber,
                &mut events,
                &mut messages,
                shutdown,
                loaded,
            )
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
        events: &mut broadcast::Receiver<KeyspaceEvent>,
        messages: &mut broadcast::Receiver<Message>,
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
        // Shared reads start over too: rights are probed again, the lease
        // is taken or renewed at the first tick.
        self.shared.off = None;
        self.shared.subscribed = false;
        self.shared.follower.reset();
        self.set_role(Role::Inactive);

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
                self.shared.follower.reset();
                self.resync(&command.client, reason).await?;
                *loaded = true;
                continue;
            }
            let deadline = self.shared.follower.deadline();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.release_lease(&command.client).await;
                    // Gone from the registry at once: `--wait` and `status`
                    // do not count a replica that stopped.
                    let leave = replicas::leave(&command.client, &self.config);
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), leave).await {
                        debug!(error = %e, "leaving the replica registry failed");
                    }
                    return Ok(());
                }
                r = &mut command.task => return Err(format!("command connection closed: {}", join_reason(r))),
                r = &mut subscriber.task => return Err(format!("subscriber connection closed: {}", join_reason(r))),
                event = events.recv() => match event {
                    Ok(event) => dirty = self.on_keyspace_event(&event),
                    Err(RecvError::Lagged(n)) => {
                        warn!(lost = n, "keyspace event receiver lagged; resyncing");
                        self.state.metrics.events_lost.inc();
                        dirty = Some(ResyncReason::Event);
                    }
                    Err(RecvError::Closed) => return Err("event stream closed".into()),
                },
                message = messages.recv() => match message {
                    Ok(message) => dirty = self.on_message(events, message).await?,
                    Err(RecvError::Lagged(n)) => {
                        warn!(lost = n, "pub/sub message receiver lagged");
                        dirty = self.shared.follower.lost().and_then(|r| self.own_read(r));
                    }
                    Err(RecvError::Closed) => return Err("message stream closed".into()),
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    dirty = self
                        .shared
                        .follower
                        .expired(tokio::time::Instant::now())
                        .and_then(|r| self.own_read(r));
                }
                _ = periodic.tick() => {
                    let mode = self.recheck_notifications(&command.client).await?;
                    self.set_notification_mode(mode);
                    if self.confirmed_by_reader() {
                        // The reader's own periodic read (or a later one)
                        // checked this content against a DUMP within the
                        // interval: a read of ours would find the same, at
                        // the cost of a full DUMP that delays the reader's
                        // next one.
                        debug!("periodic resync skipped: the shared-reads reader confirmed the table");
                    } else {
                        dirty = Some(ResyncReason::Periodic);
                    }
                }
                _ = ping.tick() => {
                    // Finds half-open connections; a subscriber is otherwise silent.
                    let (a, b) = tokio::join!(
                        command.client.ping::<fred::types::Value>(None),
                        subscriber.client.ping::<fred::types::Value>(None)
                    );
                    a.map_err(|e| format!("command ping: {e}"))?;
                    b.map_err(|e| format!("subscriber ping: {e}"))?;
                    dirty = self.shared_tick(&command.client, &subscriber.client).await?;
                }
                _ = status_tick.tick() => self.publish_status(&command.client).await,
                _ = tokio::time::sleep_until(self.status_due.unwrap_or_else(tokio::time::Instant::now)), if self.status_due.is_some() => {
                    self.publish_status(&command.client).await;
                }
            }
        }
    }

    fn drain_events(&self, events: &mut broadcast::Receiver<KeyspaceEvent>) -> Result<(), String> {
        loop {
            match events.try_recv() {
                Ok(event) => {
                    if self.is_routes_event(&event) {
                        self.state.metrics.notifications_received.inc();
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.state.metrics.events_lost.inc();
                }
                Err(broadcast::error::TryRecvError::Empty) => return Ok(()),
                Err(broadcast::error::TryRecvError::Closed) => {
                    return Err("event stream closed".into())
                }
            }
        }
    }

    fn is_routes_event(&self, event: &KeyspaceEvent) -> bool {
        event.key.as_bytes() == self.config.routes_key.as_bytes()
            && event.db == self.config.redis.database.unwrap_or(0)
    }

    /// An event on the routes key, or a read marker: what to reload for,
    /// if anything. A follower waits for the reader's delta instead.
    fn on_keyspace_event(&mut self, event: &KeyspaceEvent) -> Option<ResyncReason> {
        if event.db != self.config.redis.database.unwrap_or(0) {
            return None;
        }
        if self.is_routes_event(event) {
            self.state.metrics.notifications_received.inc();
            debug!(op = %event.operation, "keyspace event");
            if !self.following() {
                return Some(ResyncReason::Event);
            }
            self.shared.follower.event(tokio::time::Instant::now());
        } else if event.key.as_bytes() == self.names.marker_key.as_bytes() && self.following() {
            if let Some(read) = ReadId::from_marker(&event.operation) {
                self.shared.follower.marker(read);
            }
        }
        None
    }

    /// The keyspace events already queued, taken in order (a delta's
    /// marker was sent before it, on that queue).
    fn take_queued_events(
        &mut self,
        events: &mut broadcast::Receiver<KeyspaceEvent>,
    ) -> Result<Option<ResyncReason>, String> {
        let mut dirty = None;
        loop {
            match events.try_recv() {
                Ok(event) => dirty = dirty.or(self.on_keyspace_event(&event)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    warn!(lost = n, "keyspace event receiver lagged; resyncing");
                    self.state.metrics.events_lost.inc();
                    dirty = Some(ResyncReason::Event);
                }
                Err(broadcast::error::TryRecvError::Empty) => return Ok(dirty),
                Err(broadcast::error::TryRecvError::Closed) => {
                    return Err("event stream closed".into())
                }
            }
        }
    }

    /// A pub/sub message that is not a keyspace event: a shared-reads
    /// change, applied as a follower.
    async fn on_message(
        &mut self,
        events: &mut broadcast::Receiver<KeyspaceEvent>,
        message: Message,
    ) -> Result<Option<ResyncReason>, String> {
        if *message.channel != *self.names.changes {
            return Ok(None);
        }
        if let Some(reason) = self.take_queued_events(events)? {
            return Ok(Some(reason));
        }
        if !self.following() {
            return Ok(None);
        }
        let Some(bytes) = message.value.into_bytes() else {
            return Ok(None);
        };
        let change = match shared::decode(&bytes) {
            Ok(change) => change,
            Err(e) => {
                debug!(error = %e, "ignoring a message on the changes channel");
                return Ok(None);
            }
        };
        let own = match change {
            Change::ReadYourselves { read, .. } => self.shared.follower.read_yourselves(read),
            Change::Delta(delta) => {
                self.shared.cycle = Duration::from_micros(delta.read_micros.into());
                self.shared.follower.set_wait(self.follower_wait());
                let read = delta.read;
                let outcome = self.apply_delta(delta).await?;
                debug!(?read, ?outcome, "shared-reads delta");
                self.shared
                    .follower
                    .delta(read, outcome, tokio::time::Instant::now())
            }
        };
        Ok(own.and_then(|r| self.own_read(r)))
    }

    /// A follower reads the hash itself after all.
    fn own_read(&self, reason: OwnRead) -> Option<ResyncReason> {
        debug!(
            reason = reason.as_str(),
            "shared reads: reading the hash myself"
        );
        self.state.metrics.shared_own_read(reason);
        Some(ResyncReason::Event)
    }

    /// The content of the current table, if known.
    fn current_content(&self) -> Option<Content> {
        let version = self.state.table().version;
        self.shared.content.filter(|c| c.version == version)
    }

    /// Applies a reader's delta when it starts from exactly this table's
    /// content and is newer than this table's read.
    async fn apply_delta(&mut self, delta: Delta) -> Result<Outcome, String> {
        let Some(content) = self.current_content() else {
            return Ok(Outcome::Mismatch);
        };
        if delta.watermark < content.watermark {
            return Ok(Outcome::Stale);
        }
        if delta.new_crc == content.crc {
            // The table holds that content already (it read the hash since):
            // only the watermark moves.
            self.shared.content = Some(Content {
                watermark: delta.watermark,
                ..content
            });
            self.record_read(delta.watermark);
            self.state.metrics.shared_deltas_applied.inc();
            self.shared.confirmed_at = Some(tokio::time::Instant::now());
            self.publish_status_soon();
            return Ok(Outcome::Applied);
        }
        if delta.base_crc != content.crc || delta.watermark == content.watermark {
            return Ok(Outcome::Mismatch);
        }
        let previous = self.state.table_full();
        let Delta {
            changes,
            watermark,
            new_crc,
            ..
        } = delta;
        let apply = {
            let previous = previous.clone();
            move || Some(previous.apply(&field_changes(&changes.upserts, &changes.removed)))
        };
        let applied = if previous.len() > BUILD_OFF_REACTOR_ABOVE {
            tokio::task::spawn_blocking(apply)
                .await
                .map_err(|e| format!("apply: {e}"))?
        } else {
            apply()
        };
        let Some((table, diff)) = applied else {
            // An invalid value, a field not in normal form, a table with
            // invalid entries: the full build's business.
            return Ok(Outcome::Mismatch);
        };
        let size = table.len();
        let version = self.install(table, diff, previous, watermark, "delta");
        self.last_size = size;
        self.shared.content = Some(Content {
            version,
            crc: new_crc,
            watermark,
        });
        self.state.metrics.shared_deltas_applied.inc();
        self.shared.confirmed_at = Some(tokio::time::Instant::now());
        self.publish_status_soon();
        Ok(Outcome::Applied)
    }

    /// A follower whose table a reader's read confirmed within the last
    /// resync interval.
    fn confirmed_by_reader(&self) -> bool {
        self.following()
            && self
                .shared
                .confirmed_at
                .is_some_and(|at| at.elapsed() < self.config.resync_interval)
    }

    /// How long a follower waits for a delta.
    fn follower_wait(&self) -> Duration {
        (self.shared.cycle * 3)
            .min(self.config.shared_read_wait_max)
            .max(self.config.shared_read_wait_min)
    }

    /// Shared reads are worth it and possible this session: the hash is
    /// large and read with DUMP (its CRC names contents), notifications
    /// are on, nothing was refused.
    fn shared_wanted(&self) -> bool {
        self.config.shared_read_threshold > 0
            && self.shared.off.is_none()
            && self.last_size >= self.config.shared_read_threshold
            && self.read_method() == redis::ReadMethod::Dump
            && self.state.status().notifications == NotificationMode::Keyspace
    }

    /// Events wait for another replica's delta: another replica reads, and
    /// this table is one a delta can apply to (its content is known, and it
    /// holds no invalid entry: those need the full build, so waiting would
    /// only delay the read).
    fn following(&self) -> bool {
        matches!(self.shared.role, Role::Follower { .. })
            && self.shared.subscribed
            && self.shared_wanted()
            && self.current_content().is_some()
            && self.state.table().invalid().is_empty()
    }

    /// At each ping tick: take part in shared reads or stop, subscribe the
    /// channels once, and take or renew the lease. A refusal turns shared
    /// reads off for the session.
    async fn shared_tick(
        &mut self,
        command: &Client,
        subscriber: &Client,
    ) -> Result<Option<ResyncReason>, String> {
        if !self.shared_wanted() {
            self.release_lease(command).await;
            self.set_role(Role::Inactive);
            return Ok(self.stop_following());
        }
        if !self.shared.subscribed {
            let channels = [
                self.names.marker_channel.as_str(),
                self.names.changes.as_str(),
            ];
            match redis::subscribe_all_confirmed(subscriber, &channels).await {
                Ok(()) => self.shared.subscribed = true,
                Err(e) if redis::is_refusal(&e) => {
                    let reason = format!("SUBSCRIBE {} {} refused: {e}", channels[0], channels[1]);
                    self.shared_off(command, reason).await;
                    return Ok(self.stop_following());
                }
                Err(e) => return Err(format!("subscribe: {e}")),
            }
        }
        let ttl = self.config.ping_interval * 3;
        let me = self.config.replica_id.as_str();
        let mut role = None;
        if self.shared.role == Role::Reader {
            match redis::lease_renew(command, &self.names.lease, ttl).await {
                Ok(holder) => role = shared::role_after_renew(holder.as_deref(), me),
                Err(e) if redis::is_refusal(&e) => {
                    let reason = format!("GETEX {} refused: {e}", self.names.lease);
                    self.shared_off(command, reason).await;
                    return Ok(self.stop_following());
                }
                Err(e) => return Err(format!("lease: {e}")),
            }
        }
        let role = match role {
            Some(role) => role,
            None => match redis::lease_acquire(command, &self.names.lease, me, ttl).await {
                Ok(holder) => shared::role_after_acquire(holder.as_deref(), me),
                Err(e) if redis::is_refusal(&e) => {
                    let reason = format!("SET {} NX PX GET refused: {e}", self.names.lease);
                    self.shared_off(command, reason).await;
                    return Ok(self.stop_following());
                }
                Err(e) => return Err(format!("lease: {e}")),
            },
        };
        let new_term = role == Role::Reader && self.shared.role != Role::Reader;
        self.set_role(role);
        if new_term {
            let channels = [
                self.names.marker_channel.clone(),
                self.names.changes.clone(),
            ];
            for channel in channels {
                let probe = Bytes::from_static(shared::PROBE.as_bytes());
                match redis::publish(command, &channel, probe).await {
                    Ok(()) => {}
                    Err(e) if redis::is_refusal(&e) => {
                        let reason = format!("PUBLISH {channel} refused: {e}");
                        self.shared_off(command, reason).await;
                        break;
                    }
                    Err(e) => return Err(format!("publish: {e}")),
                }
            }
        }
        Ok(self.stop_following())
    }

    /// Events left waiting by a follower that no longer follows: read.
    fn stop_following(&mut self) -> Option<ResyncReason> {
        if self.shared.follower.is_waiting() && !self.following() {
            self.shared.follower.reset();
            return Some(ResyncReason::Event);
        }
        None
    }

    /// Turns shared reads off for this session, with one warning.
    async fn shared_off(&mut self, client: &Client, reason: String) {
        if self.shared.off.is_some() {
            return;
        }
        warn!(%reason, "shared reads off for this session: this replica reads the hash itself after every change \
              (grant the rights listed in the README to share reads)");
        self.release_lease(client).await;
        self.shared.off = Some(reason);
        self.set_role(Role::Inactive);
    }

    /// Gives the lease back when holding it, so another replica takes it
    /// at its next tick rather than when it expires.
    async fn release_lease(&mut self, client: &Client) {
        if self.shared.role != Role::Reader {
            return;
        }
        let release = redis::lease_release(client, &self.names.lease);
        match tokio::time::timeout(Duration::from_secs(1), release).await {
            Ok(Ok(())) => debug!("shared-reads lease released"),
            Ok(Err(e)) => debug!(error = %e, "releasing the shared-reads lease failed"),
            Err(_) => debug!("releasing the shared-reads lease timed out"),
        }
        self.set_role(Role::Inactive);
    }

    fn set_role(&mut self, role: Role) {
        if role == Role::Reader && self.shared.role != Role::Reader {
            // A new term: its reads never share an id with another's.
            self.shared.term = ReadId {
                reader: rand::random(),
                seq: 0,
            };
        }
        if role != self.shared.role {
            match &role {
                Role::Reader => info!("shared reads: this replica reads the hash for the others"),
                Role::Follower { reader } => {
                    info!(%reader, "shared reads: applying the reader's deltas")
                }
                Role::Inactive => debug!("shared reads: inactive"),
            }
        }
        self.state
            .metrics
            .shared_reader
            .set(i64::from(role == Role::Reader));
        self.state.status().shared_reads = SharedReadsStatus {
            role: match (&role, &self.shared.off) {
                (_, Some(_)) => "off",
                (Role::Inactive, None) => "inactive",
                (Role::Reader, None) => "reader",
                (Role::Follower { .. }, None) => "follower",
            },
            reader: match &role {
                Role::Reader => Some(self.config.replica_id.clone()),
                Role::Follower { reader } => Some(reader.clone()),
                Role::Inactive => None,
            },
            reason: self.shared.off.clone(),
        };
        self.shared.role = role;
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
        self.state.metrics.resync(reason);
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
        // As the shared-reads reader, mark the read for the followers.
        let mut marker = (method == redis::ReadMethod::Dump
            && self.shared.role == Role::Reader
            && self.shared_wanted())
        .then(|| self.shared.next_read());
        let read_started = Instant::now();
        let mut result = self.read(client, method, marker).await;
        if let (Some(_), Err(e)) = (marker, &result) {
            if redis::is_refusal(e) {
                // No right to PUBLISH (EXECABORT), or DUMP refused: in
                // either case no shared reads; the read again without.
                let reason = format!(
                    "the read with a marker (MULTI TIME PUBLISH DUMP EXEC) was refused: {e}"
                );
                self.shared_off(client, reason).await;
                marker = None;
                result = self.read(client, method, None).await;
            }
        }
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
        // The content the followers' deltas start from: this table's.
        let base_crc = self.current_content().map(|c| c.crc);
        // The last DUMP read, if the current table was made from it.
        let last_dump = self
            .last_dump
            .take()
            .filter(|last| last.version == previous.version);
        let build = {
            let previous = previous.clone();
            let want_changes = marker.is_some();
            move || build_table(read, last_dump, &previous, want_changes)
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
            table,
            diff,
            size,
            dump,
            changes,
            by_payload_diff,
        } = match built {
            Ok(built) => built,
            Err(e) => {
                // Redis sent a payload this proxy misreads: say so, and
                // read with HGETALL from now on (this session).
                error!(error = %e, "could not decode the DUMP of the routes hash; reading with HGETALL");
                self.dump_refused = true;
                if let Some(read) = marker {
                    self.publish_change(client, Change::ReadYourselves { read, watermark })
                        .await?;
                }
                return Box::pin(self.resync(client, reason)).await;
            }
        };
        let build_took = build_started.elapsed();
        if by_payload_diff {
            self.state.metrics.reload_by_payload_diff.inc();
        } else {
            self.state.metrics.reload_by_compare.inc();
        }
        self.last_size = size;
        if reason == ResyncReason::Periodic
            && !diff.is_empty()
            && previous.source == TableSource::Redis
        {
            self.state.metrics.drift.inc();
            warn!(
                changes = diff.len(),
                "periodic resync found drift: a notification was lost"
            );
        }
        let new_crc = dump.as_deref().and_then(shared::payload_crc);
        self.shared.cycle = read_took + build_took;
        self.shared.follower.set_wait(self.follower_wait());
        // The followers hear of the read before this replica swaps its own
        // table and logs the change: they wait on nothing local. A failed
        // publish still lets the table in (the session then ends).
        let mut published = Ok(());
        if let Some(read) = marker {
            let change = match (base_crc, new_crc, changes) {
                (Some(base_crc), Some(new_crc), Some(changes)) if changes.fits() => {
                    Change::Delta(Delta {
                        read,
                        base_crc,
                        new_crc,
                        watermark,
                        read_micros: u32::try_from(self.shared.cycle.as_micros())
                            .unwrap_or(u32::MAX),
                        changes,
                    })
                }
                _ => Change::ReadYourselves { read, watermark },
            };
            published = self.publish_change(client, change).await;
        }
        let version = self.install(table, diff, previous, watermark, reason.as_str());
        self.shared.content = new_crc.map(|crc| Content {
            version,
            crc,
            watermark,
        });
        self.last_dump = dump.map(|payload| LastDump { payload, version });
        self.loaded_from_redis = true;
        published?;
        self.state
            .metrics
            .sync_duration
            .with_label_values(&[reason.as_str()])
            .observe(started.elapsed().as_secs_f64());
        debug!(reason = reason.as_str(), version, read = ?read_took, build = ?build_took, took = ?started.elapsed(), "resync done");
        self.publish_status_soon();
        Ok(())
    }

    /// Reads the hash, publishing `marker` in the read's transaction.
    async fn read(
        &self,
        client: &Client,
        method: redis::ReadMethod,
        marker: Option<ReadId>,
    ) -> Result<redis::HashRead, Error> {
        let text = marker.map(|read| read.marker());
        let marker = text.as_deref().map(|message| redis::Marker {
            channel: &self.names.marker_channel,
            message,
        });
        redis::read_hash_marked(client, &self.config.routes_key, method, marker).await
    }

    /// Publishes a change message as the reader; a refusal turns shared
    /// reads off.
    async fn publish_change(&mut self, client: &Client, change: Change) -> Result<(), String> {
        let delta = matches!(change, Change::Delta(_));
        let message = Bytes::from(shared::encode(&change));
        match redis::publish(client, &self.names.changes, message).await {
            Ok(()) => {
                let metrics = &self.state.metrics;
                if delta {
                    metrics.shared_deltas_published.inc();
                } else {
                    metrics.shared_read_yourselves_published.inc();
                }
                Ok(())
            }
            Err(e) if redis::is_refusal(&e) => {
                let reason = format!("PUBLISH {} refused: {e}", self.names.changes);
                self.shared_off(client, reason).await;
                Ok(())
            }
            Err(e) => Err(format!("publish: {e}")),
        }
    }

    /// Puts the table that follows `previous` in place when anything
    /// changed (or it is the first from Redis): swap, diff log, snapshot;
    /// records the read. Returns the version of the table now current.
    fn install(
        &mut self,
        mut table: RouteTable,
        diff: crate::routes::Diff,
        previous: Arc<RouteTable>,
        watermark: RedisMicros,
        reason: &str,
    ) -> u64 {
        table.watermark = Some(watermark);
        let source_changed = previous.source != TableSource::Redis;
        let swapped = !diff.is_empty() || source_changed;
        let version = previous.version + u64::from(swapped);
        if swapped {
            table.version = version;
            let table = Arc::new(table);
            self.state.swap_table(table.clone());
            log_diff(reason, &diff, &table);
            log_new_invalid(&previous, &table);
            if let Some(writer) = &self.snapshot {
                writer.save(&self.config.routes_key, table);
            }
        }
        if previous.len() > BUILD_OFF_REACTOR_ABOVE {
            // Freeing a large table is work too: not on the reactor.
            tokio::task::spawn_blocking(move || drop(previous));
        }
        self.record_read(watermark);
        version
    }

    /// A successful read (or applied delta) reflecting Redis at `watermark`.
    fn record_read(&self, watermark: RedisMicros) {
        let mut status = self.state.status();
        status.last_sync = Some(SystemTime::now());
        status.watermark = Some(watermark);
        status.last_error = None;
    }

    async fn publish_status(&mut self, client: &Client) {
        self.status_due = None;
        if let Err(e) = replicas::publish(client, &self.config, &self.state).await {
            debug!(error = %e, "publishing replica status failed");
        }
    }

    /// Publishes the status [`STATUS_AFTER_READ`] from now (or at the
    /// time already set).
    fn publish_status_soon(&mut self) {
        self.status_due
            .get_or_insert_with(|| tokio::time::Instant::now() + STATUS_AFTER_READ);
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

fn log_diff(reason: &str, diff: &crate::routes::Diff, table: &RouteTable) {
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
        reason,
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
    use crate::routes::testing::{raw, served};

    /// The change set read off a table diff, applied to the old table,
    /// gives the new one (what a follower does with it).
    #[test]
    fn changes_from_a_diff_rebuild_the_new_table() {
        let v1 = RouteTable::update(
            &raw(&[
                ("a.com", "10.0.0.1:80"),
                ("*.w.com", "10.0.0.2:80"),
                ("b.com", "10.0.0.3:80"),
                ("*.x.com", "10.0.0.5:80"),
            ]),
            &RouteTable::unloaded(),
        )
        .0;
        let (v2, diff) = RouteTable::update(
            &raw(&[
                ("a.com", "10.0.0.9:80"),
                ("*.w.com", "10.0.0.2:80"),
                ("c.com", "10.0.0.4:80"),
                ("*.y.com", "10.0.0.6:80"),
            ]),
            &v1,
        );
        let changes = changes_from_diff(&diff, &v2, &v1).expect("small and valid");
        assert_eq!(changes.len(), 5);
        let (v3, applied) = v1.apply(&field_changes(&changes.upserts, &changes.removed));
        assert_eq!(served(&v3), served(&v2));
        assert_eq!(applied, diff);

        // An invalid value on either side, or more changes than the diff
        // names: no change set.
        let (bad, diff) = RouteTable::update(&raw(&[("a.com", "nonsense")]), &v1);
        assert_eq!(changes_from_diff(&diff, &bad, &v1), None);
        let many: Vec<(String, String)> = (0..Names::KEPT + 1)
            .map(|i| (format!("h{i}.com"), "10.0.0.1:80".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(f, v)| (&f[..], &v[..])).collect();
        let (big, diff) = RouteTable::update(&raw(&many), &v1);
        assert_eq!(changes_from_diff(&diff, &big, &v1), None);
    }

    #[test]
    fn share_slices_what_lies_inside_and_copies_the_rest() {
        let buf = Bytes::from_static(b"0123456789");
        let inside = share(&buf, &buf[3..6]);
        assert_eq!(&inside[..], b"345");
        assert_eq!(inside.as_ptr(), buf[3..].as_ptr(), "no copy");
        let elsewhere = b"345".to_vec();
        let copied = share(&buf, &elsewhere);
        assert_eq!(&copied[..], b"345");
        assert_ne!(copied.as_ptr(), elsewhere.as_ptr());
    }

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
