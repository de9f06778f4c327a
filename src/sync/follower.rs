//! What one followed hash's keyspace events ask for: a pure state
//! machine, fed the events of the hash, its change log and its
//! removal-confirmation key in arrival order, answering what to read
//! next. No I/O (ARCHITECTURE.md, "The change log").
//!
//! The rule it implements: Redis publishes the events of one `EXEC` one
//! after another, in command order, and nothing comes between them. A
//! logged change is `HSET`/`HDEL` then `XADD`, so its hash event is
//! followed at once by the log's `xadd` event: that hash event is
//! *covered* by the log, and the entries are read from the log. A hash
//! event followed by anything else (or by nothing, once a barrier shows
//! that nothing more is on its way) was a write the log does not
//! describe: only a full read tells what it did. Events of other keys
//! between the two do not matter (several followed hashes share one
//! subscriber connection).
//!
//! One gap the order alone cannot close: a logged `HDEL` of a field the
//! hash did not have sends no hash event, so its `xadd` would cover the
//! hash event before it, which may be another client's plain write. The
//! table catches it: patching a deletion of a field it does not hold is
//! refused (`Table::patch` returns `None`), and a full read follows.

/// A keyspace event, as it concerns one followed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `hset` / `hdel` on the hash: a write whose log entry may follow.
    HashWrite,
    /// Any other event on the hash (`del`, `rename_to`, `expired`,
    /// `hincrby`, `restore`...): only a full read tells what happened.
    HashOther,
    /// `xadd` on the log: entries to read.
    LogAppend,
    /// `xtrim` (what an `XADD ... MAXLEN` that trimmed also sends): the
    /// entries past ours are untouched (a log read checks that its first
    /// entry is still there), but a log that was empty at the last full
    /// read can no longer be read from its start.
    LogTrim,
    /// Consumer-group bookkeeping: the entries are untouched.
    LogNoise,
    /// Any other event on the log (`del`, `xdel`, `rename_from`,
    /// `xsetid`...): the entries a log read starts from may be gone.
    LogOther,
    /// The removal-confirmation key was written (see `guard`).
    Accept,
}

/// Which key of a followed hash an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Hash,
    Log,
    Accept,
}

impl Event {
    /// Classifies the operation of a keyspace event on one of the keys.
    pub fn classify(role: KeyRole, operation: &str) -> Event {
        match role {
            KeyRole::Hash => match operation {
                "hset" | "hdel" => Event::HashWrite,
                _ => Event::HashOther,
            },
            KeyRole::Log => match operation {
                "xadd" => Event::LogAppend,
                "xtrim" => Event::LogTrim,
                op if op.starts_with("xgroup") || op == "xclaim" || op == "xautoclaim" => {
                    Event::LogNoise
                }
                _ => Event::LogOther,
            },
            KeyRole::Accept => Event::Accept,
        }
    }
}

/// Why a full read is due: the `reason` it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullRead {
    /// A write the change log does not describe (a plain `HSET`, `DEL`,
    /// `RENAME`...), or a log that cannot be trusted past our position.
    Unlogged,
    /// Events were dropped (the receiver lagged).
    Lagged,
    /// The removal-confirmation key was written while a removal is held.
    Accepted,
}

/// What to do next for the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Read the log from the last entry seen and patch those fields.
    ReadLog,
    /// Read the whole hash.
    FullRead(FullRead),
    /// A hash event may still be followed by its log event: send a
    /// barrier (a `PING` on the subscriber) and report it with
    /// [`Follower::barrier_passed`].
    Barrier,
}

#[derive(Debug, Clone)]
pub struct Follower {
    /// The log is usable this session (its events arrive, and reading it
    /// is allowed): without it every hash write means a full read.
    log_enabled: bool,
    /// The table serves a held removal (see `guard`): every change
    /// means a full read (the table is not the hash, so a patch would
    /// not be exact), and a confirmation is worth one.
    held: bool,
    /// A hash write whose log event has not come (yet).
    open: bool,
    /// Log entries to read.
    log_due: bool,
    full: Option<FullRead>,
    /// The log was trimmed since the last full read.
    trimmed: bool,
}

impl Follower {
    pub fn new(log_enabled: bool) -> Follower {
        Follower {
            log_enabled,
            held: false,
            open: false,
            log_due: false,
            full: None,
            trimmed: false,
        }
    }

    pub fn set_log_enabled(&mut self, enabled: bool) {
        self.log_enabled = enabled;
    }

    pub fn log_enabled(&self) -> bool {
        self.log_enabled
    }

    pub fn set_held(&mut self, held: bool) {
        self.held = held;
    }

    /// An event, in arrival order.
    pub fn event(&mut self, event: Event) {
        match event {
            Event::HashWrite => {
                if self.open || !self.log_enabled {
                    // The write before it had no log event right after it.
                    self.full_read(FullRead::Unlogged);
                }
                self.open = self.log_enabled;
            }
            Event::HashOther => {
                self.open = false;
                self.full_read(FullRead::Unlogged);
            }
            Event::LogAppend => {
                self.open = false;
                self.log_due = true;
            }
            Event::LogTrim => self.trimmed = true,
            Event::LogNoise => {}
            Event::LogOther => self.full_read(FullRead::Unlogged),
            Event::Accept => {
                if self.held {
                    self.full_read(FullRead::Accepted);
                }
            }
        }
    }

    /// Events were dropped before they reached us.
    pub fn lagged(&mut self) {
        self.open = false;
        self.full_read(FullRead::Lagged);
    }

    fn full_read(&mut self, why: FullRead) {
        self.full.get_or_insert(why);
    }

    /// A barrier sent after the events received so far has passed (and
    /// the events that arrived before it have been fed): a hash write
    /// still open had no log event.
    pub fn barrier_passed(&mut self) {
        if std::mem::take(&mut self.open) {
            self.full_read(FullRead::Unlogged);
        }
    }

    /// The next thing to do, given every event received so far. A full
    /// read covers everything before it; a log read covers the log events.
    pub fn next_action(&mut self) -> Action {
        if let Some(why) = self.full.take() {
            self.open = false;
            self.log_due = false;
            return Action::FullRead(why);
        }
        if std::mem::take(&mut self.log_due) {
            if self.held || !self.log_enabled {
                self.open = false;
                return Action::FullRead(FullRead::Unlogged);
            }
            return Action::ReadLog;
        }
        if self.open {
            return Action::Barrier;
        }
        Action::Nothing
    }

    /// Nothing is pending: every event received so far is reflected in
    /// the table (the watermark may be claimed).
    pub fn is_idle(&self) -> bool {
        !self.open && !self.log_due && self.full.is_none()
    }

    /// A full read was made for other reasons (session start, periodic):
    /// it covers what was pending.
    pub fn covered(&mut self) {
        self.open = false;
        self.log_due = false;
        self.full = None;
        self.trimmed = false;
    }

    /// Whether the log was trimmed since the last full read: a log that
    /// was empty then may have lost entries we never saw.
    pub fn trimmed(&self) -> bool {
        self.trimmed
    }

    /// A log read found the log unusable from our position (trimmed,
    /// unreadable entry, a patch the table refused): read the hash.
    pub fn log_failed(&mut self) {
        self.full_read(FullRead::Unlogged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event::*;

    fn feed(events: &[Event]) -> Follower {
        let mut f = Follower::new(true);
        for e in events {
            f.event(*e);
        }
        f
    }

    #[test]
    fn events_are_classified_by_key_and_operation() {
        assert_eq!(Event::classify(KeyRole::Hash, "hset"), HashWrite);
        assert_eq!(Event::classify(KeyRole::Hash, "hdel"), HashWrite);
        for op in [
            "del",
            "rename_to",
            "rename_from",
            "expired",
            "hincrby",
            "restore",
        ] {
            assert_eq!(Event::classify(KeyRole::Hash, op), HashOther, "{op}");
        }
        assert_eq!(Event::classify(KeyRole::Log, "xadd"), LogAppend);
        assert_eq!(Event::classify(KeyRole::Log, "xtrim"), LogTrim);
        assert_eq!(Event::classify(KeyRole::Log, "xgroup-create"), LogNoise);
        for op in ["del", "xdel", "rename_from", "xsetid", "expired"] {
            assert_eq!(Event::classify(KeyRole::Log, op), LogOther, "{op}");
        }
        assert_eq!(Event::classify(KeyRole::Accept, "set"), Accept);
    }

    #[test]
    fn a_logged_change_is_read_from_the_log() {
        let mut f = feed(&[HashWrite, LogAppend, LogTrim]);
        assert_eq!(f.next_action(), Action::ReadLog);
        assert!(f.trimmed());
        assert!(f.is_idle());
        assert_eq!(f.next_action(), Action::Nothing);
        // A burst of logged changes: one log read.
        let mut f = feed(&[
            HashWrite, LogAppend, HashWrite, LogAppend, HashWrite, LogAppend,
        ]);
        assert_eq!(f.next_action(), Action::ReadLog);
        assert_eq!(f.next_action(), Action::Nothing);
    }

    #[test]
    fn a_plain_write_waits_for_a_barrier_then_reads_the_hash() {
        let mut f = feed(&[HashWrite]);
        assert_eq!(f.next_action(), Action::Barrier);
        assert!(!f.is_idle());
        // Its log event came before the barrier answered: a logged change.
        f.event(LogAppend);
        f.barrier_passed();
        assert_eq!(f.next_action(), Action::ReadLog);
        // It did not: a plain write.
        let mut f = feed(&[HashWrite]);
        f.barrier_passed();
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Unlogged));
        assert!(f.is_idle());
    }

    #[test]
    fn a_plain_write_before_a_logged_one_is_not_covered_by_its_entry() {
        // HSET (plain), then a logged HSET: hash, hash, xadd.
        let mut f = feed(&[HashWrite, HashWrite, LogAppend]);
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Unlogged));
        assert_eq!(
            f.next_action(),
            Action::Nothing,
            "the full read covers the entry"
        );
        // A logged change, then a plain one still open: the log first,
        // then the barrier for the other.
        let mut f = feed(&[HashWrite, LogAppend, HashWrite]);
        assert_eq!(f.next_action(), Action::ReadLog);
        assert_eq!(f.next_action(), Action::Barrier);
        f.barrier_passed();
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Unlogged));
    }

    #[test]
    fn other_changes_to_either_key_mean_a_full_read() {
        for events in [
            &[HashOther][..],
            &[HashWrite, LogAppend, HashOther],
            &[LogOther],
            &[HashWrite, HashOther, LogAppend],
        ] {
            let mut f = feed(events);
            assert_eq!(
                f.next_action(),
                Action::FullRead(FullRead::Unlogged),
                "{events:?}"
            );
            assert_eq!(f.next_action(), Action::Nothing, "{events:?}");
        }
        let mut f = feed(&[HashWrite, LogAppend]);
        f.lagged();
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Lagged));
    }

    #[test]
    fn without_the_log_every_write_is_a_full_read() {
        let mut f = Follower::new(false);
        f.event(HashWrite);
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Unlogged));
        f.event(LogAppend);
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Unlogged));
        f.set_log_enabled(true);
        f.event(HashWrite);
        f.event(LogAppend);
        assert_eq!(f.next_action(), Action::ReadLog);
    }

    #[test]
    fn a_held_table_reads_the_hash_and_listens_for_the_confirmation() {
        let mut f = feed(&[Accept]);
        assert_eq!(
            f.next_action(),
            Action::Nothing,
            "nothing held: nothing to confirm"
        );
        f.set_held(true);
        f.event(Accept);
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Accepted));
        f.event(HashWrite);
        f.event(LogAppend);
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Unlogged));
    }

    #[test]
    fn a_covering_read_clears_what_was_pending() {
        let mut f = feed(&[HashWrite, HashOther, LogAppend, LogTrim]);
        f.covered();
        assert!(!f.trimmed());
        assert!(f.is_idle());
        assert_eq!(f.next_action(), Action::Nothing);
        let mut f = feed(&[HashWrite, LogAppend]);
        f.log_failed();
        assert_eq!(f.next_action(), Action::FullRead(FullRead::Unlogged));
    }
}
