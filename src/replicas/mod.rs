//! The replica registry: what every live proxy serves, in one hash under
//! the routes key's prefix, so that `switchyard status` and `--wait` read
//! one key instead of scanning the database (README "Replicas and
//! `--wait`").
//!
//! - **Registry** `<routes-key>:replicas`: field = replica id, value = the
//!   replica's [`ReplicaStatus`] as JSON, with a deadline (`expires_us`,
//!   Redis time). Each replica refreshes its entry on its status timer
//!   (1 s) and after every swap; an entry whose deadline has passed (3 s,
//!   see [`expiry`]) no longer counts as live; a replica that stops
//!   gracefully deletes its entry ([`leave`]).
//! - **Channel** `<routes-key>:replicas` (pub/sub, same name): every
//!   refresh is also published, so a `--wait` that subscribed before its
//!   write is told the moment a replica has the change ([`wait`]).
//!
//! Deadlines are in Redis's clock, not a host's: a replica derives Redis's
//! current time from its last read (the read's Redis time plus the local
//! time elapsed since), and readers compare with `TIME` read in the same
//! transaction as the registry, so clock skew between hosts does not matter.

pub mod wait;

use crate::config::SyncConfig;
use crate::routes::RedisMicros;
use crate::state::{NotificationMode, SharedState, SyncStatus};
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Entries dead this long are deleted by the next reader of the registry
/// (`status`, `--wait`): crashed replicas do not pile up, and a replica
/// cut off from Redis for a while reappears by itself at its next refresh.
pub const PRUNE_AFTER: Duration = Duration::from_secs(600);

/// What one replica publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaStatus {
    pub id: String,
    pub table_version: u64,
    /// Redis time (µs) such that every write before it is in the table.
    pub watermark: Option<RedisMicros>,
    pub routes: usize,
    pub invalid: usize,
    /// Unix time (ms, the replica's clock) of the last successful read.
    pub last_sync_ms: Option<u64>,
    pub notifications: String,
    pub redis: String,
    pub source: String,
    /// A mass removal this replica holds back (the removal guard), if any:
    /// it keeps serving its current table until the routes are written
    /// back or someone runs `switchyard route accept-removal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldRemoval>,
    /// Redis time (µs) after which this entry no longer counts as live.
    #[serde(default)]
    pub expires_us: RedisMicros,
}

/// The numbers of a held removal: routes served now, routes the held read
/// would leave.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldRemoval {
    pub current: usize,
    pub next: usize,
}

impl ReplicaStatus {
    /// Live at Redis time `now`: refreshed within its expiry.
    pub fn is_live(&self, now: RedisMicros) -> bool {
        self.expires_us > now
    }

    /// Serves every write made up to Redis time `write_time`.
    pub fn has_caught_up_with(&self, write_time: RedisMicros) -> bool {
        self.held.is_none() && self.watermark.is_some_and(|w| w >= write_time)
    }
}

/// What replicas publish on the registry's channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Announcement {
    /// The replica's entry, just written to the registry.
    Status(ReplicaStatus),
    /// The replica stopped gracefully and removed its entry.
    Left { id: String },
}

/// The registry hash (and the name of its channel).
pub fn registry_key(routes_key: &str) -> String {
    format!("{routes_key}:replicas")
}

/// How long an entry stays live without a refresh: three refresh periods,
/// and never under 3 s, so one slow refresh (a Redis busy with a large
/// read, a stalled host) does not make a replica vanish.
pub fn expiry(status_interval: Duration) -> Duration {
    (status_interval * 3).max(Duration::from_secs(3))
}

fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Redis's current time as this replica can tell without asking: the Redis
/// time of its last read plus the local time since (the host's clock only
/// measures an interval, so its offset from Redis's does not matter).
/// Before any read, the host's clock.
fn redis_now(status: &SyncStatus, now: SystemTime) -> RedisMicros {
    match (status.watermark, status.last_sync) {
        (Some(watermark), Some(read_at)) => {
            let since = now.duration_since(read_at).unwrap_or_default();
            watermark + since.as_micros() as u64
        }
        _ => unix_micros(now),
    }
}

/// The status of this process, as published.
pub fn current(config: &SyncConfig, state: &SharedState) -> ReplicaStatus {
    let table = state.table();
    let status = state.status();
    let now = SystemTime::now();
    ReplicaStatus {
        id: config.replica_id.clone(),
        table_version: table.version,
        watermark: status.watermark,
        routes: table.len(),
        invalid: table.invalid().len(),
        last_sync_ms: status.last_sync.map(|t| unix_micros(t) / 1000),
        notifications: match &status.notifications {
            NotificationMode::Unknown => "unknown".into(),
            NotificationMode::Keyspace => "keyspace".into(),
            NotificationMode::Unconfirmed { .. } => "unconfirmed".into(),
            NotificationMode::Polling { .. } => "polling".into(),
        },
        redis: format!("{:?}", status.redis).to_lowercase(),
        source: format!("{:?}", table.source).to_lowercase(),
        // The removal guard's hold of the routes hash (see `sync::guard`).
        held: held_removal(&status, &config.routes_key),
        expires_us: redis_now(&status, now) + expiry(config.status_interval).as_micros() as u64,
    }
}

/// The removal guard's hold of the hash `key`, if any.
fn held_removal(status: &crate::state::SyncStatus, key: &str) -> Option<HeldRemoval> {
    let (_, held) = status.held().find(|(k, _)| *k == key)?;
    Some(HeldRemoval {
        current: held.serving,
        next: held.in_redis,
    })
}

/// Writes this replica's registry entry and announces it, in one round trip
/// (a pipelined `HSET` + `PUBLISH`). Called by sync after every swap and on
/// its status timer.
pub async fn publish(
    client: &Client,
    config: &SyncConfig,
    state: &SharedState,
) -> Result<(), Error> {
    let status = current(config, state);
    let entry = serde_json::to_string(&status).expect("status serialises");
    let message = serde_json::to_string(&Announcement::Status(status)).expect("status serialises");
    let key = registry_key(&config.routes_key);
    let pipeline = client.pipeline();
    let _: () = pipeline
        .hset(&key, (config.replica_id.as_str(), entry))
        .await?;
    let _: () = pipeline.publish(&key, message).await?;
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// Removes this replica from the registry at once and tells waiters, in one
/// round trip: a replica that stops gracefully is never waited for. Called
/// by sync at graceful shutdown.
pub async fn leave(client: &Client, config: &SyncConfig) -> Result<(), Error> {
    let key = registry_key(&config.routes_key);
    let message = serde_json::to_string(&Announcement::Left {
        id: config.replica_id.clone(),
    })
    .expect("announcement serialises");
    let pipeline = client.pipeline();
    let _: () = pipeline.hdel(&key, config.replica_id.as_str()).await?;
    let _: () = pipeline.publish(&key, message).await?;
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// The registry as read at one Redis time.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Redis time of the read.
    pub now: RedisMicros,
    /// Every entry, live or not, sorted by id.
    pub entries: Vec<ReplicaStatus>,
    /// Fields whose value is not a status this version understands.
    pub unreadable: Vec<String>,
}

impl Registry {
    /// Builds a registry from raw hash entries read at Redis time `now`.
    pub fn from_entries(now: RedisMicros, raw: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut registry = Registry {
            now,
            ..Registry::default()
        };
        for (field, value) in raw {
            match serde_json::from_str::<ReplicaStatus>(&value) {
                Ok(status) if status.id == field => registry.entries.push(status),
                _ => registry.unreadable.push(field),
            }
        }
        registry.entries.sort_by(|a, b| a.id.cmp(&b.id));
        registry.unreadable.sort();
        registry
    }

    pub fn live(&self) -> impl Iterator<Item = &ReplicaStatus> {
        self.entries.iter().filter(|r| r.is_live(self.now))
    }

    /// Entries whose deadline has passed: replicas that died, or lost Redis.
    pub fn stale(&self) -> impl Iterator<Item = &ReplicaStatus> {
        self.entries.iter().filter(|r| !r.is_live(self.now))
    }

    /// Ids of entries dead for longer than [`PRUNE_AFTER`].
    pub fn prunable(&self) -> Vec<&str> {
        let after = PRUNE_AFTER.as_micros() as u64;
        self.entries
            .iter()
            .filter(|r| r.expires_us.saturating_add(after) <= self.now)
            .map(|r| r.id.as_str())
            .collect()
    }
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, None, false)
}

/// Parses a `TIME` reply into microseconds.
pub fn parse_time(value: &Value) -> Option<RedisMicros> {
    let Value::Array(items) = value else {
        return None;
    };
    let secs: u64 = items.first()?.as_str()?.parse().ok()?;
    let micros: u64 = items.get(1)?.as_str()?.parse().ok()?;
    Some(secs * 1_000_000 + micros)
}

/// Reads the registry with Redis's time, in one round trip
/// (`MULTI TIME HGETALL EXEC`): whatever else the database holds, this
/// costs one small hash.
pub async fn read(client: &Client, routes_key: &str) -> Result<Registry, Error> {
    let trx = client.multi();
    let _: () = trx.custom(cmd("TIME"), Vec::<Value>::new()).await?;
    let _: () = trx.hgetall(registry_key(routes_key)).await?;
    let replies: Vec<Value> = trx.exec(true).await?;
    let mut replies = replies.into_iter();
    let (Some(time), Some(entries)) = (replies.next(), replies.next()) else {
        return Err(Error::new(
            ErrorKind::Protocol,
            "unexpected reply to MULTI TIME HGETALL EXEC",
        ));
    };
    let now = parse_time(&time)
        .ok_or_else(|| Error::new(ErrorKind::Protocol, "unexpected reply to TIME"))?;
    let raw: std::collections::HashMap<String, String> = entries.convert()?;
    Ok(Registry::from_entries(now, raw))
}

/// Deletes entries dead for longer than [`PRUNE_AFTER`] (if any).
pub async fn prune(client: &Client, routes_key: &str, registry: &Registry) -> Result<(), Error> {
    let ids = registry.prunable();
    if ids.is_empty() {
        return Ok(());
    }
    let _: Value = client.hdel(registry_key(routes_key), ids).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn status(id: &str, watermark: Option<u64>, expires_us: u64) -> ReplicaStatus {
        ReplicaStatus {
            id: id.into(),
            table_version: 1,
            watermark,
            routes: 1,
            invalid: 0,
            last_sync_ms: None,
            notifications: "keyspace".into(),
            redis: "connected".into(),
            source: "redis".into(),
            held: None,
            expires_us,
        }
    }

    #[test]
    fn names_live_under_the_routes_key() {
        assert_eq!(registry_key("routes"), "routes:replicas");
        assert_eq!(registry_key("a:b"), "a:b:replicas");
    }

    #[test]
    fn expiry_is_three_periods_and_at_least_three_seconds() {
        assert_eq!(expiry(Duration::from_secs(1)), Duration::from_secs(3));
        assert_eq!(expiry(Duration::from_millis(200)), Duration::from_secs(3));
        assert_eq!(expiry(Duration::from_secs(5)), Duration::from_secs(15));
    }

    #[test]
    fn redis_time_is_the_last_reads_plus_local_time_since() {
        let read_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut status = SharedState::new().status().clone();
        status.watermark = Some(5_000_000); // Redis's clock is far behind the host's.
        status.last_sync = Some(read_at);
        assert_eq!(
            redis_now(&status, read_at + Duration::from_millis(250)),
            5_250_000
        );
        // A host clock stepping back never moves Redis time backwards past the read.
        assert_eq!(
            redis_now(&status, read_at - Duration::from_secs(1)),
            5_000_000
        );
        status.watermark = None;
        assert_eq!(redis_now(&status, read_at), 1_000_000_000);
    }

    #[test]
    fn registry_sorts_and_splits_live_stale_and_prunable() {
        let now = 10_000_000_000;
        let prune = PRUNE_AFTER.as_micros() as u64;
        let raw = [
            ("b", status("b", Some(1), now + 1)),
            ("a", status("a", Some(1), now)), // deadline reached: not live
            ("c", status("c", None, now - prune)),
        ]
        .map(|(f, s)| (f.to_owned(), serde_json::to_string(&s).unwrap()));
        let mut raw = raw.to_vec();
        raw.push(("junk".into(), "{not json".into()));
        raw.push((
            "other".into(),
            serde_json::to_string(&status("x", None, 0)).unwrap(),
        ));
        let registry = Registry::from_entries(now, raw);
        let ids = |it: Vec<&ReplicaStatus>| it.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(registry.entries.iter().collect()), ["a", "b", "c"]);
        assert_eq!(ids(registry.live().collect()), ["b"]);
        assert_eq!(ids(registry.stale().collect()), ["a", "c"]);
        assert_eq!(registry.prunable(), ["c"]);
        assert_eq!(registry.unreadable, ["junk", "other"]);
    }

    #[test]
    fn a_holding_replica_has_not_caught_up_whatever_its_watermark() {
        let mut r = status("a", Some(100), 0);
        assert!(r.has_caught_up_with(100));
        assert!(r.has_caught_up_with(99));
        assert!(!r.has_caught_up_with(101));
        r.held = Some(HeldRemoval {
            current: 1000,
            next: 0,
        });
        assert!(!r.has_caught_up_with(50));
        r.watermark = None;
        r.held = None;
        assert!(!r.has_caught_up_with(0));
    }

    #[test]
    fn announcements_are_tagged_json_and_entries_plain_json() {
        let left = serde_json::to_string(&Announcement::Left { id: "r1".into() }).unwrap();
        assert_eq!(left, r#"{"event":"left","id":"r1"}"#);
        let s = status("r2", Some(7), 9);
        let text = serde_json::to_string(&Announcement::Status(s.clone())).unwrap();
        assert!(text.starts_with(r#"{"event":"status","id":"r2""#), "{text}");
        assert_eq!(
            serde_json::from_str::<Announcement>(&text).unwrap(),
            Announcement::Status(s.clone())
        );
        // No `held` key unless something is held (older readers ignore it anyway).
        assert!(!serde_json::to_string(&s).unwrap().contains("held"));
    }
}
