//! The routes hash as a followed hash: `RouteTable` as its [`Table`]
//! (the rules of routes stay in `crate::routes`), and the shared state's
//! `ArcSwap` as its [`Home`], with the diff log line, the invalid-entry
//! log lines and the snapshot that go with a swap.

use super::changelog::Change;
use super::hash::{Home, Table, TableDiff};
use crate::routes::{Diff, Names, RedisMicros, RouteTable, TableSource};
use crate::snapshot::SnapshotWriter;
use crate::state::SharedState;
use std::sync::Arc;
use tracing::{info, warn};

/// How many host names a diff log line names per category.
const DIFF_LOG_NAMES: usize = 20;
/// At most this many invalid entries are logged one by one per swap.
const INVALID_LOG_LINES: usize = 50;
/// Tables larger than this are freed in the background.
const DROP_OFF_REACTOR_ABOVE: usize = 10_000;

impl TableDiff for Diff {
    fn is_empty(&self) -> bool {
        Diff::is_empty(self)
    }
    fn added(&self) -> usize {
        self.added.len()
    }
    fn removed(&self) -> usize {
        self.removed.len()
    }
}

impl Table for RouteTable {
    type Diff = Diff;

    fn from_entries<E: AsRef<[u8]>>(entries: &[(E, E)], served: &Self) -> (Self, Diff) {
        RouteTable::update(entries, served)
    }

    fn patch(&self, changes: &[Change]) -> Option<(Self, Diff)> {
        // A deletion of a field the hash does not have sent no hash event
        // (see `follower`): refused, so that a whole read decides.
        // (`route_value` answers for the field's key: with two spellings
        // of a host it cannot tell them apart, and takes the deletion.)
        let mut gone: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for change in changes {
            match &change.value {
                Some(_) => {
                    gone.remove(&change.field[..]);
                }
                None => {
                    let field = std::str::from_utf8(&change.field).ok()?;
                    let present = !gone.contains(&change.field[..])
                        && (self.route_value(field).is_some()
                            || self.invalid().iter().any(|e| e.field == field));
                    if !present && !changes_set_it_before(changes, change) {
                        return None;
                    }
                    gone.insert(&change.field[..]);
                }
            }
        }
        let changes: Vec<(&[u8], Option<&[u8]>)> = changes
            .iter()
            .map(|c| (&c.field[..], c.value.as_deref()))
            .collect();
        Some(self.apply(&changes))
    }

    fn len(&self) -> usize {
        RouteTable::len(self)
    }
}

/// Whether a change before `change` in `changes` set its field (so that
/// deleting it removes something).
fn changes_set_it_before(changes: &[Change], change: &Change) -> bool {
    changes
        .iter()
        .take_while(|c| !std::ptr::eq(*c, change))
        .any(|c| c.field == change.field && c.value.is_some())
}

/// The route table's home: the shared state's `ArcSwap` (the only place
/// that stores into it, ARCHITECTURE.md "Only the sync module stores into
/// the ArcSwap"), plus the snapshot file.
pub struct RoutesHome {
    state: Arc<SharedState>,
    key: String,
    snapshot: Option<Arc<SnapshotWriter>>,
    /// `Tuning::background_nice`, for freeing large tables.
    background_nice: i32,
}

impl RoutesHome {
    pub fn new(
        state: Arc<SharedState>,
        key: &str,
        snapshot: Option<Arc<SnapshotWriter>>,
        background_nice: i32,
    ) -> RoutesHome {
        RoutesHome {
            state,
            key: key.to_owned(),
            snapshot,
            background_nice,
        }
    }

    fn drop_quietly(&self, table: Arc<RouteTable>) {
        if table.len() > DROP_OFF_REACTOR_ABOVE && Arc::strong_count(&table) == 1 {
            // Freeing a large table is work too: not on the reactor.
            super::background::drop(self.background_nice, table);
        }
    }
}

impl Home<RouteTable> for RoutesHome {
    fn current(&self) -> Arc<RouteTable> {
        self.state.table_full()
    }

    fn serves_redis(&self) -> bool {
        self.state.table().source == TableSource::Redis
    }

    fn loaded(&self) -> bool {
        self.state.table().is_loaded()
    }

    fn install(
        &self,
        mut table: RouteTable,
        diff: &Diff,
        watermark: RedisMicros,
        reason: &str,
    ) -> Arc<RouteTable> {
        let previous = self.state.table_full();
        if diff.is_empty() && previous.source == TableSource::Redis {
            self.drop_quietly(Arc::new(table));
            return previous;
        }
        table.watermark = Some(watermark);
        table.version = previous.version + 1;
        let table = Arc::new(table);
        self.state.swap_table(table.clone());
        log_diff(reason, diff, &table);
        log_new_invalid(&previous, &table);
        if let Some(writer) = &self.snapshot {
            writer.save(&self.key, table.clone());
        }
        self.drop_quietly(previous);
        table
    }
}

/// Logs each invalid entry once: those that were not already invalid with
/// the same value in the previous table (100,000 bad entries must not mean
/// 100,000 log lines at every reload).
fn log_new_invalid(previous: &RouteTable, table: &RouteTable) {
    let before: std::collections::HashSet<(&str, &str)> = previous
        .invalid()
        .iter()
        .map(|e| (e.field.as_str(), e.value.as_str()))
        .collect();
    let mut fresh = table
        .invalid()
        .iter()
        .filter(|e| !before.contains(&(e.field.as_str(), e.value.as_str())));
    for entry in fresh.by_ref().take(INVALID_LOG_LINES) {
        warn!(host = %entry.field, value = %entry.value, reason = %entry.reason,
              serving_previous = entry.serving_previous, "invalid route");
    }
    let more = fresh.count();
    if more > 0 {
        warn!(
            more,
            total = table.invalid().len(),
            "more invalid routes: see the admin /routes view"
        );
    }
}

/// The first names of a diff category for a log line, and how many more.
pub(super) fn logged_names(v: &Names) -> String {
    let mut s = v
        .kept()
        .iter()
        .take(DIFF_LOG_NAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if v.len() > DIFF_LOG_NAMES {
        s.push_str(&format!(",… ({} more)", v.len() - DIFF_LOG_NAMES));
    }
    s
}

fn log_diff(reason: &str, diff: &Diff, table: &RouteTable) {
    let names = logged_names;
    info!(
        reason,
        version = table.version,
        routes = table.len(),
        invalid = table.invalid().len(),
        added = %names(&diff.added),
        changed = %names(&diff.changed),
        removed = %names(&diff.removed),
        "route table swapped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::testing::{raw, served};

    #[test]
    fn a_patch_equals_a_full_build_and_the_last_change_of_a_field_wins() {
        let v1 = RouteTable::build(
            &raw(&[("a.com", "10.0.0.1:80"), ("b.com", "10.0.0.2:80")]),
            &RouteTable::unloaded(),
        );
        let (v2, diff) = v1
            .patch(&[
                Change::set("a.com", "10.0.0.9:80"),
                Change::set("c.com", "10.0.0.3:80"),
                Change::set("c.com", "10.0.0.4:80"),
                Change::delete("b.com"),
            ])
            .expect("patchable");
        let full = RouteTable::build(
            &raw(&[("a.com", "10.0.0.9:80"), ("c.com", "10.0.0.4:80")]),
            &RouteTable::unloaded(),
        );
        assert_eq!(served(&v2), served(&full));
        assert_eq!((diff.added(), diff.removed()), (1, 1));
        // A deletion of a field the table does not have: refused (a full
        // read decides).
        assert!(v1.patch(&[Change::delete("zzz.com")]).is_none());
    }
}
