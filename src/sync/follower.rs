//! What a follower waits for in shared reads (see `shared`): which of the
//! keyspace events it received a reader's delta covers, and when to stop
//! waiting and read the hash itself. Pure bookkeeping, fed by the sync loop
//! in the order things arrive; no I/O.
//!
//! Keyspace events and read markers arrive on one ordered queue, so an
//! event received before marker M happened before M's read: M's delta
//! reflects it. An event after the newest marker is *uncovered* until the
//! next marker. The follower is done waiting when a delta for a marker at
//! or after the one covering its newest event is applied (or its content is
//! known to equal that read's, or to be newer); anything else (the deadline
//! passes, the delta does not fit its table, the reader says "read
//! yourselves", deltas were lost) means: read the hash yourself.

use super::shared::ReadId;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Markers remembered, to place a delta from a second reader (two replicas
/// may briefly both hold the lease) in the event stream.
const MARKERS_KEPT: usize = 32;

/// Why a follower reads the hash itself instead of applying a delta: the
/// `reason` label of `switchyard_shared_own_reads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnRead {
    /// No delta for its events in time (the reader is slow, gone, or
    /// cannot publish).
    Deadline,
    /// The delta for its events starts from content other than its own, or
    /// needs the full build (an invalid value, a field not in normal form).
    Mismatch,
    /// The reader had no delta for that read.
    ReadYourselves,
    /// Change messages were dropped (the receiver lagged).
    Lost,
}

impl OwnRead {
    pub const ALL: [OwnRead; 4] = [
        OwnRead::Deadline,
        OwnRead::Mismatch,
        OwnRead::ReadYourselves,
        OwnRead::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OwnRead::Deadline => "deadline",
            OwnRead::Mismatch => "mismatch",
            OwnRead::ReadYourselves => "read_yourselves",
            OwnRead::Lost => "lost",
        }
    }
}

/// What became of a delta the follower was handed (the sync loop decides,
/// from its table's content identity and watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, or the table already holds the content it gives: the table
    /// now reflects that read.
    Applied,
    /// The read is older than the table's (the follower read the hash
    /// itself since): the table reflects more than the delta would give.
    Stale,
    /// Not for this table.
    Mismatch,
}

#[derive(Debug)]
pub struct Follower {
    /// Recent markers with their arrival number, oldest first.
    markers: VecDeque<(ReadId, u64)>,
    arrivals: u64,
    /// An event arrived after the newest marker.
    uncovered: bool,
    /// The marker that came first after the newest covered event, with its
    /// arrival number: a delta for it or a later read ends the wait (for
    /// the events before it).
    awaited: Option<(ReadId, u64)>,
    deadline: Option<Instant>,
    /// How long to wait for progress before reading.
    wait: Duration,
}

impl Follower {
    pub fn new(wait: Duration) -> Follower {
        Follower {
            markers: VecDeque::with_capacity(MARKERS_KEPT),
            arrivals: 0,
            uncovered: false,
            awaited: None,
            deadline: None,
            wait,
        }
    }

    pub fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    /// Events received that no applied read is known to reflect.
    pub fn is_waiting(&self) -> bool {
        self.uncovered || self.awaited.is_some()
    }

    /// When to give up waiting and read.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A keyspace event on the routes key.
    pub fn event(&mut self, now: Instant) {
        self.uncovered = true;
        self.deadline.get_or_insert(now + self.wait);
    }

    /// A read marker, in its place among the events.
    pub fn marker(&mut self, read: ReadId) {
        self.arrivals += 1;
        if self.markers.len() == MARKERS_KEPT {
            self.markers.pop_front();
        }
        self.markers.push_back((read, self.arrivals));
        if self.uncovered {
            self.uncovered = false;
            self.awaited = Some((read, self.arrivals));
        }
    }

    /// Whether `read` was taken after every covered event: it is the awaited
    /// read, a later one of the same reader (a reader's reads are in
    /// order), or one whose marker arrived after the awaited marker.
    fn covers(&self, read: ReadId) -> bool {
        let Some((awaited, arrival)) = self.awaited else {
            return false;
        };
        if read.reader == awaited.reader {
            return read.seq >= awaited.seq;
        }
        self.markers
            .iter()
            .any(|(id, at)| *id == read && *at >= arrival)
    }

    /// The covered events are reflected now.
    fn satisfied(&mut self, now: Instant) {
        self.awaited = None;
        self.progress(now);
    }

    /// Some read was applied: still waiting (for later events) means a
    /// fresh deadline, not an own read because earlier ones took time.
    fn progress(&mut self, now: Instant) {
        self.deadline = self.is_waiting().then(|| now + self.wait);
    }

    /// A delta for `read` was handed to the table with `outcome`; `Some`
    /// when the follower should now read the hash itself.
    pub fn delta(&mut self, read: ReadId, outcome: Outcome, now: Instant) -> Option<OwnRead> {
        let covers = self.covers(read);
        match outcome {
            Outcome::Applied | Outcome::Stale if covers => self.satisfied(now),
            Outcome::Applied if self.is_waiting() => self.progress(now),
            Outcome::Applied | Outcome::Stale => {}
            Outcome::Mismatch if covers => return Some(OwnRead::Mismatch),
            // A delta for an older read, or another reader's: not the one
            // awaited; the deadline still runs.
            Outcome::Mismatch => {}
        }
        None
    }

    /// The reader has no delta for `read`.
    pub fn read_yourselves(&mut self, read: ReadId) -> Option<OwnRead> {
        self.covers(read).then_some(OwnRead::ReadYourselves)
    }

    /// Change messages were dropped.
    pub fn lost(&mut self) -> Option<OwnRead> {
        self.is_waiting().then_some(OwnRead::Lost)
    }

    /// The deadline passed.
    pub fn expired(&mut self, now: Instant) -> Option<OwnRead> {
        match self.deadline {
            Some(deadline) if deadline <= now && self.is_waiting() => Some(OwnRead::Deadline),
            Some(deadline) if deadline <= now => {
                self.deadline = None;
                None
            }
            _ => None,
        }
    }

    /// An own read is starting: it reflects every event received so far.
    pub fn reset(&mut self) {
        self.uncovered = false;
        self.awaited = None;
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(100);

    fn read(reader: u64, seq: u64) -> ReadId {
        ReadId { reader, seq }
    }

    #[test]
    fn an_event_is_done_with_the_delta_of_the_marker_after_it() {
        let now = Instant::now();
        let mut f = Follower::new(WAIT);
        assert!(!f.is_waiting());
        // A marker before any event covers nothing.
        f.marker(read(1, 1));
        assert_eq!(f.delta(read(1, 1), Outcome::Applied, now), None);
        assert!(!f.is_waiting() && f.deadline().is_none());

        f.event(now);
        assert_eq!(f.deadline(), Some(now + WAIT));
        // The delta of a read taken before the event does not end the wait.
        assert_eq!(f.delta(read(1, 1), Outcome::Applied, now), None);
        assert!(f.is_waiting());
        f.marker(read(1, 2));
        f.event(now); // after marker 2: needs marker 3
        f.marker(read(1, 3));
        let later = now + Duration::from_millis(30);
        assert_eq!(f.delta(read(1, 2), Outcome::Applied, later), None);
        assert!(f.is_waiting(), "marker 3 covers the second event");
        assert_eq!(f.deadline(), Some(later + WAIT), "progress renews it");
        assert_eq!(f.delta(read(1, 3), Outcome::Applied, later), None);
        assert!(!f.is_waiting());
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn a_mismatch_or_read_yourselves_for_the_awaited_read_means_read_now() {
        let now = Instant::now();
        let mut f = Follower::new(WAIT);
        f.event(now);
        f.marker(read(1, 5));
        // An older read of the same reader, or another reader's earlier
        // one, that does not fit: not ours to act on.
        assert_eq!(f.delta(read(1, 4), Outcome::Mismatch, now), None);
        assert_eq!(f.read_yourselves(read(1, 4)), None);
        assert_eq!(f.delta(read(2, 9), Outcome::Mismatch, now), None);
        assert_eq!(
            f.delta(read(1, 5), Outcome::Mismatch, now),
            Some(OwnRead::Mismatch)
        );
        assert_eq!(f.read_yourselves(read(1, 5)), Some(OwnRead::ReadYourselves));
        // A later read of the same reader covers it too: the awaited delta
        // was lost on the way.
        assert_eq!(
            f.delta(read(1, 6), Outcome::Mismatch, now),
            Some(OwnRead::Mismatch)
        );
        f.reset();
        assert!(!f.is_waiting());
        assert_eq!(f.delta(read(1, 5), Outcome::Mismatch, now), None);
    }

    #[test]
    fn a_table_newer_than_the_awaited_read_ends_the_wait() {
        let now = Instant::now();
        let mut f = Follower::new(WAIT);
        f.event(now);
        f.marker(read(1, 1));
        assert_eq!(f.delta(read(1, 1), Outcome::Stale, now), None);
        assert!(!f.is_waiting());
    }

    #[test]
    fn a_second_reader_is_placed_by_its_markers() {
        let now = Instant::now();
        let mut f = Follower::new(WAIT);
        f.marker(read(2, 1)); // B's read, before the event
        f.event(now);
        f.marker(read(1, 1)); // A's, after it: awaited
        f.marker(read(2, 2)); // B's, after it too
        assert_eq!(f.delta(read(2, 1), Outcome::Applied, now), None);
        assert!(f.is_waiting(), "B's first read came before the event");
        assert_eq!(f.delta(read(2, 2), Outcome::Applied, now), None);
        assert!(!f.is_waiting(), "B's second read came after it");
        // A delta whose marker was never seen (another reader's) covers
        // nothing.
        f.event(now);
        f.marker(read(1, 2));
        assert_eq!(f.delta(read(3, 1), Outcome::Applied, now), None);
        assert!(f.is_waiting());
    }

    #[test]
    fn the_deadline_and_lost_messages_mean_read_now_only_while_waiting() {
        let now = Instant::now();
        let mut f = Follower::new(WAIT);
        assert_eq!(f.lost(), None);
        assert_eq!(f.expired(now + WAIT * 10), None);
        f.event(now);
        assert_eq!(f.expired(now), None);
        assert_eq!(f.expired(now + WAIT), Some(OwnRead::Deadline));
        assert_eq!(f.lost(), Some(OwnRead::Lost));
        // More events do not push the deadline back.
        f.event(now + WAIT / 2);
        assert_eq!(f.deadline(), Some(now + WAIT));
        f.reset();
        assert_eq!(f.deadline(), None);
        assert_eq!(f.expired(now + WAIT * 10), None);
    }

    #[test]
    fn old_markers_are_forgotten() {
        let now = Instant::now();
        let mut f = Follower::new(WAIT);
        f.event(now);
        f.marker(read(1, 1));
        for seq in 0..MARKERS_KEPT as u64 {
            f.marker(read(2, seq));
        }
        // Reader 1's own later reads still cover (by sequence).
        assert_eq!(f.delta(read(1, 2), Outcome::Applied, now), None);
        assert!(!f.is_waiting());
    }
}
