//! [`AcmeConfig`]: everything automatic certificates need (README.md,
//! "Automatic certificates"), checked from the `--acme-*` flags.

use super::{AcmeArgs, ConfigError};
use std::path::PathBuf;
use std::time::Duration;

/// Everything automatic certificates need (README.md, "Automatic
/// certificates"); `None` in [`super::Config::acme`] when `--acme-domains` is
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
