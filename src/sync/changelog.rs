//! The change log of a followed hash: a Redis stream beside it
//! (`<key>:log`), appended in the same `MULTI`/`EXEC` as the hash write,
//! so that a replica patches the fields that changed instead of reading
//! the whole hash (ARCHITECTURE.md, "The change log").
//!
//! A logged change is two commands in one transaction:
//!
//! ```text
//! MULTI
//! HSET routes app1.cloud.com 10.0.0.5:3000          (or HDEL routes app1.cloud.com)
//! XADD routes:log MAXLEN ~ 10000 * op set field app1.cloud.com value 10.0.0.5:3000
//!                                                    (or ... * op del field app1.cloud.com)
//! TIME                                               (optional: the write's time, for --wait)
//! EXEC
//! ```
//!
//! Replicas see the hash's keyspace event followed by the log's `xadd`
//! event and read the new entries. A plain `HSET` (no log entry) still
//! works: its event comes alone and the replica reads the whole hash.
//! Writers use [`queue_set`] and [`queue_del`]; the entry format is
//! [`encode`]d and [`decode`]d here and nowhere else.

use super::tuning::LOG_MAX_LEN;
use bytes::Bytes;
use fred::clients::Transaction;
use fred::error::Error;
use fred::interfaces::{ClientLike, HashesInterface};
use fred::types::{CustomCommand, Value};
use std::fmt;

/// The stream that logs the changes of the hash `key`.
pub fn log_key(key: &str) -> String {
    format!("{key}:log")
}

/// One change to one field: the new value, or `None` for a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: Bytes,
    pub value: Option<Bytes>,
}

impl Change {
    /// `field` set to `value`.
    pub fn set(field: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Change {
        Change {
            field: Bytes::copy_from_slice(field.as_ref()),
            value: Some(Bytes::copy_from_slice(value.as_ref())),
        }
    }

    /// `field` deleted.
    pub fn delete(field: impl AsRef<[u8]>) -> Change {
        Change {
            field: Bytes::copy_from_slice(field.as_ref()),
            value: None,
        }
    }
}

/// A stream entry id (`<ms>-<seq>`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A change as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub id: StreamId,
    pub change: Change,
}

/// An entry this proxy did not write and cannot read: the log is not
/// trusted past it (the reader reads the whole hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change-log entry {id} is not `op set field F value V` or `op del field F`")]
pub struct UnknownEntry {
    pub id: String,
}

/// The `XADD` arguments after the key for `change`.
pub fn encode(change: &Change) -> Vec<Value> {
    let mut args: Vec<Value> = vec![
        "MAXLEN".into(),
        "~".into(),
        LOG_MAX_LEN.to_string().into(),
        "*".into(),
        "op".into(),
    ];
    match &change.value {
        Some(value) => args.extend([
            "set".into(),
            "field".into(),
            Value::Bytes(change.field.clone()),
            "value".into(),
            Value::Bytes(value.clone()),
        ]),
        None => args.extend([
            "del".into(),
            "field".into(),
            Value::Bytes(change.field.clone()),
        ]),
    }
    args
}

/// Queues `HSET key field value` and its log entry in `trx`.
pub async fn queue_set(
    trx: &Transaction,
    key: &str,
    field: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
) -> Result<(), Error> {
    let change = Change::set(field, value);
    let _: () = trx
        .hset(
            key,
            (
                Value::Bytes(change.field.clone()),
                Value::Bytes(change.value.clone().unwrap_or_default()),
            ),
        )
        .await?;
    queue_entry(trx, key, &change).await
}

/// Queues `HDEL key field` and its log entry in `trx`. A deletion of a
/// field the hash does not have is harmless but costs every replica a
/// full read (it cannot tell it apart from a write the log does not
/// describe): writers that know better skip it.
pub async fn queue_del(trx: &Transaction, key: &str, field: impl AsRef<[u8]>) -> Result<(), Error> {
    let change = Change::delete(field);
    let _: () = trx.hdel(key, change.field.clone()).await?;
    queue_entry(trx, key, &change).await
}

async fn queue_entry(trx: &Transaction, key: &str, change: &Change) -> Result<(), Error> {
    let mut args: Vec<Value> = vec![log_key(key).into()];
    args.extend(encode(change));
    let _: () = trx
        .custom(CustomCommand::new_static("XADD", None, false), args)
        .await?;
    Ok(())
}

fn bytes_of(value: &Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b.clone()),
        Value::String(s) => Some(s.inner().clone()),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

/// Decodes one entry's field-value list.
pub fn decode(id: StreamId, pairs: &[Value]) -> Result<LogEntry, UnknownEntry> {
    let unknown = || UnknownEntry { id: id.to_string() };
    let mut op = None;
    let mut field = None;
    let mut value = None;
    if pairs.len() % 2 != 0 {
        return Err(unknown());
    }
    for pair in pairs.chunks_exact(2) {
        let name = bytes_of(&pair[0]).ok_or_else(unknown)?;
        let content = bytes_of(&pair[1]).ok_or_else(unknown)?;
        match &name[..] {
            b"op" => op = Some(content),
            b"field" => field = Some(content),
            b"value" => value = Some(content),
            _ => return Err(unknown()),
        }
    }
    let field = field.ok_or_else(unknown)?;
    let value = match (op.as_deref(), value) {
        (Some(b"set"), Some(value)) => Some(value),
        (Some(b"del"), None) => None,
        _ => return Err(unknown()),
    };
    Ok(LogEntry {
        id,
        change: Change { field, value },
    })
}

/// Decodes an `XRANGE` reply: `[[id, [name, value, ...]], ...]`.
pub fn decode_range(reply: Value) -> Result<Vec<(StreamId, Value)>, String> {
    let items = match reply {
        Value::Array(items) => items,
        Value::Null => return Ok(Vec::new()),
        other => return Err(format!("unexpected XRANGE reply {other:?}")),
    };
    items
        .into_iter()
        .map(|item| {
            let mut parts = item.into_array().into_iter();
            let id = parts
                .next()
                .and_then(|v| v.as_string())
                .and_then(|s| StreamId::parse(&s))
                .ok_or("XRANGE entry without an id")?;
            let body = parts.next().unwrap_or(Value::Null);
            Ok((id, body))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(items: &[&str]) -> Vec<Value> {
        items.iter().map(|s| Value::from(*s)).collect()
    }

    #[test]
    fn entries_round_trip_and_strangers_are_refused() {
        let id = StreamId { ms: 5, seq: 1 };
        let set = Change {
            field: Bytes::from_static(b"a.com"),
            value: Some(Bytes::from_static(b"10.0.0.1:80")),
        };
        let args = encode(&set);
        assert_eq!(args[..4], values(&["MAXLEN", "~", "10000", "*"])[..]);
        assert_eq!(decode(id, &args[4..]).unwrap().change, set);
        let del = Change {
            field: Bytes::from_static(b"a.com"),
            value: None,
        };
        assert_eq!(decode(id, &encode(&del)[4..]).unwrap().change, del);
        for bad in [
            &["op", "set", "field", "a.com"][..],
            &["op", "del", "field", "a.com", "value", "x"],
            &["op", "hset", "field", "a.com", "value", "x"],
            &["field", "a.com", "value", "x"],
            &["op", "set", "value", "x"],
            &["op", "set", "field", "a", "value", "x", "extra", "y"],
            &["op"],
        ] {
            assert!(decode(id, &values(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stream_ids_parse_print_and_order() {
        let a = StreamId::parse("1700000000000-0").unwrap();
        let b = StreamId::parse("1700000000000-12").unwrap();
        let c = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        assert_eq!(StreamId::parse("12"), None);
        assert_eq!(StreamId::parse("x-1"), None);
    }
}
