//! The Redis side of sync: building connections, turning keyspace
//! notifications on, reading the whole routes hash with its watermark, and
//! the commands of shared reads (lease, marker, publish; see `shared`).
//! Everything fred-specific lives here, so the client can be swapped out.

use super::dump::{self, DumpError};
use crate::config::SyncConfig;
use crate::routes::{RawEntry, RedisMicros};
use bytes::Bytes;
use fred::prelude::*;
use fred::types::{ConnectHandle, CustomCommand, Value};
use std::time::Duration;

/// Notification flags this proxy needs: keyspace channel (`K`) with generic
/// (`g`: del, rename, ...), hash (`h`), expired (`x`) and evicted (`e`) events.
const REQUIRED_FLAGS: [char; 5] = ['K', 'g', 'h', 'x', 'e'];
/// Classes that the `A` alias already includes.
const ALIAS_A: &str = "g$lshzxetd";

/// Merges the flags this proxy needs into the server's current value,
/// never removing a flag someone else set. `None` when nothing is missing.
pub fn merge_notify_flags(current: &str) -> Option<String> {
    let has = |c: char| current.contains(c) || (current.contains('A') && ALIAS_A.contains(c));
    let missing: String = REQUIRED_FLAGS.iter().filter(|c| !has(**c)).collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("{current}{missing}"))
    }
}

/// A connected client plus the handle of its connection task: the task
/// ends when the connection does (no reconnect policy is set on purpose:
/// the sync loop reconnects itself, so every reconnect runs the full
/// subscribe-then-load sequence).
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
    /// ~3 MiB of RSS per client). A lagging subscriber only costs a full
    /// resync, which an event causes anyway; 1,024 slots hold a burst of
    /// 1,000 writes without lagging.
    fn event_capacity(self) -> usize {
        match self {
            Role::Commands => 8,
            Role::Subscriber => 1024,
        }
    }
}

pub fn builder(config: &SyncConfig, role: Role) -> Builder {
    let mut builder = Builder::from_config(config.redis.clone());
    let timeout = config.command_timeout;
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
            p.broadcast_channel_capacity = role.event_capacity();
        });
    builder
}

/// Connects a client; `prepare` runs before `init` so event receivers made
/// there miss nothing.
pub async fn connect<T>(
    config: &SyncConfig,
    role: Role,
    prepare: impl FnOnce(&Client) -> T,
) -> Result<(Connection, T), Error> {
    let client = builder(config, role).build()?;
    let extra = prepare(&client);
    let task = client.init().await?;
    Ok((Connection { client, task }, extra))
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, None, false)
}

/// Reads `notify-keyspace-events`.
pub async fn get_notify_flags(client: &Client) -> Result<String, Error> {
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
    flags.ok_or_else(|| Error::new(ErrorKind::Protocol, "unexpected CONFIG GET reply"))
}

pub async fn set_notify_flags(client: &Client, flags: &str) -> Result<(), Error> {
    let _: Value = client
        .custom(cmd("CONFIG"), vec!["SET", "notify-keyspace-events", flags])
        .await?;
    Ok(())
}

/// Makes sure the flags are on; returns the value set when it had to change it.
pub async fn ensure_notifications(client: &Client) -> Result<Option<String>, Error> {
    let current = get_notify_flags(client).await?;
    match merge_notify_flags(&current) {
        Some(merged) => {
            set_notify_flags(client, &merged).await?;
            Ok(Some(merged))
        }
        None => Ok(None),
    }
}

/// Subscribes to the routes key's keyspace channel and waits until the
/// server has processed the SUBSCRIBE: fred resolves `subscribe` when the
/// command is written, so a PING on the same connection is the barrier
/// (replies come back in order).
pub async fn subscribe_confirmed(client: &Client, channel: &str) -> Result<(), Error> {
    subscribe_all_confirmed(client, &[channel]).await
}

/// [`subscribe_confirmed`] for several channels in one `SUBSCRIBE` (an ACL
/// refusal of any of them refuses all).
pub async fn subscribe_all_confirmed(client: &Client, channels: &[&str]) -> Result<(), Error> {
    let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
    client.subscribe(channels).await?;
    let _: Value = client.ping(None).await?;
    Ok(())
}

/// `PUBLISH channel message`.
pub async fn publish(client: &Client, channel: &str, message: Bytes) -> Result<(), Error> {
    let _: Value = client
        .custom(
            cmd("PUBLISH"),
            vec![Value::from(channel), Value::Bytes(message)],
        )
        .await?;
    Ok(())
}

fn optional_string(value: Value) -> Result<Option<String>, Error> {
    match value {
        Value::Null => Ok(None),
        other => other
            .as_string()
            .map(Some)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "unexpected lease reply")),
    }
}

/// `SET <key> <id> NX PX <ttl> GET` (Redis 7.0+): the holder the lease had,
/// `None` when it had none and is now `id`'s.
pub async fn lease_acquire(
    client: &Client,
    key: &str,
    id: &str,
    ttl: Duration,
) -> Result<Option<String>, Error> {
    let ttl = ttl.as_millis().max(1).to_string();
    let value: Value = client
        .custom(cmd("SET"), vec![key, id, "NX", "PX", &ttl, "GET"])
        .await?;
    optional_string(value)
}

/// `GETEX <key> PX <ttl>`: the holder, whose lease this just extended
/// (`None` when there is none).
pub async fn lease_renew(
    client: &Client,
    key: &str,
    ttl: Duration,
) -> Result<Option<String>, Error> {
    let ttl = ttl.as_millis().max(1).to_string();
    let value: Value = client.custom(cmd("GETEX"), vec![key, "PX", &ttl]).await?;
    optional_string(value)
}

/// Ends the lease (the caller holds it) in a millisecond, so another
/// replica can take it at its next tick: `GETEX <key> PX 1` (no `DEL`
/// right needed).
pub async fn lease_release(client: &Client, key: &str) -> Result<(), Error> {
    lease_renew(client, key, Duration::from_millis(1))
        .await
        .map(drop)
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

/// Redis server time in microseconds.
pub async fn server_time(client: &Client) -> Result<RedisMicros, Error> {
    let value: Value = client.custom(cmd("TIME"), Vec::<Value>::new()).await?;
    parse_time(&value).ok_or_else(|| Error::new(ErrorKind::Protocol, "unexpected TIME reply"))
}

fn push_pairs(value: Value, out: &mut Vec<RawEntry>) -> Result<(), Error> {
    let bytes = |v: &Value| -> Bytes {
        match v {
            Value::Bytes(b) => b.clone(),
            Value::String(s) => s.inner().clone(),
            other => Bytes::from(other.as_str().map(|s| s.into_owned()).unwrap_or_default()),
        }
    };
    match value {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(Error::new(ErrorKind::Protocol, "odd hash reply"));
            }
            out.reserve(items.len() / 2);
            for pair in items.chunks_exact(2) {
                out.push((bytes(&pair[0]), bytes(&pair[1])));
            }
        }
        Value::Map(map) => {
            for (k, v) in map.inner() {
                out.push((Bytes::copy_from_slice(k.as_bytes()), bytes(&v)));
            }
        }
        Value::Null => {}
        _ => return Err(Error::new(ErrorKind::Protocol, "unexpected hash reply")),
    }
    Ok(())
}

/// Number of fields in the hash (0 when it does not exist).
pub async fn hash_len(client: &Client, key: &str) -> Result<usize, Error> {
    let len: i64 = client.hlen(key).await?;
    Ok(len.max(0) as usize)
}

/// A complete read of the routes hash and the Redis time it reflects.
pub struct HashRead {
    contents: Contents,
    pub watermark: RedisMicros,
    /// A DUMP came back in an encoding [`dump`] does not read (a Redis 6
    /// ziplist, a hash with field expiry) and HGETALL read the hash instead.
    pub dump_unreadable: bool,
}

enum Contents {
    /// From HGETALL or HSCAN.
    Pairs(Vec<RawEntry>),
    /// A DUMP payload, [`dump::prepare`]d (so of a kind it decodes).
    Dump(bytes::Bytes),
}

impl HashRead {
    /// The DUMP payload, when the read was a DUMP.
    pub fn dump_payload(&self) -> Option<&bytes::Bytes> {
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
}

/// How a reload reads the hash, chosen by its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMethod {
    /// `MULTI TIME HGETALL EXEC`: one round trip, atomic. Small hashes.
    HGetAll,
    /// `MULTI TIME DUMP EXEC`, decoded by [`dump`](super::dump): atomic too,
    /// and far cheaper to receive than a large `HGETALL` reply. Falls back
    /// to `HGETALL` when the payload is in an encoding it does not read.
    Dump,
    /// `TIME`, then `HSCAN` in chunks: huge hashes, so that Redis is never
    /// blocked for long. The watermark is the time before the scan started,
    /// which keeps its promise (every write before it is seen).
    HScan,
}

/// A message to `PUBLISH` inside the read's transaction (a shared-reads
/// read marker): subscribers see it exactly where the read was taken.
#[derive(Debug, Clone, Copy)]
pub struct Marker<'a> {
    pub channel: &'a str,
    pub message: &'a str,
}

/// Reads the whole hash with `method`.
pub async fn read_hash(client: &Client, key: &str, method: ReadMethod) -> Result<HashRead, Error> {
    read_hash_marked(client, key, method, None).await
}

/// [`read_hash`], publishing `marker` in the `DUMP` transaction
/// (`MULTI TIME PUBLISH DUMP EXEC`); other methods publish nothing.
pub async fn read_hash_marked(
    client: &Client,
    key: &str,
    method: ReadMethod,
    marker: Option<Marker<'_>>,
) -> Result<HashRead, Error> {
    match method {
        ReadMethod::HGetAll => read_in_transaction(client, key, ReadMethod::HGetAll, None)
            .await?
            .map_err(|_| Error::new(ErrorKind::Protocol, "unexpected HGETALL reply")),
        ReadMethod::Dump => match read_in_transaction(client, key, ReadMethod::Dump, marker).await?
        {
            Ok(read) => Ok(read),
            Err(e) => {
                tracing::debug!(error = %e, "DUMP payload not decoded; reading with HGETALL");
                let mut read = Box::pin(read_hash(client, key, ReadMethod::HGetAll)).await?;
                read.dump_unreadable = true;
                Ok(read)
            }
        },
        ReadMethod::HScan => scan_hash(client, key).await,
    }
}

/// `MULTI TIME [PUBLISH] (HGETALL|DUMP) EXEC`. The inner error is a DUMP
/// payload that could not be decoded.
async fn read_in_transaction(
    client: &Client,
    key: &str,
    method: ReadMethod,
    marker: Option<Marker<'_>>,
) -> Result<Result<HashRead, DumpError>, Error> {
    let trx = client.multi();
    let _: () = trx.custom(cmd("TIME"), Vec::<Value>::new()).await?;
    if let Some(marker) = marker {
        let _: () = trx
            .custom(cmd("PUBLISH"), vec![marker.channel, marker.message])
            .await?;
    }
    if method == ReadMethod::Dump {
        let _: () = trx.custom(cmd("DUMP"), vec![key]).await?;
    } else {
        let _: () = trx.hgetall(key).await?;
    }
    let results: Value = trx.exec(true).await?;
    let mut items = results.into_array().into_iter();
    let time = items.next();
    if marker.is_some() {
        items.next();
    }
    let (Some(time), Some(hash)) = (time, items.next()) else {
        return Err(Error::new(ErrorKind::Protocol, "unexpected EXEC reply"));
    };
    let watermark = parse_time(&time)
        .ok_or_else(|| Error::new(ErrorKind::Protocol, "unexpected TIME reply"))?;
    let contents = match (method, hash) {
        // No key: an empty hash.
        (ReadMethod::Dump, Value::Null) => Contents::Pairs(Vec::new()),
        (ReadMethod::Dump, hash) => {
            let payload = match hash {
                Value::Bytes(payload) => payload,
                Value::String(payload) => payload.into_inner(),
                _ => return Err(Error::new(ErrorKind::Protocol, "unexpected DUMP reply")),
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
        dump_unreadable: false,
    }))
}

const SCAN_COUNT: &str = "10000";

async fn scan_hash(client: &Client, key: &str) -> Result<HashRead, Error> {
    let watermark = server_time(client).await?;
    let mut entries = Vec::new();
    let mut cursor = String::from("0");
    loop {
        let reply: Value = client
            .custom(
                cmd("HSCAN"),
                vec![key, cursor.as_str(), "COUNT", SCAN_COUNT],
            )
            .await?;
        let mut parts = reply.into_array().into_iter();
        let (Some(next), Some(page)) = (parts.next(), parts.next()) else {
            return Err(Error::new(ErrorKind::Protocol, "unexpected HSCAN reply"));
        };
        push_pairs(page, &mut entries)?;
        cursor = next
            .as_str()
            .map(|s| s.into_owned())
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "unexpected HSCAN cursor"))?;
        if cursor == "0" {
            break;
        }
    }
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
    Ok(HashRead {
        contents: Contents::Pairs(entries),
        watermark,
        dump_unreadable: false,
    })
}

/// True for errors that mean "the server said no" rather than "the
/// connection is gone": those do not end a session.
pub fn is_refusal(error: &Error) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::NotFound
    ) && !error.details().contains("closed")
}

#[cfg(test)]
mod tests {
    use super::merge_notify_flags;

    #[test]
    fn merges_without_removing_flags() {
        assert_eq!(merge_notify_flags("").as_deref(), Some("Kghxe"));
        assert_eq!(merge_notify_flags("Ex").as_deref(), Some("ExKghe"));
        assert_eq!(merge_notify_flags("KA"), None);
        assert_eq!(merge_notify_flags("AK"), None);
        assert_eq!(merge_notify_flags("gxKhe"), None);
        assert_eq!(merge_notify_flags("AE").as_deref(), Some("AEK"));
        assert_eq!(merge_notify_flags("Kl").as_deref(), Some("Klghxe"));
    }
}
