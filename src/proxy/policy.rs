//! Request policy, one definition for both protocols: which methods may be
//! sent again, and when a request that failed may be replayed.

/// RFC 9110 §9.2.2, as [`http::Method::is_idempotent`] defines it: the one
/// definition the proxy uses. Standard methods are matched without
/// allocating; an extension method is never idempotent.
pub fn is_idempotent(method: &str) -> bool {
    http::Method::from_bytes(method.as_bytes()).is_ok_and(|m| m.is_idempotent())
}

/// How far a failed attempt got with its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Nothing was sent: the connection was refused or timed out.
    Nothing,
    /// Some of the request may have reached the backend; no byte of a
    /// response came back.
    Request,
    /// A response had begun: whatever happens next, the request was
    /// processed.
    Response,
}

/// Whether a failed request may be sent again (to the same backend on a
/// new connection, or to the next one). RFC 9110 §9.2.2 and nginx's
/// default: once any byte of a request may have reached a backend, only an
/// idempotent method may be replayed, and never after a response byte
/// arrived. `resendable`: the body is still at hand (none, or buffered).
pub fn may_replay(reached: Reached, idempotent: bool, resendable: bool) -> bool {
    resendable
        && match reached {
            Reached::Nothing => true,
            Reached::Request => idempotent,
            Reached::Response => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_are_rfc_9110s() {
        for m in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
            assert!(is_idempotent(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "PURGE", ""] {
            assert!(!is_idempotent(m), "{m}");
        }
    }

    #[test]
    fn replay_needs_an_idempotent_method_once_the_request_may_have_arrived() {
        assert!(may_replay(Reached::Nothing, false, true));
        assert!(!may_replay(Reached::Nothing, true, false), "body gone");
        assert!(may_replay(Reached::Request, true, true));
        assert!(!may_replay(Reached::Request, false, true), "POST twice");
        assert!(!may_replay(Reached::Response, true, true), "answer begun");
    }
}
