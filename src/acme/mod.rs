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
//! - [`order`]: one order with the CA, HTTP-01, key and CSR.
//! - [`coordinator`]: the task ([`run`]) that ties them together.
//! - [`metrics`]: orders by outcome, renewals, in-flight orders.

pub mod coordinator;
pub mod metrics;
pub mod order;
pub mod plan;
pub mod store;

pub use coordinator::{run, Outcome};
pub use plan::{DomainPatterns, PatternError};

/// The default `--acme-directory`: Let's Encrypt's production CA.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
