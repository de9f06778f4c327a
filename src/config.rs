//! Configuration: the command line (every flag also read from
//! `SWITCHYARD_<FLAG>`), validated into a typed [`Config`]. Tests build a
//! `Config` with [`Config::new`], which never reads the process
//! environment; only the binary's own parse does (clap's flag lookup and
//! the `REDIS_URL` fallback in [`Cli::redis_url`]).

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// The command line. With no command (or `serve`) the binary serves
/// traffic; the other commands talk to the same Redis as the proxies.
/// Flags may come after the command (`switchyard route list --routes-key
/// apps`) or, for the Redis flags, before it.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A dynamic HTTP reverse proxy whose routes live in Redis and are pushed, not polled.",
    after_help = crate::cli::exit_codes_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// Serve flags given without the `serve` command (`switchyard --listen ...`).
    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic (the default when no command is given).
    #[command(after_help = crate::cli::exit_codes_help())]
    Serve(Box<ServeArgs>),
    /// Read and write routes in the Redis hash.
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },
    /// List the live replicas: what table each one serves, and whether one
    /// holds back a mass removal.
    #[command(after_help = crate::cli::exit_codes_help())]
    Status {
        /// Print the registry as JSON (one object per replica) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read and write TLS certificates in the certs hash.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Set HOST's certificate (`HOST` or `*.suffix`); refuses a chain and key
    /// that do not load; seals the key with --certs-secret-file when given.
    #[command(after_help = crate::cli::exit_codes_help())]
    Set {
        host: String,
        /// The PEM chain, leaf first (e.g. fullchain.pem).
        #[arg(long)]
        cert: PathBuf,
        /// The PEM private key (PKCS#8, SEC1 or PKCS#1).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete HOST's certificate.
    #[command(after_help = crate::cli::exit_codes_help())]
    Del {
        host: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List every certificate: names, issuer, expiry, sealed or not, problems,
    /// automatic or not, and which live replicas serve it.
    List,
    /// Confirm a mass removal of certificates that replicas are holding back
    /// (the removal guard): for the next 60 s, a read that removes many
    /// certificates at once applies.
    #[command(after_help = crate::cli::exit_codes_help())]
    AcceptRemoval,
}

#[derive(Debug, Subcommand)]
pub enum RouteAction {
    /// Set HOST to BACKENDS (`ip:port[,ip:port...]`); refuses an invalid value.
    #[command(after_help = crate::cli::exit_codes_help())]
    Set {
        /// A host name (`app.cloud.com`) or a wildcard (`*.cloud.com`).
        host: String,
        /// One or more `host:port`, comma-separated (round-robin).
        backends: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete the route of HOST (a route that does not exist is a no-op).
    #[command(after_help = crate::cli::exit_codes_help())]
    Del {
        /// The host (or wildcard) whose route goes.
        host: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List every route.
    #[command(after_help = crate::cli::exit_codes_help())]
    List,
    /// Confirm a mass removal that replicas are holding back (the
    /// removal guard): for the next 60 s, a read that removes many
    /// routes at once applies.
    #[command(after_help = crate::cli::exit_codes_help())]
    AcceptRemoval,
}

/// `--wait` and its companions, shared by every command that writes.
#[derive(Debug, Clone, Default, Args)]
pub struct WaitArgs {
    /// After writing, wait until every live replica serves the change
    /// (exit 75 naming the replicas that did not, 68 when none is live).
    /// `--wait=DURATION` is short for `--wait --timeout DURATION`.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        value_name = "TIMEOUT",
        default_missing_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub wait: Option<Duration>,

    /// How long `--wait` waits.
    #[arg(long, requires = "wait", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,

    /// With `--wait`: succeed when no replica is live (nothing to wait for)
    /// instead of exiting 68.
    #[arg(long, requires = "wait")]
    pub allow_no_replicas: bool,
}

impl WaitArgs {
    /// The wait asked for, if any.
    pub fn options(&self) -> Option<WaitOptions> {
        let timeout = self.timeout.or(self.wait)?;
        Some(WaitOptions {
            timeout,
            allow_no_replicas: self.allow_no_replicas,
        })
    }
}

/// What a `--wait` waits for, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    pub timeout: Duration,
    /// Zero live replicas is a success rather than exit 68.
    pub allow_no_replicas: bool,
}

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

/// A validation failure: reported with exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --redis-url {url:?}: {reason}")]
    RedisUrl { url: String, reason: String },
    #[error("invalid --routes-key: must not be empty")]
    RoutesKey,
    #[error("--resync-interval must be at least 100ms")]
    ResyncInterval,
    #[error("--max-header-size must be at least 8192")]
    MaxHeaderSize,
    #[error("--max-removal-fraction must be between 0 and 1")]
    MaxRemovalFraction,
    #[error("invalid --certs-key: must not be empty")]
    CertsKey,
    #[error("--{flag} {path}: {reason}")]
    TlsFile {
        flag: &'static str,
        path: String,
        reason: String,
    },
    #[error("--certs-secret-file: {0}")]
    CertsSecret(#[from] crate::tls::seal::SecretError),
    #[error("--tls-handshake-timeout must be at least 100ms")]
    HandshakeTimeout,
    #[error("--tls-ticket-rotation must be at least 1m")]
    TicketRotation,
    #[error("invalid --acme-domains pattern {pattern:?}: {reason}")]
    AcmeDomain { pattern: String, reason: String },
    #[error("invalid --acme-directory {0:?}: must be an https:// URL")]
    AcmeDirectory(String),
    #[error("--acme-ca-file {path}: {reason}")]
    AcmeCaFile { path: String, reason: String },
    #[error("--acme-max-concurrent must be at least 1")]
    AcmeMaxConcurrent,
}

impl Cli {
    /// Parses a command line ([`Cli::parse_checked`] from the process's).
    /// Serve flags given before another command (`switchyard --listen x
    /// status`) are refused: they would be silently ignored.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        if let Some((name, _)) = matches.subcommand() {
            let serve_args = ServeArgs::augment_args(clap::Command::new("serve"));
            for arg in serve_args.get_arguments() {
                let id = arg.get_id().as_str();
                if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
                    let flag = arg.get_long().unwrap_or(id);
                    let hint = if name == "serve" {
                        format!("put it after `serve`: `switchyard serve --{flag} ...`")
                    } else {
                        format!("it is a serve option; `{name}` does not take it")
                    };
                    return Err(command.error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--{flag} before the command: {hint}"),
                    ));
                }
            }
        }
        Ok(cli)
    }

    /// [`Cli::try_parse_checked`] of the process's arguments.
    pub fn parse_checked() -> Result<Cli, clap::Error> {
        Cli::try_parse_checked(std::env::args_os())
    }

    /// The serve flags: the `serve` command's, or the top-level ones when
    /// no command was given.
    pub fn serve_args(&self) -> &ServeArgs {
        match &self.command {
            Some(Command::Serve(args)) => args,
            _ => &self.serve,
        }
    }

    /// The Redis URL: flag, then `SWITCHYARD_REDIS_URL` (via clap), then
    /// `REDIS_URL`, then the default.
    pub fn redis_url(&self, env_redis_url: Option<String>) -> String {
        self.redis
            .redis_url
            .clone()
            .or(env_redis_url)
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned())
    }
}

/// Everything the sync loop needs, typed and validated.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub redis: fred::prelude::Config,
    pub redis_url: String,
    pub routes_key: String,
    /// The safety net: every followed hash is read whole this often and
    /// compared with the table served.
    pub resync_interval: Duration,
    pub snapshot_file: Option<PathBuf>,
    /// How often a replica refreshes its entry in the replica registry
    /// (`crate::replicas`); an entry not refreshed for three periods (at
    /// least 3 s) no longer counts as live.
    pub status_interval: Duration,
    pub replica_id: String,
    /// `--max-removal-fraction` (see `sync::guard`).
    pub max_removal_fraction: f64,
    /// Every other threshold and period (see `sync::tuning`).
    pub tuning: crate::sync::Tuning,
}

/// Everything the request path needs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub dead_backend_ttl: Duration,
    pub connect_timeout: Duration,
    pub response_header_timeout: Duration,
    /// Longest wait for request body bytes; a buffered body (replayable,
    /// ≤ 64 KiB) must arrive whole within it. Then `408`.
    pub body_read_timeout: Duration,
    /// An upgraded tunnel in which no byte moved this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// A response relay that stalls this long is cut (`--idle-timeout`,
    /// which also bounds idle client connections: `ServerConfig`).
    pub idle_timeout: Duration,
    /// Clients whose forwarding headers are kept and appended to
    /// (`--trusted-proxies`); anyone else's are replaced or removed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub access_log: bool,
    /// `Strict-Transport-Security`'s max-age on answers over TLS (`--hsts`).
    pub hsts: Option<u64>,
    /// `--redirect-https`: the https port cleartext requests for hosts
    /// with a certificate are sent to with a 308.
    pub redirect_https: Option<u16>,
}

/// Everything the listeners need.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub header_read_timeout: Duration,
    pub max_header_size: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    /// Every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Threads serving connections. 1 serves on the caller's runtime; more
    /// start that many threads, each with a current-thread runtime of its
    /// own (thread per core: no work stealing).
    pub worker_threads: usize,
}

/// The default certificate's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFilePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything TLS needs (README.md, "HTTPS").
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub default_files: Option<CertFilePaths>,
    /// How often the default certificate's files are compared with what
    /// was loaded: a renewal is served within this, with no signal needed.
    pub file_poll_interval: Duration,
    pub handshake_timeout: Duration,
    /// The certs hash.
    pub certs_key: String,
    /// Seals and opens private keys in the certs hash (and the session
    /// ticket keys).
    pub secret: Option<crate::tls::seal::Secret>,
    /// A new session ticket key is made this often; tickets live as long
    /// (`--tls-ticket-rotation`; see `tls::tickets::keys::Schedule`).
    pub ticket_rotation: Duration,
    /// How often each replica reads the ticket keys (and adds one when
    /// due); a key encrypts three of these after it was made.
    pub ticket_refresh: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            default_files: None,
            file_poll_interval: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            certs_key: "routes:certs".into(),
            secret: None,
            ticket_rotation: Duration::from_secs(12 * 3600),
            ticket_refresh: Duration::from_secs(5),
        }
    }
}

impl TlsConfig {
    /// What opens (and seals) the private keys of the certs hash.
    pub fn cert_sealer(&self) -> Option<crate::tls::seal::Sealer> {
        self.secret
            .as_ref()
            .map(|s| crate::tls::seal::Sealer::new(s, crate::tls::seal::Purpose::CertKey))
    }

    /// Checks the shared TLS flags (what the `cert` commands need too): the
    /// certs hash, and the secret, which must be 32 bytes.
    pub fn from_args(args: &TlsArgs) -> Result<TlsConfig, ConfigError> {
        if args.certs_key.is_empty() {
            return Err(ConfigError::CertsKey);
        }
        let secret = match &args.certs_secret_file {
            Some(path) => Some(crate::tls::seal::Secret::from_file(path)?),
            None => None,
        };
        Ok(TlsConfig {
            certs_key: args.certs_key.clone(),
            secret,
            ..TlsConfig::default()
        })
    }

    /// [`TlsConfig::from_args`] plus the serve flags: the default
    /// certificate's files must be readable (their content is checked when
    /// loaded, and reported without stopping the proxy).
    pub fn for_serving(args: &TlsArgs, serve: &ServeArgs) -> Result<TlsConfig, ConfigError> {
        if serve.tls_handshake_timeout < Duration::from_millis(100) {
            return Err(ConfigError::HandshakeTimeout);
        }
        if serve.tls_ticket_rotation < Duration::from_secs(60) {
            return Err(ConfigError::TicketRotation);
        }
        let readable = |flag: &'static str, path: &PathBuf| {
            std::fs::File::open(path)
                .map(drop)
                .map_err(|e| ConfigError::TlsFile {
                    flag,
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
        };
        let default_files = match (&serve.tls_cert, &serve.tls_key) {
            (Some(cert), Some(key)) => {
                readable("tls-cert", cert)?;
                readable("tls-key", key)?;
                Some(CertFilePaths {
                    cert: cert.clone(),
                    key: key.clone(),
                })
            }
            _ => None,
        };
        Ok(TlsConfig {
            default_files,
            handshake_timeout: serve.tls_handshake_timeout,
            ticket_rotation: serve.tls_ticket_rotation,
            ..TlsConfig::from_args(args)?
        })
    }
}

/// Everything automatic certificates need (README.md, "Automatic
/// certificates"); `None` in [`Config::acme`] when `--acme-domains` is
/// not given.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub domains: crate::acme::DomainPatterns,
    pub directory: String,
    pub email: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Orders in flight at once, cluster-wide.
    pub max_concurrent: usize,
    /// How often the route and certificate tables are looked at.
    pub tick: Duration,
    /// Life of a per-host order lock and of an in-flight lease; renewed
    /// every third of it while the order runs, so a dead replica's lock
    /// frees the host after at most this long.
    pub lock_ttl: Duration,
    /// Retry delay after a host's first failure, doubled after each
    /// further failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Time an order may take, from the new order to the certificate.
    pub order_timeout: Duration,
    /// Life of an HTTP-01 token in the challenges hash.
    pub challenge_ttl: Duration,
}

impl AcmeConfig {
    /// The production defaults for `domains` (tests shorten the durations).
    pub fn new(domains: crate::acme::DomainPatterns) -> AcmeConfig {
        AcmeConfig {
            domains,
            directory: crate::acme::LETS_ENCRYPT_PRODUCTION.to_owned(),
            email: None,
            ca_file: None,
            max_concurrent: 2,
            tick: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(30),
            backoff_min: Duration::from_secs(60),
            backoff_max: Duration::from_secs(6 * 3600),
            order_timeout: Duration::from_secs(120),
            challenge_ttl: Duration::from_secs(300),
        }
    }

    /// Checks the ACME flags; `None` when `--acme-domains` is not given.
    pub fn from_args(args: &AcmeArgs) -> Result<Option<AcmeConfig>, ConfigError> {
        if args.acme_domains.is_empty() {
            return Ok(None);
        }
        let domains = crate::acme::DomainPatterns::parse(&args.acme_domains).map_err(|e| {
            ConfigError::AcmeDomain {
                pattern: e.pattern,
                reason: e.reason,
            }
        })?;
        if !args.acme_directory.starts_with("https://") {
            return Err(ConfigError::AcmeDirectory(args.acme_directory.clone()));
        }
        if args.acme_max_concurrent == 0 {
            return Err(ConfigError::AcmeMaxConcurrent);
        }
        if let Some(path) = &args.acme_ca_file {
            std::fs::File::open(path)
                .map(drop)
                .map_err(|e| ConfigError::AcmeCaFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
        }
        Ok(Some(AcmeConfig {
            directory: args.acme_directory.clone(),
            email: args.acme_email.clone(),
            ca_file: args.acme_ca_file.clone(),
            max_concurrent: args.acme_max_concurrent,
            ..AcmeConfig::new(domains)
        }))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub sync: SyncConfig,
    pub proxy: ProxyConfig,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    /// Automatic certificates; off (`None`) unless `--acme-domains` is given.
    pub acme: Option<AcmeConfig>,
}

/// Parses and checks a Redis URL the way the sync loop will use it.
pub fn parse_redis_url(url: &str) -> Result<fred::prelude::Config, ConfigError> {
    const SCHEMES: [&str; 8] = [
        "redis",
        "rediss",
        "valkey",
        "valkeys",
        "redis-sentinel",
        "rediss-sentinel",
        "redis-cluster",
        "rediss-cluster",
    ];
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
    if !SCHEMES.contains(&scheme) {
        return Err(ConfigError::RedisUrl {
            url: url.to_owned(),
            reason: format!("scheme must be one of {}", SCHEMES.join(", ")),
        });
    }
    fred::prelude::Config::from_url(url).map_err(|e| ConfigError::RedisUrl {
        url: url.to_owned(),
        reason: e.details().to_string(),
    })
}

pub fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "switchyard".into());
    format!("{host}-{}", std::process::id())
}

impl Config {
    /// A config with production defaults for the given Redis URL, whatever
    /// the process environment holds: clap's `SWITCHYARD_*` lookups are
    /// switched off here, so a developer's exported variables never reach a
    /// config built in code (tests). The binary reads them (`Cli::parse`).
    pub fn new(redis_url: &str) -> Result<Config, ConfigError> {
        let defaults = Cli::command()
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(["switchyard"])
            .and_then(|matches| Cli::from_arg_matches(&matches))
            .expect("defaults parse");
        Config::from_args(redis_url, &defaults.redis, &defaults.serve)
    }

    /// [`Config::from_args`] plus the TLS flags.
    pub fn from_cli(redis_url: &str, cli: &Cli) -> Result<Config, ConfigError> {
        let serve = cli.serve_args();
        Ok(Config {
            tls: TlsConfig::for_serving(&cli.tls, serve)?,
            acme: AcmeConfig::from_args(&serve.acme)?,
            ..Config::from_args(redis_url, &cli.redis, serve)?
        })
    }

    pub fn from_args(
        redis_url: &str,
        redis: &RedisArgs,
        serve: &ServeArgs,
    ) -> Result<Config, ConfigError> {
        redis.validate()?;
        if serve.resync_interval < Duration::from_millis(100) {
            return Err(ConfigError::ResyncInterval);
        }
        if serve.max_header_size < 8192 {
            return Err(ConfigError::MaxHeaderSize);
        }
        if !(0.0..=1.0).contains(&serve.max_removal_fraction) {
            return Err(ConfigError::MaxRemovalFraction);
        }
        Ok(Config {
            sync: SyncConfig {
                redis: parse_redis_url(redis_url)?,
                redis_url: redis_url.to_owned(),
                routes_key: redis.routes_key.clone(),
                resync_interval: serve.resync_interval,
                snapshot_file: serve.snapshot_file.clone(),
                status_interval: Duration::from_secs(1),
                replica_id: serve.replica_id.clone().unwrap_or_else(default_replica_id),
                max_removal_fraction: serve.max_removal_fraction,
                tuning: crate::sync::Tuning::default(),
            },
            proxy: ProxyConfig {
                dead_backend_ttl: serve.dead_backend_ttl,
                connect_timeout: serve.connect_timeout,
                response_header_timeout: serve.response_header_timeout,
                body_read_timeout: serve.body_read_timeout,
                tunnel_idle_timeout: serve.tunnel_idle_timeout,
                idle_timeout: serve.idle_timeout,
                trusted_proxies: serve.trusted_proxies.clone(),
                access_log: serve.access_log,
                hsts: serve.hsts,
                redirect_https: serve
                    .redirect_https
                    .then(|| serve.tls_listen.map_or(443, |addr| addr.port())),
            },
            server: ServerConfig {
                header_read_timeout: serve.header_read_timeout,
                max_header_size: serve.max_header_size,
                idle_timeout: serve.idle_timeout,
                max_connections: serve.max_connections,
                shutdown_timeout: serve.shutdown_timeout,
                proxy_protocol: serve.proxy_protocol,
                worker_threads: serve
                    .worker_threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                    .max(1),
            },
            tls: TlsConfig::default(),
            acme: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let cli = Cli::try_parse_from(["switchyard"]).unwrap();
        assert_eq!(cli.serve.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(cli.serve.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(cli.redis.routes_key, "routes");
        assert_eq!(cli.serve.resync_interval, Duration::from_secs(30));
        assert_eq!(cli.redis_url(None), DEFAULT_REDIS_URL);
        assert_eq!(cli.redis_url(Some("redis://h:1/2".into())), "redis://h:1/2");
        assert_eq!(cli.serve.max_removal_fraction, 0.5);
        let cli = Cli::try_parse_from(["switchyard", "--max-removal-fraction", "1"]).unwrap();
        assert_eq!(cli.serve.max_removal_fraction, 1.0);
        assert!(Cli::try_parse_from(["switchyard", "--shared-read-threshold", "0"]).is_err());
    }

    #[test]
    fn flag_beats_redis_url_env() {
        let cli = Cli::try_parse_from(["switchyard", "--redis-url", "redis://a:1"]).unwrap();
        assert_eq!(cli.redis_url(Some("redis://b:2".into())), "redis://a:1");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["switchyard", "--resync-interval", "soon"]).is_err());
        assert!(Cli::try_parse_from(["switchyard", "--listen", "nowhere"]).is_err());
        assert!(matches!(
            Config::new("http://x"),
            Err(ConfigError::RedisUrl { .. })
        ));
        assert!(Config::new("redis://127.0.0.1:1/0").is_ok());
        let cli = Cli::try_parse_from(["switchyard", "--max-removal-fraction", "1.5"]).unwrap();
        assert!(matches!(
            Config::from_args("redis://127.0.0.1:1/0", &cli.redis, &cli.serve),
            Err(ConfigError::MaxRemovalFraction)
        ));
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_checked(std::iter::once("switchyard").chain(args.iter().copied()))
    }

    fn set_of(args: &[&str]) -> (String, String, Option<WaitOptions>) {
        match parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
        {
            Some(Command::Route {
                action:
                    RouteAction::Set {
                        host,
                        backends,
                        wait,
                    },
            }) => (host, backends, wait.options()),
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn wait_goes_anywhere_on_the_line_and_never_takes_a_positional() {
        let ten = Some(WaitOptions {
            timeout: Duration::from_secs(10),
            allow_no_replicas: false,
        });
        for args in [
            &["route", "set", "--wait", "a.com", "10.0.0.1:80"][..],
            &["route", "set", "a.com", "--wait", "10.0.0.1:80"],
            &["route", "set", "a.com", "10.0.0.1:80", "--wait"],
        ] {
            assert_eq!(
                set_of(args),
                ("a.com".into(), "10.0.0.1:80".into(), ten),
                "{args:?}"
            );
        }
        assert_eq!(set_of(&["route", "set", "a.com", "10.0.0.1:80"]).2, None);
        let three = |allow| {
            Some(WaitOptions {
                timeout: Duration::from_secs(3),
                allow_no_replicas: allow,
            })
        };
        assert_eq!(
            set_of(&["route", "set", "a.com", "10.0.0.1:80", "--wait=3s"]).2,
            three(false)
        );
        assert_eq!(
            set_of(&["route", "set", "--wait", "--timeout", "3s", "a.com", "b:1"]).2,
            three(false)
        );
        assert_eq!(
            set_of(&[
                "route",
                "set",
                "a.com",
                "b:1",
                "--wait",
                "--allow-no-replicas",
                "--timeout=3s"
            ])
            .2,
            three(true)
        );
        // The companions mean nothing without --wait: a usage error, not a silent no-op.
        assert!(parse(&["route", "set", "a.com", "b:1", "--timeout", "3s"]).is_err());
        assert!(parse(&["route", "del", "a.com", "--allow-no-replicas"]).is_err());
        assert!(parse(&["route", "set", "a.com", "b:1", "--wait=soon"]).is_err());
        match parse(&["route", "del", "--wait", "a.com"]).unwrap().command {
            Some(Command::Route {
                action: RouteAction::Del { host, wait },
            }) => {
                assert_eq!(host, "a.com");
                assert!(wait.options().is_some());
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn serve_flags_work_with_and_without_the_serve_command() {
        let cli = parse(&["serve", "--listen", "127.0.0.1:1", "--routes-key", "apps"]).unwrap();
        assert_eq!(cli.serve_args().listen.to_string(), "127.0.0.1:1");
        assert_eq!(cli.redis.routes_key, "apps");
        let cli = parse(&["--listen", "127.0.0.1:2"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve_args().listen.to_string(), "127.0.0.1:2");
        // Serve flags belong to serving: not to another command.
        for args in [
            &["--listen", "127.0.0.1:2", "status"][..],
            &["status", "--listen", "127.0.0.1:2"],
            &["--idle-timeout", "1s", "route", "list"],
            &["--listen", "127.0.0.1:2", "serve"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
        let e = parse(&["--listen", "127.0.0.1:2", "serve"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("switchyard serve --listen"), "{e}");
        // The Redis flags are everyone's, before or after the command.
        for args in [
            &["--routes-key", "apps", "route", "list"][..],
            &["route", "list", "--routes-key", "apps"],
            &["route", "--routes-key", "apps", "list"],
        ] {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.redis.routes_key, "apps", "{args:?}");
        }
    }

    #[test]
    fn every_command_shares_the_servers_validation() {
        let cli = parse(&["route", "list", "--routes-key", ""]).unwrap();
        assert!(matches!(cli.redis.validate(), Err(ConfigError::RoutesKey)));
        let cli = parse(&["--routes-key", ""]).unwrap();
        assert!(matches!(
            Config::from_args(DEFAULT_REDIS_URL, &cli.redis, cli.serve_args()),
            Err(ConfigError::RoutesKey)
        ));
    }

    #[test]
    fn tls_flags_default_off_and_go_in_pairs() {
        // Defaults as written, whatever SWITCHYARD_* the developer exported.
        let cli = Cli::command()
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(["switchyard"])
            .and_then(|matches| Cli::from_arg_matches(&matches))
            .unwrap();
        let tls = TlsConfig::from_args(&cli.tls).unwrap();
        assert_eq!(tls.default_files, None);
        assert_eq!(tls.certs_key, "routes:certs");
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert!(tls.secret.is_none());
        assert_eq!(cli.serve_args().tls_listen, None);
        let cli = Cli::try_parse_from(["switchyard", "--tls-listen", "0.0.0.0:8443"]).unwrap();
        assert_eq!(
            cli.serve_args().tls_listen,
            Some("0.0.0.0:8443".parse().unwrap())
        );
        let redirect = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["switchyard"], args].concat()).unwrap();
            Config::from_args("redis://127.0.0.1:1", &cli.redis, cli.serve_args())
                .unwrap()
                .proxy
                .redirect_https
        };
        assert_eq!(redirect(&[]), None);
        assert_eq!(redirect(&["--redirect-https"]), Some(443));
        assert_eq!(
            redirect(&["--redirect-https", "--tls-listen", "0.0.0.0:8443"]),
            Some(8443)
        );
        assert!(Cli::try_parse_from(["switchyard", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["switchyard", "--tls-key", "k.pem"]).is_err());
        let cli = Cli::try_parse_from(["switchyard", "--tls-handshake-timeout", "10ms"]).unwrap();
        assert!(matches!(
            TlsConfig::for_serving(&cli.tls, cli.serve_args()),
            Err(ConfigError::HandshakeTimeout)
        ));
    }

    #[test]
    fn ticket_rotation_defaults_to_12h_and_is_at_least_a_minute() {
        let serving = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["switchyard"], args].concat()).unwrap();
            TlsConfig::for_serving(&cli.tls, cli.serve_args())
        };
        let tls = serving(&[]).unwrap();
        assert_eq!(tls.ticket_rotation, Duration::from_secs(12 * 3600));
        assert_eq!(tls.ticket_refresh, Duration::from_secs(5));
        let tls = serving(&["--tls-ticket-rotation", "1h"]).unwrap();
        assert_eq!(tls.ticket_rotation, Duration::from_secs(3600));
        assert!(matches!(
            serving(&["--tls-ticket-rotation", "30s"]),
            Err(ConfigError::TicketRotation)
        ));
    }

    #[test]
    fn cert_commands_take_the_shared_tls_flags() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "cert",
            "set",
            "*.cloud.com",
            "--cert",
            "fullchain.pem",
            "--key",
            "key.pem",
            "--certs-key",
            "certs",
        ])
        .unwrap();
        assert_eq!(cli.tls.certs_key, "certs");
        match cli.command {
            Some(Command::Cert {
                action: CertAction::Set {
                    host, cert, key, ..
                },
            }) => {
                assert_eq!(host, "*.cloud.com");
                assert_eq!(
                    (cert.to_str(), key.to_str()),
                    (Some("fullchain.pem"), Some("key.pem"))
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["switchyard", "cert", "set", "a.com", "--cert", "c"]).is_err()
        );
    }
}
