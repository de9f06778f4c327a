//! The command line (clap): [`Cli`], the command tree (`serve`, `route`,
//! `cert`, `status`) and [`WaitArgs`], shared by every writing command; the
//! check clap cannot express (serve flags before another command) and the
//! Redis URL's `REDIS_URL` fallback. The flag groups are in
//! [`super::flags`]; parsed flags become a typed config in
//! [`super::Config::from_args`], [`super::TlsConfig`] and
//! [`super::AcmeConfig`].

use super::flags::{RedisArgs, ServeArgs, TlsArgs};
use clap::{Args, Parser, Subcommand};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

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
