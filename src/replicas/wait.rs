//! `--wait`: until every live replica serves a write. [`Wait`] is the pure
//! part, fed registry reads and announcements in arrival order; [`Watch`]
//! drives it: it subscribes to the registry's channel *before* the write
//! (so no announcement can slip between the write and the subscription),
//! reads the registry once after it, then is told by announcements, with a
//! slow re-read of the registry as the fallback ([`POLL_INTERVAL`]) that
//! also notices replicas that died.
//!
//! The contract (README "Replicas and `--wait`"): the write is live when
//! every live replica has announced a watermark at or after the write's
//! Redis time (read in the write's own transaction) and holds no removal.
//! A replica that leaves or stops refreshing during the wait is no longer
//! waited for.

use super::{read, registry_key, Announcement, HeldRemoval, Registry, ReplicaStatus};
use crate::routes::RedisMicros;
use fred::prelude::*;
use fred::types::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often a wait re-reads the registry when no announcement tells it
/// anything: a lost message or a replica that died costs at most this
/// much. One small `HGETALL` four times a second is nothing for Redis.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Why a replica is no longer waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// It stopped gracefully (announced, or its entry was deleted).
    Left,
    /// Its entry's deadline passed: it died or lost Redis.
    Expired,
}

#[derive(Debug, Clone)]
struct Tracked {
    status: ReplicaStatus,
    /// Seen in a registry read (not only in an announcement): only then
    /// does its absence from a later read mean it was removed.
    in_registry: bool,
    gone: Option<Gone>,
}

/// Where a wait stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not every live replica has the write yet.
    Waiting,
    /// Every live replica (at least one) has the write.
    Live,
    /// No replica is live: there is nobody to wait for.
    NoReplicas,
}

/// The state of one wait: every replica known, with what it last said.
#[derive(Debug, Clone)]
pub struct Wait {
    write_time: RedisMicros,
    replicas: BTreeMap<String, Tracked>,
    /// Whether a registry read has been applied (before it, "no replica"
    /// means "not read yet").
    registry_read: bool,
}

/// A replica the write is not live on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lagging {
    pub id: String,
    pub watermark: Option<RedisMicros>,
    pub held: Option<HeldRemoval>,
    /// `polling` when the replica has no notifications (it catches up at
    /// its periodic resync only).
    pub notifications: String,
}

impl Wait {
    pub fn new(write_time: RedisMicros) -> Wait {
        Wait {
            write_time,
            replicas: BTreeMap::new(),
            registry_read: false,
        }
    }

    pub fn write_time(&self) -> RedisMicros {
        self.write_time
    }

    /// Merges a registry read: entries refresh what is known (a fresher
    /// announcement is never overwritten by an older read), a deadline
    /// passed means gone, and a replica seen in an earlier read but absent
    /// now was removed. A replica that announced it left stays gone until
    /// it announces itself again (this read may predate its removal).
    pub fn on_registry(&mut self, registry: &Registry) {
        self.registry_read = true;
        for entry in &registry.entries {
            match self.replicas.get_mut(&entry.id) {
                Some(known) => {
                    merge(&mut known.status, entry);
                    known.in_registry = true;
                }
                None => {
                    self.replicas.insert(
                        entry.id.clone(),
                        Tracked {
                            status: entry.clone(),
                            in_registry: true,
                            gone: None,
                        },
                    );
                }
            }
        }
        for (id, known) in &mut self.replicas {
            if known.gone == Some(Gone::Left) {
                continue;
            }
            let present = registry.entries.iter().any(|e| &e.id == id);
            if !present && known.in_registry {
                known.gone = Some(Gone::Left);
            } else if !known.status.is_live(registry.now) {
                known.gone = Some(Gone::Expired);
            } else {
                known.gone = None;
            }
        }
    }

    /// Takes one announcement from the channel.
    pub fn on_announcement(&mut self, announcement: Announcement) {
        match announcement {
            Announcement::Status(status) => match self.replicas.get_mut(&status.id) {
                Some(known) => {
                    merge(&mut known.status, &status);
                    known.gone = None;
                }
                None => {
                    self.replicas.insert(
                        status.id.clone(),
                        Tracked {
                            status,
                            in_registry: false,
                            gone: None,
                        },
                    );
                }
            },
            Announcement::Left { id } => {
                if let Some(known) = self.replicas.get_mut(&id) {
                    known.gone = Some(Gone::Left);
                }
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &ReplicaStatus> {
        self.replicas
            .values()
            .filter(|t| t.gone.is_none())
            .map(|t| &t.status)
    }

    pub fn progress(&self) -> Progress {
        let mut live = self.live().peekable();
        if live.peek().is_none() {
            return if self.registry_read {
                Progress::NoReplicas
            } else {
                Progress::Waiting
            };
        }
        if live.all(|r| r.has_caught_up_with(self.write_time)) {
            Progress::Live
        } else {
            Progress::Waiting
        }
    }

    /// Ids of the live replicas that have the write.
    pub fn caught_up(&self) -> Vec<String> {
        self.live()
            .filter(|r| r.has_caught_up_with(self.write_time))
            .map(|r| r.id.clone())
            .collect()
    }

    /// The live replicas that do not have the write yet.
    pub fn lagging(&self) -> Vec<Lagging> {
        self.live()
            .filter(|r| !r.has_caught_up_with(self.write_time))
            .map(|r| Lagging {
                id: r.id.clone(),
                watermark: r.watermark,
                held: r.held,
                notifications: r.notifications.clone(),
            })
            .collect()
    }

    /// Replicas no longer waited for, and why.
    pub fn gone(&self) -> Vec<(String, Gone)> {
        self.replicas
            .iter()
            .filter_map(|(id, t)| t.gone.map(|g| (id.clone(), g)))
            .collect()
    }
}

/// Keeps the fresher of two views of one replica (the later deadline),
/// and the highest watermark either has seen.
fn merge(known: &mut ReplicaStatus, seen: &ReplicaStatus) {
    let watermark = known.watermark.max(seen.watermark);
    if seen.expires_us >= known.expires_us {
        *known = seen.clone();
    }
    known.watermark = watermark;
}

/// How a finished wait went.
#[derive(Debug, Clone)]
pub struct WaitReport {
    pub progress: Progress,
    /// From the end of the write to the end of the wait.
    pub took: Duration,
    pub caught_up: Vec<String>,
    pub lagging: Vec<Lagging>,
    pub gone: Vec<(String, Gone)>,
}

/// A subscription to the registry's channel, made before a write.
pub struct Watch {
    subscriber: Client,
    messages: tokio::sync::broadcast::Receiver<Message>,
    routes_key: String,
}

impl Watch {
    /// Subscribes `subscriber` (a connection of its own: a subscribed RESP2
    /// connection runs nothing else) to the registry's channel and returns
    /// once Redis has processed the subscription.
    pub async fn subscribe(subscriber: Client, routes_key: &str) -> Result<Watch, Error> {
        let messages = subscriber.message_rx();
        subscriber.subscribe(registry_key(routes_key)).await?;
        // fred resolves `subscribe` once the command is written; replies
        // come back in order, so a PING's reply means the SUBSCRIBE was run.
        let _: Value = subscriber.ping(None).await?;
        Ok(Watch {
            subscriber,
            messages,
            routes_key: routes_key.to_owned(),
        })
    }

    /// Waits until every live replica serves the write made at Redis time
    /// `write_time`, until none is live, or until `timeout`. `client` reads
    /// the registry (the subscriber cannot).
    pub async fn wait(
        mut self,
        client: &Client,
        write_time: RedisMicros,
        timeout: Duration,
    ) -> Result<WaitReport, Error> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let mut wait = Wait::new(write_time);
        let registry = read(client, &self.routes_key).await?;
        wait.on_registry(&registry);
        let mut poll = tokio::time::interval_at(started + POLL_INTERVAL, POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut subscribed = true;
        let progress = loop {
            match wait.progress() {
                Progress::Waiting => {}
                done => break done,
            }
            tokio::select! {
                message = self.messages.recv(), if subscribed => match message {
                    Ok(message) => {
                        if let Some(announcement) = parse_announcement(&message) {
                            wait.on_announcement(announcement);
                        }
                    }
                    // Missed announcements: the registry has what they said.
                    Err(RecvError::Lagged(_)) => wait.on_registry(&read(client, &self.routes_key).await?),
                    // The subscription is gone: the poll carries on alone.
                    Err(RecvError::Closed) => subscribed = false,
                },
                _ = poll.tick() => wait.on_registry(&read(client, &self.routes_key).await?),
                _ = tokio::time::sleep_until(deadline) => break Progress::Waiting,
            }
        };
        let report = WaitReport {
            progress,
            took: started.elapsed(),
            caught_up: wait.caught_up(),
            lagging: wait.lagging(),
            gone: wait.gone(),
        };
        let subscriber = self.subscriber;
        tokio::spawn(async move {
            let _ = subscriber.quit().await;
        });
        Ok(report)
    }
}

fn parse_announcement(message: &Message) -> Option<Announcement> {
    let text = message.value.as_str()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::super::tests::status;
    use super::*;

    const NOW: u64 = 1_000_000_000;
    const WRITE: u64 = NOW - 500;

    fn registry(entries: &[ReplicaStatus]) -> Registry {
        Registry {
            now: NOW,
            entries: entries.to_vec(),
            unreadable: vec![],
        }
    }

    fn live(id: &str, watermark: u64) -> ReplicaStatus {
        status(id, Some(watermark), NOW + 3_000_000)
    }

    #[test]
    fn done_when_every_live_replica_announces_the_write() {
        let mut wait = Wait::new(WRITE);
        assert_eq!(wait.progress(), Progress::Waiting, "nothing read yet");
        wait.on_registry(&registry(&[live("a", WRITE - 1), live("b", WRITE - 1)]));
        assert_eq!(wait.progress(), Progress::Waiting);
        wait.on_announcement(Announcement::Status(live("a", WRITE)));
        assert_eq!(wait.progress(), Progress::Waiting);
        assert_eq!(wait.caught_up(), ["a"]);
        assert_eq!(wait.lagging()[0].id, "b");
        wait.on_announcement(Announcement::Status(live("b", WRITE + 7)));
        assert_eq!(wait.progress(), Progress::Live);
    }

    #[test]
    fn replicas_already_past_the_write_need_no_announcement() {
        let mut wait = Wait::new(WRITE);
        wait.on_registry(&registry(&[live("a", WRITE + 1)]));
        assert_eq!(wait.progress(), Progress::Live);
    }

    #[test]
    fn no_live_replica_is_its_own_outcome() {
        let mut wait = Wait::new(WRITE);
        wait.on_registry(&registry(&[]));
        assert_eq!(wait.progress(), Progress::NoReplicas);
        let mut wait = Wait::new(WRITE);
        wait.on_registry(&registry(&[status("dead", Some(WRITE + 1), NOW)]));
        assert_eq!(wait.progress(), Progress::NoReplicas);
        assert_eq!(wait.gone(), [("dead".to_owned(), Gone::Expired)]);
    }

    #[test]
    fn a_replica_that_leaves_is_not_waited_for() {
        let mut wait = Wait::new(WRITE);
        wait.on_registry(&registry(&[live("a", WRITE), live("b", WRITE - 1)]));
        wait.on_announcement(Announcement::Left { id: "b".into() });
        assert_eq!(wait.progress(), Progress::Live);
        // A registry read made before its removal does not bring it back.
        wait.on_registry(&registry(&[live("a", WRITE), live("b", WRITE - 1)]));
        assert_eq!(wait.progress(), Progress::Live);
        assert_eq!(wait.gone(), [("b".to_owned(), Gone::Left)]);
        // Announcing itself again does (a restart with the same id).
        wait.on_announcement(Announcement::Status(live("b", WRITE - 1)));
        assert_eq!(wait.progress(), Progress::Waiting);
    }

    #[test]
    fn a_replica_removed_from_the_registry_is_gone_but_not_one_only_announced() {
        let mut wait = Wait::new(WRITE);
        wait.on_registry(&registry(&[live("a", WRITE), live("b", WRITE - 1)]));
        // `c` announced itself; a read that predates its HSET lacks it.
        wait.on_announcement(Announcement::Status(live("c", WRITE)));
        wait.on_registry(&registry(&[live("a", WRITE)]));
        assert_eq!(wait.gone(), [("b".to_owned(), Gone::Left)]);
        assert_eq!(wait.caught_up(), ["a", "c"]);
        assert_eq!(wait.progress(), Progress::Live);
    }

    #[test]
    fn a_replica_that_stops_refreshing_expires_and_can_come_back() {
        let mut wait = Wait::new(WRITE);
        wait.on_registry(&registry(&[
            live("a", WRITE),
            status("b", Some(1), NOW + 10),
        ]));
        assert_eq!(wait.progress(), Progress::Waiting);
        let mut later = registry(&[live("a", WRITE), status("b", Some(1), NOW + 10)]);
        later.now = NOW + 10;
        wait.on_registry(&later);
        assert_eq!(wait.progress(), Progress::Live);
        assert_eq!(wait.gone(), [("b".to_owned(), Gone::Expired)]);
        wait.on_announcement(Announcement::Status(live("b", WRITE - 1)));
        assert_eq!(wait.progress(), Progress::Waiting);
    }

    #[test]
    fn a_holding_replica_is_lagging_with_its_numbers() {
        let mut wait = Wait::new(WRITE);
        let mut held = live("a", WRITE + 1);
        held.held = Some(HeldRemoval {
            current: 100,
            next: 0,
        });
        wait.on_registry(&registry(&[held]));
        assert_eq!(wait.progress(), Progress::Waiting);
        assert_eq!(
            wait.lagging()[0].held,
            Some(HeldRemoval {
                current: 100,
                next: 0
            })
        );
    }

    #[test]
    fn an_older_view_never_replaces_a_fresher_one() {
        let mut wait = Wait::new(WRITE);
        // The announcement (fresher deadline, the write) arrives before a
        // registry read made earlier.
        wait.on_announcement(Announcement::Status(status("a", Some(WRITE), NOW + 5)));
        wait.on_registry(&registry(&[status("a", Some(WRITE - 9), NOW + 4)]));
        assert_eq!(wait.progress(), Progress::Live);
    }
}
