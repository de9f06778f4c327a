//! The `route` and `status` commands: for people and scripts, writing and
//! reading the same hash the proxies follow. Values are validated with the
//! proxy's own parser, so an invalid route is refused before it is written.

use crate::config::{parse_redis_url, RouteAction};
use crate::replicas::{self, ReplicaStatus};
use crate::routes::{parse_backends, parse_field, FieldKey, RedisMicros};
use crate::sync::redis::parse_time;
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use std::time::{Duration, SystemTime};

/// Exit code for data the command refused (BSD `EX_DATAERR`).
pub const EXIT_DATA: i32 = 65;
/// Exit code when Redis cannot be reached or answers an error.
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code when `--wait` timed out with replicas behind.
pub const EXIT_LAGGING: i32 = 75;

/// A command's failure: message and exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> CliError {
    CliError {
        code: EXIT_UNAVAILABLE,
        message: format!("redis: {e}"),
    }
}

pub(crate) async fn connect(redis_url: &str) -> Result<Client, CliError> {
    let config = parse_redis_url(redis_url).map_err(|e| CliError {
        code: crate::config::EXIT_USAGE,
        message: e.to_string(),
    })?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .build()
        .map_err(unavailable)?;
    client.init().await.map_err(unavailable)?;
    Ok(client)
}

/// Runs a `route` command; returns what to print on success.
pub async fn route(
    redis_url: &str,
    routes_key: &str,
    action: RouteAction,
) -> Result<String, CliError> {
    match action {
        RouteAction::Set {
            host,
            backends,
            wait,
        } => {
            let field = normalized_field(&host)?;
            parse_backends(&backends).map_err(|e| CliError {
                code: EXIT_DATA,
                message: format!("refusing to write {backends:?} for {field}: {e}"),
            })?;
            let client = connect(redis_url).await?;
            let trx = client.multi();
            let _: () = trx
                .hset(routes_key, (field.as_str(), backends.trim()))
                .await
                .map_err(unavailable)?;
            let write_time = write_time_of(&trx).await?;
            let mut out = format!("{field} -> {}\n", backends.trim());
            if let Some(timeout) = wait {
                out.push_str(&wait_for_replicas(&client, routes_key, write_time, timeout).await?);
            }
            Ok(out)
        }
        RouteAction::Del { host, wait } => {
            let field = normalized_field(&host)?;
            let client = connect(redis_url).await?;
            let trx = client.multi();
            let _: () = trx
                .hdel(routes_key, field.as_str())
                .await
                .map_err(unavailable)?;
            let write_time = write_time_of(&trx).await?;
            let mut out = format!("deleted {field}\n");
            if let Some(timeout) = wait {
                out.push_str(&wait_for_replicas(&client, routes_key, write_time, timeout).await?);
            }
            Ok(out)
        }
        RouteAction::List => {
            let client = connect(redis_url).await?;
            let mut routes: Vec<(String, String)> = client
                .hgetall::<std::collections::HashMap<String, String>, _>(routes_key)
                .await
                .map_err(unavailable)?
                .into_iter()
                .collect();
            routes.sort();
            let mut out = String::new();
            for (host, value) in routes {
                let note = match parse_backends(&value) {
                    Ok(_) => String::new(),
                    Err(e) => format!("\t# invalid: {e}"),
                };
                out.push_str(&format!("{host}\t{value}{note}\n"));
            }
            Ok(out)
        }
    }
}

fn normalized_field(host: &str) -> Result<String, CliError> {
    parse_field(host)
        .map(|k| match k {
            FieldKey::Exact(h) => h,
            FieldKey::Wildcard(s) => format!("*.{s}"),
        })
        .map_err(|e| CliError {
            code: EXIT_DATA,
            message: format!("invalid host {host:?}: {e}"),
        })
}

/// Queues `TIME` after the write in `trx`, runs it, and returns the Redis
/// time of the write (DESIGN 3.7: every table whose watermark is later
/// than this has the change).
async fn write_time_of(trx: &fred::clients::Transaction) -> Result<RedisMicros, CliError> {
    let _: () = trx
        .custom(
            CustomCommand::new_static("TIME", None, false),
            Vec::<Value>::new(),
        )
        .await
        .map_err(unavailable)?;
    let results: Value = trx.exec(true).await.map_err(unavailable)?;
    results
        .into_array()
        .get(1)
        .and_then(parse_time)
        .ok_or_else(|| unavailable("unexpected reply to MULTI ... TIME EXEC"))
}

async fn wait_for_replicas(
    client: &Client,
    routes_key: &str,
    write_time: RedisMicros,
    timeout: Duration,
) -> Result<String, CliError> {
    let outcome = replicas::wait_for_replicas(client, routes_key, write_time, timeout)
        .await
        .map_err(unavailable)?;
    if outcome.lagging.is_empty() {
        Ok(format!(
            "live on {} replica(s) after {:.1} ms\n",
            outcome.replicas,
            outcome.took.as_secs_f64() * 1000.0
        ))
    } else {
        let ids: Vec<&str> = outcome.lagging.iter().map(|r| r.id.as_str()).collect();
        Err(CliError {
            code: EXIT_LAGGING,
            message: format!(
                "written, but {} of {} replica(s) had not caught up after {:?}: {}",
                ids.len(),
                outcome.replicas,
                timeout,
                ids.join(", ")
            ),
        })
    }
}

/// `switchyard status`: one line per live replica.
pub async fn status(redis_url: &str, routes_key: &str) -> Result<String, CliError> {
    let client = connect(redis_url).await?;
    let replicas = replicas::list(&client, routes_key)
        .await
        .map_err(unavailable)?;
    Ok(format_status(&replicas))
}

pub fn format_status(replicas: &[ReplicaStatus]) -> String {
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut out = format!(
        "{:<28} {:>8} {:>8} {:>8} {:>10} {:<9} {:<10} {:<9} {:<9} {}\n",
        "REPLICA",
        "VERSION",
        "ROUTES",
        "INVALID",
        "SYNC AGE",
        "REDIS",
        "NOTIFY",
        "SOURCE",
        "HELD",
        "WATERMARK(us)"
    );
    for r in replicas {
        let age = r
            .last_sync_ms
            .map(|t| format!("{:.1}s", now_ms.saturating_sub(t) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<28} {:>8} {:>8} {:>8} {:>10} {:<9} {:<10} {:<9} {:<9} {}\n",
            r.id,
            r.table_version,
            r.routes,
            r.invalid,
            age,
            r.redis,
            r.notifications,
            r.source,
            if r.held.is_empty() {
                "-".to_owned()
            } else {
                r.held.join(";")
            },
            r.watermark
                .map(|w| w.to_string())
                .unwrap_or_else(|| "-".into())
        ));
    }
    out.push_str(&format!("{} live replica(s)\n", replicas.len()));
    out
}
