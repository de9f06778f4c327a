//! The flag groups: the Redis flags every command takes ([`RedisArgs`],
//! checked by [`RedisArgs::validate`]), the serve flags ([`ServeArgs`]), and
//! the TLS and ACME flags ([`TlsArgs`], [`AcmeArgs`]). Every flag is also
//! read from `SWITCHYARD_<FLAG>`.

use super::ConfigError;
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the routes live; shared by every command.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://`, `rediss://`, `redis-sentinel://`); also read from REDIS_URL.
    #[arg(long, global = true, env = "SWITCHYARD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// The hash holding host → backends.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ROUTES_KEY",
        default_value = "routes"
    )]
    pub routes_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Serve options")]
pub struct ServeArgs {
    /// Address for proxied traffic.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address for proxied traffic over TLS (off unless set): certificates
    /// from `--tls-cert`/`--tls-key` and the certs hash, chosen by SNI.
    #[arg(long, env = "SWITCHYARD_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,

    /// Address of the admin endpoint (/healthz /readyz /routes /metrics).
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub admin_listen: SocketAddr,

    /// Full resync period: the safety net for lost notifications.
    #[arg(long, env = "SWITCHYARD_RESYNC_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,

    /// How long in-flight requests may run after SIGTERM/SIGINT.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Write every swapped-in table here; serve it when booting without Redis.
    #[arg(long, env = "SWITCHYARD_SNAPSHOT_FILE")]
    pub snapshot_file: Option<PathBuf>,

    /// How long a backend that refused or timed out is skipped.
    #[arg(long, env = "SWITCHYARD_DEAD_BACKEND_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub dead_backend_ttl: Duration,

    /// Backend connect timeout (504 when exceeded).
    #[arg(long, env = "SWITCHYARD_CONNECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Time a backend has to send response headers (504 when exceeded).
    #[arg(long, env = "SWITCHYARD_RESPONSE_HEADER_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub response_header_timeout: Duration,

    /// Longest wait for request body bytes (a body the proxy buffers must
    /// arrive whole within it); then 408 and the connection closes.
    #[arg(long, env = "SWITCHYARD_BODY_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,

    /// A WebSocket (or other upgraded) tunnel in which no byte moved this
    /// long is closed.
    #[arg(long, env = "SWITCHYARD_TUNNEL_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub tunnel_idle_timeout: Duration,

    /// Time a client has to send its request head. For HTTP/1.1 this timer
    /// also runs while a keep-alive connection waits for its next request.
    #[arg(long, env = "SWITCHYARD_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head accepted (larger gets 431), in bytes.
    #[arg(long, env = "SWITCHYARD_MAX_HEADER_SIZE", default_value_t = 32 * 1024)]
    pub max_header_size: usize,

    /// A client connection on which no byte moved for this long is closed
    /// (gracefully: a request in flight may finish).
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Peers whose X-Forwarded-For / X-Forwarded-Proto / X-Real-IP /
    /// Forwarded headers are kept (and X-Forwarded-For appended to):
    /// comma-separated CIDRs or addresses. From anyone else they are
    /// replaced or removed.
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Expect a PROXY protocol header (v1 or v2) at the start of every
    /// connection to --listen (from a load balancer); its source address
    /// becomes the client. A connection without one is closed.
    #[arg(long, env = "SWITCHYARD_PROXY_PROTOCOL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: bool,

    /// Cap on concurrent client connections (0 = no cap).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// One log line per request.
    #[arg(long, env = "SWITCHYARD_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,

    /// Adds `Strict-Transport-Security: max-age=SECONDS` to the backends'
    /// answers sent over TLS (off unless set).
    #[arg(long, env = "SWITCHYARD_HSTS", value_name = "SECONDS")]
    pub hsts: Option<u64>,

    /// Answers cleartext HTTP/1 requests for hosts that have a certificate
    /// with 308 to https (the `--tls-listen` port, 443 if unset); ACME
    /// challenges are exempt.
    #[arg(long, env = "SWITCHYARD_REDIRECT_HTTPS")]
    pub redirect_https: bool,

    /// Log format.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// A file holding the log filter (RUST_LOG syntax, e.g.
    /// `info,switchyard=debug`), read at start and again on SIGHUP.
    /// Without it, RUST_LOG (read at start) applies.
    #[arg(long, env = "SWITCHYARD_LOG_FILTER_FILE")]
    pub log_filter_file: Option<PathBuf>,

    /// This replica's id in `switchyard status` (default: hostname-pid).
    #[arg(long, env = "SWITCHYARD_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// Threads serving client connections, each with its own event loop and
    /// backend pool (default: one per core).
    #[arg(long, env = "SWITCHYARD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Largest fraction of the routes one change may remove before the
    /// replica holds it (keeps serving, reports it) until the routes are
    /// written back or `switchyard route accept-removal` confirms it.
    /// Removing every route is always held; 1 turns the guard off.
    #[arg(long, env = "SWITCHYARD_MAX_REMOVAL_FRACTION", default_value_t = 0.5)]
    pub max_removal_fraction: f64,

    /// Automatic certificates (`--acme-*`).
    #[command(flatten)]
    pub acme: AcmeArgs,

    /// The default certificate's PEM chain (served when no certificate of the
    /// certs hash fits the client's SNI); reloaded when it changes.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The default certificate's PEM private key.
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Time a client has to complete the TLS handshake.
    #[arg(long, env = "SWITCHYARD_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_handshake_timeout: Duration,

    /// How often a new TLS session ticket key, shared by all replicas
    /// through Redis, is made; also how long a ticket is valid.
    #[arg(long, env = "SWITCHYARD_TLS_TICKET_ROTATION", default_value = "12h", value_parser = humantime::parse_duration)]
    pub tls_ticket_rotation: Duration,
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither a CIDR nor an IP address"))
}

impl RedisArgs {
    /// The checks every command shares with the server: a command that
    /// would write where no proxy could ever read is refused the same way.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.routes_key.is_empty() {
            return Err(ConfigError::RoutesKey);
        }
        Ok(())
    }
}

/// TLS flags shared by the server and the `cert` commands (README.md,
/// "HTTPS"); the serve-only ones (`--tls-cert`, `--tls-key`,
/// `--tls-handshake-timeout`) are in [`ServeArgs`].
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// The hash holding host -> PEM chain and private key.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CERTS_KEY",
        default_value = "routes:certs"
    )]
    pub certs_key: String,

    /// 32 random bytes (raw, or 64 hex digits) sealing the private keys in the
    /// certs hash; the same file on every replica and for `cert set`.
    #[arg(long, global = true, env = "SWITCHYARD_CERTS_SECRET_FILE")]
    pub certs_secret_file: Option<PathBuf>,
}

/// ACME flags (README.md, "Automatic certificates"). Off unless
/// `--acme-domains` is given.
#[derive(Debug, Clone, Args)]
pub struct AcmeArgs {
    /// Hosts that get certificates automatically: `*.suffix` (any host below
    /// it) or an exact host, comma-separated. A host also needs a route.
    #[arg(long, env = "SWITCHYARD_ACME_DOMAINS", value_delimiter = ',')]
    pub acme_domains: Vec<String>,

    /// The ACME server's directory (RFC 8555).
    #[arg(
        long,
        env = "SWITCHYARD_ACME_DIRECTORY",
        default_value = crate::acme::LETS_ENCRYPT_PRODUCTION
    )]
    pub acme_directory: String,

    /// Contact address given to the ACME server for the account.
    #[arg(long, env = "SWITCHYARD_ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// PEM root certificate of a private ACME server's HTTPS endpoint.
    #[arg(long, env = "SWITCHYARD_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,

    /// Orders in flight at once across all replicas.
    #[arg(long, env = "SWITCHYARD_ACME_MAX_CONCURRENT", default_value_t = 2)]
    pub acme_max_concurrent: usize,
}
