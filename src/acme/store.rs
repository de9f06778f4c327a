//! What replicas share to order each certificate once: the Redis keys of
//! automatic certificates, and the atomic operations on them (README.md,
//! "Automatic certificates", the keys table).
//!
//! Every key sits under `<routes-key>:acme:`, so one ACL pattern covers it:
//! - `account`: the ACME account key (PKCS#8 PEM, sealed when a secret is
//!   configured), created once with `SET NX`.
//! - `lock:<host>`: the per-host order lock, `SET NX PX`, renewed while
//!   the order runs, deleted by its holder only.
//! - `inflight`: a sorted set of leases (member = holder and host, score =
//!   expiry in Redis's own milliseconds), at most `--acme-max-concurrent`.
//! - `challenges`: HTTP-01 tokens, field = token, value = `<expiry ms> <key
//!   authorization>`; every replica follows it into memory and answers
//!   from there, ignoring an expired value ([`super::challenges`]).
//! - `hosts`: one [`HostRecord`] per host (which leaf is automatic, the
//!   failures, when to retry, the last error).
//!
//! Times that several replicas compare (leases, challenge expiry) are
//! Redis's `TIME`, never a replica's clock.

use super::plan::HostRecord;
use crate::replicas::{
    self,
    wait::{Progress, Wait},
};
use crate::routes::RedisMicros;
use crate::sync::changelog::{self, Change};
use bytes::Bytes;
use fred::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

/// The keys of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The routes key they sit under (the replica registry's too).
    routes_key: String,
    pub account: String,
    lock_prefix: String,
    pub inflight: String,
    pub challenges: String,
    pub hosts: String,
    pub certs: String,
}

impl Keys {
    pub fn new(routes_key: &str, certs_key: &str) -> Keys {
        let base = format!("{routes_key}:acme:");
        Keys {
            routes_key: routes_key.to_owned(),
            account: format!("{base}account"),
            lock_prefix: format!("{base}lock:"),
            inflight: format!("{base}inflight"),
            challenges: challenges_key(routes_key),
            hosts: format!("{base}hosts"),
            certs: certs_key.to_owned(),
        }
    }

    pub fn lock(&self, host: &str) -> String {
        format!("{}{host}", self.lock_prefix)
    }
}

/// The challenges hash of a deployment, which every replica follows
/// when automatic certificates are on.
pub fn challenges_key(routes_key: &str) -> String {
    format!("{routes_key}:acme:challenges")
}

/// Takes a lease if fewer than ARGV[2] live ones exist (or refreshes the
/// caller's own). Expired leases (dead replicas) are dropped first.
const LEASE_TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
  return 1
end
return 0
";

/// Extends the lock KEYS[1] and the lease ARGV[3] in KEYS[2] if the
/// caller (ARGV[2]) still holds the lock; 0 when it was lost.
const KEEP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[3])
return 1
";

/// Deletes the lock KEYS[1] if held by ARGV[1]; drops the lease ARGV[2].
const RELEASE: &str = r"
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Writes a certificate value to the certs hash (KEYS[1]), its change-log
/// entry (KEYS[4], the `XADD` arguments after the key in ARGV[6..], as
/// `cert set` writes them: `sync::changelog::encode`) and the host's
/// record (KEYS[2]) if the holder (ARGV[5]) still holds the lock (KEYS[3])
/// and the certs field is still what the order started from (ARGV[2]:
/// SHA-1 of the old value, empty for none): a certificate set by hand
/// meanwhile wins. The `XADD` comes right after the `HSET`, so replicas
/// patch the field from the log (ARCHITECTURE.md, "The change log is
/// trusted only where Redis's order proves it").
const WRITE_CERT: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return -1 end
local old = redis.call('HGET', KEYS[1], ARGV[1])
local seen = ''
if old then seen = redis.sha1hex(old) end
if seen ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[4], unpack(ARGV, 6))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
return 1
";

/// Writes an HTTP-01 token with its expiry in Redis time; returns the
/// write's Redis time in microseconds (what replicas' watermarks are
/// compared with).
const CHALLENGE_PUT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) .. ' ' .. ARGV[3])
return {tonumber(t[1]), tonumber(t[2])}
";

/// Deletes expired tokens (a dead replica's).
const CHALLENGE_SWEEP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local expiry = tonumber(string.match(all[i + 1], '^(%d+) '))
  if not expiry or expiry <= now then redis.call('HDEL', KEYS[1], all[i]); n = n + 1 end
end
return n
";

pub use super::challenges::challenge_answer;

/// Redis operations of the ACME task.
#[derive(Clone)]
pub struct Store {
    pub client: Client,
    pub keys: Keys,
}

/// The outcome of [`Store::write_cert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// The certs field changed during the order (someone set it by hand).
    FieldChanged,
    /// The lock expired and may be someone else's: nothing written.
    LockLost,
}

/// How often [`Store::replicas_caught_up`] reads the replica registry
/// (one small `HGETALL`; a replica announces its watermark within
/// milliseconds of reading a change).
const REGISTRY_POLL: Duration = Duration::from_millis(20);

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Store {
    /// The account key, created by the first replica to ask (`SET NX`):
    /// `make` is called only when none is stored, and its value is
    /// discarded when another replica stored one first.
    pub async fn account_key(&self, make: impl FnOnce() -> String) -> Result<Bytes, Error> {
        if let Some(v) = self
            .client
            .get::<Option<Bytes>, _>(&self.keys.account)
            .await?
        {
            return Ok(v);
        }
        let mine = make();
        let _: Option<String> = self
            .client
            .set(
                &self.keys.account,
                mine.as_str(),
                None,
                Some(SetOptions::NX),
                false,
            )
            .await?;
        let stored: Option<Bytes> = self.client.get(&self.keys.account).await?;
        stored.ok_or_else(|| Error::new(ErrorKind::NotFound, "the account key vanished"))
    }

    /// Takes the order lock of `host` for `holder`, for `ttl`.
    pub async fn lock(&self, host: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let set: Option<String> = self
            .client
            .set(
                self.keys.lock(host),
                holder,
                Some(Expiration::PX(ms(ttl))),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(set.is_some())
    }

    /// Takes one of the `cap` cluster-wide in-flight leases.
    pub async fn lease(&self, member: &str, cap: usize, ttl: Duration) -> Result<bool, Error> {
        let took: i64 = self
            .client
            .eval(
                LEASE_TAKE,
                vec![self.keys.inflight.clone()],
                vec![ms(ttl).to_string(), cap.to_string(), member.to_owned()],
            )
            .await?;
        Ok(took == 1)
    }

    /// Extends the lock and the lease; `false` when the lock was lost.
    pub async fn keep(
        &self,
        host: &str,
        holder: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let kept: i64 = self
            .client
            .eval(
                KEEP,
                vec![self.keys.lock(host), self.keys.inflight.clone()],
                vec![ms(ttl).to_string(), holder.to_owned(), member.to_owned()],
            )
            .await?;
        Ok(kept == 1)
    }

    pub async fn release(&self, host: &str, holder: &str, member: &str) -> Result<(), Error> {
        let _: i64 = self
            .client
            .eval(
                RELEASE,
                vec![self.keys.lock(host), self.keys.inflight.clone()],
                vec![holder.to_owned(), member.to_owned()],
            )
            .await?;
        Ok(())
    }

    /// Waits until every live replica's tables reflect Redis at
    /// `write_time` (so each answers a token written then from memory),
    /// until none is live, or until `timeout`: the replica registry read
    /// every [`REGISTRY_POLL`] (README.md, "Replicas and `--wait`").
    pub async fn replicas_caught_up(
        &self,
        write_time: RedisMicros,
        timeout: Duration,
    ) -> Result<Progress, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = Wait::new(write_time);
        loop {
            wait.on_registry(&replicas::read(&self.client, &self.keys.routes_key).await?);
            let progress = wait.progress();
            if progress != Progress::Waiting || tokio::time::Instant::now() >= deadline {
                return Ok(progress);
            }
            tokio::time::sleep(REGISTRY_POLL).await;
        }
    }

    /// Live leases, cluster-wide.
    pub async fn leases(&self) -> Result<u64, Error> {
        self.client.zcard(&self.keys.inflight).await
    }

    /// Publishes an HTTP-01 token for every replica; returns the write's
    /// Redis time (µs): a replica whose watermark is at or after it
    /// answers the token.
    pub async fn put_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<RedisMicros, Error> {
        let time: Vec<u64> = self
            .client
            .eval(
                CHALLENGE_PUT,
                vec![self.keys.challenges.clone()],
                vec![
                    token.to_owned(),
                    ms(ttl).to_string(),
                    key_authorization.to_owned(),
                ],
            )
            .await?;
        match time[..] {
            [secs, micros] => Ok(secs * 1_000_000 + micros),
            _ => Err(Error::new(ErrorKind::Protocol, "TIME: unexpected reply")),
        }
    }

    pub async fn del_challenges(&self, tokens: &[String]) -> Result<(), Error> {
        if tokens.is_empty() {
            return Ok(());
        }
        let _: i64 = self
            .client
            .hdel(&self.keys.challenges, tokens.to_vec())
            .await?;
        Ok(())
    }

    /// Deletes expired challenge tokens; returns how many.
    pub async fn sweep_challenges(&self) -> Result<i64, Error> {
        self.client
            .eval(
                CHALLENGE_SWEEP,
                vec![self.keys.challenges.clone()],
                Vec::<String>::new(),
            )
            .await
    }

    /// Every host record; unreadable values are skipped (and re-written by
    /// the next order of their host).
    pub async fn records(&self) -> Result<HashMap<String, HostRecord>, Error> {
        let raw: HashMap<String, Bytes> = self.client.hgetall(&self.keys.hosts).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(host, v)| Some((host, serde_json::from_slice(&v).ok()?)))
            .collect())
    }

    pub async fn record(&self, host: &str) -> Result<Option<HostRecord>, Error> {
        let raw: Option<Bytes> = self.client.hget(&self.keys.hosts, host).await?;
        Ok(raw.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub async fn put_record(&self, host: &str, record: &HostRecord) -> Result<(), Error> {
        let json = serde_json::to_string(record).expect("a record serialises");
        let _: i64 = self
            .client
            .hset(&self.keys.hosts, (host, json.as_str()))
            .await?;
        Ok(())
    }

    /// The certs hash's value for `host`.
    pub async fn cert_value(&self, host: &str) -> Result<Option<Bytes>, Error> {
        self.client.hget(&self.keys.certs, host).await
    }

    /// Every entry of the certs hash.
    pub async fn cert_entries(&self) -> Result<Vec<(Bytes, Bytes)>, Error> {
        let raw: HashMap<Bytes, Bytes> = self.client.hgetall(&self.keys.certs).await?;
        Ok(raw.into_iter().collect())
    }

    /// Writes an issued certificate and its record, see [`WRITE_CERT`].
    #[allow(clippy::too_many_arguments)]
    pub async fn write_cert(
        &self,
        host: &str,
        holder: &str,
        previous: Option<&[u8]>,
        value: &str,
        record: &HostRecord,
    ) -> Result<Written, Error> {
        let seen = previous.map(sha1_hex).unwrap_or_default();
        let json = serde_json::to_string(record).expect("a record serialises");
        let entry = changelog::encode(&Change::set(host, value));
        let mut args: Vec<Value> = vec![
            host.into(),
            seen.into(),
            value.into(),
            json.into(),
            holder.into(),
        ];
        args.extend(entry);
        let written: i64 = self
            .client
            .eval(
                WRITE_CERT,
                vec![
                    self.keys.certs.clone(),
                    self.keys.hosts.clone(),
                    self.keys.lock(host),
                    changelog::log_key(&self.keys.certs),
                ],
                args,
            )
            .await?;
        Ok(match written {
            1 => Written::Yes,
            0 => Written::FieldChanged,
            _ => Written::LockLost,
        })
    }
}

/// SHA-1 as Redis's `redis.sha1hex` writes it (a change detector, not a
/// security measure).
fn sha1_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_the_routes_key() {
        let k = Keys::new("routes", "routes:certs");
        assert_eq!(k.account, "routes:acme:account");
        assert_eq!(k.lock("a.cloud.com"), "routes:acme:lock:a.cloud.com");
        assert_eq!(k.inflight, "routes:acme:inflight");
        assert_eq!(k.challenges, "routes:acme:challenges");
        assert_eq!(k.hosts, "routes:acme:hosts");
    }

    #[test]
    fn sha1_matches_redis() {
        // redis-cli EVAL "return redis.sha1hex('abc')" 0
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
