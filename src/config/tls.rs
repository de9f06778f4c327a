//! [`TlsConfig`]: everything TLS needs (README.md, "HTTPS"), checked from
//! the shared TLS flags (the `cert` commands' too) and the serve flags.

use super::{ConfigError, ServeArgs, TlsArgs};
use std::path::PathBuf;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Config};
    use clap::{CommandFactory, FromArgMatches, Parser};

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
}
