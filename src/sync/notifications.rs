//! Keyspace notifications: turning them on at the start of every session
//! (and on the periodic tick, in case someone turned them off), and the
//! mode the session then runs in (ARCHITECTURE.md, "src/sync"). The proxy
//! merges the flags it needs into the server's value, never removing one
//! someone else set; where `CONFIG` is refused it works with what the
//! server already has, and says what an operator must grant or set.

use super::error::SyncError;
use super::redis;
use crate::state::NotificationMode;
use fred::prelude::Client;
use std::time::Duration;
use tracing::{error, info, warn};

/// How the session learns of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifications {
    pub mode: NotificationMode,
    /// Change-log appends send events (`t`), as far as the proxy can tell:
    /// without them every logged change is read as a plain one.
    pub log_events: bool,
}

/// Turns notifications on (merging flags), or finds out what the server
/// has when `CONFIG` is refused. Errs only when the connection is lost.
/// `resync_interval` is named in the error a refusal logs.
pub async fn turn_on(
    client: &Client,
    resync_interval: Duration,
) -> Result<Notifications, SyncError> {
    let flags = match redis::get_notify_flags(client).await {
        Ok(flags) => flags,
        Err(SyncError::Connection(e)) => return Err(SyncError::Connection(e)),
        Err(e) => return Ok(flags_unreadable(&e)),
    };
    let Some(merged) = redis::merge_notify_flags(&flags) else {
        return Ok(KEYSPACE);
    };
    match redis::set_notify_flags(client, &merged).await {
        Ok(()) => {
            info!(flags = %merged, "turned keyspace notifications on (CONFIG SET notify-keyspace-events)");
            Ok(KEYSPACE)
        }
        Err(SyncError::Connection(e)) => Err(SyncError::Connection(e)),
        Err(e) => Ok(set_refused(&flags, &e, resync_interval)),
    }
}

const KEYSPACE: Notifications = Notifications {
    mode: NotificationMode::Keyspace,
    log_events: true,
};

/// `CONFIG GET` refused: the setting cannot be seen, the events will tell
/// (the first one confirms keyspace mode).
fn flags_unreadable(e: &SyncError) -> Notifications {
    let reason = format!("CONFIG GET refused: {e}");
    warn!(%reason, "cannot read notify-keyspace-events; keyspace mode once an event arrives \
          (set it to include Kghtxe on the server, or grant +config|get)");
    Notifications {
        mode: NotificationMode::Unconfirmed { reason },
        log_events: true,
    }
}

/// `CONFIG SET` refused while the server's `flags` lack some of ours:
/// keyspace mode if hash events arrive anyway, else polling (changes only
/// with the periodic resync).
fn set_refused(flags: &str, e: &SyncError, resync_interval: Duration) -> Notifications {
    let cover = redis::flags_cover(flags);
    if cover.hash {
        if !cover.log {
            warn!(%flags, "notify-keyspace-events lacks `t`: logged changes are read as plain \
                  ones (a full read each); add `t` on the server");
        }
        return Notifications {
            mode: NotificationMode::Keyspace,
            log_events: cover.log,
        };
    }
    error!(
        error = %e, %flags, ?resync_interval,
        "CANNOT TURN ON KEYSPACE NOTIFICATIONS (CONFIG SET refused). Changes will only be \
         picked up by the periodic resync. Grant +config|set to this user or set \
         notify-keyspace-events to include Kghtxe on the server."
    );
    Notifications {
        mode: NotificationMode::Polling {
            reason: format!("notify-keyspace-events is {flags:?} and CONFIG SET was refused: {e}"),
        },
        log_events: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal() -> SyncError {
        SyncError::Refused("NOPERM".into())
    }

    #[test]
    fn a_refused_set_keeps_keyspace_mode_when_the_server_sends_hash_events() {
        let every = set_refused("AKE", &refusal(), Duration::from_secs(60));
        assert_eq!(every, KEYSPACE);
        let without_log = set_refused("Kgh", &refusal(), Duration::from_secs(60));
        assert_eq!(without_log.mode, NotificationMode::Keyspace);
        assert!(!without_log.log_events, "no `t`: log appends send no event");
    }

    #[test]
    fn a_refused_set_without_hash_events_is_polling_and_says_why() {
        let none = set_refused("", &refusal(), Duration::from_secs(60));
        let NotificationMode::Polling { reason } = none.mode else {
            panic!("{none:?}");
        };
        assert!(reason.contains("CONFIG SET was refused"), "{reason}");
        assert!(!none.log_events);
        // Keyspace events without the hash class are not enough.
        assert!(matches!(
            set_refused("Kx", &refusal(), Duration::from_secs(60)).mode,
            NotificationMode::Polling { .. }
        ));
    }

    #[test]
    fn unreadable_flags_wait_for_the_first_event() {
        let n = flags_unreadable(&refusal());
        assert!(matches!(n.mode, NotificationMode::Unconfirmed { .. }));
        assert!(n.log_events);
    }
}
