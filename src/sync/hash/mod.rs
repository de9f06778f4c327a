//! A followed hash as a value: the Redis hash, its change log and its
//! removal-confirmation key ([`HashNames`]), the table type built from it
//! ([`Table`]: full build from entries, exact field-level patch, and the
//! diff that measures drift and removals), and where the table is served
//! from ([`Home`]). [`FollowedHash`] puts them together with the reads
//! and the reload: read, build or patch, drift, guard, install, status.
//! The session loop (`mod.rs`) drives any number of them through the
//! object-safe [`Followed`] (ARCHITECTURE.md, "Followed hashes"). The
//! change log's side lives in `log`, what a whole read builds in `build`.

mod build;
mod log;

use build::{build, replayed, LastDump};

use super::background;
use super::changelog::{self, Change};
use super::dump;
use super::error::SyncError;
use super::follower::{Follower, KeyRole};
use super::guard::{self, Guard, Held, Verdict};
use super::method::MethodChoice;
use super::redis::{self, HashRead, LogPosition, ReadMethod};
use super::tuning::Tuning;
use crate::metrics::ResyncReason;
use crate::routes::RedisMicros;
use crate::state::{HashStatus, SharedState};
use fred::prelude::Client;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};
use tracing::{debug, error, info, warn};

/// A boxed future borrowing its receiver (what an object-safe async
/// method returns).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What changed between two tables, as the sync side needs it.
pub trait TableDiff: Send + Sync + 'static {
    fn is_empty(&self) -> bool;
    /// Entries the newer table has and the older had not.
    fn added(&self) -> usize;
    /// Entries the older table had and the newer has not.
    fn removed(&self) -> usize;
}

/// A table built from a followed hash. Implementations keep the rules of
/// their data (parsing, invalid entries, what a key is); the sync side
/// only reads, decides and installs.
pub trait Table: Send + Sync + Sized + 'static {
    type Diff: TableDiff;
    /// The table of a complete read of the hash, and what changed from
    /// `served` (the table as served). Compares every entry: a non-empty
    /// diff after a periodic read is drift.
    fn from_entries<E: AsRef<[u8]>>(entries: &[(E, E)], served: &Self) -> (Self, Self::Diff);
    /// The table after these changes, in order, to the hash `self` was
    /// built from: exactly what [`Table::from_entries`] would give for
    /// the hash after them. `None` sends the caller to a full read; it
    /// must be `None` when a deletion names a field the hash did not
    /// have (see `follower`: such a logged deletion sent no hash event).
    fn patch(&self, changes: &[Change]) -> Option<(Self, Self::Diff)>;
    /// Whether a full read of a large hash may use `DUMP` (else
    /// `HGETALL`, and `HSCAN` for a huge one). `DUMP` pays when values are
    /// short; Redis LZF-compresses every value it dumps, which for values
    /// of kilobytes it cannot shrink costs its one thread more than
    /// sending them.
    const READ_BY_DUMP: bool = true;
    /// Entries served: what the removal guard measures.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a table is served from.
pub trait Home<T: Table>: Send + Sync + 'static {
    /// The table served now: the base of patches, the reference of drift.
    fn current(&self) -> Arc<T>;
    /// Whether the table served came from Redis (not "nothing yet", not
    /// a snapshot): only then is a difference found by a safety-net read
    /// drift.
    fn serves_redis(&self) -> bool;
    /// Whether a table is served at all (readiness).
    fn loaded(&self) -> bool;
    /// Serves `table`, which reflects Redis at `watermark`, if it differs
    /// from the current one (or the current one is not from Redis); logs
    /// and persists as the data requires. Returns the table now served.
    fn install(&self, table: T, diff: &T::Diff, watermark: RedisMicros, reason: &str) -> Arc<T>;
}

/// The keys and keyspace channels of a followed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashNames {
    pub key: String,
    pub log: String,
    pub accept: String,
    pub db: u8,
}

impl HashNames {
    pub fn new(key: &str, db: u8) -> HashNames {
        HashNames {
            key: key.to_owned(),
            log: changelog::log_key(key),
            accept: guard::accept_key(key),
            db,
        }
    }

    /// The keyspace channels to subscribe: the hash, its log, its
    /// confirmation key.
    pub fn channels(&self) -> [String; 3] {
        [&self.key, &self.log, &self.accept].map(|k| format!("__keyspace@{}__:{k}", self.db))
    }

    /// Which of this hash's keys `key` is, if any.
    pub fn role_of(&self, db: u8, key: &[u8]) -> Option<KeyRole> {
        if db != self.db {
            None
        } else if key == self.key.as_bytes() {
            Some(KeyRole::Hash)
        } else if key == self.log.as_bytes() {
            Some(KeyRole::Log)
        } else if key == self.accept.as_bytes() {
            Some(KeyRole::Accept)
        } else {
            None
        }
    }
}

/// What a read did for the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The table reflects Redis at this time (`None`: nothing was read,
    /// or the table is held and does not reflect it).
    pub watermark: Option<RedisMicros>,
}

impl Outcome {
    const NOTHING: Outcome = Outcome { watermark: None };
}

/// A followed hash, as the session loop drives it.
pub trait Followed: Send + Sync {
    fn names(&self) -> &HashNames;
    fn follower(&mut self) -> &mut Follower;
    /// A new session: rights and server may have changed.
    fn new_session(&mut self, log_events: bool);
    /// The first read of a session: a whole read, after replaying the log
    /// when it covers the time away from the same server (`same_server`),
    /// so that logged changes are live before a large hash is read.
    fn resume<'a>(
        &'a mut self,
        client: &'a Client,
        same_server: bool,
        reason: ResyncReason,
    ) -> BoxFuture<'a, Result<Outcome, SyncError>>;
    fn full_read<'a>(
        &'a mut self,
        client: &'a Client,
        reason: ResyncReason,
    ) -> BoxFuture<'a, Result<Outcome, SyncError>>;
    fn read_log<'a>(&'a mut self, client: &'a Client) -> BoxFuture<'a, Result<Outcome, SyncError>>;
    /// The ping tick's check: whether the hash exists, against the last
    /// read, while no event is pending. A difference is a change that sent
    /// no event (`FLUSHDB`, `SWAPDB`, a replica's full sync): read.
    fn check<'a>(&'a mut self, client: &'a Client) -> BoxFuture<'a, Result<Outcome, SyncError>>;
    fn held(&self) -> bool;
    fn loaded(&self) -> bool;
}

/// A followed hash of table type `T` served from `H`.
pub struct FollowedHash<T: Table, H: Home<T>> {
    names: HashNames,
    home: H,
    state: Arc<SharedState>,
    tuning: Tuning,
    guard: Guard,
    follower: Follower,
    method: MethodChoice,
    /// The payload of the last `DUMP` read, so that the next event-driven
    /// read is compared with it rather than with the whole table.
    last_dump: Option<LastDump<T>>,
    /// Where the change log stood at the read the table reflects.
    log: LogPosition,
    /// The hash's length at the read the table reflects (whether it
    /// exists is what the ping tick checks).
    len_at_read: Option<usize>,
    /// The log cannot be used this session (refused, events off), and why.
    log_off: Option<String>,
    held: Option<Held>,
    last_read: Option<SystemTime>,
}

impl<T: Table, H: Home<T>> FollowedHash<T, H> {
    pub fn new(
        names: HashNames,
        home: H,
        state: Arc<SharedState>,
        tuning: Tuning,
        max_removal_fraction: f64,
    ) -> FollowedHash<T, H> {
        let hash = FollowedHash {
            names,
            home,
            state,
            tuning,
            guard: Guard::new(max_removal_fraction),
            follower: Follower::new(true),
            method: MethodChoice::new(T::READ_BY_DUMP),
            last_dump: None,
            log: LogPosition::NotRead,
            len_at_read: None,
            log_off: None,
            held: None,
            last_read: None,
        };
        hash.report();
        hash
    }

    /// Publishes this hash's part of `/readyz` and the replica status.
    fn report(&self) {
        let status = HashStatus {
            key: self.names.key.clone(),
            loaded: self.home.loaded(),
            held: self.held.clone(),
            change_log: match &self.log_off {
                None => "on".into(),
                Some(why) => format!("off: {why}"),
            },
            last_read: self.last_read,
        };
        let mut all = self.state.status();
        match all.hashes.iter_mut().find(|h| h.key == status.key) {
            Some(slot) => *slot = status,
            None => all.hashes.push(status),
        }
    }

    fn log_key(&self) -> Option<&str> {
        self.log_off.is_none().then_some(self.names.log.as_str())
    }

    /// Stops using the log for this session, with one warning.
    fn turn_log_off(&mut self, why: String) {
        if self.log_off.is_none() {
            warn!(key = %self.names.key, reason = %why,
                  "change log off for this session: every change to this hash costs a full read \
                   (grant the rights listed in README.md)");
            self.log_off = Some(why);
        }
        self.follower.set_log_enabled(false);
        self.log = LogPosition::NotRead;
        self.report();
    }

    /// Reads the whole hash, falling back on refusals: without the log,
    /// then with `HGETALL` instead of `DUMP`. `None`: the hash itself
    /// cannot be read (WRONGTYPE, NOPERM).
    async fn read_with_fallbacks(
        &mut self,
        client: &Client,
        method: ReadMethod,
    ) -> Result<Option<HashRead>, SyncError> {
        let key = self.names.key.clone();
        let scan = self.tuning.scan_count;
        let log = self.log_key().map(str::to_owned);
        let mut attempts: Vec<(ReadMethod, Option<&str>)> = vec![(method, log.as_deref())];
        if log.is_some() {
            attempts.push((method, None));
        }
        if method == ReadMethod::Dump {
            if log.is_some() {
                attempts.push((ReadMethod::HGetAll, log.as_deref()));
            }
            attempts.push((ReadMethod::HGetAll, None));
        }
        let mut refusal = None;
        for (i, (method, log)) in attempts.iter().enumerate() {
            let read = if *method == ReadMethod::HScan {
                self.scan_following_log(client, &key, *log, scan).await
            } else {
                redis::read_hash(client, &key, *log, *method, scan).await
            };
            match read {
                Ok(read) => {
                    if i > 0 {
                        let refused = refusal.unwrap_or_default();
                        if log.is_none() && attempts[0].1.is_some() {
                            self.turn_log_off(format!(
                                "reading {} refused: {refused}",
                                self.names.log
                            ));
                        }
                        if *method != attempts[0].0 {
                            warn!(key = %key, error = %refused,
                                  "DUMP refused; reading the hash with HGETALL (grant +dump for faster reads of large hashes)");
                            self.method.dump_refused();
                        }
                    }
                    return Ok(Some(read));
                }
                Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
                Err(e) => refusal = Some(e.to_string()),
            }
        }
        let error = refusal.unwrap_or_default();
        // WRONGTYPE, NOPERM...: keep the table, say why, try again later.
        error!(%error, key = %key, "reading the hash failed; keeping the current table");
        self.state.status().last_error = Some(format!("read {key}: {error}"));
        Ok(None)
    }

    /// A whole read by `HSCAN`, which at 1,000,000 routes takes seconds:
    /// between its pages the table follows the change log as it does
    /// between reads, so that a logged change made meanwhile goes live
    /// within a few pages, not after the whole scan. The replay after the
    /// scan ([`Self::replay_over_scan`]) reads the log from where it stood
    /// when the scan began, so it covers every entry applied here
    /// (ARCHITECTURE.md, "Large hashes").
    async fn scan_following_log(
        &mut self,
        client: &Client,
        key: &str,
        log: Option<&str>,
        scan_count: usize,
    ) -> Result<HashRead, SyncError> {
        let mut scan = redis::HashScan::start(client, key, log, scan_count).await?;
        // Only a table read before (a patch needs one), and only while the
        // log answers: else the scan decides alone.
        let mut follow = log.is_some() && self.len_at_read.is_some();
        let mut followed = Instant::now();
        while !scan.next_page(client).await? {
            if follow && followed.elapsed() >= self.tuning.follow_log_every {
                follow = self.try_log(client).await?.is_some();
                followed = Instant::now();
            }
        }
        Ok(scan.finish())
    }

    /// Runs `work` (the build of a large table) in the background (see
    /// `background`), the served table following the change log
    /// meanwhile: at 1,000,000 entries a build takes seconds, and a logged
    /// change must not wait for it. The caller reconciles what it built
    /// with what was served meanwhile ([`Self::full_read_inner`]).
    async fn following_log<R: Send + 'static>(
        &mut self,
        client: &Client,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, SyncError> {
        // The boot's build gates readiness: not lowered.
        let nice = if self.home.loaded() {
            self.tuning.background_nice
        } else {
            0
        };
        let task = background::run(nice, work);
        tokio::pin!(task);
        let mut follow = self.log_key().is_some() && self.len_at_read.is_some();
        loop {
            if !follow {
                return task.await;
            }
            tokio::select! {
                done = &mut task => return done,
                _ = tokio::time::sleep(self.tuning.follow_log_every) => {
                    follow = self.try_log(client).await?.is_some();
                }
            }
        }
    }

    async fn full_read_inner(
        &mut self,
        client: &Client,
        reason: ResyncReason,
    ) -> Result<Outcome, SyncError> {
        let started = Instant::now();
        // Every event received so far is covered by this read.
        self.follower.covered();
        self.state.metrics.resync(reason);
        if !self.method.size_known() {
            // One O(1) HLEN so that a huge hash is never read with one
            // blocking HGETALL. A refusal is reported by the read.
            match redis::hash_len(client, &self.names.key).await {
                Ok(len) => self.method.read_size(len),
                Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
                Err(_) => {}
            }
        }
        let method = self
            .method
            .choose(&self.tuning, reason == ResyncReason::Periodic);
        let Some(read) = self.read_with_fallbacks(client, method).await? else {
            return Ok(Outcome::NOTHING);
        };
        if read.dump_unreadable {
            self.method.dump_unreadable();
        }
        if let Some(payload) = read.dump_payload() {
            self.method.read_encoding(dump::is_dict(payload));
        }
        let (replay, position) = if method == ReadMethod::HScan {
            self.replay_over_scan(client, &read).await?
        } else {
            (Vec::new(), read.log)
        };
        let watermark = read.watermark;
        let comparable = self.catch_up_to(client, position).await?;
        let previous = self.home.current();
        // The payload diff only for reads an event asked for: a safety-net
        // read (boot, reconnect, periodic, ping-tick check) compares every
        // entry with the table as served (ARCHITECTURE.md, "A safety net
        // compares with the truth").
        let last_dump = if reason == ResyncReason::Event {
            self.last_dump
                .take()
                .filter(|last| Weak::ptr_eq(&last.table, &Arc::downgrade(&previous)))
        } else {
            None
        };
        let max_changes = self.tuning.payload_diff_max_changes;
        let build = {
            let previous = previous.clone();
            move || build(replayed(read, replay), last_dump, &previous, max_changes)
        };
        let built = if self.method.last_size() > self.tuning.build_off_reactor_above {
            self.following_log(client, build).await?
        } else {
            build()
        };
        let built = match built {
            Ok(built) => built,
            Err(e) => {
                // Redis sent a payload this proxy misreads: say so, and
                // read with HGETALL from now on (this session).
                error!(error = %e, key = %self.names.key, "could not decode the DUMP of the hash; reading with HGETALL");
                self.method.dump_refused();
                return Box::pin(self.full_read_inner(client, reason)).await;
            }
        };
        let metrics = &self.state.metrics;
        if built.by_payload_diff {
            metrics.reload_by_payload_diff.inc();
        } else {
            metrics.reload_by_compare.inc();
        }
        let len = built.table.len();
        self.method.read_size(len);
        if reason.is_safety_net()
            && comparable
            && !built.diff.is_empty()
            && self.home.serves_redis()
        {
            metrics.drift.inc();
            warn!(key = %self.names.key, reason = reason.as_str(),
                  "resync found drift: the table differed from Redis (a change that sent no event, or a lost one)");
        }
        if !self.judge(client, &previous, &built.diff, len).await? {
            self.mark_read();
            return Ok(Outcome::NOTHING);
        }
        let outcome = Outcome {
            watermark: Some(watermark),
        };
        if !Arc::ptr_eq(&self.home.current(), &previous) {
            // The served table followed the log while this one was built.
            if built.diff.is_empty() {
                // The read found what `previous` held, so the table
                // served (`previous` and the entries logged since) is
                // exact: nothing to install.
                self.mark_read();
            } else {
                // Installed as built, it would undo those entries.
                self.last_dump = None;
                let (table, position) = self.to_log_end(client, built.table, position).await?;
                let len = table.len();
                self.home
                    .install(table, &built.diff, watermark, reason.as_str());
                self.read_done(position, len);
            }
        } else {
            let installed = self
                .home
                .install(built.table, &built.diff, watermark, reason.as_str());
            match built.dump {
                Some(payload) => {
                    self.last_dump = Some(LastDump {
                        payload,
                        table: Arc::downgrade(&installed),
                        touched: Vec::new(),
                    });
                }
                // A read by pages or HGETALL that changed nothing (a
                // periodic one, say) leaves the last payload usable.
                None if Arc::ptr_eq(&installed, &previous) => {}
                None => self.last_dump = None,
            }
            self.read_done(position, len);
        }
        self.state
            .metrics
            .sync_duration
            .with_label_values(&[reason.as_str()])
            .observe(started.elapsed().as_secs_f64());
        debug!(key = %self.names.key, reason = reason.as_str(), took = ?started.elapsed(), "full read done");
        Ok(outcome)
    }

    /// `work` on a blocking thread when the table is large (so that the
    /// reactor keeps serving), else here.
    async fn sized_work<R: Send + 'static>(
        &self,
        size: usize,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, SyncError> {
        if size > self.tuning.build_off_reactor_above {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| SyncError::protocol(format!("table work: {e}")))
        } else {
            Ok(work())
        }
    }

    /// The guard's verdict on a change from `previous`: true to install.
    /// Holds (and reports) otherwise; a confirmation key lets it through.
    async fn judge(
        &mut self,
        client: &Client,
        previous: &T,
        diff: &T::Diff,
        in_redis: usize,
    ) -> Result<bool, SyncError> {
        let verdict = self.guard.judge(previous.len(), diff.removed());
        if let Verdict::Trips { removed, serving } = verdict {
            let confirmed = match redis::exists(client, &self.names.accept).await {
                Ok(found) => found,
                Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
                Err(e) => {
                    debug!(error = %e, "reading the confirmation key failed");
                    false
                }
            };
            if !confirmed {
                if self.held.is_none() {
                    error!(key = %self.names.key, removed, serving, in_redis,
                           max_fraction = ?self.guard,
                           "HOLDING A MASS REMOVAL: serving the current table. It lifts when the entries \
                            are written back, or confirm with `switchyard route accept-removal`");
                    self.state.metrics.removal_holds.inc();
                }
                self.held = Some(Held::new(removed, serving, in_redis, self.held.as_ref()));
                self.follower.set_held(true);
                self.report();
                self.set_held_gauge();
                return Ok(false);
            }
            info!(key = %self.names.key, removed, serving, "mass removal confirmed (accept-removal): applying it");
        }
        if self.held.take().is_some() {
            info!(key = %self.names.key, "hold lifted");
            self.follower.set_held(false);
            self.report();
            self.set_held_gauge();
        }
        Ok(true)
    }

    /// `switchyard_removals_held`: 1 while any followed hash holds one.
    fn set_held_gauge(&self) {
        let any = self.state.status().held().next().is_some();
        self.state.metrics.removals_held.set(i64::from(any));
    }

    fn read_done(&mut self, position: LogPosition, len: usize) {
        self.log = if self.log_off.is_some() {
            LogPosition::NotRead
        } else {
            position
        };
        self.len_at_read = Some(len);
        self.mark_read();
    }

    /// A successful read (sync liveness, `/readyz`).
    fn mark_read(&mut self) {
        self.last_read = Some(SystemTime::now());
        let mut status = self.state.status();
        status.last_sync = self.last_read;
        status.last_error = None;
        drop(status);
        self.report();
    }
}

impl<T: Table, H: Home<T>> Followed for FollowedHash<T, H> {
    fn names(&self) -> &HashNames {
        &self.names
    }

    fn follower(&mut self) -> &mut Follower {
        &mut self.follower
    }

    fn new_session(&mut self, log_events: bool) {
        self.method.new_session();
        self.last_dump = None;
        self.log_off = (!log_events).then(|| {
            "notify-keyspace-events lacks `t` (stream events): log appends send no event".to_owned()
        });
        self.follower = Follower::new(log_events);
        self.follower.set_held(self.held.is_some());
        self.report();
    }

    fn resume<'a>(
        &'a mut self,
        client: &'a Client,
        same_server: bool,
        reason: ResyncReason,
    ) -> BoxFuture<'a, Result<Outcome, SyncError>> {
        Box::pin(async move {
            if same_server && self.try_log(client).await?.is_some() {
                // The logged changes made while away are live now; a large
                // hash takes a while to read whole.
                debug!(key = %self.names.key, "caught up from the change log");
                self.state.metrics.resync(ResyncReason::Replay);
            }
            // Plain writes made while away sent their events to no one:
            // only a whole read finds them (ARCHITECTURE.md, "Every
            // (re)subscribe is followed by a resync").
            self.full_read_inner(client, reason).await
        })
    }

    fn full_read<'a>(
        &'a mut self,
        client: &'a Client,
        reason: ResyncReason,
    ) -> BoxFuture<'a, Result<Outcome, SyncError>> {
        Box::pin(self.full_read_inner(client, reason))
    }

    fn read_log<'a>(&'a mut self, client: &'a Client) -> BoxFuture<'a, Result<Outcome, SyncError>> {
        Box::pin(async move {
            match self.try_log(client).await? {
                Some(outcome) => Ok(outcome),
                None => self.full_read_inner(client, ResyncReason::Event).await,
            }
        })
    }

    fn check<'a>(&'a mut self, client: &'a Client) -> BoxFuture<'a, Result<Outcome, SyncError>> {
        Box::pin(async move {
            let Some(expected) = self.len_at_read.filter(|_| self.follower.is_idle()) else {
                return Ok(Outcome::NOTHING);
            };
            // EXISTS, not HLEN: O(1) whatever the encoding (HLEN counts a
            // large listpack's elements one by one).
            let exists = match redis::exists(client, &self.names.key).await {
                Ok(exists) => exists,
                Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
                Err(_) => return Ok(Outcome::NOTHING),
            };
            if exists == (expected > 0) || !self.follower.is_idle() {
                return Ok(Outcome::NOTHING);
            }
            info!(key = %self.names.key, expected, exists, "the hash appeared or vanished without an event; reading it");
            self.full_read_inner(client, ResyncReason::Check).await
        })
    }

    fn held(&self) -> bool {
        self.held.is_some()
    }

    fn loaded(&self) -> bool {
        self.home.loaded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_channels_of_a_hash() {
        let names = HashNames::new("routes", 2);
        assert_eq!(
            names.channels(),
            [
                "__keyspace@2__:routes",
                "__keyspace@2__:routes:log",
                "__keyspace@2__:routes:accept-removal"
            ]
            .map(String::from)
        );
        assert_eq!(names.role_of(2, b"routes"), Some(KeyRole::Hash));
        assert_eq!(names.role_of(2, b"routes:log"), Some(KeyRole::Log));
        assert_eq!(
            names.role_of(2, b"routes:accept-removal"),
            Some(KeyRole::Accept)
        );
        assert_eq!(names.role_of(0, b"routes"), None);
        assert_eq!(names.role_of(2, b"routes:certs"), None);
    }
}
