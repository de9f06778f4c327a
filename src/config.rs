//! Configuration: the command line (every flag also read from
//! `SWITCHYARD_<FLAG>`), validated into a typed [`Config`]. Tests build a
//! `Config` with [`Config::new`], which never reads the process
//! environment; only the binary's own parse does (clap's flag lookup and
//! the `REDIS_URL` fallback in [`Cli::redis_url`]).

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code for a usage error (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A dynamic HTTP reverse proxy whose routes live in Redis and are pushed, not polled."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub acme: AcmeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic (the default when no command is given).
    Serve,
    /// Read and write routes in the Redis hash.
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },
    /// List the live replicas and what table each one runs.
    Status,
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
    Set {
        host: String,
        /// The PEM chain, leaf first (e.g. fullchain.pem).
        #[arg(long)]
        cert: PathBuf,
        /// The PEM private key (PKCS#8, SEC1 or PKCS#1).
        #[arg(long)]
        key: PathBuf,
    },
    /// Delete HOST's certificate.
    Del { host: String },
    /// List every certificate: names, issuer, expiry, sealed or not, problems.
    List,
}

#[derive(Debug, Subcommand)]
pub enum RouteAction {
    /// Set HOST to BACKENDS (`ip:port[,ip:port...]`); refuses an invalid value.
    Set {
        host: String,
        backends: String,
        /// Wait until every live replica serves the change (optional timeout, default 10s).
        #[arg(long, num_args = 0..=1, default_missing_value = "10s", value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// Delete the route of HOST.
    Del {
        host: String,
        #[arg(long, num_args = 0..=1, default_missing_value = "10s", value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// List every route.
    List,
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
pub struct ServeArgs {
    /// Address for proxied traffic.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

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

    /// Cap on concurrent client connections (0 = no cap).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// One log line per request.
    #[arg(long, env = "SWITCHYARD_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,

    /// Log format.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// This replica's id in `switchyard status` (default: hostname-pid).
    #[arg(long, env = "SWITCHYARD_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// Threads serving client connections, each with its own event loop and
    /// backend pool (default: one per core).
    #[arg(long, env = "SWITCHYARD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// From this many routes, one replica reads the hash after a change and
    /// publishes what changed; the others apply that instead of reading
    /// (0 turns shared reads off).
    #[arg(
        long,
        env = "SWITCHYARD_SHARED_READ_THRESHOLD",
        default_value_t = 10_000
    )]
    pub shared_read_threshold: usize,
}

/// TLS flags (README.md, "HTTPS"). `--certs-key` and `--certs-secret-file`
/// are shared by the server and the `cert` commands.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// The default certificate's PEM chain (served when no certificate of the
    /// certs hash fits the client's SNI); reloaded when it changes and on SIGHUP.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The default certificate's PEM private key.
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Time a client has to complete the TLS handshake.
    #[arg(long, env = "SWITCHYARD_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_handshake_timeout: Duration,

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
    pub resync_interval: Duration,
    /// PING period on both connections: finds half-open connections that
    /// TCP alone would report only minutes later.
    pub ping_interval: Duration,
    /// Limits of the capped exponential reconnect backoff.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Timeout of every Redis command and of connecting.
    pub command_timeout: Duration,
    /// Above this many routes a reload reads the hash with `DUMP` instead
    /// of `HGETALL` (see `sync::dump`: same work for Redis, a fraction of
    /// the decoding for the proxy).
    pub dump_threshold: usize,
    /// Above this many routes a reload uses HSCAN in chunks instead of one
    /// DUMP or HGETALL, so Redis is never blocked for long: both cost Redis
    /// ~0.1 µs per route in one go (~25 ms at 250,000), HSCAN ~0.45 µs per
    /// route in slices of 10,000.
    pub scan_threshold: usize,
    pub snapshot_file: Option<PathBuf>,
    /// Status key refresh period (DESIGN 8).
    pub status_interval: Duration,
    pub replica_id: String,
    /// From this many routes, shared reads (see `sync::shared`): one
    /// replica reads and publishes the field-level delta, the others apply
    /// it. What it saves is one O(routes) DUMP per replica per change, which
    /// Redis serves one after another; below ~10,000 routes a read costs
    /// Redis about a millisecond and sharing is not worth a moving part.
    /// 0 turns it off.
    pub shared_read_threshold: usize,
    /// How long a follower waits for the reader's delta before it reads
    /// itself: three of the reader's read times, within these bounds. The
    /// floor keeps scheduling noise from turning into reads; the ceiling
    /// bounds what a dead reader costs a change until its lease expires.
    pub shared_read_wait_min: Duration,
    pub shared_read_wait_max: Duration,
}

/// Everything the request path needs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub dead_backend_ttl: Duration,
    pub connect_timeout: Duration,
    pub response_header_timeout: Duration,
    pub access_log: bool,
}

/// Everything the listeners need.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub header_read_timeout: Duration,
    pub max_header_size: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
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
    /// Seals and opens private keys in the certs hash.
    pub secret: Option<crate::tls::seal::Secret>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            default_files: None,
            file_poll_interval: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            certs_key: "routes:certs".into(),
            secret: None,
        }
    }
}

impl TlsConfig {
    /// Checks the TLS flags: the files must be readable (their content is
    /// checked when loaded, and reported without stopping the proxy), the
    /// secret must be 32 bytes.
    pub fn from_args(args: &TlsArgs) -> Result<TlsConfig, ConfigError> {
        if args.certs_key.is_empty() {
            return Err(ConfigError::CertsKey);
        }
        if args.tls_handshake_timeout < Duration::from_millis(100) {
            return Err(ConfigError::HandshakeTimeout);
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
        let default_files = match (&args.tls_cert, &args.tls_key) {
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
        let secret = match &args.certs_secret_file {
            Some(path) => Some(crate::tls::seal::Secret::from_file(path)?),
            None => None,
        };
        Ok(TlsConfig {
            default_files,
            handshake_timeout: args.tls_handshake_timeout,
            certs_key: args.certs_key.clone(),
            secret,
            ..TlsConfig::default()
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
        Ok(Config {
            tls: TlsConfig::from_args(&cli.tls)?,
            acme: AcmeConfig::from_args(&cli.acme)?,
            ..Config::from_args(redis_url, &cli.redis, &cli.serve)?
        })
    }

    pub fn from_args(
        redis_url: &str,
        redis: &RedisArgs,
        serve: &ServeArgs,
    ) -> Result<Config, ConfigError> {
        if redis.routes_key.is_empty() {
            return Err(ConfigError::RoutesKey);
        }
        if serve.resync_interval < Duration::from_millis(100) {
            return Err(ConfigError::ResyncInterval);
        }
        if serve.max_header_size < 8192 {
            return Err(ConfigError::MaxHeaderSize);
        }
        Ok(Config {
            sync: SyncConfig {
                redis: parse_redis_url(redis_url)?,
                redis_url: redis_url.to_owned(),
                routes_key: redis.routes_key.clone(),
                resync_interval: serve.resync_interval,
                ping_interval: Duration::from_secs(1),
                backoff_min: Duration::from_millis(50),
                backoff_max: Duration::from_secs(5),
                command_timeout: Duration::from_secs(5),
                // Redis's default `hash-max-listpack-entries`: smaller
                // hashes are DUMPed as a listpack, which `sync::dump` does
                // not read.
                dump_threshold: 512,
                scan_threshold: 250_000,
                snapshot_file: serve.snapshot_file.clone(),
                status_interval: Duration::from_secs(5),
                replica_id: serve.replica_id.clone().unwrap_or_else(default_replica_id),
                shared_read_threshold: serve.shared_read_threshold,
                shared_read_wait_min: Duration::from_millis(50),
                shared_read_wait_max: Duration::from_millis(500),
            },
            proxy: ProxyConfig {
                dead_backend_ttl: serve.dead_backend_ttl,
                connect_timeout: serve.connect_timeout,
                response_header_timeout: serve.response_header_timeout,
                access_log: serve.access_log,
            },
            server: ServerConfig {
                header_read_timeout: serve.header_read_timeout,
                max_header_size: serve.max_header_size,
                idle_timeout: serve.idle_timeout,
                max_connections: serve.max_connections,
                shutdown_timeout: serve.shutdown_timeout,
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
        assert_eq!(cli.serve.shared_read_threshold, 10_000);
        let cli = Cli::try_parse_from(["switchyard", "--shared-read-threshold", "0"]).unwrap();
        assert_eq!(cli.serve.shared_read_threshold, 0);
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
    }

    #[test]
    fn route_set_wait_takes_an_optional_timeout() {
        let wait_of = |flag: &str| {
            let cli =
                Cli::try_parse_from(["switchyard", "route", "set", "a.com", "10.0.0.1:80", flag])
                    .unwrap();
            match cli.command {
                Some(Command::Route {
                    action: RouteAction::Set { wait, .. },
                }) => wait,
                other => panic!("parsed as {other:?}"),
            }
        };
        assert_eq!(wait_of("--wait"), Some(Duration::from_secs(10)));
        assert_eq!(wait_of("--wait=3s"), Some(Duration::from_secs(3)));
    }

    #[test]
    fn tls_flags_default_off_and_go_in_pairs() {
        let cli = Cli::try_parse_from(["switchyard"]).unwrap();
        let tls = TlsConfig::from_args(&cli.tls).unwrap();
        assert_eq!(tls.default_files, None);
        assert_eq!(tls.certs_key, "routes:certs");
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert!(tls.secret.is_none());
        assert!(Cli::try_parse_from(["switchyard", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["switchyard", "--tls-key", "k.pem"]).is_err());
        let cli = Cli::try_parse_from(["switchyard", "--tls-handshake-timeout", "10ms"]).unwrap();
        assert!(matches!(
            TlsConfig::from_args(&cli.tls),
            Err(ConfigError::HandshakeTimeout)
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
                action: CertAction::Set { host, cert, key },
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
