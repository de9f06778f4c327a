//! Metrics of session resumption: handshakes by kind (full or resumed),
//! the shared ticket keys a replica holds, the creation time of the one
//! encrypting, and the keys this replica added.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rustls::HandshakeKind;

pub struct TicketMetrics {
    /// `[full, resumed]`.
    kinds: [IntCounter; 2],
    /// Shared keys held (0: rustls's local ticketer is in use).
    pub keys: IntGauge,
    /// Entries of the hash this replica cannot use.
    pub invalid: IntGauge,
    /// Unix time (s) at which the key encrypting now was made: its age is
    /// `time() - this`.
    pub key_created: Gauge,
    /// Keys this replica added to the hash (rotations it made).
    pub keys_added: IntCounter,
}

impl TicketMetrics {
    /// Makes the metrics and registers them on `registry` (the proxy's).
    pub fn register(registry: &Registry) -> TicketMetrics {
        let kinds_vec = IntCounterVec::new(
            Opts::new(
                "tls_handshake_kinds_total",
                "Completed TLS handshakes by kind: full, or resumed from a session ticket.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let kinds = ["full", "resumed"].map(|k| kinds_vec.with_label_values(&[k]));
        let m = TicketMetrics {
            kinds,
            keys: IntGauge::new(
                "tls_ticket_keys",
                "Shared session ticket keys held (0: tickets open only on this replica).",
            )
            .expect("valid metric"),
            invalid: IntGauge::new(
                "tls_ticket_keys_invalid",
                "Entries of the ticket keys hash this replica cannot use (see /tickets).",
            )
            .expect("valid metric"),
            key_created: Gauge::new(
                "tls_ticket_key_created_timestamp_seconds",
                "Unix time at which the session ticket key encrypting now was made.",
            )
            .expect("valid metric"),
            keys_added: IntCounter::new(
                "tls_ticket_keys_added_total",
                "Session ticket keys this replica added to the shared hash (rotations).",
            )
            .expect("valid metric"),
        };
        let _ = registry.register(Box::new(kinds_vec));
        let _ = registry.register(Box::new(m.keys.clone()));
        let _ = registry.register(Box::new(m.invalid.clone()));
        let _ = registry.register(Box::new(m.key_created.clone()));
        let _ = registry.register(Box::new(m.keys_added.clone()));
        m
    }

    /// Counts a completed handshake by kind.
    #[inline]
    pub fn handshake(&self, kind: Option<HandshakeKind>) {
        let resumed = kind == Some(HandshakeKind::Resumed);
        self.kinds[usize::from(resumed)].inc();
    }
}
