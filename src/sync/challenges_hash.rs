//! The ACME challenges hash (`<routes-key>:acme:challenges`) as a
//! followed hash, when automatic certificates are on: `ChallengeTable` as
//! its [`Table`] (the value format stays in `crate::acme::challenges`) and
//! the shared state's `Challenges` as its [`Home`]. Tokens come and go
//! with every order, so removals are this hash's normal life: its removal
//! guard is off, and it has no snapshot (a token outlives no order).

use super::changelog::Change;
use super::hash::{FollowedHash, HashNames, Home, Table, TableDiff};
use super::Followed;
use crate::acme::challenges::{ChallengeDiff, ChallengeTable};
use crate::config::SyncConfig;
use crate::routes::RedisMicros;
use crate::state::SharedState;
use std::sync::Arc;
use tracing::{debug, warn};

/// The removal guard's setting that never holds (see `sync::guard`).
const GUARD_OFF: f64 = 1.0;

impl TableDiff for ChallengeDiff {
    fn is_empty(&self) -> bool {
        ChallengeDiff::is_empty(self)
    }
    fn added(&self) -> usize {
        self.added
    }
    fn removed(&self) -> usize {
        self.removed
    }
}

impl Table for ChallengeTable {
    type Diff = ChallengeDiff;

    fn from_entries<E: AsRef<[u8]>>(entries: &[(E, E)], served: &Self) -> (Self, ChallengeDiff) {
        let table = ChallengeTable::build(entries);
        let diff = ChallengeDiff::between(served, &table);
        (table, diff)
    }

    fn patch(&self, changes: &[Change]) -> Option<(Self, ChallengeDiff)> {
        let changes: Vec<_> = changes
            .iter()
            .map(|c| (c.field.clone(), c.value.clone()))
            .collect();
        let table = self.apply(&changes)?;
        let diff = ChallengeDiff::between(self, &table);
        Some((table, diff))
    }

    fn len(&self) -> usize {
        ChallengeTable::len(self)
    }
}

/// The challenge table's home: `SharedState::challenges`.
pub struct ChallengesHome {
    state: Arc<SharedState>,
}

impl Home<ChallengeTable> for ChallengesHome {
    fn current(&self) -> Arc<ChallengeTable> {
        self.state.challenges.table()
    }

    fn serves_redis(&self) -> bool {
        self.loaded()
    }

    fn loaded(&self) -> bool {
        self.state.challenges.table().is_loaded()
    }

    fn install(
        &self,
        table: ChallengeTable,
        diff: &ChallengeDiff,
        _watermark: RedisMicros,
        reason: &str,
    ) -> Arc<ChallengeTable> {
        let previous = self.state.challenges.table();
        if diff.is_empty() && previous.is_loaded() {
            return previous;
        }
        for (token, value) in table.malformed() {
            if previous.malformed().all(|(t, v)| (t, v) != (token, value)) {
                warn!(token = %String::from_utf8_lossy(token), value = %String::from_utf8_lossy(value),
                      "malformed ACME challenge (want `<expiry ms> <key authorization>`): not answered");
            }
        }
        let table = Arc::new(table);
        self.state.challenges.install_challenge_table(table.clone());
        debug!(
            reason,
            tokens = table.len(),
            added = diff.added,
            removed = diff.removed,
            "ACME challenge table swapped"
        );
        table
    }
}

/// The challenges hash of `config`, served from `state`.
pub fn challenges_hash(config: &SyncConfig, state: &Arc<SharedState>) -> Box<dyn Followed> {
    let key = crate::acme::store::challenges_key(&config.routes_key);
    Box::new(FollowedHash::<ChallengeTable, _>::new(
        HashNames::new(&key, config.redis.database.unwrap_or(0)),
        ChallengesHome {
            state: state.clone(),
        },
        state.clone(),
        config.tuning,
        GUARD_OFF,
    ))
}
