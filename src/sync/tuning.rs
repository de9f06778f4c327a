//! Every threshold and period of the sync side, in one place, each with
//! the reason for its value (ARCHITECTURE.md, "src/sync"). The flags an
//! operator sets (`--resync-interval`, `--max-removal-fraction`) live in
//! `SyncConfig`; these are the engineering constants behind them, kept in
//! a struct so that tests can shorten periods without touching the code.

use std::time::Duration;

/// The sync side's thresholds and periods. `Tuning::default()` is what
/// production runs; tests change single fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// PING period on both connections: finds half-open connections that
    /// TCP alone would report only minutes later. The same tick checks
    /// that each followed hash exists as it did at its last read (`EXISTS`,
    /// O(1)), which catches the mass removals that send no keyspace event
    /// (`FLUSHDB`, `SWAPDB`, a replica's full sync of an empty dataset)
    /// within a tick instead of a resync interval.
    pub ping_interval: Duration,
    /// Reconnect backoff: capped exponential with jitter, from `min` to
    /// `max`. The cap keeps a replica within about a second of a Redis
    /// that answers again (issue: a 5 s cap meant changes made right after
    /// an outage went live 1.5 s late); a connection attempt costs Redis
    /// next to nothing, even from hundreds of replicas.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Timeout of every Redis command and of connecting.
    pub command_timeout: Duration,
    /// Above this many entries a full read uses `DUMP` instead of
    /// `HGETALL`: the same work for Redis, one length-prefixed string the
    /// proxy decodes in one pass (see `dump`). Redis's default
    /// `hash-max-listpack-entries` is 128; 512 keeps small hashes on the
    /// plain command.
    pub dump_threshold: usize,
    /// Above this many entries a full read uses `HSCAN` in chunks instead
    /// of one `DUMP`, so Redis is never blocked for long: both cost Redis
    /// ~0.1 µs per entry in one go (~25 ms at 250,000), `HSCAN` ~0.45 µs
    /// per entry in slices of `scan_count`.
    pub scan_threshold: usize,
    /// Above this many entries the periodic resync reads a dict by
    /// `HSCAN` pages: one `DUMP` of a 100,000-entry dict blocks Redis for
    /// ~30 ms, and three replicas' periodic reads then held every write (a
    /// logged change's too) for up to that long each. Pages of
    /// `scan_count` keep each wait under a millisecond; the safety net has
    /// no one waiting for it.
    pub periodic_scan_above: usize,
    /// `HSCAN ... COUNT` of one slice: ~0.5 ms of Redis's one thread at
    /// 1,000 (a write waits behind at most one slice per replica; at
    /// 10,000, three replicas' slices kept writes waiting 15 ms).
    pub scan_count: usize,
    /// While a large hash is read by `HSCAN` or its table is built on a
    /// blocking thread (seconds at 1,000,000 entries), the served table
    /// follows the change log at most this often, so that a logged change
    /// made meanwhile goes live within a few milliseconds rather than
    /// after the read (ARCHITECTURE.md, "Large hashes").
    pub follow_log_every: Duration,
    /// The periodic resync waits at least this many times as long as the
    /// last whole read took (the boot's or a reconnect's included): at
    /// 1,000,000 routes a read takes a replica seconds (~4 s with three
    /// replicas on 2 cores) and Redis about half a second of its one
    /// thread, and logged changes made meanwhile go live in ~6 ms instead
    /// of ~1.5 ms; spaced so, the safety net takes at most 1% of the time
    /// (every ~7 minutes at that size). Tables read in under 300 ms keep
    /// `--resync-interval`.
    pub periodic_spacing: u32,
    /// Above this many entries a table is built or patched on a blocking
    /// thread, so the reactor keeps serving while a large hash is parsed.
    pub build_off_reactor_above: usize,
    /// How much lower than the process the threads that build a large
    /// table (or free one) run, while a table is served (`background`).
    /// Lowered, a build yields to the replica's loop, Redis and the other
    /// replicas on the same host: on 2 cores, three replicas building at
    /// normal priority delayed logged changes by 100-300 ms. Not 19: at
    /// nice 19 a thread gets ~1.5% of a core beside one busy thread, so on
    /// a saturated host a plain write to a large hash could wait minutes
    /// for its build; at 10 it gets ~10%. The boot's build gates
    /// readiness and runs at normal priority.
    pub background_nice: i32,
    /// Most changes a `DUMP` payload diff hands to the table's patch; a
    /// bulk rewrite past this compares every entry instead.
    pub payload_diff_max_changes: usize,
    /// Change-log entries read per `XRANGE`.
    pub log_read_batch: usize,
    /// Most change-log entries replayed at once (after a reconnect, or a
    /// burst): past this a full read is cheaper than patching entry by
    /// entry.
    pub log_replay_max: usize,
    /// Capacity of the subscriber's event channel: a lagging receiver
    /// costs one full read; 1,024 slots hold a burst of 1,000 writes.
    pub subscriber_event_capacity: usize,
    /// How long a session may take to end after shutdown (one round trip
    /// for the replica to leave the registry).
    pub shutdown_grace: Duration,
    /// A followed hash whose last successful read is older than this many
    /// resync intervals is reported stale (`/readyz`, replica status):
    /// the periodic resync should have read it.
    pub stale_after_resyncs: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            ping_interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            command_timeout: Duration::from_secs(5),
            dump_threshold: 512,
            scan_threshold: 250_000,
            periodic_scan_above: 10_000,
            scan_count: 1_000,
            follow_log_every: Duration::from_millis(1),
            periodic_spacing: 100,
            build_off_reactor_above: 10_000,
            background_nice: 10,
            payload_diff_max_changes: 4096,
            log_read_batch: 1000,
            log_replay_max: 10_000,
            subscriber_event_capacity: 1024,
            shutdown_grace: Duration::from_secs(1),
            stale_after_resyncs: 2,
        }
    }
}

/// The `MAXLEN ~` of the change log that `changelog::queue_set` and
/// `queue_del` write: how many entries Redis keeps (a little more: `~`
/// trims whole stream nodes, 100 entries each by default). A replica that
/// was away for fewer changes than this replays them after a reconnect
/// instead of reading the whole hash. Writers in other languages use the
/// same number (README.md, "Changing routes"). Any cap is safe: a replica
/// whose last-seen entry was trimmed away notices and reads the whole
/// hash.
pub const LOG_MAX_LEN: usize = 10_000;
