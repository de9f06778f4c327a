//! Configuration: the command line (every flag also read from
//! `SWITCHYARD_<FLAG>`), validated into a typed [`Config`]. Tests build a
//! `Config` with [`Config::new`], which never reads the process
//! environment; only the binary's own parse does (clap's flag lookup and
//! the `REDIS_URL` fallback in [`Cli::redis_url`]).
//!
//! In parts: `cli` (the command tree) and `flags` (the flag groups) are
//! what clap parses; this module checks them into [`Config`] and its
//! sub-configs for the sync loop, the request path and the listeners;
//! `tls` and `acme` hold the typed TLS and ACME configs.

mod acme;
mod cli;
mod flags;
mod tls;

pub use acme::AcmeConfig;
pub use cli::{CertAction, Cli, Command, RouteAction, WaitArgs, WaitOptions, DEFAULT_REDIS_URL};
pub use flags::{AcmeArgs, LogFormat, RedisArgs, ServeArgs, TlsArgs};
pub use tls::{CertFilePaths, TlsConfig};

use clap::{CommandFactory, FromArgMatches};
use std::path::PathBuf;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
}
