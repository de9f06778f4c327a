//! TLS: certificates from the certs hash and from files, sealed private
//! keys, the choice by SNI, the handshake, `/certs` and the `cert`
//! commands (README.md, "HTTPS").
//!
//! - [`certs`]: one value (PEM chain + key, or sealed key) parsed and checked.
//! - [`seal`]: private keys at rest, sealed with the shared secret.
//! - [`table`]: [`CertTable`], built from the hash or patched field by field.
//! - [`resolver`]: [`CertStore`], what a replica serves, chosen by SNI.
//! - [`files`]: the default certificate from `--tls-cert`/`--tls-key`, reloaded.
//! - [`acceptor`]: the rustls configuration and the bounded, counted handshake.
//! - [`view`]: what `/certs` shows.
//! - [`tickets`]: session tickets under keys shared through Redis (resumption on any replica).
//! - [`cli`]: `cert set`, `cert del`, `cert list`.

pub mod acceptor;
pub mod certs;
pub mod cli;
pub mod files;
pub mod resolver;
pub mod seal;
pub mod table;
pub mod tickets;
pub mod view;

#[cfg(test)]
pub(crate) mod testing;

pub use acceptor::{HandshakeError, TlsAcceptor, TlsInfo};
pub use resolver::CertStore;
pub use table::{CertTable, LoadContext};

use crate::config::TlsConfig;
use crate::state::SharedState;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Starts what TLS needs in the background of a running proxy: the
/// default certificate's files, loaded now and watched until `stop`.
/// Returns the files, whose [`files::CertFiles::reload`] is what SIGHUP
/// calls.
pub fn start(
    config: &TlsConfig,
    state: &Arc<SharedState>,
    stop: CancellationToken,
) -> Option<Arc<files::CertFiles>> {
    let paths = config.default_files.as_ref()?;
    let files = Arc::new(files::CertFiles::new(paths.cert.clone(), paths.key.clone()));
    tokio::spawn(
        files
            .clone()
            .watch(state.clone(), config.file_poll_interval, stop),
    );
    Some(files)
}
