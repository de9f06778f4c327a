//! Prometheus metrics (README.md, "Admin endpoint"). Label values are resolved once at start so
//! that the request path only does atomic adds; no per-host label exists
//! (its cardinality would be the route table's).

use crate::tls::acceptor::{Alpn, HandshakeFailure, TlsVersion};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Why a resync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    Boot,
    Event,
    Reconnect,
    Periodic,
    /// The ping tick's length check found a change that sent no event.
    Check,
    /// A reconnect to the same server caught up from the change log.
    Replay,
}

impl ResyncReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::Boot => "boot",
            ResyncReason::Event => "event",
            ResyncReason::Reconnect => "reconnect",
            ResyncReason::Periodic => "periodic",
            ResyncReason::Check => "check",
            ResyncReason::Replay => "replay",
        }
    }

    const ALL: [ResyncReason; 6] = [
        ResyncReason::Boot,
        ResyncReason::Event,
        ResyncReason::Reconnect,
        ResyncReason::Periodic,
        ResyncReason::Check,
        ResyncReason::Replay,
    ];

    /// A read made to check, not because of a change: what it finds is
    /// drift.
    pub fn is_safety_net(self) -> bool {
        matches!(self, ResyncReason::Periodic | ResyncReason::Check)
    }
}

/// Kinds of upstream failure, the `kind` label of `upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Refused,
    ConnectTimeout,
    ResponseTimeout,
    Reset,
    Other,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Refused,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::ResponseTimeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Other,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Refused => "refused",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::ResponseTimeout => "response_timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Other => "other",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// Indexed by status class: 1xx..5xx.
    requests_by_class: [IntCounter; 5],
    request_duration: Histogram,
    upstream_errors: [IntCounter; 5],
    pub upstream_retries: IntCounter,
    pub table_routes: IntGauge,
    pub table_version: IntGauge,
    pub invalid_routes: IntGauge,
    resyncs: [IntCounter; 6],
    pub drift: IntCounter,
    /// How reloads built their table: from the change log, from the DUMP
    /// payload diff, or by comparing every entry (boot, safety-net reads,
    /// HGETALL reads, bulk rewrites).
    pub reload_by_log: IntCounter,
    pub reload_by_payload_diff: IntCounter,
    pub reload_by_compare: IntCounter,
    /// Change-log entries applied.
    pub log_entries: IntCounter,
    /// 1 while a mass removal is held (see `sync::guard`), and how many
    /// holds began.
    pub removals_held: IntGauge,
    pub removal_holds: IntCounter,
    /// Restarts of the sync loop after a panic.
    pub sync_restarts: IntCounter,
    pub sync_duration: HistogramVec,
    pub redis_connected: IntGauge,
    pub notifications_enabled: IntGauge,
    pub notifications_received: IntCounter,
    pub events_lost: IntCounter,
    pub table_age_base: IntGauge,
    pub client_connections: IntGauge,
    pub connections_refused: IntCounter,
    pub tls: TlsMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("switchyard".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Proxied requests by response status class.",
            ),
            &["class"],
        )
        .unwrap();
        let requests_by_class =
            ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| requests.with_label_values(&[c]));
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request head to response head.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
        )
        .unwrap();
        let upstream = IntCounterVec::new(
            Opts::new("upstream_errors_total", "Failed upstream attempts by kind."),
            &["kind"],
        )
        .unwrap();
        let upstream_errors =
            UpstreamErrorKind::ALL.map(|k| upstream.with_label_values(&[k.as_str()]));
        let resync_vec = IntCounterVec::new(
            Opts::new(
                "resyncs_total",
                "Full reads of a followed hash by reason (replay: caught up from the change log after a reconnect).",
            ),
            &["reason"],
        )
        .unwrap();
        let resyncs = ResyncReason::ALL.map(|r| resync_vec.with_label_values(&[r.as_str()]));
        let sync_duration = HistogramVec::new(
            HistogramOpts::new(
                "sync_duration_seconds",
                "Duration of a full reload (read + build + swap).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["reason"],
        )
        .unwrap();
        let reload_builds = IntCounterVec::new(
            Opts::new(
                "reload_builds_total",
                "How reloads built their table: log (change-log entries), payload_diff (only the entries a DUMP diff names) or compare (every entry).",
            ),
            &["how"],
        )
        .unwrap();
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).unwrap();
        let counter = |name: &str, help: &str| IntCounter::new(name, help).unwrap();
        let m = Metrics {
            requests_by_class,
            request_duration,
            upstream_errors,
            upstream_retries: counter(
                "upstream_retries_total",
                "Requests retried on another backend.",
            ),
            table_routes: gauge(
                "route_table_routes",
                "Hosts in the current table (valid or invalid).",
            ),
            table_version: gauge("route_table_version", "Version of the current table."),
            invalid_routes: gauge(
                "invalid_routes",
                "Entries of the routes hash that did not parse.",
            ),
            resyncs,
            drift: counter(
                "drift_total",
                "Periodic resyncs that found a difference (a lost notification).",
            ),
            reload_by_log: reload_builds.with_label_values(&["log"]),
            reload_by_payload_diff: reload_builds.with_label_values(&["payload_diff"]),
            reload_by_compare: reload_builds.with_label_values(&["compare"]),
            sync_duration,
            redis_connected: gauge("redis_connected", "1 while both Redis connections are up."),
            notifications_enabled: gauge(
                "notifications_enabled",
                "1 when keyspace notifications are on; 0 when falling back to periodic resync.",
            ),
            notifications_received: counter(
                "notifications_received_total",
                "Keyspace events received for the routes key.",
            ),
            events_lost: counter(
                "notifications_lost_total",
                "Times the event receiver lagged and events were dropped.",
            ),
            table_age_base: gauge(
                "route_table_built_timestamp_seconds",
                "Unix time the current table was built.",
            ),
            client_connections: gauge("client_connections", "Open client connections."),
            connections_refused: counter(
                "client_connections_refused_total",
                "Connections closed at once by --max-connections.",
            ),
            log_entries: counter(
                "change_log_entries_total",
                "Change-log entries applied (field-level changes).",
            ),
            removals_held: gauge(
                "removals_held",
                "1 while a mass removal is held by --max-removal-fraction.",
            ),
            removal_holds: counter(
                "removal_holds_total",
                "Mass removals held by --max-removal-fraction.",
            ),
            sync_restarts: counter(
                "sync_restarts_total",
                "Restarts of the sync loop after a panic.",
            ),
            tls: TlsMetrics::new(&registry),
            registry,
        };
        m.registry.register(Box::new(requests)).unwrap();
        m.registry
            .register(Box::new(m.request_duration.clone()))
            .unwrap();
        m.registry.register(Box::new(upstream)).unwrap();
        m.registry.register(Box::new(resync_vec)).unwrap();
        m.registry.register(Box::new(reload_builds)).unwrap();
        m.registry
            .register(Box::new(m.sync_duration.clone()))
            .unwrap();
        for c in [
            &m.upstream_retries,
            &m.drift,
            &m.notifications_received,
            &m.events_lost,
            &m.connections_refused,
            &m.log_entries,
            &m.removal_holds,
            &m.sync_restarts,
        ] {
            m.registry.register(Box::new(c.clone())).unwrap();
        }
        for g in [
            &m.table_routes,
            &m.table_version,
            &m.invalid_routes,
            &m.redis_connected,
            &m.notifications_enabled,
            &m.table_age_base,
            &m.client_connections,
            &m.removals_held,
        ] {
            m.registry.register(Box::new(g.clone())).unwrap();
        }
        m
    }

    /// Records a finished request: two atomic adds.
    #[inline]
    /// The registry `/metrics` renders, for parts that register their own
    /// metrics when they start (automatic certificates).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn observe_request(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests_by_class[class].inc();
        self.request_duration.observe(seconds);
    }

    #[inline]
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    pub fn resync(&self, reason: ResyncReason) {
        self.resyncs[reason as usize].inc();
    }

    pub fn resyncs(&self, reason: ResyncReason) -> u64 {
        self.resyncs[reason as usize].get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// TLS metrics (README.md, "HTTPS"): handshakes by outcome, TLS version
/// and ALPN protocol; the certificates served and refused; the earliest
/// end of validity among those served (one gauge: no per-host label).
pub struct TlsMetrics {
    /// Completed handshakes, by [`TlsVersion`] and [`Alpn`].
    completed: [[IntCounter; 3]; 2],
    /// Failed handshakes, by [`HandshakeFailure`].
    failed: [IntCounter; 3],
    pub certificates: IntGauge,
    pub invalid_certificates: IntGauge,
    pub earliest_not_after: IntGauge,
    /// Loads of `--tls-cert`/`--tls-key`: `[ok, error]`.
    file_loads: [IntCounter; 2],
}

impl TlsMetrics {
    fn new(registry: &Registry) -> TlsMetrics {
        let handshakes = IntCounterVec::new(
            Opts::new(
                "tls_handshakes_total",
                "TLS handshakes by outcome; completed ones by TLS version and ALPN protocol.",
            ),
            &["outcome", "version", "alpn"],
        )
        .unwrap();
        let completed = TlsVersion::ALL.map(|v| {
            Alpn::ALL.map(|a| handshakes.with_label_values(&["ok", v.as_str(), a.as_str()]))
        });
        let failed = HandshakeFailure::ALL
            .map(|f| handshakes.with_label_values(&[f.as_str(), "none", "none"]));
        let file_loads_vec = IntCounterVec::new(
            Opts::new(
                "tls_file_loads_total",
                "Loads of the --tls-cert/--tls-key pair by outcome (error: the previous pair keeps serving).",
            ),
            &["outcome"],
        )
        .unwrap();
        let file_loads = ["ok", "error"].map(|o| file_loads_vec.with_label_values(&[o]));
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).unwrap();
        let m = TlsMetrics {
            completed,
            failed,
            certificates: gauge(
                "tls_certificates",
                "Certificates served: hosts of the certs hash with one, and the default certificate.",
            ),
            invalid_certificates: gauge(
                "tls_invalid_certificates",
                "Entries of the certs hash (and the certificate files) not served as written.",
            ),
            earliest_not_after: gauge(
                "tls_certificate_earliest_expiry_timestamp_seconds",
                "Unix time at which the first certificate served expires (0: none served).",
            ),
            file_loads,
        };
        registry.register(Box::new(handshakes)).unwrap();
        registry.register(Box::new(file_loads_vec)).unwrap();
        for g in [
            &m.certificates,
            &m.invalid_certificates,
            &m.earliest_not_after,
        ] {
            registry.register(Box::new(g.clone())).unwrap();
        }
        m
    }

    #[inline]
    pub fn handshake_completed(&self, version: TlsVersion, alpn: Alpn) {
        self.completed[version as usize][alpn as usize].inc();
    }

    #[inline]
    pub fn handshake_failed(&self, failure: HandshakeFailure) {
        self.failed[failure as usize].inc();
    }

    pub fn file_load(&self, ok: bool) {
        self.file_loads[usize::from(!ok)].inc();
    }
}
