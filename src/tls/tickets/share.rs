//! The ticket keys in Redis: one hash, `<routes-key>:tls:tickets` (README.md,
//! "Session resumption on any replica"), and the task each replica with a
//! TLS listener runs to follow it.
//!
//! Every refresh period the task runs one script, [`REFRESH`], which in one
//! atomic step deletes the keys past retirement, adds the key the replica
//! brought if the newest is due for rotation (or there is none), and
//! returns Redis's time and the hash. Two replicas due at once are
//! serialised by Redis: the second finds the first's key fresh and adds
//! nothing. Times are Redis's `TIME`, so replica clocks need not agree.
//!
//! Redis unreachable: the replica keeps the keys it holds (rotating to a
//! key it already holds on time), reports the error (log once, `/tickets`)
//! and tries again every period.

use super::keys::{self, KeySet, Schedule, TicketKey};
use super::{InvalidKey, Ticketer};
use crate::config::Config;
use crate::state::SharedState;
use crate::tls::seal::Sealer;
use fred::prelude::*;
use fred::types::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The hash of ticket keys next to the routes hash.
pub fn key_name(routes_key: &str) -> String {
    format!("{routes_key}:tls:tickets")
}

/// KEYS[1]: the hash. ARGV[1]: add a key when the newest is this old (ms);
/// ARGV[2]: delete keys older than this (ms); ARGV[3], ARGV[4]: the new
/// key's field and material (Redis puts its time in front). Returns
/// `{now_ms, added (0|1), {field, value, ...}}`. An entry without a
/// creation time is left alone (and reported by the replicas).
const REFRESH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local kept = {}
local newest = nil
for i = 1, #all, 2 do
  local created = tonumber(string.match(all[i + 1], '^(%d+) '))
  if created and now - created > tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    kept[#kept + 1] = all[i]
    kept[#kept + 1] = all[i + 1]
    if created and (newest == nil or created > newest) then newest = created end
  end
end
local added = 0
if newest == nil or now - newest >= tonumber(ARGV[1]) then
  local value = string.format('%d', now) .. ' ' .. ARGV[4]
  redis.call('HSET', KEYS[1], ARGV[3], value)
  kept[#kept + 1] = ARGV[3]
  kept[#kept + 1] = value
  added = 1
end
return {now, added, kept}
";

/// What one run of [`REFRESH`] returned.
#[derive(Debug)]
struct Refreshed {
    now_ms: i64,
    added: bool,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected reply to the ticket keys script: {0:?}")]
    Reply(String),
}

fn parse_reply(reply: Value) -> Result<Refreshed, RefreshError> {
    let unexpected = |what: &str| RefreshError::Reply(what.to_owned());
    let mut items = reply.into_array().into_iter();
    let (Some(now), Some(added), Some(kept)) = (items.next(), items.next(), items.next()) else {
        return Err(unexpected("not three items"));
    };
    let now_ms = now.as_i64().ok_or_else(|| unexpected("time"))?;
    let added = added.as_i64().ok_or_else(|| unexpected("added"))? == 1;
    let mut flat = kept.into_array().into_iter();
    let mut entries = Vec::new();
    while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
        let bytes = |v: &Value| v.as_bytes().map(<[u8]>::to_vec);
        match (bytes(&field), bytes(&value)) {
            (Some(f), Some(v)) => entries.push((f, v)),
            _ => return Err(unexpected("entries")),
        }
    }
    Ok(Refreshed {
        now_ms,
        added,
        entries,
    })
}

/// Everything the task needs, from the proxy's configuration.
struct Share {
    redis: fred::prelude::Config,
    command_timeout: Duration,
    key: String,
    schedule: Schedule,
    refresh: Duration,
    sealer: Option<Sealer>,
}

impl Share {
    fn new(config: &Config) -> Share {
        Share {
            redis: config.sync.redis.clone(),
            command_timeout: config.sync.tuning.command_timeout,
            key: key_name(&config.sync.routes_key),
            schedule: Schedule::new(config.tls.ticket_rotation, config.tls.ticket_refresh),
            refresh: config.tls.ticket_refresh,
            sealer: config.tls.secret.as_ref().map(keys::sealer),
        }
    }

    async fn connect(&self) -> Result<Client, fred::error::Error> {
        let client = Builder::from_config(self.redis.clone())
            .with_connection_config(|c| c.connection_timeout = self.command_timeout)
            .with_performance_config(|p| p.default_command_timeout = self.command_timeout)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()?;
        if let Err(e) = client.init().await {
            let _ = client.quit().await;
            return Err(e);
        }
        Ok(client)
    }

    /// One run of the script, with a new key in case one is due.
    async fn refresh(&self, client: &Client) -> Result<Refreshed, RefreshError> {
        let (field, material) = keys::new_key(self.sealer.as_ref());
        let ms = |d: Duration| d.as_millis().to_string();
        let reply: Value = client
            .eval(
                REFRESH,
                vec![self.key.clone()],
                vec![
                    ms(self.schedule.add_after()),
                    ms(self.schedule.retire_after()),
                    field,
                    material,
                ],
            )
            .await?;
        parse_reply(reply)
    }

    /// Parses what a refresh returned and installs it.
    fn install(&self, ticketer: &Ticketer, refreshed: Refreshed, read_at: Instant) {
        let mut keys = Vec::new();
        let mut invalid = Vec::new();
        for (field, value) in &refreshed.entries {
            match TicketKey::parse(field, value, self.sealer.as_ref()) {
                Ok(key) => keys.push(key),
                Err(error) => invalid.push(InvalidKey {
                    field: String::from_utf8_lossy(field).into_owned(),
                    error,
                }),
            }
        }
        let previous: Vec<String> = invalid_fields(ticketer);
        for entry in &invalid {
            if !previous.contains(&entry.field) {
                tracing::error!(
                    key = %self.key,
                    field = %entry.field,
                    reason = %entry.error,
                    "session ticket key not used"
                );
            }
        }
        let set = KeySet::new(keys, refreshed.now_ms, read_at, self.schedule);
        if set.is_none() && !ticketer.is_shared() {
            tracing::warn!(
                key = %self.key,
                "no session ticket key this replica can open: tickets open on this replica only"
            );
        }
        if refreshed.added {
            ticketer.metrics.keys_added.inc();
            tracing::info!(key = %self.key, "added a session ticket key (rotation)");
        }
        ticketer.install(set, invalid, refreshed.now_ms, read_at);
    }
}

fn invalid_fields(ticketer: &Ticketer) -> Vec<String> {
    ticketer
        .status()
        .invalid
        .iter()
        .map(|i| i.field.clone())
        .collect()
}

/// Follows the ticket keys until `stop`: a refresh at once, then every
/// `--tls-ticket-refresh` period.
pub async fn run(config: Config, state: Arc<SharedState>, stop: CancellationToken) {
    let share = Share::new(&config);
    let ticketer = &state.tickets;
    ticketer.set_key_name(&share.key);
    let mut client: Option<Client> = None;
    let mut failing = false;
    loop {
        let attempt = async {
            if client.is_none() {
                client = Some(share.connect().await?);
            }
            let connected = client.as_ref().expect("connected above");
            let read_at = Instant::now();
            let refreshed = share.refresh(connected).await?;
            Ok::<_, RefreshError>((refreshed, read_at))
        };
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            result = attempt => result,
        };
        match result {
            Ok((refreshed, read_at)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(key = %share.key, "session ticket keys: Redis answers again");
                }
                share.install(ticketer, refreshed, read_at);
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        key = %share.key,
                        error = %e,
                        shared = ticketer.is_shared(),
                        "session ticket keys: cannot refresh; keeping the keys held"
                    );
                }
                ticketer.report_error(e.to_string());
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(share.refresh) => {}
        }
    }
    if let Some(client) = client {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_sits_next_to_the_routes() {
        assert_eq!(key_name("routes"), "routes:tls:tickets");
    }

    #[test]
    fn script_replies_are_parsed_or_refused() {
        let reply = Value::Array(vec![
            Value::Integer(1_700_000_000_123),
            Value::Integer(1),
            Value::Array(vec![
                Value::from("0011223344556677"),
                Value::from("1700000000123 AAAA"),
            ]),
        ]);
        let r = parse_reply(reply).unwrap();
        assert_eq!(r.now_ms, 1_700_000_000_123);
        assert!(r.added);
        assert_eq!(r.entries[0].0, b"0011223344556677");
        assert!(parse_reply(Value::Array(vec![Value::Integer(1)])).is_err());
        assert!(parse_reply(Value::Null).is_err());
    }
}
