//! `SyncError`: what can go wrong talking to Redis, typed by what the
//! session does about it. A refusal (ACL, a key of the wrong type, an
//! unknown command) is an answer: the session goes on without that
//! command. A lost connection ends the session, and the next one starts
//! with a resync (ARCHITECTURE.md, "Every (re)subscribe is followed by a
//! resync").

use fred::error::{Error, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The connection is gone, timed out or was never made: end the
    /// session, back off, reconnect.
    #[error("connection lost: {0}")]
    Connection(String),
    /// The server answered with an error (NOPERM, WRONGTYPE, unknown
    /// command...): the connection is fine.
    #[error("refused: {0}")]
    Refused(String),
    /// A reply this proxy does not understand (or a payload it cannot
    /// decode): treated like a refusal of that way of reading.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

impl SyncError {
    /// Whether the session must end (and reconnect).
    pub fn is_connection(&self) -> bool {
        matches!(self, SyncError::Connection(_))
    }

    pub fn protocol(what: impl Into<String>) -> SyncError {
        SyncError::Protocol(what.into())
    }

    /// The same error with what was being done in front.
    pub fn context(self, doing: &str) -> SyncError {
        match self {
            SyncError::Connection(e) => SyncError::Connection(format!("{doing}: {e}")),
            SyncError::Refused(e) => SyncError::Refused(format!("{doing}: {e}")),
            SyncError::Protocol(e) => SyncError::Protocol(format!("{doing}: {e}")),
        }
    }
}

impl From<Error> for SyncError {
    /// By the client's error kind: transport kinds mean the connection,
    /// server error replies (which the client maps to `Unknown`,
    /// `InvalidArgument`, `Auth`...) mean a refusal.
    fn from(error: Error) -> SyncError {
        let text = error.to_string();
        match error.kind() {
            ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
            | ErrorKind::Sentinel
            | ErrorKind::Cluster
            | ErrorKind::Tls => SyncError::Connection(text),
            ErrorKind::Protocol | ErrorKind::Parse | ErrorKind::NotFound => {
                SyncError::Protocol(text)
            }
            ErrorKind::Config
            | ErrorKind::Auth
            | ErrorKind::InvalidCommand
            | ErrorKind::InvalidArgument
            | ErrorKind::Url
            | ErrorKind::Unknown => SyncError::Refused(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_end_the_session_and_server_answers_do_not() {
        let lost = SyncError::from(Error::new(ErrorKind::IO, "Connection closed."));
        assert!(lost.is_connection());
        let timeout = SyncError::from(Error::new(ErrorKind::Timeout, "Request timed out."));
        assert!(timeout.is_connection());
        let noperm = SyncError::from(Error::new(
            ErrorKind::Unknown,
            "NOPERM this user has no permissions to run the 'dump' command",
        ));
        assert!(matches!(noperm, SyncError::Refused(_)));
        let wrongtype = SyncError::from(Error::new(ErrorKind::InvalidArgument, "WRONGTYPE"));
        assert!(matches!(wrongtype, SyncError::Refused(_)));
        assert_eq!(
            SyncError::Refused("x".into()).context("read"),
            SyncError::Refused("read: x".into())
        );
    }
}
