//! TLS session resumption on any replica (README.md, "Session resumption
//! on any replica"): session tickets encrypted under keys every replica
//! shares through Redis, so a client that resumes behind a load balancer
//! resumes on whichever replica it lands on.
//!
//! - [`keys`]: a key's stored form, the set a replica holds, the rotation
//!   schedule (pure).
//! - [`share`]: the background task that reads the keys from Redis and
//!   adds one when due (one script, atomic across replicas).
//! - [`Ticketer`] (here): rustls's [`ProducesTickets`] over the set, read
//!   with one atomic load per ticket. A handshake never talks to Redis.
//!
//! Why our own ticketer: rustls's (`rustls::crypto::ring::Ticketer`)
//! makes its keys at random in the process and offers no way to give it
//! key material, so its tickets open only on the replica that made them.
//! The format follows rustls's own AEAD ticketer (key id, random nonce,
//! AEAD with the key id as associated data), with AES-256-GCM from ring as
//! in `tls::seal`. Random 96-bit nonces keep a key safe for 2^32 tickets;
//! a replica sends two per handshake, so a 12 h rotation allows about
//! 50,000 full handshakes a second across all replicas (rotate more often
//! beyond that).
//!
//! Until shared keys are loaded (Redis unreachable since boot, or no key
//! this replica can open), tickets come from rustls's local ticketer, and
//! `/tickets` and `switchyard_tls_ticket_keys 0` say so. Once loaded, the
//! keys are kept while Redis is down, and the local ticketer's tickets
//! are still accepted.

pub mod keys;
mod metrics;
pub mod share;

pub use metrics::TicketMetrics;
pub use share::run;

use arc_swap::ArcSwapOption;
use keys::{KeySet, TicketKeyError};
use ring::rand::SystemRandom;
use rustls::server::ProducesTickets;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

/// An entry of the ticket keys hash this replica does not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    pub field: String,
    pub error: TicketKeyError,
}

/// What `/tickets` shows besides the keys.
#[derive(Debug, Default)]
struct Status {
    /// The hash, once the task has started.
    key: Option<String>,
    last_read: Option<SystemTime>,
    /// Redis time of the last read, for the keys' ages.
    redis_now_ms: i64,
    last_error: Option<String>,
    invalid: Vec<InvalidKey>,
}

/// The session ticket producer of every TLS listener of a replica (in
/// `SharedState`): shared keys when loaded, else rustls's local ticketer.
pub struct Ticketer {
    /// Stored only by the [`share`] task.
    shared: ArcSwapOption<KeySet>,
    local: Arc<dyn ProducesTickets>,
    rng: SystemRandom,
    status: Mutex<Status>,
    pub metrics: TicketMetrics,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticketer")
            .field("shared", &self.shared.load().is_some())
            .finish_non_exhaustive()
    }
}

impl Ticketer {
    /// A ticketer on rustls's local keys until shared ones are installed;
    /// its metrics go to `registry`.
    pub fn new(registry: &prometheus::Registry) -> Ticketer {
        Ticketer {
            shared: ArcSwapOption::empty(),
            local: rustls::crypto::ring::Ticketer::new().expect("the ring ticketer starts"),
            rng: SystemRandom::new(),
            status: Mutex::new(Status::default()),
            metrics: TicketMetrics::register(registry),
        }
    }

    /// Shared keys are in use (else rustls's local ticketer).
    pub fn is_shared(&self) -> bool {
        self.shared.load().is_some()
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs what a read of the hash gave. A read that found no key
    /// this replica can use keeps the keys it had (if any): they are still
    /// what other replicas' tickets were made with.
    fn install(
        &self,
        set: Option<KeySet>,
        invalid: Vec<InvalidKey>,
        redis_now_ms: i64,
        read_at: Instant,
    ) {
        if let Some(set) = set {
            let encrypting = set.encrypting(read_at);
            self.metrics
                .key_created
                .set(encrypting.created_ms as f64 / 1000.0);
            self.metrics.keys.set(set.keys().len() as i64);
            self.shared.store(Some(Arc::new(set)));
        }
        self.metrics.invalid.set(invalid.len() as i64);
        let mut status = self.status();
        status.last_read = Some(SystemTime::now());
        status.redis_now_ms = redis_now_ms;
        status.last_error = None;
        status.invalid = invalid;
    }

    fn report_error(&self, error: String) {
        self.status().last_error = Some(error);
    }

    fn set_key_name(&self, key: &str) {
        self.status().key = Some(key.to_owned());
    }

    /// The `/tickets` document: where tickets come from, the keys (ids and
    /// creation times, never the keys), entries not used and why.
    pub fn view(&self) -> Value {
        let set = self.shared.load_full();
        let status = self.status();
        let now = Instant::now();
        let keys: Vec<Value> = set
            .iter()
            .flat_map(|set| {
                let encrypting = set.encrypting(now).id;
                set.keys().iter().map(move |k| {
                    json!({
                        "id": k.id.hex(),
                        "created_ms": k.created_ms,
                        "sealed": k.sealed,
                        "encrypting": k.id == encrypting,
                    })
                })
            })
            .collect();
        let invalid: Vec<Value> = status
            .invalid
            .iter()
            .map(|i| json!({"field": i.field, "reason": i.error.to_string()}))
            .collect();
        let unix_ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64
        };
        json!({
            "source": if set.is_some() { "redis" } else { "local" },
            "key": status.key,
            "lifetime_secs": self.lifetime(),
            "keys": keys,
            "invalid": invalid,
            "redis_time_ms": status.redis_now_ms,
            "last_read_ms": status.last_read.map(unix_ms),
            "last_error": status.last_error,
        })
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        match &*self.shared.load() {
            Some(set) => set.lifetime(),
            None => self.local.lifetime(),
        }
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        match &*self.shared.load() {
            Some(set) => set.encrypt(&self.rng, plain),
            None => self.local.encrypt(plain),
        }
    }

    /// A ticket of a shared key, else of the local ticketer (made before
    /// the shared keys were loaded). Anything else: `None`, and rustls
    /// makes a full handshake.
    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if let Some(set) = &*self.shared.load() {
            if let Some(plain) = set.decrypt(ticket) {
                return Some(plain);
            }
        }
        self.local.decrypt(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::keys::{new_key, Schedule, TicketKey};
    use super::*;
    use std::time::Duration;

    fn set_of(created: &[i64], now_ms: i64) -> KeySet {
        let keys = created
            .iter()
            .map(|c| {
                let (field, material) = new_key(None);
                TicketKey::parse(field.as_bytes(), format!("{c} {material}").as_bytes(), None)
                    .unwrap()
            })
            .collect();
        let schedule = Schedule::new(Duration::from_secs(3600), Duration::from_secs(1));
        KeySet::new(keys, now_ms, Instant::now(), schedule).unwrap()
    }

    #[test]
    fn local_tickets_until_shared_keys_then_both_open() {
        let metrics = crate::metrics::Metrics::new();
        let t = Ticketer::new(metrics.registry());
        assert!(t.enabled() && !t.is_shared());
        let local = t.encrypt(b"before").unwrap();
        assert_eq!(t.decrypt(&local).unwrap(), b"before");
        assert_eq!(t.view()["source"], "local");

        t.install(
            Some(set_of(&[0], 10_000)),
            Vec::new(),
            10_000,
            Instant::now(),
        );
        assert!(t.is_shared());
        assert_eq!(t.lifetime(), 3600);
        let shared = t.encrypt(b"after").unwrap();
        assert_eq!(t.decrypt(&shared).unwrap(), b"after");
        assert_eq!(
            t.decrypt(&local).unwrap(),
            b"before",
            "local tickets still open"
        );
        assert_eq!(t.decrypt(b"anything a client sends"), None);

        // Another replica with the same keys opens the tickets; one with
        // other keys does not.
        let view = t.view();
        assert_eq!(view["source"], "redis");
        assert_eq!(view["keys"][0]["encrypting"], true);
        assert!(!view.to_string().contains("material"));
        let other = Ticketer::new(&prometheus::Registry::new());
        other.install(
            Some(set_of(&[0], 10_000)),
            Vec::new(),
            10_000,
            Instant::now(),
        );
        assert_eq!(other.decrypt(&shared), None);
        let text = metrics.render();
        assert!(
            text.lines().any(|l| l == "switchyard_tls_ticket_keys 1"),
            "{text}"
        );
    }

    #[test]
    fn a_read_without_usable_keys_keeps_the_keys_held() {
        let t = Ticketer::new(&prometheus::Registry::new());
        t.install(
            Some(set_of(&[0], 10_000)),
            Vec::new(),
            10_000,
            Instant::now(),
        );
        let ticket = t.encrypt(b"s").unwrap();
        let invalid = vec![InvalidKey {
            field: "x".into(),
            error: TicketKeyError::Field,
        }];
        t.install(None, invalid, 20_000, Instant::now());
        assert_eq!(t.decrypt(&ticket).unwrap(), b"s");
        assert_eq!(t.view()["invalid"][0]["field"], "x");
    }
}
