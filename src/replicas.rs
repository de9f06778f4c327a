//! Replicas report what they run (DESIGN 8): each proxy keeps a status key
//! with an expiry in Redis; `switchyard status` lists them and
//! `route set --wait` waits until every live replica's watermark has passed
//! the write.

use crate::config::SyncConfig;
use crate::routes::RedisMicros;
use crate::state::SharedState;
use fred::prelude::*;
use fred::types::{CustomCommand, Expiration, Value};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// What one replica publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaStatus {
    pub id: String,
    pub table_version: u64,
    /// Redis time (µs) of the replica's last successful read.
    pub watermark: Option<RedisMicros>,
    pub routes: usize,
    pub invalid: usize,
    /// Unix time (ms) of the last successful read.
    pub last_sync_ms: Option<u64>,
    pub notifications: String,
    pub redis: String,
    pub source: String,
    /// Removals the guard holds (`<key>: <removed> of <serving>`); empty
    /// when none (or from an older version).
    #[serde(default)]
    pub held: Vec<String>,
    /// No successful read for longer than the resync interval allows.
    #[serde(default)]
    pub stale: bool,
}

/// The key of one replica's status; prefixed by the routes key so that
/// several route sets on one Redis do not mix.
pub fn status_key(routes_key: &str, id: &str) -> String {
    format!("{routes_key}:replicas:{id}")
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The status of this process, as published.
pub fn current(config: &SyncConfig, state: &SharedState) -> ReplicaStatus {
    let table = state.table();
    let status = state.status();
    ReplicaStatus {
        id: config.replica_id.clone(),
        table_version: table.version,
        watermark: status.watermark,
        routes: table.len(),
        invalid: table.invalid().len(),
        last_sync_ms: status
            .last_sync
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64),
        notifications: match &status.notifications {
            crate::state::NotificationMode::Unknown => "unknown".into(),
            crate::state::NotificationMode::Keyspace => "keyspace".into(),
            crate::state::NotificationMode::Unconfirmed { .. } => "unconfirmed".into(),
            crate::state::NotificationMode::Polling { .. } => "polling".into(),
        },
        redis: format!("{:?}", status.redis).to_lowercase(),
        source: format!("{:?}", table.source).to_lowercase(),
        held: status
            .held()
            .map(|(key, held)| format!("{key}: {} of {}", held.removed, held.serving))
            .collect(),
        stale: status.is_stale(),
    }
}

/// Writes this replica's status key with an expiry of three refresh periods.
pub async fn publish(
    client: &Client,
    config: &SyncConfig,
    state: &SharedState,
) -> Result<(), Error> {
    let status = current(config, state);
    let json = serde_json::to_string(&status).expect("status serialises");
    let ttl = (config.tuning.status_interval * 3).max(Duration::from_secs(3));
    let _: Value = client
        .set(
            status_key(&config.routes_key, &config.replica_id),
            json,
            Some(Expiration::PX(ttl.as_millis() as i64)),
            None,
            false,
        )
        .await?;
    Ok(())
}

/// Removes this replica's status at graceful shutdown, so that `--wait`
/// stops counting it at once.
pub async fn leave(client: &Client, config: &SyncConfig) -> Result<(), Error> {
    let _: i64 = client
        .del(status_key(&config.routes_key, &config.replica_id))
        .await?;
    Ok(())
}

/// Every live replica's status, sorted by id.
pub async fn list(client: &Client, routes_key: &str) -> Result<Vec<ReplicaStatus>, Error> {
    let pattern = format!("{}:replicas:*", glob_escape(routes_key));
    let mut cursor = "0".to_owned();
    let mut keys: Vec<String> = Vec::new();
    loop {
        let reply: Value = client
            .custom(
                CustomCommand::new_static("SCAN", None, false),
                vec![cursor.as_str(), "MATCH", pattern.as_str(), "COUNT", "1000"],
            )
            .await?;
        let mut parts = reply.into_array().into_iter();
        let (Some(next), Some(page)) = (parts.next(), parts.next()) else {
            return Err(Error::new(ErrorKind::Protocol, "unexpected SCAN reply"));
        };
        keys.extend(
            page.into_array()
                .into_iter()
                .filter_map(|v| v.as_str().map(|s| s.into_owned())),
        );
        cursor = next
            .as_str()
            .map(|s| s.into_owned())
            .unwrap_or_else(|| "0".into());
        if cursor == "0" {
            break;
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let value: Option<String> = client.get(&key).await?;
        if let Some(status) = value.and_then(|v| serde_json::from_str::<ReplicaStatus>(&v).ok()) {
            out.push(status);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The outcome of waiting for replicas to catch up with a write.
#[derive(Debug)]
pub struct WaitOutcome {
    pub write_time: RedisMicros,
    pub replicas: usize,
    /// Replicas whose watermark had not passed the write when time ran out.
    pub lagging: Vec<ReplicaStatus>,
    pub took: Duration,
}

/// Polls the replicas until every live one reports a watermark later than
/// `write_time` (the Redis time read in the same transaction as the write),
/// or `timeout` passes.
///
/// The time must come from the write's own transaction: a `TIME` read after
/// the write could be later than a fast replica's reload of that very write,
/// and the wait would never end.
pub async fn wait_for_replicas(
    client: &Client,
    routes_key: &str,
    write_time: RedisMicros,
    timeout: Duration,
) -> Result<WaitOutcome, Error> {
    let started = std::time::Instant::now();
    loop {
        let replicas = list(client, routes_key).await?;
        let lagging: Vec<ReplicaStatus> = replicas
            .iter()
            .filter(|r| r.watermark.is_none_or(|w| w <= write_time))
            .cloned()
            .collect();
        if lagging.is_empty() || started.elapsed() >= timeout {
            return Ok(WaitOutcome {
                write_time,
                replicas: replicas.len(),
                lagging,
                took: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keys_are_scoped_and_patterns_escaped() {
        assert_eq!(status_key("routes", "a-1"), "routes:replicas:a-1");
        assert_eq!(glob_escape("ro*utes[1]"), "ro\\*utes\\[1\\]");
    }
}
