//! The Redis side of sync: building connections, turning keyspace
//! notifications on, subscribing with a barrier, reading a whole hash
//! with its watermark and change-log position, and reading the change
//! log. Everything fred-specific lives here (and in `changelog` for the
//! write side), so the client can be swapped out; every error comes back
//! as a [`SyncError`].

use super::changelog::StreamId;
use super::dump::{self, DumpError};
use super::error::SyncError;
use super::tuning::Tuning;
use crate::config::SyncConfig;
use crate::routes::{RawEntry, RedisMicros};
use bytes::Bytes;
use fred::clients::Transaction;
use fred::prelude::*;
use fred::types::{ConnectHandle, CustomCommand, Value};
use std::time::Duration;

/// Notification flags this proxy needs: keyspace channel (`K`) with generic
/// (`g`: del, rename, ...), hash (`h`), stream (`t`: the change log),
/// expired (`x`) and evicted (`e`) events.
pub const REQUIRED_FLAGS: [char; 6] = ['K', 'g', 'h', 't', 'x', 'e'];
/// Classes that the `A` alias already includes.
const ALIAS_A: &str = "g$lshzxetd";

fn has_flag(current: &str, flag: char) -> bool {
    current.contains(flag) || (current.contains('A') && ALIAS_A.contains(flag))
}

/// Merges the flags this proxy needs into the server's current value,
/// never removing a flag someone else set. `None` when nothing is missing.
pub fn merge_notify_flags(current: &str) -> Option<String> {
    let missing: String = REQUIRED_FLAGS
        .iter()
        .filter(|c| !has_flag(current, **c))
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("{current}{missing}"))
    }
}

/// What a `notify-keyspace-events` value delivers to this proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagsCover {
    /// Hash writes reach the keyspace channel (`K` with `h` and `g`).
    pub hash: bool,
    /// Change-log appends do too (`t`): without them every write is
    /// read as a plain one (a full read).
    pub log: bool,
}

pub fn flags_cover(current: &str) -> FlagsCover {
    let hash = ['K', 'g', 'h'].iter().all(|c| has_flag(current, *c));
    FlagsCover {
        hash,
        log: hash && has_flag(current, 't'),
    }
}

/// A connected client plus the handle of its connection task: the task
/// ends when the connection does (no reconnect policy is set on purpose:
/// the sync loop reconnects itself, so every reconnect runs the full
/// notifications, subscribe, resync sequence).
pub struct Connection {
    pub client: Client,
    pub task: ConnectHandle,
}

impl Connection {
    /// Closes the connection in the background; never blocks the caller.
    pub fn close(self) {
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.client.quit()).await;
            self.task.abort();
        });
    }
}

/// What a connection is for: it sizes the client's event channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Commands only: nothing listens to its events.
    Commands,
    /// The keyspace subscription.
    Subscriber,
}

impl Role {
    /// Capacity of each of fred's broadcast channels (a client has about
    /// ten, allocated up front, whether used or not: 4,096 slots each cost
    /// ~3 MiB of RSS per client).
    fn event_capacity(self, tuning: &Tuning) -> usize {
        match self {
            Role::Commands => 8,
            Role::Subscriber => tuning.subscriber_event_capacity,
        }
    }
}

pub fn builder(config: &SyncConfig, role: Role) -> Builder {
    let mut builder = Builder::from_config(config.redis.clone());
    let timeout = config.tuning.command_timeout;
    let capacity = role.event_capacity(&config.tuning);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
            c.tcp = TcpConfig {
                nodelay: Some(true),
                ..Default::default()
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
            p.broadcast_channel_capacity = capacity;
        });
    builder
}

/// Connects a client; `prepare` runs before `init` so event receivers made
/// there miss nothing.
pub async fn connect<T>(
    config: &SyncConfig,
    role: Role,
    prepare: impl FnOnce(&Client) -> T,
) -> Result<(Connection, T), SyncError> {
    let client = builder(config, role).build()?;
    let extra = prepare(&client);
    let task = client.init().await?;
    Ok((Connection { client, task }, extra))
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, None, false)
}

/// Reads `notify-keyspace-events`.
pub async fn get_notify_flags(client: &Client) -> Result<String, SyncError> {
    let value: Value = client
        .custom(cmd("CONFIG"), vec!["GET", "notify-keyspace-events"])
        .await?;
    let flags = match value {
        Value::Array(items) => items
            .get(1)
            .and_then(|v| v.as_str().map(|s| s.into_owned())),
        Value::Map(map) => map
            .inner()
            .into_values()
            .next()
            .and_then(|v| v.as_str().map(|s| s.into_owned())),
        _ => None,
    };
    flags.ok_or_else(|| SyncError::protocol("unexpected CONFIG GET reply"))
}

pub async fn set_notify_flags(client: &Client, flags: &str) -> Result<(), SyncError> {
    let _: Value = client
        .custom(cmd("CONFIG"), vec!["SET", "notify-keyspace-events", flags])
        .await?;
    Ok(())
}

/// Subscribes to `channels` in one `SUBSCRIBE` and waits until the server
/// has processed it: fred resolves `subscribe` when the command is
/// written, so a [`barrier`] on the same connection confirms it.
pub async fn subscribe_confirmed(client: &Client, channels: &[String]) -> Result<(), SyncError> {
    client.subscribe(channels.to_vec()).await?;
    barrier(client).await
}

/// A `PING` on the subscriber connection: when it answers, every message
/// Redis published to this connection before it processed the `PING` has
/// been handed to the event receivers (replies and messages come back in
/// order on one connection).
pub async fn barrier(subscriber: &Client) -> Result<(), SyncError> {
    let _: Value = subscriber.ping(None).await?;
    Ok(())
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

/// The server's `run_id` (`INFO server`): a new one means another server
/// or a restarted one, whose data may differ in ways no event reported.
/// `None` when `INFO` is refused.
pub async fn run_id(client: &Client) -> Result<Option<String>, SyncError> {
    let info: String = match client.custom(cmd("INFO"), vec!["server"]).await {
        Ok(info) => info,
        Err(e) => {
            return match SyncError::from(e) {
                SyncError::Refused(_) => Ok(None),
                other => Err(other),
            }
        }
    };
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned()))
}

fn bytes_of(v: &Value) -> Bytes {
    match v {
        Value::Bytes(b) => b.clone(),
        Value::String(s) => s.inner().clone(),
        other => Bytes::from(other.as_str().map(|s| s.into_owned()).unwrap_or_default()),
    }
}

fn push_pairs(value: Value, out: &mut Vec<RawEntry>) -> Result<(), SyncError> {
    match value {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(SyncError::protocol("odd hash reply"));
            }
            out.reserve(items.len() / 2);
            for pair in items.chunks_exact(2) {
                out.push((bytes_of(&pair[0]), bytes_of(&pair[1])));
            }
        }
        Value::Map(map) => {
            for (k, v) in map.inner() {
                out.push((Bytes::copy_from_slice(k.as_bytes()), bytes_of(&v)));
            }
        }
        Value::Null => {}
        _ => return Err(SyncError::protocol("unexpected hash reply")),
    }
    Ok(())
}

/// Number of fields in the hash (0 when it does not exist). O(n) on a
/// listpack of more than 65,535 elements: only for a first read's sizing.
pub async fn hash_len(client: &Client, key: &str) -> Result<usize, SyncError> {
    let len: i64 = client.hlen(key).await?;
    Ok(len.max(0) as usize)
}

/// Whether `key` exists.
pub async fn exists(client: &Client, key: &str) -> Result<bool, SyncError> {
    let n: i64 = client.exists(key).await?;
    Ok(n > 0)
}

/// Where the change log stood at a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPosition {
    /// Not read (no log for this hash this session: refused, or events
    /// for it are off).
    NotRead,
    /// No entry: no stream, or an empty one. Entries that appear later
    /// cannot be told from entries trimmed before they were read, so the
    /// next log event means a full read.
    Empty,
    /// The newest entry: the next log read starts there.
    At(StreamId),
}

/// A complete read of a hash: its contents, the Redis time it reflects,
/// and where its change log stood at that time.
pub struct HashRead {
    contents: Contents,
    pub watermark: RedisMicros,
    pub log: LogPosition,
    /// A DUMP came back in an encoding [`dump`] does not read (a Redis 6
    /// ziplist, a hash with field expiry) and HGETALL read the hash instead.
    pub dump_unreadable: bool,
}

enum Contents {
    /// From HGETALL or HSCAN.
    Pairs(Vec<RawEntry>),
    /// A DUMP payload, [`dump::prepare`]d (so of a kind it decodes).
    Dump(Bytes),
}

impl HashRead {
    /// The DUMP payload, when the read was a DUMP.
    pub fn dump_payload(&self) -> Option<&Bytes> {
        match &self.contents {
            Contents::Dump(payload) => Some(payload),
            Contents::Pairs(_) => None,
        }
    }

    /// The entries, borrowed from the read. Decoding a DUMP payload fails
    /// only when Redis sent one this proxy misreads.
    pub fn entries(&self) -> Result<Vec<dump::DumpedEntry<'_>>, DumpError> {
        use std::borrow::Cow::Borrowed;
        match &self.contents {
            Contents::Pairs(pairs) => Ok(pairs
                .iter()
                .map(|(f, v)| (Borrowed(&f[..]), Borrowed(&v[..])))
                .collect()),
            Contents::Dump(payload) => dump::decode_hash(payload),
        }
    }

    /// A read of pairs (an `HSCAN` merged with the log replayed after it).
    pub fn from_pairs(pairs: Vec<RawEntry>, watermark: RedisMicros, log: LogPosition) -> HashRead {
        HashRead {
            contents: Contents::Pairs(pairs),
            watermark,
            log,
            dump_unreadable: false,
        }
    }

    /// The pairs of an `HGETALL` or `HSCAN` read (`None` for a DUMP).
    pub fn into_pairs(self) -> Option<Vec<RawEntry>> {
        match self.contents {
            Contents::Pairs(pairs) => Some(pairs),
            Contents::Dump(_) => None,
        }
    }
}

/// How a full read reads the hash, chosen by its size (see `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMethod {
    /// `MULTI TIME HGETALL ... EXEC`: one round trip, atomic. Small hashes.
    HGetAll,
    /// `MULTI TIME DUMP ... EXEC`, decoded by [`dump`](super::dump):
    /// atomic too, and far cheaper to receive than a large `HGETALL`
    /// reply. Falls back to `HGETALL` when the payload is in an encoding it
    /// does not read.
    Dump,
    /// `MULTI TIME XREVRANGE EXEC`, then `HSCAN` in chunks: huge
    /// hashes, so that Redis is never blocked for long. The watermark is
    /// the time before the scan started, which keeps its promise (every
    /// write before it is seen); the caller replays the log entries
    /// written during the scan.
    HScan,
}

/// Reads the whole hash `key` with `method`; with `log`, also where that
/// change log stands, in the same transaction.
pub async fn read_hash(
    client: &Client,
    key: &str,
    log: Option<&str>,
    method: ReadMethod,
    scan_count: usize,
) -> Result<HashRead, SyncError> {
    match method {
        ReadMethod::HGetAll => read_in_transaction(client, key, log, ReadMethod::HGetAll)
            .await?
            .map_err(|_| SyncError::protocol("unexpected HGETALL reply")),
        ReadMethod::Dump => match read_in_transaction(client, key, log, ReadMethod::Dump).await? {
            Ok(read) => Ok(read),
            Err(e) => {
                tracing::debug!(error = %e, "DUMP payload not decoded; reading with HGETALL");
                let mut read = read_in_transaction(client, key, log, ReadMethod::HGetAll)
                    .await?
                    .map_err(|_| SyncError::protocol("unexpected HGETALL reply"))?;
                read.dump_unreadable = true;
                Ok(read)
            }
        },
        ReadMethod::HScan => scan_hash(client, key, log, scan_count).await,
    }
}

/// Parses an `XREVRANGE log + - COUNT 1` reply.
fn log_position(value: Value) -> Result<LogPosition, SyncError> {
    let entries = super::changelog::decode_range(value).map_err(SyncError::Protocol)?;
    Ok(match entries.first() {
        Some((id, _)) => LogPosition::At(*id),
        None => LogPosition::Empty,
    })
}

/// A transaction whose first command is `TIME`: Redis's clock when it
/// runs is the watermark of everything it reads (see [`exec_timed`]).
async fn timed(client: &Client) -> Result<Transaction, SyncError> {
    let trx = client.multi();
    let _: () = trx.custom(cmd("TIME"), Vec::<Value>::new()).await?;
    Ok(trx)
}

/// Runs a [`timed`] transaction: the watermark, then the other replies in
/// the order queued.
async fn exec_timed(
    trx: Transaction,
) -> Result<(RedisMicros, std::vec::IntoIter<Value>), SyncError> {
    let results: Value = trx.exec(true).await?;
    let mut items = results.into_array().into_iter();
    let watermark = items
        .next()
        .as_ref()
        .and_then(parse_time)
        .ok_or_else(|| SyncError::protocol("unexpected TIME reply"))?;
    Ok((watermark, items))
}

/// `MULTI TIME (HGETALL|DUMP) [XREVRANGE log + - COUNT 1] EXEC`. The
/// inner error is a DUMP payload that could not be decoded. (No `HLEN`:
/// on a large listpack it costs Redis as much as the `DUMP`.)
async fn read_in_transaction(
    client: &Client,
    key: &str,
    log: Option<&str>,
    method: ReadMethod,
) -> Result<Result<HashRead, DumpError>, SyncError> {
    let trx = timed(client).await?;
    if method == ReadMethod::Dump {
        let _: () = trx.custom(cmd("DUMP"), vec![key]).await?;
    } else {
        let _: () = trx.hgetall(key).await?;
    }
    if let Some(log) = log {
        let _: () = trx
            .custom(cmd("XREVRANGE"), vec![log, "+", "-", "COUNT", "1"])
            .await?;
    }
    let (watermark, mut items) = exec_timed(trx).await?;
    let Some(hash) = items.next() else {
        return Err(SyncError::protocol("unexpected EXEC reply"));
    };
    let position = match log {
        Some(_) => log_position(items.next().unwrap_or(Value::Null))?,
        None => LogPosition::NotRead,
    };
    let contents = match (method, hash) {
        // No key: an empty hash.
        (ReadMethod::Dump, Value::Null) => Contents::Pairs(Vec::new()),
        (ReadMethod::Dump, hash) => {
            let payload = match hash {
                Value::Bytes(payload) => payload,
                Value::String(payload) => payload.into_inner(),
                _ => return Err(SyncError::protocol("unexpected DUMP reply")),
            };
            match dump::prepare(payload) {
                Ok(payload) => Contents::Dump(payload),
                Err(e) => return Ok(Err(e)),
            }
        }
        (_, hash) => {
            let mut entries = Vec::new();
            push_pairs(hash, &mut entries)?;
            Contents::Pairs(entries)
        }
    };
    Ok(Ok(HashRead {
        contents,
        watermark,
        log: position,
        dump_unreadable: false,
    }))
}

/// A whole read by `HSCAN`, page by page, so that the caller can do other
/// work between pages (a scan of 1,000,000 routes takes seconds).
pub struct HashScan {
    key: String,
    count: String,
    cursor: String,
    watermark: RedisMicros,
    position: LogPosition,
    entries: Vec<RawEntry>,
}

impl HashScan {
    /// `MULTI TIME [XREVRANGE log + - COUNT 1] EXEC`: the watermark (the
    /// time before the scan, which keeps its promise: every write before
    /// it is seen) and where the log stood.
    pub async fn start(
        client: &Client,
        key: &str,
        log: Option<&str>,
        scan_count: usize,
    ) -> Result<HashScan, SyncError> {
        let trx = timed(client).await?;
        if let Some(log) = log {
            let _: () = trx
                .custom(cmd("XREVRANGE"), vec![log, "+", "-", "COUNT", "1"])
                .await?;
        }
        let (watermark, mut items) = exec_timed(trx).await?;
        let position = match log {
            Some(_) => log_position(items.next().unwrap_or(Value::Null))?,
            None => LogPosition::NotRead,
        };
        Ok(HashScan {
            key: key.to_owned(),
            count: scan_count.to_string(),
            cursor: String::from("0"),
            watermark,
            position,
            entries: Vec::new(),
        })
    }

    /// Reads the next page; `true` once the scan is complete.
    pub async fn next_page(&mut self, client: &Client) -> Result<bool, SyncError> {
        let reply: Value = client
            .custom(
                cmd("HSCAN"),
                vec![
                    self.key.as_str(),
                    self.cursor.as_str(),
                    "COUNT",
                    &self.count,
                ],
            )
            .await?;
        let mut parts = reply.into_array().into_iter();
        let (Some(next), Some(page)) = (parts.next(), parts.next()) else {
            return Err(SyncError::protocol("unexpected HSCAN reply"));
        };
        push_pairs(page, &mut self.entries)?;
        self.cursor = next
            .as_str()
            .map(|s| s.into_owned())
            .ok_or_else(|| SyncError::protocol("unexpected HSCAN cursor"))?;
        Ok(self.cursor == "0")
    }

    /// The read, each field once.
    pub fn finish(self) -> HashRead {
        let mut entries = self.entries;
        // HSCAN may return a field twice (rehashing); keep the last of each.
        let mut keep = vec![false; entries.len()];
        {
            let mut seen = std::collections::HashSet::with_capacity_and_hasher(
                entries.len(),
                foldhash::fast::RandomState::default(),
            );
            for (i, (field, _)) in entries.iter().enumerate().rev() {
                keep[i] = seen.insert(&field[..]);
            }
        }
        if keep.iter().any(|k| !k) {
            let mut i = 0;
            entries.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        HashRead::from_pairs(entries, self.watermark, self.position)
    }
}

async fn scan_hash(
    client: &Client,
    key: &str,
    log: Option<&str>,
    scan_count: usize,
) -> Result<HashRead, SyncError> {
    let mut scan = HashScan::start(client, key, log, scan_count).await?;
    while !scan.next_page(client).await? {}
    Ok(scan.finish())
}

/// A read of the change log from a known entry.
pub struct LogRead {
    pub watermark: RedisMicros,
    /// Entries from the one asked for (inclusive: Redis 6.0 has no
    /// exclusive ranges), raw.
    pub entries: Vec<(StreamId, Value)>,
}

/// `MULTI TIME XRANGE log <from> <to or +> COUNT <count> EXEC`. No
/// `HLEN`: on a listpack of more than 65,535 elements Redis counts them
/// one by one (~3.5 ms at 100,000 routes), which would cost more than the
/// read.
pub async fn read_log(
    client: &Client,
    log: &str,
    from: StreamId,
    to: Option<StreamId>,
    count: usize,
) -> Result<LogRead, SyncError> {
    let trx = timed(client).await?;
    let from = from.to_string();
    let to = to.map_or_else(|| "+".to_owned(), |id| id.to_string());
    let count = count.to_string();
    let _: () = trx
        .custom(cmd("XRANGE"), vec![log, &from, &to, "COUNT", &count])
        .await?;
    let (watermark, mut items) = exec_timed(trx).await?;
    let entries = super::changelog::decode_range(items.next().unwrap_or(Value::Null))
        .map_err(SyncError::Protocol)?;
    Ok(LogRead { watermark, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_without_removing_flags() {
        assert_eq!(merge_notify_flags("").as_deref(), Some("Kghtxe"));
        assert_eq!(merge_notify_flags("Ex").as_deref(), Some("ExKghte"));
        assert_eq!(merge_notify_flags("KA"), None);
        assert_eq!(merge_notify_flags("AK"), None);
        assert_eq!(merge_notify_flags("gxKhet"), None);
        assert_eq!(merge_notify_flags("gxKhe").as_deref(), Some("gxKhet"));
        assert_eq!(merge_notify_flags("AE").as_deref(), Some("AEK"));
        assert_eq!(merge_notify_flags("Kl").as_deref(), Some("Klghtxe"));
    }

    #[test]
    fn flags_say_what_they_deliver() {
        assert_eq!(
            flags_cover("KA"),
            FlagsCover {
                hash: true,
                log: true
            }
        );
        assert_eq!(
            flags_cover("Kghxe"),
            FlagsCover {
                hash: true,
                log: false
            }
        );
        assert_eq!(
            flags_cover("Eh"),
            FlagsCover {
                hash: false,
                log: false
            }
        );
        assert_eq!(
            flags_cover("Kh"),
            FlagsCover {
                hash: false,
                log: false
            }
        );
    }
}
