//! What changed between two tables: hosts added, changed, removed, for
//! the log line and the swap decision of a reload.

use super::field::{shown, Kind};
use super::Held;

/// What changed between two tables.
///
/// Empty exactly when the two tables were made from the same hash (and
/// serve the same): a change that serves nothing differently (an invalid
/// value replaced by another, a shadowed duplicate spelling) still counts,
/// as the pseudo-host `(invalid entries)`, so the new table is swapped in
/// and the admin view and later patches see the hash as it is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub added: Names,
    pub changed: Names,
    pub removed: Names,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    pub fn len(&self) -> usize {
        self.added.len() + self.changed.len() + self.removed.len()
    }

    /// Counts one key whose route went from `before` to `after`.
    pub(super) fn record(
        &mut self,
        kind: Kind,
        key: &str,
        before: Option<&Held>,
        after: Option<&Held>,
    ) {
        let part = match (before, after) {
            (None, Some(_)) => &mut self.added,
            (Some(_), None) => &mut self.removed,
            (Some(a), Some(b)) if !a.same(b) => &mut self.changed,
            _ => return,
        };
        part.push_with(|| shown(kind, key));
    }

    /// Sorts the names; `fields_changed`: whether the hash changed in a
    /// way the routes do not show (see [`Diff`]).
    pub(super) fn finish(&mut self, fields_changed: bool) {
        if self.is_empty() && fields_changed {
            self.changed.push_with(|| "(invalid entries)".into());
        }
        self.added.kept.sort();
        self.changed.kept.sort();
        self.removed.kept.sort();
    }
}

/// The hosts in one part of a [`Diff`]: how many, and the names of the
/// first [`Names::KEPT`], enough for a log line. A boot load of a million
/// routes is a million additions; formatting and sorting a million names
/// for a log line took over half of that build.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    count: usize,
    kept: Vec<String>,
}

impl Names {
    pub const KEPT: usize = 64;

    /// Counts one more host; `name` is only called while names are kept.
    pub fn push_with(&mut self, name: impl FnOnce() -> String) {
        self.count += 1;
        if self.kept.len() < Self::KEPT {
            self.kept.push(name());
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Up to [`Names::KEPT`] names, sorted.
    pub fn kept(&self) -> &[String] {
        &self.kept
    }
}

impl<const N: usize> PartialEq<[&str; N]> for Names {
    fn eq(&self, names: &[&str; N]) -> bool {
        self.count == N && self.kept.iter().zip(names).all(|(a, b)| a == b)
    }
}
