//! Keeps tables in step with Redis hashes (ARCHITECTURE.md, "src/sync").
//!
//! A thin session loop over pure, tested parts. A session connects two
//! clients (commands and subscriber), turns notifications on, subscribes
//! to the keyspace channels of every followed hash (the hash, its change
//! log, its removal-confirmation key), confirms the subscription, and only
//! then reads each hash (or replays its log, after a reconnect to the same
//! server). From then on it moves keyspace events to each hash's
//! `follower`, carries out what the followers ask (read the log, read the
//! whole hash, send a barrier) and claims a watermark once every event
//! received is reflected. Any connection loss ends the session; the next
//! one starts again from "subscribe, then read", so a reconnect is always
//! followed by a resync. A panic restarts the loop (`supervise`).

mod background;
mod backoff;
pub mod certs_hash;
pub mod challenges_hash;
pub mod changelog;
pub mod dump;
mod error;
pub mod follower;
pub mod guard;
pub mod hash;
mod method;
mod notifications;
pub mod redis;
pub mod routes_hash;
pub mod tuning;

pub use backoff::Backoff;
pub use challenges_hash::challenges_hash;
pub use error::SyncError;
pub use hash::{Followed, FollowedHash, HashNames, Home, Outcome, Table, TableDiff};
pub use tuning::Tuning;

use crate::config::SyncConfig;
use crate::metrics::ResyncReason;
use crate::replicas;
use crate::routes::{RedisMicros, RouteTable};
use crate::snapshot;
use crate::state::{NotificationMode, RedisState, SharedState};
use follower::{Action, Event, FullRead};
use fred::prelude::*;
use fred::types::KeyspaceEvent;
use notifications::Notifications;
use routes_hash::RoutesHome;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Makes the followed hashes for one run of the loop (again after a
/// restart: their tables live in their homes, their session state is
/// rebuilt).
pub type HashesFactory = Arc<dyn Fn() -> Vec<Box<dyn Followed>> + Send + Sync>;

/// The writer of `--snapshot-file`, one per process (it outlives restarts
/// of the sync loop).
pub fn snapshot_writer(
    config: &SyncConfig,
    state: &Arc<SharedState>,
) -> Option<Arc<snapshot::SnapshotWriter>> {
    let path = config.snapshot_file.as_ref()?;
    snapshot::SnapshotWriter::for_state(path.clone(), state.clone())
        .map(Arc::new)
        .map_err(|e| error!(error = %e, "cannot start the snapshot writer"))
        .ok()
}

/// The routes hash of `config`, served from `state`, saved to `snapshot`.
pub fn routes_hash(
    config: &SyncConfig,
    state: &Arc<SharedState>,
    snapshot: Option<Arc<snapshot::SnapshotWriter>>,
) -> Box<dyn Followed> {
    Box::new(FollowedHash::<RouteTable, _>::new(
        HashNames::new(&config.routes_key, database(config)),
        RoutesHome::new(
            state.clone(),
            &config.routes_key,
            snapshot,
            config.tuning.background_nice,
        ),
        state.clone(),
        config.tuning,
        config.max_removal_fraction,
    ))
}

/// The certs hash of `tls` (README.md, "Certificates in Redis"), served
/// from `state`'s `CertStore`, saved to `snapshot`. Followed whether or not
/// this replica listens for TLS (cheap when empty; `/certs` and `cert
/// list` report it either way). Before anything is loaded, the snapshot's
/// certificates serve (a cold boot with Redis down).
pub fn certs_hash(
    config: &SyncConfig,
    tls: &crate::config::TlsConfig,
    state: &Arc<SharedState>,
    snapshot: Option<Arc<snapshot::SnapshotWriter>>,
) -> Box<dyn Followed> {
    let home =
        certs_hash::CertsHome::new(state.clone(), &tls.certs_key, tls.cert_sealer(), snapshot);
    if let Some(path) = &config.snapshot_file {
        home.restore(path);
    }
    Box::new(FollowedHash::<crate::tls::CertTable, _>::new(
        HashNames::new(&tls.certs_key, database(config)),
        home,
        state.clone(),
        config.tuning,
        config.max_removal_fraction,
    ))
}

fn database(config: &SyncConfig) -> u8 {
    config.redis.database.unwrap_or(0)
}

/// Runs the sync loop until `shutdown` is cancelled, restarting it when
/// it panics (ARCHITECTURE.md, "The sync loop is supervised"): a replica
/// never serves a frozen table while saying it is in sync.
pub async fn supervise(
    config: SyncConfig,
    state: Arc<SharedState>,
    hashes: HashesFactory,
    shutdown: CancellationToken,
) {
    if let Some(path) = &config.snapshot_file {
        snapshot::load_into(path, &config.routes_key, &state);
    }
    state.status().stale_after =
        config.resync_interval * config.tuning.stale_after_resyncs + config.tuning.ping_interval;
    let mut backoff = Backoff::new(config.tuning.backoff_min, config.tuning.backoff_max);
    loop {
        let task = tokio::spawn(run(
            config.clone(),
            state.clone(),
            hashes(),
            shutdown.clone(),
        ));
        match task.await {
            Ok(()) => return,
            Err(e) => {
                let what = if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                error!("the sync loop {what}; restarting it (the current tables keep serving)");
                state.metrics.sync_restarts.inc();
                {
                    let mut status = state.status();
                    status.restarts += 1;
                    status.redis = RedisState::Down;
                    status.last_error = Some(format!("sync loop {what}"));
                }
                state.metrics.redis_connected.set(0);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// Runs sessions until `shutdown` is cancelled.
pub async fn run(
    config: SyncConfig,
    state: Arc<SharedState>,
    hashes: Vec<Box<dyn Followed>>,
    shutdown: CancellationToken,
) {
    let mut sync = Syncer {
        tuning: config.tuning,
        config,
        state,
        hashes,
        server: None,
        loaded: false,
        round: Vec::new(),
    };
    let mut backoff = Backoff::new(sync.tuning.backoff_min, sync.tuning.backoff_max);
    loop {
        // The session sees the shutdown itself (and leaves the registry);
        // it is dropped only if it takes longer than the grace.
        let grace = sync.tuning.shutdown_grace;
        let outcome = tokio::select! {
            outcome = sync.session(&shutdown) => outcome,
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            } => return,
        };
        match outcome {
            Ok(()) => return,
            Err(SessionEnd { error, loaded }) => {
                if loaded {
                    backoff.reset();
                }
                sync.set_redis_state(RedisState::Down, Some(error.to_string()));
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "redis sync session ended; serving the last tables");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

struct SessionEnd {
    error: SyncError,
    /// The session had read every hash: the next one reconnects at once.
    loaded: bool,
}

struct Syncer {
    config: SyncConfig,
    tuning: Tuning,
    state: Arc<SharedState>,
    hashes: Vec<Box<dyn Followed>>,
    /// The `run_id` of the server the last session read from: a
    /// reconnect to the same one may replay the change log.
    server: Option<String>,
    /// Every hash was read at least once (later sessions are reconnects).
    loaded: bool,
    /// Times of the reads since the watermark was last claimed.
    round: Vec<RedisMicros>,
}

impl Syncer {
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<(), SessionEnd> {
        let mut loaded = false;
        self.session_inner(shutdown, &mut loaded)
            .await
            .map_err(|error| SessionEnd { error, loaded })
    }

    async fn session_inner(
        &mut self,
        shutdown: &CancellationToken,
        loaded: &mut bool,
    ) -> Result<(), SyncError> {
        self.set_redis_state(RedisState::Connecting, None);
        let command = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            command = redis::connect(&self.config, redis::Role::Commands, |_| ()) => command,
        };
        let (mut command, ()) = command.map_err(|e| e.context("connect"))?;
        // The event receiver before `init`, so that it misses nothing.
        let subscriber = tokio::select! {
            _ = shutdown.cancelled() => {
                command.close();
                return Ok(());
            }
            subscriber = redis::connect(&self.config, redis::Role::Subscriber, |c| c.keyspace_event_rx()) => subscriber,
        };
        let (mut subscriber, mut events) = match subscriber {
            Ok(ok) => ok,
            Err(e) => {
                command.close();
                return Err(e.context("connect subscriber"));
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
        events: &mut broadcast::Receiver<KeyspaceEvent>,
        shutdown: &CancellationToken,
        loaded: &mut bool,
    ) -> Result<(), SyncError> {
        self.set_redis_state(RedisState::Connected, None);
        self.state.metrics.redis_connected.set(1);
        let server = redis::run_id(&command.client).await?;
        let same_server = server.is_some() && server == self.server && self.loaded;

        // 1. Notifications on (merged), or what the server already has.
        let Notifications {
            mut mode,
            log_events,
        } = notifications::turn_on(&command.client, self.config.resync_interval).await?;
        for hash in &mut self.hashes {
            hash.new_session(log_events);
        }
        // 2. Subscribe and confirm before the first read.
        let channels: Vec<String> = self
            .hashes
            .iter()
            .flat_map(|h| h.names().channels())
            .collect();
        if let Err(e) = redis::subscribe_confirmed(&subscriber.client, &channels).await {
            if e.is_connection() {
                return Err(e.context("subscribe"));
            }
            error!(?channels, error = %e, "SUBSCRIBE refused: changes arrive only with the periodic resync");
            mode = NotificationMode::Polling {
                reason: format!("subscribe refused: {e}"),
            };
        }
        self.set_notification_mode(mode);

        // 3. The resync that follows every (re)subscribe.
        let reason = if self.loaded {
            ResyncReason::Reconnect
        } else {
            ResyncReason::Boot
        };
        self.drain(events)?;
        let reads_started = tokio::time::Instant::now();
        for hash in &mut self.hashes {
            let outcome = hash.resume(&command.client, same_server, reason).await?;
            self.round.extend(outcome.watermark);
        }
        let first_periodic = self.periodic_interval(reads_started.elapsed());
        self.server = server;
        self.loaded = true;
        *loaded = true;

        let start = tokio::time::Instant::now();
        let every = |period: Duration| {
            let mut timer = tokio::time::interval_at(start + period, period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        };
        let mut periodic = every(self.config.resync_interval);
        periodic.reset_after(first_periodic);
        let mut ping = every(self.tuning.ping_interval);
        let mut status_tick = every(self.config.status_interval);

        loop {
            if self.needs_work() {
                self.step(&command.client, &subscriber.client, events)
                    .await?;
                continue;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.leave(&command.client).await;
                    return Ok(());
                }
                r = &mut command.task => return Err(SyncError::Connection(format!("command connection closed: {}", join_reason(r)))),
                r = &mut subscriber.task => return Err(SyncError::Connection(format!("subscriber connection closed: {}", join_reason(r)))),
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&event),
                    Err(RecvError::Lagged(n)) => self.lagged(n),
                    Err(RecvError::Closed) => return Err(SyncError::Connection("event stream closed".into())),
                },
                _ = periodic.tick() => {
                    let started = tokio::time::Instant::now();
                    let now = notifications::turn_on(&command.client, self.config.resync_interval).await?;
                    self.set_notification_mode(now.mode);
                    self.drain(events)?;
                    for hash in &mut self.hashes {
                        let outcome = hash.full_read(&command.client, ResyncReason::Periodic).await?;
                        self.round.extend(outcome.watermark);
                    }
                    let spaced = self.periodic_interval(started.elapsed());
                    periodic.reset_after(spaced);
                }
                _ = ping.tick() => {
                    // Finds half-open connections; a subscriber is otherwise silent.
                    let (a, b) = tokio::join!(
                        command.client.ping::<fred::types::Value>(None),
                        subscriber.client.ping::<fred::types::Value>(None)
                    );
                    a.map_err(|e| SyncError::from(e).context("command ping"))?;
                    b.map_err(|e| SyncError::from(e).context("subscriber ping"))?;
                    self.drain(events)?;
                    for hash in &mut self.hashes {
                        let outcome = hash.check(&command.client).await?;
                        self.round.extend(outcome.watermark);
                    }
                }
                _ = status_tick.tick() => self.publish_status(&command.client).await,
            }
        }
    }

    /// The time to the next periodic resync, after whole reads (periodic,
    /// or the session's first) that took `took`:
    /// `--resync-interval`, or longer for hashes that take long to read
    /// (`Tuning::periodic_spacing`). Sync liveness (`/readyz`) allows for
    /// it.
    fn periodic_interval(&self, took: Duration) -> Duration {
        let interval = self
            .config
            .resync_interval
            .max(took * self.tuning.periodic_spacing);
        self.state.status().stale_after =
            interval * self.tuning.stale_after_resyncs + self.tuning.ping_interval;
        interval
    }

    /// Something is pending: an event not yet reflected, or reads whose
    /// watermark is not yet claimed.
    fn needs_work(&mut self) -> bool {
        !self.round.is_empty() || self.hashes.iter_mut().any(|h| !h.follower().is_idle())
    }

    /// One step of the work the followers ask for: one read, or one
    /// barrier (after which the watermark is claimed if nothing is left).
    async fn step(
        &mut self,
        command: &Client,
        subscriber: &Client,
        events: &mut broadcast::Receiver<KeyspaceEvent>,
    ) -> Result<(), SyncError> {
        self.drain(events)?;
        let mut barrier = false;
        for hash in &mut self.hashes {
            let outcome = match hash.follower().next_action() {
                Action::Nothing => continue,
                Action::Barrier => {
                    barrier = true;
                    continue;
                }
                Action::ReadLog => hash.read_log(command).await?,
                Action::FullRead(why) => hash.full_read(command, reason_of(why)).await?,
            };
            self.round.extend(outcome.watermark);
            return Ok(());
        }
        if !barrier && self.round.is_empty() {
            return Ok(());
        }
        // Every event Redis sent before this answer is in the receiver now.
        redis::barrier(subscriber).await?;
        self.drain(events)?;
        for hash in &mut self.hashes {
            hash.follower().barrier_passed();
        }
        if self.hashes.iter().any(|h| h.held()) {
            // A held table does not reflect Redis: no watermark.
            self.round.clear();
        } else if !self.events_pending() {
            self.claim_watermark(command).await;
        }
        Ok(())
    }

    fn events_pending(&mut self) -> bool {
        self.hashes.iter_mut().any(|h| !h.follower().is_idle())
    }

    /// Every hash reflects every write up to the latest read: a read is
    /// exact as of its time, and no hash has an event pending (a barrier
    /// after that read has shown it). In polling mode no event is trusted:
    /// only the earliest read of the round is claimed.
    async fn claim_watermark(&mut self, command: &Client) {
        let polling = !matches!(
            self.state.status().notifications,
            NotificationMode::Keyspace
        );
        let claimed = if polling {
            self.round.iter().min()
        } else {
            self.round.iter().max()
        }
        .copied();
        self.round.clear();
        let Some(watermark) = claimed else { return };
        {
            let mut status = self.state.status();
            if status.watermark.is_some_and(|w| w >= watermark) {
                return;
            }
            status.watermark = Some(watermark);
        }
        self.publish_status(command).await;
    }

    fn drain(&mut self, events: &mut broadcast::Receiver<KeyspaceEvent>) -> Result<(), SyncError> {
        loop {
            match events.try_recv() {
                Ok(event) => self.on_event(&event),
                Err(TryRecvError::Lagged(n)) => self.lagged(n),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Closed) => {
                    return Err(SyncError::Connection("event stream closed".into()))
                }
            }
        }
    }

    fn on_event(&mut self, event: &KeyspaceEvent) {
        let key = event.key.as_bytes();
        for hash in &mut self.hashes {
            if let Some(role) = hash.names().role_of(event.db, key) {
                self.state.metrics.notifications_received.inc();
                debug!(key = %event.key.as_str_lossy(), op = %event.operation, "keyspace event");
                hash.follower()
                    .event(Event::classify(role, &event.operation));
                let mut status = self.state.status();
                if let NotificationMode::Unconfirmed { .. } = status.notifications {
                    info!("keyspace events arrive: notifications are on");
                    status.notifications = NotificationMode::Keyspace;
                    self.state.metrics.notifications_enabled.set(1);
                }
            }
        }
    }

    fn lagged(&mut self, lost: u64) {
        warn!(lost, "keyspace event receiver lagged; reading every hash");
        self.state.metrics.events_lost.inc();
        for hash in &mut self.hashes {
            hash.follower().lagged();
        }
    }

    async fn publish_status(&self, client: &Client) {
        if let Err(e) = replicas::publish(client, &self.config, &self.state).await {
            debug!(error = %e, "publishing replica status failed");
        }
    }

    /// Leaves the replica registry at shutdown, so `--wait` stops counting
    /// this replica at once.
    async fn leave(&self, client: &Client) {
        let leave = replicas::leave(client, &self.config);
        match tokio::time::timeout(self.tuning.shutdown_grace, leave).await {
            Ok(Ok(())) => debug!("left the replica registry"),
            Ok(Err(e)) => debug!(error = %e, "leaving the replica registry failed"),
            Err(_) => debug!("leaving the replica registry timed out"),
        }
    }

    fn set_redis_state(&self, redis: RedisState, error: Option<String>) {
        let mut status = self.state.status();
        if status.redis != redis {
            status.redis = redis;
            status.redis_since = std::time::SystemTime::now();
        }
        if error.is_some() {
            status.last_error = error;
        }
        if redis != RedisState::Connected {
            self.state.metrics.redis_connected.set(0);
        }
    }

    fn set_notification_mode(&self, mode: NotificationMode) {
        let mut status = self.state.status();
        // An unconfirmed mode stays confirmed once events were seen.
        if matches!(mode, NotificationMode::Unconfirmed { .. })
            && status.notifications == NotificationMode::Keyspace
        {
            return;
        }
        self.state
            .metrics
            .notifications_enabled
            .set((mode == NotificationMode::Keyspace) as i64);
        status.notifications = mode;
    }
}

fn reason_of(why: FullRead) -> ResyncReason {
    match why {
        FullRead::Unlogged | FullRead::Lagged | FullRead::Accepted => ResyncReason::Event,
    }
}

fn join_reason(result: Result<Result<(), Error>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "closed".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    }
}
