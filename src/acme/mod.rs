//! Automatic certificates (ACME, RFC 8555): every host that has a route
//! and matches `--acme-domains` gets a certificate ordered once for the
//! whole cluster, written to the certs hash like any certificate, and
//! renewed at two thirds of its lifetime (README.md, "Automatic
//! certificates").
//!
//! - [`plan`]: which hosts need an order and when (pure: patterns,
//!   renewal, backoff, certificates set by hand).
//! - [`store`]: the Redis keys replicas share (account key, locks,
//!   in-flight leases, HTTP-01 tokens, per-host records).
//! - [`challenges`]: the HTTP-01 tokens as every replica holds them in
//!   memory, answered by the cleartext listener.
//! - [`order`]: one order with the CA, HTTP-01, key and CSR.
//! - [`coordinator`]: the task ([`run`]) that ties them together.
//! - [`metrics`]: orders by outcome, renewals, in-flight orders.

pub mod challenges;
pub mod coordinator;
pub mod metrics;
pub mod order;
pub mod plan;
pub mod store;

pub use coordinator::{run, Outcome};
pub use plan::{DomainPatterns, PatternError};

/// The default `--acme-directory`: Let's Encrypt's production CA.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[cfg(test)]
mod tests {
    use crate::config::{AcmeConfig, Cli, ConfigError};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Option<AcmeConfig>, ConfigError> {
        let cli =
            Cli::try_parse_from(["switchyard", "serve"].iter().chain(args)).expect("flags parse");
        AcmeConfig::from_args(&cli.serve_args().acme)
    }

    #[test]
    fn acme_is_off_without_domains_and_defaults_to_lets_encrypt() {
        assert!(parse(&[]).unwrap().is_none());
        let acme = parse(&["--acme-domains", "*.cloud.com,shop.example.org"])
            .unwrap()
            .unwrap();
        assert_eq!(acme.directory, super::LETS_ENCRYPT_PRODUCTION);
        assert_eq!(acme.max_concurrent, 2);
        assert!(acme.domains.matches("app.cloud.com"));
        assert!(acme.domains.matches("shop.example.org"));
        assert!(!acme.domains.matches("example.org"));
    }

    #[test]
    fn acme_flags_are_checked() {
        let acme = parse(&[
            "--acme-domains",
            "*.cloud.com",
            "--acme-directory",
            "https://ca.internal/dir",
            "--acme-email",
            "ops@cloud.com",
            "--acme-max-concurrent",
            "5",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(acme.directory, "https://ca.internal/dir");
        assert_eq!(acme.email.as_deref(), Some("ops@cloud.com"));
        assert_eq!(acme.max_concurrent, 5);
        for bad in [
            &["--acme-domains", "10.0.0.1"][..],
            &[
                "--acme-domains",
                "*.cloud.com",
                "--acme-directory",
                "http://ca/dir",
            ],
            &[
                "--acme-domains",
                "*.cloud.com",
                "--acme-max-concurrent",
                "0",
            ],
            &[
                "--acme-domains",
                "*.cloud.com",
                "--acme-ca-file",
                "/nonexistent/ca.pem",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
