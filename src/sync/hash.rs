//! A followed hash as a value: the Redis hash, its change log and its
//! removal-confirmation key ([`HashNames`]), the table type built from it
//! ([`Table`]: full build from entries, exact field-level patch, and the
//! diff that measures drift and removals), and where the table is served
//! from ([`Home`]). [`FollowedHash`] puts them together with the reads
//! and the reload: read, build or patch, drift, guard, install, status.
//! The session loop (`mod.rs`) drives any number of them through the
//! object-safe [`Followed`] (ARCHITECTURE.md, "Followed hashes").

use super::background;
use super::changelog::{self, Change, StreamId};
use super::dump::{self, DumpError};
use super::error::SyncError;
use super::follower::{Follower, KeyRole};
use super::guard::{self, Guard, Held, Verdict};
use super::method::MethodChoice;
use super::redis::{self, HashRead, LogPosition, ReadMethod};
use super::tuning::Tuning;
use crate::metrics::ResyncReason;
use crate::routes::RedisMicros;
use crate::state::{HashStatus, SharedState};
use bytes::Bytes;
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

/// A `DUMP` payload and (weakly) the table served since: the one made
/// from it, or that one patched from the change log on the `touched`
/// fields. The next event-driven read patches that table with what
/// changed between the payloads and with the new payload's value of each
/// touched field, which is exactly the new payload's table: a field in
/// neither set has the same value in both payloads and in the table.
struct LastDump<T> {
    payload: Bytes,
    table: Weak<T>,
    touched: Vec<Bytes>,
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
        let task = background::run(work);
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

    /// After an `HSCAN` (not atomic): the log entries written since the
    /// scan began, to apply to what it read (on the build's thread, see
    /// [`replayed`]), so that the table is exact as of the last of them,
    /// and that entry's position. No entries and the position unchanged
    /// when there is no log; `LogPosition::Empty` when the log moved past
    /// the scan's start (the scan stands, and the next log event means a
    /// full read).
    async fn replay_over_scan(
        &self,
        client: &Client,
        read: &HashRead,
    ) -> Result<(Vec<Change>, LogPosition), SyncError> {
        let from = match read.log {
            LogPosition::At(from) => Some(from),
            // Empty when the scan began, and nothing trimmed since: every
            // entry came after.
            LogPosition::Empty if !self.follower.trimmed() => None,
            _ => return Ok((Vec::new(), read.log)),
        };
        let Some(log) = self.log_key() else {
            return Ok((Vec::new(), read.log));
        };
        match self.read_entries(client, log, from, None).await {
            Ok(Some((changes, Some(last), _))) => Ok((changes, LogPosition::At(last))),
            Err(SyncError::Connection(e)) => Err(SyncError::Connection(e)),
            _ => Ok((Vec::new(), LogPosition::Empty)),
        }
    }

    /// Brings the served table to `to`, the log position of a whole read,
    /// before the read is compared with it: a logged change that the
    /// table had not applied yet (its event still queued, or written
    /// during a scan) is not drift (ARCHITECTURE.md, "A safety net
    /// compares with the truth"). `false` when the served table is not as
    /// of `to` (the log cannot say, or the patch was refused): the
    /// comparison may then find logged changes, which are not drift.
    async fn catch_up_to(&mut self, client: &Client, to: LogPosition) -> Result<bool, SyncError> {
        if self.log == to || self.log_key().is_none() {
            return Ok(true);
        }
        let LogPosition::At(to) = to else {
            return Ok(false);
        };
        let from = match self.log {
            LogPosition::At(from) if from < to => Some(from),
            LogPosition::Empty if !self.follower.trimmed() => None,
            _ => return Ok(false),
        };
        if self.held.is_some() || self.len_at_read.is_none() {
            return Ok(false);
        }
        let log = self.names.log.clone();
        match self.read_entries(client, &log, from, Some(to)).await {
            Ok(Some((changes, last, watermark))) => {
                let position = last.map_or(LogPosition::Empty, LogPosition::At);
                let applied = self.apply_log(changes, position, watermark).await?;
                Ok(applied.is_some() && self.log == LogPosition::At(to))
            }
            Err(SyncError::Connection(e)) => Err(SyncError::Connection(e)),
            _ => Ok(false),
        }
    }

    /// The log entries after `from` (all of them for `None`: the log was
    /// empty at the last full read and has not been trimmed since), up to
    /// `to` (else to the end), with the last id read (`None`: still empty)
    /// and the transaction's watermark. `Ok(None)`: the log cannot be used from there (`from`
    /// trimmed, an entry we do not read, more than we replay).
    async fn read_entries(
        &self,
        client: &Client,
        log: &str,
        mut from: Option<StreamId>,
        to: Option<StreamId>,
    ) -> Result<Option<(Vec<Change>, Option<StreamId>, RedisMicros)>, SyncError> {
        let batch = self.tuning.log_read_batch;
        let mut changes = Vec::new();
        loop {
            let start = from.unwrap_or(StreamId { ms: 0, seq: 0 });
            let read = redis::read_log(client, log, start, to, batch + 1).await?;
            let more = read.entries.len() > batch;
            let mut entries = read.entries.into_iter();
            if from.is_some() && entries.next().map(|(id, _)| id) != from {
                debug!(key = %self.names.key, ?from, "the change log no longer holds our last entry");
                return Ok(None);
            }
            for (id, body) in entries {
                match changelog::decode(id, &body.into_array()) {
                    Ok(entry) => changes.push(entry.change),
                    Err(e) => {
                        warn!(key = %self.names.key, error = %e, "reading the whole hash instead");
                        return Ok(None);
                    }
                }
                from = Some(id);
            }
            if changes.len() > self.tuning.log_replay_max {
                return Ok(None);
            }
            if !more {
                return Ok(Some((changes, from, read.watermark)));
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

    /// `table`, exact as of the log's `position`, with the entries logged
    /// after it, and the position it is then exact as of. As it was when
    /// the log cannot say (the next log read finds out and reads again).
    async fn to_log_end(
        &self,
        client: &Client,
        table: T,
        position: LogPosition,
    ) -> Result<(T, LogPosition), SyncError> {
        let from = match position {
            LogPosition::At(from) => Some(from),
            LogPosition::Empty if !self.follower.trimmed() => None,
            _ => return Ok((table, position)),
        };
        let Some(log) = self.log_key() else {
            return Ok((table, position));
        };
        let (changes, last) = match self.read_entries(client, log, from, None).await {
            Ok(Some((changes, Some(last), _))) if !changes.is_empty() => (changes, last),
            Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
            _ => return Ok((table, position)),
        };
        let patched = self
            .sized_work(table.len(), move || match table.patch(&changes) {
                Some((patched, _)) => (patched, LogPosition::At(last)),
                None => (table, position),
            })
            .await?;
        Ok(patched)
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

    /// Keeps the last `DUMP` payload usable for the next payload diff
    /// after a log patch of the table made from it (see [`LastDump`]), up
    /// to `payload_diff_max_changes` touched fields: a plain write after
    /// logged ones then costs a payload diff, not a compare of every entry.
    fn touched_by_log(&mut self, previous: &Arc<T>, installed: &Arc<T>, changes: Vec<Change>) {
        let max = self.tuning.payload_diff_max_changes;
        self.last_dump = self.last_dump.take().and_then(|mut last| {
            if !Weak::ptr_eq(&last.table, &Arc::downgrade(previous))
                || last.touched.len() + changes.len() > max
            {
                return None;
            }
            last.touched.extend(changes.into_iter().map(|c| c.field));
            last.table = Arc::downgrade(installed);
            Some(last)
        });
    }

    /// Reads the log from our position and patches the table. `None`:
    /// the log cannot be used (the caller reads the whole hash).
    async fn try_log(&mut self, client: &Client) -> Result<Option<Outcome>, SyncError> {
        let from = match (self.log, self.log_key()) {
            (LogPosition::At(from), Some(_)) => Some(from),
            // Empty at the last full read, and nothing trimmed since (the
            // session saw every trim): every entry came after that read.
            (LogPosition::Empty, Some(_)) if !self.follower.trimmed() => None,
            _ => return Ok(None),
        };
        let log = self.names.log.clone();
        if self.held.is_some() {
            return Ok(None);
        }
        let read = match self.read_entries(client, &log, from, None).await {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(None),
            Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
            Err(e) => {
                self.turn_log_off(format!("XRANGE {log} refused: {e}"));
                return Ok(None);
            }
        };
        let (changes, last, watermark) = read;
        let position = last.map_or(LogPosition::Empty, LogPosition::At);
        self.apply_log(changes, position, watermark).await
    }

    /// Patches the served table with `changes`, the log's entries up to
    /// `position` read at `watermark`. `None`: the table or the guard
    /// refused them (a full read decides).
    async fn apply_log(
        &mut self,
        changes: Vec<Change>,
        position: LogPosition,
        watermark: RedisMicros,
    ) -> Result<Option<Outcome>, SyncError> {
        let Some(expected) = self.len_at_read else {
            return Ok(None);
        };
        let outcome = Outcome {
            watermark: Some(watermark),
        };
        if changes.is_empty() {
            // Nothing new (the entries were read with an earlier event):
            // still exact as of this read.
            self.read_done(position, expected);
            return Ok(Some(outcome));
        }
        let previous = self.home.current();
        let entries = changes.len();
        let patched = {
            let previous = previous.clone();
            self.sized_work(previous.len(), move || {
                previous.patch(&changes).map(|patched| (patched, changes))
            })
            .await?
        };
        let Some(((table, diff), changes)) = patched else {
            debug!(key = %self.names.key, "the table refused the patch; reading the whole hash");
            return Ok(None);
        };
        // The hash's length after these changes (what the ping tick's
        // check compares with).
        let len = (expected + diff.added()).saturating_sub(diff.removed());
        if self.guard.judge(previous.len(), diff.removed()) != Verdict::Apply {
            // A full read decides, with the confirmation key.
            return Ok(None);
        }
        let installed = self.home.install(table, &diff, watermark, "log");
        self.touched_by_log(&previous, &installed, changes);
        let metrics = &self.state.metrics;
        metrics.reload_by_log.inc();
        metrics.log_entries.inc_by(entries as u64);
        self.read_done(position, len);
        Ok(Some(outcome))
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

/// What a full read builds.
struct Built<T: Table> {
    table: T,
    diff: T::Diff,
    /// The DUMP payload read, copied out of the client's read buffer.
    dump: Option<Bytes>,
    /// Built from the payload diff (else by comparing every entry).
    by_payload_diff: bool,
}

/// The next table from a read: from the difference with the last DUMP when
/// there is one and it is small, else by comparing every entry.
fn build<T: Table>(
    read: HashRead,
    last_dump: Option<LastDump<T>>,
    previous: &T,
    max_changes: usize,
) -> Result<Built<T>, DumpError> {
    // Kept as read, no copy: a hashtable payload is a slice of the
    // client's read buffer, which the slice pins (up to twice the
    // payload's size, as the buffer grew); a copy would cost the payload's
    // size on top of that buffer, which the client keeps at its largest
    // size for its next reply (4 MB at 100,000 routes). A listpack payload
    // is its own buffer, inflated by `prepare`.
    let dump = read.dump_payload().cloned();
    if let (Some(last), Some(payload)) = (&last_dump, &dump) {
        let changes = dump::diff_payloads(&last.payload, payload)
            .map_err(|e| debug!(error = %e, "payload diff failed; comparing every entry"))
            .ok()
            .filter(|c| c.upserts.len() + c.removed.len() <= max_changes);
        if let Some(changes) = changes {
            let mut changes: Vec<Change> = changes
                .removed
                .iter()
                .map(|f| Change {
                    field: share(&last.payload, f),
                    value: None,
                })
                .chain(changes.upserts.iter().map(|(f, v)| Change {
                    field: share(payload, f),
                    value: Some(share(payload, v)),
                }))
                .collect();
            changes.extend(touched_values(&last.touched, &changes, payload)?);
            if let Some((table, diff)) = previous.patch(&changes) {
                return Ok(Built {
                    table,
                    diff,
                    dump,
                    by_payload_diff: true,
                });
            }
        }
    }
    let entries = read.entries()?;
    let (table, diff) = T::from_entries(&entries, previous);
    Ok(Built {
        table,
        diff,
        dump,
        by_payload_diff: false,
    })
}

/// The value in `payload` of each field in `touched` that `changes` (the
/// payload diff) does not name, `None` for one it does not hold.
fn touched_values(
    touched: &[Bytes],
    changes: &[Change],
    payload: &Bytes,
) -> Result<Vec<Change>, DumpError> {
    let named: std::collections::HashSet<&[u8]> = changes.iter().map(|c| &c.field[..]).collect();
    let mut wanted: std::collections::HashMap<&[u8], Option<Bytes>> = touched
        .iter()
        .map(|f| &f[..])
        .filter(|f| !named.contains(f))
        .map(|f| (f, None))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    for (field, value) in dump::decode_hash(payload)? {
        if let Some(slot) = wanted.get_mut(&field[..]) {
            *slot = Some(share(payload, &value));
        }
    }
    Ok(wanted
        .into_iter()
        .map(|(field, value)| Change {
            field: Bytes::copy_from_slice(field),
            value,
        })
        .collect())
}

/// `read` (a scan) with the log `changes` written since it began applied
/// in order.
fn replayed(read: HashRead, changes: Vec<Change>) -> HashRead {
    if changes.is_empty() {
        return read;
    }
    let (watermark, log) = (read.watermark, read.log);
    let Some(pairs) = read.into_pairs() else {
        unreachable!("only an HSCAN read is replayed")
    };
    let mut map: std::collections::HashMap<Bytes, Bytes> = pairs.into_iter().collect();
    for change in changes {
        match change.value {
            Some(value) => map.insert(change.field, value),
            None => map.remove(&change.field),
        };
    }
    HashRead::from_pairs(map.into_iter().collect(), watermark, log)
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

#[cfg(test)]
mod tests {
    use super::*;

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
