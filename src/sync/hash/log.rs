//! The change-log side of a followed hash: reading the log's entries
//! from a position ([`FollowedHash::read_entries`]), patching the served
//! table from them ([`FollowedHash::try_log`]), and bringing a table to a
//! log position: the served one before a whole read is compared with it
//! ([`FollowedHash::catch_up_to`]), a built one before it is installed
//! ([`FollowedHash::to_log_end`]), a scan's pairs ([`FollowedHash::replay_over_scan`])
//! (ARCHITECTURE.md, "The change log" and "Large hashes").

use super::{FollowedHash, Home, Outcome, Table, TableDiff};
use crate::routes::RedisMicros;
use crate::sync::changelog::{self, Change, StreamId};
use crate::sync::error::SyncError;
use crate::sync::guard::Verdict;
use crate::sync::redis::{self, HashRead, LogPosition};
use fred::prelude::Client;
use std::sync::{Arc, Weak};
use tracing::{debug, warn};

impl<T: Table, H: Home<T>> FollowedHash<T, H> {
    /// After an `HSCAN` (not atomic): the log entries written since the
    /// scan began, to apply to what it read (on the build's thread, see
    /// [`replayed`]), so that the table is exact as of the last of them,
    /// and that entry's position. No entries and the position unchanged
    /// when there is no log; `LogPosition::Empty` when the log moved past
    /// the scan's start (the scan stands, and the next log event means a
    /// full read).
    pub(super) async fn replay_over_scan(
        &self,
        client: &Client,
        read: &HashRead,
    ) -> Result<(Vec<Change>, LogPosition), SyncError> {
        let from = match read.log {
            LogPosition::At(from) => Some(from),
            // Empty when the scan began, and nothing trimmed since: every
            // entry came after.
            LogPosition::Empty if !self.follower.trimmed() => None,
            _ => return Ok((Vec::new(), read.log)),
        };
        let Some(log) = self.log_key() else {
            return Ok((Vec::new(), read.log));
        };
        match self.read_entries(client, log, from, None).await {
            Ok(Some((changes, Some(last), _))) => Ok((changes, LogPosition::At(last))),
            Err(SyncError::Connection(e)) => Err(SyncError::Connection(e)),
            _ => Ok((Vec::new(), LogPosition::Empty)),
        }
    }

    /// Brings the served table to `to`, the log position of a whole read,
    /// before the read is compared with it: a logged change that the
    /// table had not applied yet (its event still queued, or written
    /// during a scan) is not drift (ARCHITECTURE.md, "A safety net
    /// compares with the truth"). `false` when the served table is not as
    /// of `to` (the log cannot say, or the patch was refused): the
    /// comparison may then find logged changes, which are not drift.
    pub(super) async fn catch_up_to(
        &mut self,
        client: &Client,
        to: LogPosition,
    ) -> Result<bool, SyncError> {
        if self.log == to || self.log_key().is_none() {
            return Ok(true);
        }
        let LogPosition::At(to) = to else {
            return Ok(false);
        };
        let from = match self.log {
            LogPosition::At(from) if from < to => Some(from),
            LogPosition::Empty if !self.follower.trimmed() => None,
            _ => return Ok(false),
        };
        if self.held.is_some() || self.len_at_read.is_none() {
            return Ok(false);
        }
        let log = self.names.log.clone();
        match self.read_entries(client, &log, from, Some(to)).await {
            Ok(Some((changes, last, watermark))) => {
                let position = last.map_or(LogPosition::Empty, LogPosition::At);
                let applied = self.apply_log(changes, position, watermark).await?;
                Ok(applied.is_some() && self.log == LogPosition::At(to))
            }
            Err(SyncError::Connection(e)) => Err(SyncError::Connection(e)),
            _ => Ok(false),
        }
    }

    /// The log entries after `from` (all of them for `None`: the log was
    /// empty at the last full read and has not been trimmed since), up to
    /// `to` (else to the end), with the last id read (`None`: still empty)
    /// and the transaction's watermark. `Ok(None)`: the log cannot be used from there (`from`
    /// trimmed, an entry we do not read, more than we replay).
    pub(super) async fn read_entries(
        &self,
        client: &Client,
        log: &str,
        mut from: Option<StreamId>,
        to: Option<StreamId>,
    ) -> Result<Option<(Vec<Change>, Option<StreamId>, RedisMicros)>, SyncError> {
        let batch = self.tuning.log_read_batch;
        let mut changes = Vec::new();
        loop {
            let start = from.unwrap_or(StreamId { ms: 0, seq: 0 });
            let read = redis::read_log(client, log, start, to, batch + 1).await?;
            let more = read.entries.len() > batch;
            let mut entries = read.entries.into_iter();
            if from.is_some() && entries.next().map(|(id, _)| id) != from {
                debug!(key = %self.names.key, ?from, "the change log no longer holds our last entry");
                return Ok(None);
            }
            for (id, body) in entries {
                match changelog::decode(id, &body.into_array()) {
                    Ok(entry) => changes.push(entry.change),
                    Err(e) => {
                        warn!(key = %self.names.key, error = %e, "reading the whole hash instead");
                        return Ok(None);
                    }
                }
                from = Some(id);
            }
            if changes.len() > self.tuning.log_replay_max {
                return Ok(None);
            }
            if !more {
                return Ok(Some((changes, from, read.watermark)));
            }
        }
    }

    /// `table`, exact as of the log's `position`, with the entries logged
    /// after it, and the position it is then exact as of. As it was when
    /// the log cannot say (the next log read finds out and reads again).
    pub(super) async fn to_log_end(
        &self,
        client: &Client,
        table: T,
        position: LogPosition,
    ) -> Result<(T, LogPosition), SyncError> {
        let from = match position {
            LogPosition::At(from) => Some(from),
            LogPosition::Empty if !self.follower.trimmed() => None,
            _ => return Ok((table, position)),
        };
        let Some(log) = self.log_key() else {
            return Ok((table, position));
        };
        let (changes, last) = match self.read_entries(client, log, from, None).await {
            Ok(Some((changes, Some(last), _))) if !changes.is_empty() => (changes, last),
            Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
            _ => return Ok((table, position)),
        };
        let patched = self
            .sized_work(table.len(), move || match table.patch(&changes) {
                Some((patched, _)) => (patched, LogPosition::At(last)),
                None => (table, position),
            })
            .await?;
        Ok(patched)
    }

    /// Keeps the last `DUMP` payload usable for the next payload diff
    /// after a log patch of the table made from it (see [`LastDump`]), up
    /// to `payload_diff_max_changes` touched fields: a plain write after
    /// logged ones then costs a payload diff, not a compare of every entry.
    pub(super) fn touched_by_log(
        &mut self,
        previous: &Arc<T>,
        installed: &Arc<T>,
        changes: Vec<Change>,
    ) {
        let max = self.tuning.payload_diff_max_changes;
        self.last_dump = self.last_dump.take().and_then(|mut last| {
            if !Weak::ptr_eq(&last.table, &Arc::downgrade(previous))
                || last.touched.len() + changes.len() > max
            {
                return None;
            }
            last.touched.extend(changes.into_iter().map(|c| c.field));
            last.table = Arc::downgrade(installed);
            Some(last)
        });
    }

    /// Reads the log from our position and patches the table. `None`:
    /// the log cannot be used (the caller reads the whole hash).
    pub(super) async fn try_log(&mut self, client: &Client) -> Result<Option<Outcome>, SyncError> {
        let from = match (self.log, self.log_key()) {
            (LogPosition::At(from), Some(_)) => Some(from),
            // Empty at the last full read, and nothing trimmed since (the
            // session saw every trim): every entry came after that read.
            (LogPosition::Empty, Some(_)) if !self.follower.trimmed() => None,
            _ => return Ok(None),
        };
        let log = self.names.log.clone();
        if self.held.is_some() {
            return Ok(None);
        }
        let read = match self.read_entries(client, &log, from, None).await {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(None),
            Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
            Err(e) => {
                self.turn_log_off(format!("XRANGE {log} refused: {e}"));
                return Ok(None);
            }
        };
        let (changes, last, watermark) = read;
        let position = last.map_or(LogPosition::Empty, LogPosition::At);
        self.apply_log(changes, position, watermark).await
    }

    /// Patches the served table with `changes`, the log's entries up to
    /// `position` read at `watermark`. `None`: the table or the guard
    /// refused them (a full read decides).
    pub(super) async fn apply_log(
        &mut self,
        changes: Vec<Change>,
        position: LogPosition,
        watermark: RedisMicros,
    ) -> Result<Option<Outcome>, SyncError> {
        let Some(expected) = self.len_at_read else {
            return Ok(None);
        };
        let outcome = Outcome {
            watermark: Some(watermark),
        };
        if changes.is_empty() {
            // Nothing new (the entries were read with an earlier event):
            // still exact as of this read.
            self.read_done(position, expected);
            return Ok(Some(outcome));
        }
        let previous = self.home.current();
        let entries = changes.len();
        let patched = {
            let previous = previous.clone();
            self.sized_work(previous.len(), move || {
                previous.patch(&changes).map(|patched| (patched, changes))
            })
            .await?
        };
        let Some(((table, diff), changes)) = patched else {
            debug!(key = %self.names.key, "the table refused the patch; reading the whole hash");
            return Ok(None);
        };
        // The hash's length after these changes (what the ping tick's
        // check compares with).
        let len = (expected + diff.added()).saturating_sub(diff.removed());
        if self.guard.judge(previous.len(), diff.removed()) != Verdict::Apply {
            // A full read decides, with the confirmation key.
            return Ok(None);
        }
        let installed = self.home.install(table, &diff, watermark, "log");
        self.touched_by_log(&previous, &installed, changes);
        let metrics = &self.state.metrics;
        metrics.reload_by_log.inc();
        metrics.log_entries.inc_by(entries as u64);
        self.read_done(position, len);
        Ok(Some(outcome))
    }
}
