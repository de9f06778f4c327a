//! The commands that are not `serve`: `route` and `status`, for people and
//! scripts (controllers) working on the same Redis as the proxies; and the
//! exit codes of the binary, one table for every command.

pub(crate) mod route;
mod status;

pub use route::route;
pub use status::status;

use crate::config::{parse_redis_url, ConfigError, RedisArgs};
use fred::prelude::*;
use std::time::Duration;

/// Exit codes of the `switchyard` binary (README "Exit codes"; `--help`
/// prints the same table). BSD `sysexits.h` values where one fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done; for `--wait`: live on every live replica.
    Success = 0,
    /// `serve` could not start (a listen address is unavailable).
    Failure = 1,
    /// A bad flag, value or configuration (`EX_USAGE`).
    Usage = 64,
    /// Refused data: an invalid host, backends or certificate; nothing
    /// written (`EX_DATAERR`).
    Data = 65,
    /// A file named on the command line cannot be read (`cert set`) (`EX_NOINPUT`).
    NoInput = 66,
    /// `--wait`: written, but no replica is live (`EX_NOHOST`).
    NoReplicas = 68,
    /// Redis unreachable, or it answered with an error (`EX_UNAVAILABLE`).
    Unavailable = 69,
    /// `--wait`: written, but replicas had not caught up in time (`EX_TEMPFAIL`).
    Lagging = 75,
    /// Redis refused the credentials or a command for this user (ACL) (`EX_NOPERM`).
    NoPermission = 77,
}

impl Exit {
    /// Every code with its meaning, in the order of the table.
    pub const TABLE: [(Exit, &'static str); 9] = [
        (
            Exit::Success,
            "done; with --wait: live on every live replica",
        ),
        (Exit::Failure, "serve: cannot listen on an address"),
        (Exit::Usage, "bad flag, value or configuration"),
        (
            Exit::Data,
            "invalid host, backends or certificate: nothing written",
        ),
        (Exit::NoInput, "cert set: a file cannot be read"),
        (
            Exit::NoReplicas,
            "--wait: written, but no replica is live (see --allow-no-replicas)",
        ),
        (
            Exit::Unavailable,
            "Redis unreachable, or it answered with an error",
        ),
        (
            Exit::Lagging,
            "--wait: written, but replicas had not caught up (named on stderr)",
        ),
        (
            Exit::NoPermission,
            "Redis refused the credentials or a command (ACL)",
        ),
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// The exit code table as `--help` shows it.
pub fn exit_codes_help() -> String {
    let mut help = String::from("Exit codes:\n");
    for (exit, meaning) in Exit::TABLE {
        help.push_str(&format!("  {:>2}  {meaning}\n", exit.code()));
    }
    help
}

/// A command's failure: what to tell the user, and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::new(Exit::Usage, e.to_string())
    }
}

/// Where a command works: the Redis and the routes key, validated like the
/// server validates them.
pub struct Context {
    redis: fred::prelude::Config,
    /// The URL without its password, for messages.
    redis_shown: String,
    pub routes_key: String,
}

/// How long connecting and each command may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

impl Context {
    pub fn new(redis_url: &str, args: &RedisArgs) -> Result<Context, CliError> {
        args.validate()?;
        Ok(Context {
            redis: parse_redis_url(redis_url)?,
            redis_shown: without_password(redis_url),
            routes_key: args.routes_key.clone(),
        })
    }

    /// A connected client, closed (`QUIT`) when dropped.
    pub async fn connect(&self) -> Result<Connection, CliError> {
        let client = Builder::from_config(self.redis.clone())
            .with_connection_config(|c| {
                c.connection_timeout = REDIS_TIMEOUT;
                c.internal_command_timeout = REDIS_TIMEOUT;
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = REDIS_TIMEOUT)
            .build()
            .map_err(|e| self.redis_error(&e))?;
        client.init().await.map_err(|e| self.redis_error(&e))?;
        Ok(Connection(Some(client)))
    }

    /// A Redis failure in words a person can act on, with its exit code.
    pub fn redis_error(&self, e: &Error) -> CliError {
        let details = readable_details(e.details().trim());
        let details = details.as_str();
        let at = &self.redis_shown;
        if matches!(e.kind(), ErrorKind::Auth) {
            return CliError::new(
                Exit::NoPermission,
                format!("Redis at {at} refused the credentials: {details}"),
            );
        }
        if details.starts_with("NOPERM") {
            return CliError::new(
                Exit::NoPermission,
                format!("Redis at {at} refused a command for this user (ACL): {details}"),
            );
        }
        match e.kind() {
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Sentinel => {
                CliError::new(
                    Exit::Unavailable,
                    format!("cannot reach Redis at {at}: {details}"),
                )
            }
            _ => CliError::new(
                Exit::Unavailable,
                format!("Redis at {at} answered with an error: {details}"),
            ),
        }
    }
}

/// The client reports an IO error as its debug text (`Os { code: 111,
/// kind: ConnectionRefused, message: "Connection refused" }`): keep the
/// message.
fn readable_details(details: &str) -> String {
    let quoted = |label: &str| {
        let start = details.find(label)? + label.len();
        let end = details[start..].find('"')?;
        Some(details[start..start + end].to_owned())
    };
    match quoted("message: \"").or_else(|| quoted("error: \"")) {
        Some(message) => lowercase_first(&message),
        None if details.starts_with("Kind(") => {
            // `Kind(TimedOut)` and the like.
            let kind = details.trim_start_matches("Kind(").trim_end_matches(')');
            lowercase_first(kind)
        }
        None => details.to_owned(),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A client that says `QUIT` when dropped: the binary exits anyway, but a
/// long-lived caller (a controller embedding the commands, the `wait`
/// bench) must not leave a connection behind per command.
pub struct Connection(Option<Client>);

impl Connection {
    /// The client, for a part that closes it itself.
    pub fn into_inner(mut self) -> Client {
        self.0.take().expect("a connection holds its client")
    }
}

impl std::ops::Deref for Connection {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("a connection holds its client")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let (Some(client), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`: URLs appear in
/// messages, passwords must not.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{masked}@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            without_password("redis://app:s3cr@t@h:1/0"),
            "redis://app:***@h:1/0"
        );
        assert_eq!(without_password("rediss://:pw@h:1"), "rediss://:***@h:1");
        assert_eq!(without_password("redis://token@h/2"), "redis://***@h/2");
        assert_eq!(without_password("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(without_password("nonsense"), "nonsense");
    }

    #[test]
    fn the_exit_code_table_is_complete_and_ordered() {
        let codes: Vec<u8> = Exit::TABLE.iter().map(|(e, _)| e.code()).collect();
        assert_eq!(codes, [0, 1, 64, 65, 66, 68, 69, 75, 77]);
        let help = exit_codes_help();
        assert!(
            help.contains("  68  --wait: written, but no replica is live"),
            "{help}"
        );
    }

    #[test]
    fn redis_failures_are_told_in_words() {
        let ctx = Context::new(
            "redis://u:pw@127.0.0.1:1/0",
            &RedisArgs {
                redis_url: None,
                routes_key: "routes".into(),
            },
        )
        .unwrap();
        let e = ctx.redis_error(&Error::new(
            ErrorKind::IO,
            "Connection refused (os error 111)",
        ));
        assert_eq!(e.exit, Exit::Unavailable);
        assert_eq!(
            e.message,
            "cannot reach Redis at redis://u:***@127.0.0.1:1/0: Connection refused (os error 111)"
        );
        let e = ctx.redis_error(&Error::new(
            ErrorKind::Unknown,
            "NOPERM User u has no permissions to run the 'hset' command",
        ));
        assert_eq!(e.exit, Exit::NoPermission);
        assert!(e.message.contains("(ACL)"), "{}", e.message);
        let e = ctx.redis_error(&Error::new(
            ErrorKind::Auth,
            "WRONGPASS invalid username-password pair",
        ));
        assert_eq!(e.exit, Exit::NoPermission);
    }
}
