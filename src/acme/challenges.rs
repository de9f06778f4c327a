//! HTTP-01 answers from memory: the challenges hash
//! (`<routes-key>:acme:challenges`, token → `<expiry ms> <key
//! authorization>`, written by whichever replica orders) as an immutable
//! table in every replica, so that the cleartext listener answers
//! `GET /.well-known/acme-challenge/<token>` with no Redis call, on any
//! replica the CA reaches, and while Redis is down (README.md,
//! "Automatic certificates"). The sync module follows the hash into
//! [`Challenges`] (`sync::challenges_hash`); the request path only reads.

use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The path prefix of an HTTP-01 challenge (RFC 8555 §8.3).
pub const PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// How far past its expiry a token is still answered. The expiry is
/// written in Redis's clock (`store::CHALLENGE_PUT`) and compared with the
/// replica's own: a replica whose clock runs ahead of Redis's by less than
/// this still answers for the token's whole life (the default life is 5
/// minutes). Answering a little late is harmless: a key authorization only
/// completes the order of the account that asked for it, and the token is
/// deleted when that order ends.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(30);

/// The key authorization of a challenge value (`<expiry ms> <key
/// authorization>`) if it has not expired at `now_ms`.
pub fn challenge_answer(value: &[u8], now_ms: i64) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let expiry: i64 = std::str::from_utf8(&value[..space]).ok()?.parse().ok()?;
    let answer = &value[space + 1..];
    (expiry > now_ms && !answer.is_empty()).then_some(answer)
}

/// Whether a challenges hash value is well formed (expired or not).
pub fn is_well_formed(value: &[u8]) -> bool {
    challenge_answer(value, i64::MIN).is_some()
}

/// The challenges hash as followed: every field as stored (values are
/// checked when answered, so that expiry is judged at request time).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChallengeTable {
    tokens: HashMap<Bytes, Bytes>,
    /// A read of the hash made it (not the empty table of a replica
    /// that has not read it yet).
    loaded: bool,
}

/// What changed between two challenge tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChallengeDiff {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

impl ChallengeDiff {
    pub fn between(old: &ChallengeTable, new: &ChallengeTable) -> ChallengeDiff {
        let mut diff = ChallengeDiff::default();
        for (token, value) in &new.tokens {
            match old.tokens.get(token) {
                None => diff.added += 1,
                Some(was) if was != value => diff.changed += 1,
                Some(_) => {}
            }
        }
        diff.removed = old
            .tokens
            .keys()
            .filter(|t| !new.tokens.contains_key(*t))
            .count();
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added + self.changed + self.removed == 0
    }
}

impl ChallengeTable {
    /// The table of a replica that has not read the hash yet.
    pub fn unloaded() -> ChallengeTable {
        ChallengeTable::default()
    }

    /// The table of a whole read of the hash.
    pub fn build<E: AsRef<[u8]>>(entries: &[(E, E)]) -> ChallengeTable {
        ChallengeTable {
            tokens: entries
                .iter()
                .map(|(t, v)| {
                    (
                        Bytes::copy_from_slice(t.as_ref()),
                        Bytes::copy_from_slice(v.as_ref()),
                    )
                })
                .collect(),
            loaded: true,
        }
    }

    /// The table after field-level changes (`None` value: deleted), in
    /// order. `None` when a deletion names a token the hash did not have
    /// (the caller then reads the whole hash; see `sync::hash::Table`).
    pub fn apply(&self, changes: &[(Bytes, Option<Bytes>)]) -> Option<ChallengeTable> {
        let mut tokens = self.tokens.clone();
        for (token, value) in changes {
            match value {
                Some(value) => {
                    tokens.insert(token.clone(), value.clone());
                }
                None => {
                    tokens.remove(token)?;
                }
            }
        }
        Some(ChallengeTable {
            tokens,
            loaded: true,
        })
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokens whose value is not `<expiry ms> <key authorization>`
    /// (never answered; logged when they appear).
    pub fn malformed(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> + '_ {
        self.tokens.iter().filter(|(_, v)| !is_well_formed(v))
    }

    /// The key authorization for `token` if it is known and has not
    /// expired at `now_ms` (the replica's clock, see
    /// [`CLOCK_SKEW_ALLOWANCE`]).
    pub fn answer(&self, token: &[u8], now_ms: i64) -> Option<Bytes> {
        let value = self.tokens.get(token)?;
        let allowance = CLOCK_SKEW_ALLOWANCE.as_millis() as i64;
        let answer = challenge_answer(value, now_ms.saturating_sub(allowance))?;
        Some(value.slice_ref(answer))
    }
}

/// Where every replica keeps its challenge table: stored only by the sync
/// module (ARCHITECTURE.md, "Only the sync module stores into the
/// ArcSwap"), read lock-free by the request path.
#[derive(Debug)]
pub struct Challenges {
    table: ArcSwap<ChallengeTable>,
}

impl Default for Challenges {
    fn default() -> Self {
        Challenges {
            table: ArcSwap::from_pointee(ChallengeTable::unloaded()),
        }
    }
}

impl Challenges {
    /// The table served now.
    pub fn table(&self) -> Arc<ChallengeTable> {
        self.table.load_full()
    }

    /// Serves `table` (the sync module's to call).
    pub(crate) fn install_challenge_table(&self, table: Arc<ChallengeTable>) {
        self.table.store(table);
    }

    /// A holder serving these `(token, value)` entries (unit tests).
    #[cfg(test)]
    pub(crate) fn answering(entries: &[(&str, &str)]) -> Challenges {
        Challenges {
            table: ArcSwap::from_pointee(ChallengeTable::build(entries)),
        }
    }

    /// The answer to `GET /.well-known/acme-challenge/<token>` now: one
    /// atomic load, one hash lookup.
    pub fn answer(&self, token: &str) -> Option<Bytes> {
        let table = self.table.load();
        if table.is_empty() {
            return None;
        }
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        table.answer(token.as_bytes(), now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(token: &str, value: Option<&str>) -> (Bytes, Option<Bytes>) {
        (
            Bytes::copy_from_slice(token.as_bytes()),
            value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        )
    }

    #[test]
    fn challenge_values_carry_their_expiry() {
        assert_eq!(
            challenge_answer(b"2000 tok.thumb", 1999),
            Some(&b"tok.thumb"[..])
        );
        assert_eq!(challenge_answer(b"2000 tok.thumb", 2000), None);
        assert_eq!(challenge_answer(b"garbage", 0), None);
        assert_eq!(challenge_answer(b"x tok", 0), None);
        assert_eq!(challenge_answer(b"2000 ", 0), None, "no key authorization");
        assert!(is_well_formed(b"1 a.b"));
        assert!(!is_well_formed(b"a.b"));
    }

    #[test]
    fn a_token_is_answered_until_its_expiry_plus_the_skew_allowance() {
        let table = ChallengeTable::build(&[("tok", "100000 tok.thumb"), ("bad", "nonsense")]);
        let skew = CLOCK_SKEW_ALLOWANCE.as_millis() as i64;
        assert_eq!(table.answer(b"tok", 1).as_deref(), Some(&b"tok.thumb"[..]));
        assert_eq!(
            table.answer(b"tok", 100_000 + skew - 1).as_deref(),
            Some(&b"tok.thumb"[..]),
            "a replica whose clock is ahead still answers"
        );
        assert_eq!(table.answer(b"tok", 100_000 + skew), None);
        assert_eq!(table.answer(b"other", 1), None);
        assert_eq!(table.answer(b"bad", 1), None);
        assert_eq!(table.malformed().count(), 1);
    }

    #[test]
    fn a_patch_equals_a_full_build_and_refuses_unknown_deletions() {
        let v1 = ChallengeTable::build(&[("a", "9 a.k"), ("b", "9 b.k")]);
        let v2 = v1
            .apply(&[
                change("a", Some("10 a.k2")),
                change("c", Some("9 c.k")),
                change("b", None),
            ])
            .expect("patchable");
        assert_eq!(
            v2,
            ChallengeTable::build(&[("a", "10 a.k2"), ("c", "9 c.k")])
        );
        assert_eq!(
            ChallengeDiff::between(&v1, &v2),
            ChallengeDiff {
                added: 1,
                changed: 1,
                removed: 1
            }
        );
        assert!(v1.apply(&[change("zzz", None)]).is_none());
        assert!(ChallengeDiff::between(&v2, &v2.clone()).is_empty());
    }

    #[test]
    fn the_holder_answers_nothing_before_a_table() {
        let challenges = Challenges::default();
        assert_eq!(challenges.answer("tok"), None);
        let far = i64::MAX / 2;
        let challenges = Challenges::answering(&[("tok", &format!("{far} tok.thumb"))]);
        assert_eq!(challenges.answer("tok").as_deref(), Some(&b"tok.thumb"[..]));
        assert_eq!(challenges.answer("other"), None);
    }
}
