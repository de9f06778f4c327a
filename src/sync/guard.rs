//! The blast-radius guard: a change that would remove every entry of a
//! followed hash, or more than `--max-removal-fraction` of them at once,
//! is held. The replica keeps serving what it has and says so; the hold
//! lifts when a read no longer trips the guard, or when an operator
//! confirms (`switchyard route accept-removal` writes
//! `<key>:accept-removal` for a minute). Pure: the caller reads and
//! installs (ARCHITECTURE.md, "A failed, partial or mass-removing read
//! never replaces the table").

use serde::Serialize;
use std::time::SystemTime;

/// The key whose existence confirms a held removal of the hash `key`.
pub fn accept_key(key: &str) -> String {
    format!("{key}:accept-removal")
}

/// The guard's setting: the largest fraction of the served entries one
/// change may remove; 1 (or more) turns the guard off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    max_fraction: f64,
}

/// A removal the guard stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    /// Entries the change would remove.
    pub removed: usize,
    /// Entries served now.
    pub serving: usize,
    /// Entries the hash holds.
    pub in_redis: usize,
    /// Unix time (ms) the hold began.
    pub since_ms: u64,
}

/// What to do with a read.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within bounds: install it.
    Apply,
    /// Too large: apply only if confirmed, else hold with these numbers.
    Trips { removed: usize, serving: usize },
}

impl Guard {
    pub fn new(max_fraction: f64) -> Guard {
        Guard { max_fraction }
    }

    pub fn is_off(&self) -> bool {
        self.max_fraction >= 1.0
    }

    /// Judges a change that removes `removed` of the `serving` entries.
    pub fn judge(&self, serving: usize, removed: usize) -> Verdict {
        if self.is_off() || removed == 0 || serving == 0 {
            return Verdict::Apply;
        }
        let all = removed >= serving;
        let too_many = removed as f64 > self.max_fraction * serving as f64;
        if all || too_many {
            Verdict::Trips { removed, serving }
        } else {
            Verdict::Apply
        }
    }
}

impl Held {
    /// A hold with these numbers, continuing `previous` (its start time
    /// is kept) when there is one.
    pub fn new(removed: usize, serving: usize, in_redis: usize, previous: Option<&Held>) -> Held {
        let since_ms = previous.map(|h| h.since_ms).unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64
        });
        Held {
            removed,
            serving,
            in_redis,
            since_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_all_or_more_than_the_fraction_trips() {
        let g = Guard::new(0.5);
        assert_eq!(
            g.judge(100, 100),
            Verdict::Trips {
                removed: 100,
                serving: 100
            }
        );
        assert_eq!(
            g.judge(100, 51),
            Verdict::Trips {
                removed: 51,
                serving: 100
            }
        );
        assert_eq!(g.judge(100, 50), Verdict::Apply);
        assert_eq!(g.judge(100, 10), Verdict::Apply);
        assert_eq!(g.judge(100, 0), Verdict::Apply);
        // The last route of a table is all of it.
        assert_eq!(
            g.judge(1, 1),
            Verdict::Trips {
                removed: 1,
                serving: 1
            }
        );
        // Nothing served yet (boot): nothing to protect.
        assert_eq!(g.judge(0, 0), Verdict::Apply);
    }

    #[test]
    fn one_turns_it_off_and_small_fractions_are_strict() {
        assert_eq!(Guard::new(1.0).judge(100, 100), Verdict::Apply);
        assert!(Guard::new(1.0).is_off());
        assert_eq!(
            Guard::new(0.05).judge(100, 10),
            Verdict::Trips {
                removed: 10,
                serving: 100
            }
        );
        assert_eq!(Guard::new(0.05).judge(100, 5), Verdict::Apply);
    }

    #[test]
    fn a_continued_hold_keeps_its_start() {
        let first = Held::new(10, 10, 0, None);
        let later = Held::new(9, 10, 1, Some(&first));
        assert_eq!(later.since_ms, first.since_ms);
        assert_eq!(accept_key("routes"), "routes:accept-removal");
    }
}
