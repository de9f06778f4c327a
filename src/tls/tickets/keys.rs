//! Ticket keys as values: one key's stored form in the shared hash, the
//! set a replica encrypts and decrypts with, and the rotation schedule
//! (README.md, "Session resumption on any replica"). Pure: no Redis, no
//! clock reads except the ones passed in.
//!
//! A hash field is a key id (16 hex digits: 8 random bytes, also the
//! first bytes of every ticket made with the key); its value is
//! `<created> <material>`, where `<created>` is Redis's `TIME` in
//! milliseconds when the key was added, and `<material>` the 32 bytes of
//! an AES-256-GCM key in base64, or sealed with `--certs-secret-file`
//! (`tls::seal`, the key id as context, so a sealed key moved to another
//! field does not open).

use crate::tls::seal::{self, Purpose, SealError, Sealer};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::time::{Duration, Instant};

/// Length of a key id, at the front of every ticket.
pub const KEY_ID_LEN: usize = 8;
/// Length of the AES-256-GCM key material.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// TLS 1.3 caps a ticket's lifetime at 7 days (RFC 8446 §4.6.1).
const MAX_LIFETIME: Duration = Duration::from_secs(7 * 86_400);

/// Names a ticket key; public (every ticket starts with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The id a hash field names: exactly 16 hex digits.
    pub fn parse(field: &[u8]) -> Option<KeyId> {
        if field.len() != KEY_ID_LEN * 2 || !field.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut id = [0u8; KEY_ID_LEN];
        for (byte, pair) in id.iter_mut().zip(field.chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(KeyId(id))
    }
}

/// Why an entry of the ticket keys hash is not used. Shown in the log and
/// in the admin view `/tickets`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketKeyError {
    #[error("the field is not a key id (16 hex digits)")]
    Field,
    #[error("the value does not start with its creation time (`<unix ms> <key>`)")]
    Created,
    #[error("the key is not {KEY_LEN} bytes in base64")]
    Material,
    #[error(transparent)]
    Sealed(#[from] SealError),
}

/// One ticket key, ready to encrypt and decrypt.
pub struct TicketKey {
    pub id: KeyId,
    /// Redis time (ms) at which the key was added.
    pub created_ms: i64,
    /// Whether the key was sealed in Redis.
    pub sealed: bool,
    key: LessSafeKey,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey")
            .field("id", &self.id.hex())
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// The creation time at the front of a value, if it has one: what the
/// rotation looks at, whether or not this replica can open the key.
pub fn created_ms(value: &[u8]) -> Option<i64> {
    let space = value.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&value[..space]).ok()?.parse().ok()
}

impl TicketKey {
    /// Reads one entry of the hash; `sealer` opens sealed material.
    pub fn parse(
        field: &[u8],
        value: &[u8],
        sealer: Option<&Sealer>,
    ) -> Result<TicketKey, TicketKeyError> {
        let id = KeyId::parse(field).ok_or(TicketKeyError::Field)?;
        let created_ms = created_ms(value).ok_or(TicketKeyError::Created)?;
        let material = &value[value.iter().position(|&b| b == b' ').unwrap_or(0) + 1..];
        let (bytes, sealed) = match seal::find_block(material) {
            Some(body) => {
                let sealer = sealer.ok_or(SealError::NoSecret)?;
                (sealer.open(&id.hex(), body?)?, true)
            }
            None => (
                base64::engine::general_purpose::STANDARD
                    .decode(material.trim_ascii())
                    .map_err(|_| TicketKeyError::Material)?,
                false,
            ),
        };
        if bytes.len() != KEY_LEN {
            return Err(TicketKeyError::Material);
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| TicketKeyError::Material)?;
        Ok(TicketKey {
            id,
            created_ms,
            sealed,
            key: LessSafeKey::new(key),
        })
    }

    /// Encrypts a ticket: key id | random nonce | ciphertext | tag, the
    /// key id authenticated as associated data.
    fn encrypt(&self, rng: &SystemRandom, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&self.id.0);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.id.0),
                &mut ticket[KEY_ID_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// Decrypts a ticket made with this key (its id already matched).
    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let nonce = ticket.get(KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = ticket.get(KEY_ID_LEN + NONCE_LEN..)?.to_vec();
        let len = self
            .key
            .open_in_place(nonce, Aad::from(self.id.0), &mut sealed)
            .ok()?
            .len();
        sealed.truncate(len);
        Some(sealed)
    }
}

/// A new key's field and material (sealed when `sealer` is given), for the
/// hash; Redis puts the creation time in front.
pub fn new_key(sealer: Option<&Sealer>) -> (String, String) {
    let rng = SystemRandom::new();
    let mut id = [0u8; KEY_ID_LEN];
    let mut key = [0u8; KEY_LEN];
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut key))
        .expect("the system random generator works");
    let id = KeyId(id).hex();
    let material = match sealer {
        Some(sealer) => sealer.seal(&id, &key),
        None => base64::engine::general_purpose::STANDARD.encode(key),
    };
    (id, material)
}

/// The sealer of ticket keys for a `--certs-secret-file` secret.
pub fn sealer(secret: &seal::Secret) -> Sealer {
    Sealer::new(secret, Purpose::TicketKey)
}

/// When keys are made, used and retired, from the rotation period `R`
/// (`--tls-ticket-rotation`) and the refresh period `P` (how often each
/// replica reads the hash):
///
/// - a key is added when the newest is `R - A` old, where `A` (the lead)
///   is three refresh periods (at most `R / 4`): every replica has read
///   it before anyone encrypts with it;
/// - a key encrypts from `A` after its creation until the next one does,
///   so each key encrypts for about `R`;
/// - tickets live `R` (at most 7 days), so a key is retired (deleted) once
///   it is `2R + A` old: no ticket it made can still be valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub rotation: Duration,
    pub lead: Duration,
}

impl Schedule {
    pub fn new(rotation: Duration, refresh: Duration) -> Schedule {
        Schedule {
            rotation,
            lead: (refresh * 3).min(rotation / 4),
        }
    }

    /// Age of the newest key at which the next one is added.
    pub fn add_after(&self) -> Duration {
        self.rotation.saturating_sub(self.lead)
    }

    /// Age past which a key is deleted.
    pub fn retire_after(&self) -> Duration {
        self.rotation * 2 + self.lead
    }

    /// The ticket lifetime clients are told (seconds).
    pub fn lifetime_secs(&self) -> u32 {
        self.rotation.min(MAX_LIFETIME).as_secs().max(1) as u32
    }
}

/// The keys a replica holds: the newest first, the one to encrypt with,
/// and when the next one takes over (a key is used `A` after its
/// creation, by the local clock from the moment the set was read: the
/// replica keeps rotating on time between reads, and while Redis is down).
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<TicketKey>,
    encrypting: usize,
    /// The next newer key and the instant it starts encrypting.
    next: Option<(usize, Instant)>,
    lifetime: u32,
}

impl KeySet {
    /// The set of `keys` read at Redis time `now_ms` (at local `read_at`);
    /// `None` when there is no key.
    pub fn new(
        mut keys: Vec<TicketKey>,
        now_ms: i64,
        read_at: Instant,
        schedule: Schedule,
    ) -> Option<KeySet> {
        if keys.is_empty() {
            return None;
        }
        keys.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.0.cmp(&b.id.0)));
        let lead_ms = schedule.lead.as_millis() as i64;
        let active = |k: &TicketKey| k.created_ms.saturating_add(lead_ms) <= now_ms;
        // The newest key past its lead; none (the first key ever): the newest.
        let encrypting = keys.iter().position(active).unwrap_or(0);
        let next = encrypting.checked_sub(1).map(|i| {
            let wait = keys[i].created_ms.saturating_add(lead_ms) - now_ms;
            (i, read_at + Duration::from_millis(wait.max(0) as u64))
        });
        Some(KeySet {
            keys,
            encrypting,
            next,
            lifetime: schedule.lifetime_secs(),
        })
    }

    /// The key to encrypt with at `now`.
    pub fn encrypting(&self, now: Instant) -> &TicketKey {
        match self.next {
            Some((next, at)) if now >= at => &self.keys[next],
            _ => &self.keys[self.encrypting],
        }
    }

    pub fn keys(&self) -> &[TicketKey] {
        &self.keys
    }

    pub fn lifetime(&self) -> u32 {
        self.lifetime
    }

    pub fn encrypt(&self, rng: &SystemRandom, plain: &[u8]) -> Option<Vec<u8>> {
        self.encrypting(Instant::now()).encrypt(rng, plain)
    }

    /// Decrypts a ticket made with any key of the set; `None` for a ticket
    /// of another key (or of none: a client may send anything).
    pub fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let id = ticket.get(..KEY_ID_LEN)?;
        self.keys
            .iter()
            .find(|k| k.id.0 == id)
            .and_then(|k| k.decrypt(ticket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::seal::Secret;

    fn key(created_ms: i64) -> TicketKey {
        let (field, material) = new_key(None);
        let value = format!("{created_ms} {material}");
        TicketKey::parse(field.as_bytes(), value.as_bytes(), None).unwrap()
    }

    const SCHEDULE: Schedule = Schedule {
        rotation: Duration::from_secs(100),
        lead: Duration::from_secs(10),
    };

    #[test]
    fn schedule_adds_before_and_retires_after() {
        let s = Schedule::new(Duration::from_secs(12 * 3600), Duration::from_secs(5));
        assert_eq!(s.lead, Duration::from_secs(15));
        assert_eq!(s.add_after(), Duration::from_secs(12 * 3600 - 15));
        assert_eq!(s.retire_after(), Duration::from_secs(24 * 3600 + 15));
        assert_eq!(s.lifetime_secs(), 12 * 3600);
        // A short rotation caps the lead; a long one caps the lifetime.
        let s = Schedule::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(s.lead, Duration::from_millis(500));
        let s = Schedule::new(Duration::from_secs(30 * 86_400), Duration::from_secs(5));
        assert_eq!(s.lifetime_secs(), 7 * 86_400);
    }

    #[test]
    fn a_ticket_opens_with_its_key_only() {
        let rng = SystemRandom::new();
        let now = Instant::now();
        let one = KeySet::new(vec![key(0)], 1_000_000, now, SCHEDULE).unwrap();
        let other = KeySet::new(vec![key(0)], 1_000_000, now, SCHEDULE).unwrap();
        let ticket = one.encrypt(&rng, b"session state").unwrap();
        assert_eq!(&ticket[..KEY_ID_LEN], &one.keys()[0].id.0);
        assert_eq!(one.decrypt(&ticket).unwrap(), b"session state");
        assert_eq!(other.decrypt(&ticket), None);
        // Tampered, truncated, empty: refused, never a panic.
        let mut bad = ticket.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(one.decrypt(&bad), None);
        for len in 0..KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            assert_eq!(one.decrypt(&ticket[..len.min(ticket.len())]), None);
        }
        // Random nonces: two tickets of one state differ.
        assert_ne!(one.encrypt(&rng, b"x"), one.encrypt(&rng, b"x"));
    }

    #[test]
    fn the_newest_key_past_its_lead_encrypts_and_the_next_takes_over_on_time() {
        let now_ms = 1_000_000;
        let read_at = Instant::now();
        // Old (past its lead), new (5 s old: 5 s to go), and an older one.
        let set = KeySet::new(
            vec![
                key(now_ms - 50_000),
                key(now_ms - 5_000),
                key(now_ms - 150_000),
            ],
            now_ms,
            read_at,
            SCHEDULE,
        )
        .unwrap();
        assert_eq!(set.keys()[0].created_ms, now_ms - 5_000);
        assert_eq!(set.encrypting(read_at).created_ms, now_ms - 50_000);
        let switch = read_at + Duration::from_secs(5);
        assert_eq!(
            set.encrypting(switch - Duration::from_millis(1)).created_ms,
            now_ms - 50_000
        );
        assert_eq!(set.encrypting(switch).created_ms, now_ms - 5_000);
        // Every key still decrypts.
        let rng = SystemRandom::new();
        for k in set.keys() {
            let ticket = k.encrypt(&rng, b"t").unwrap();
            assert_eq!(set.decrypt(&ticket).unwrap(), b"t");
        }
        // The first key ever encrypts at once.
        let first = KeySet::new(vec![key(now_ms)], now_ms, read_at, SCHEDULE).unwrap();
        assert_eq!(first.encrypting(read_at).created_ms, now_ms);
        assert!(KeySet::new(Vec::new(), now_ms, read_at, SCHEDULE).is_none());
        assert_eq!(first.lifetime(), 100);
    }

    #[test]
    fn values_are_checked_and_sealed_ones_open_for_their_id_only() {
        let sealer = sealer(&Secret::from_bytes(&[7; 32]).unwrap());
        let (field, material) = new_key(Some(&sealer));
        assert!(material.starts_with(seal::BEGIN));
        let value = format!("1700000000000 {material}");
        let k = TicketKey::parse(field.as_bytes(), value.as_bytes(), Some(&sealer)).unwrap();
        assert!(k.sealed);
        assert_eq!(k.created_ms, 1_700_000_000_000);
        assert_eq!(k.id.hex(), field);
        fn parse(f: &str, v: &str, s: Option<&Sealer>) -> Result<(), TicketKeyError> {
            TicketKey::parse(f.as_bytes(), v.as_bytes(), s).map(|_| ())
        }
        assert_eq!(
            parse(&field, &value, None),
            Err(TicketKeyError::Sealed(SealError::NoSecret))
        );
        let other = super::sealer(&Secret::from_bytes(&[8; 32]).unwrap());
        assert_eq!(
            parse(&field, &value, Some(&other)),
            Err(TicketKeyError::Sealed(SealError::OtherSecret))
        );
        // Moved to another field: does not open.
        let moved = "00112233445566ff";
        assert!(matches!(
            parse(moved, &value, Some(&sealer)),
            Err(TicketKeyError::Sealed(SealError::Mismatch { .. }))
        ));
        assert_eq!(parse("nothex", &value, None), Err(TicketKeyError::Field));
        assert_eq!(parse(moved, "garbage", None), Err(TicketKeyError::Created));
        assert_eq!(parse(moved, "12 AAAA", None), Err(TicketKeyError::Material));
        // Plaintext keys are accepted with a secret too.
        let (field, material) = new_key(None);
        let plain = format!("5 {material}");
        assert!(
            !TicketKey::parse(field.as_bytes(), plain.as_bytes(), Some(&sealer))
                .unwrap()
                .sealed
        );
        assert_eq!(created_ms(b"123 x"), Some(123));
        assert_eq!(created_ms(b"x 123"), None);
    }
}
