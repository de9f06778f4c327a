//! `switchyard route set|del|list|accept-removal`: writes and reads the
//! hash the proxies follow. Values are validated with the proxy's own
//! parser, so an invalid route is refused before it is written; a write
//! reads the Redis time in its own transaction, which is what `--wait`
//! waits for (README "Replicas and `--wait`").

use super::{CliError, Connection, Context, Exit};
use crate::config::{RouteAction, WaitOptions};
use crate::replicas::wait::{Gone, Lagging, Progress, WaitReport, Watch};
use crate::replicas::{self, parse_time};
use crate::routes::{parse_backends, parse_field, RedisMicros};
use fred::clients::Transaction;
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use std::io::Write;

/// How long an `accept-removal` confirmation stays valid.
const ACCEPT_REMOVAL_TTL_MS: u64 = 60_000;

/// Runs a `route` command, printing to `out`.
pub async fn route(
    ctx: &Context,
    action: RouteAction,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match action {
        RouteAction::Set {
            host,
            backends,
            wait,
        } => set(ctx, &host, &backends, wait.options(), out).await,
        RouteAction::Del { host, wait } => del(ctx, &host, wait.options(), out).await,
        RouteAction::List => list(ctx, out).await,
        RouteAction::AcceptRemoval => accept_removal(ctx, out).await,
    }
}

pub(crate) fn print(out: &mut dyn Write, text: std::fmt::Arguments) {
    // A closed stdout (`| head`) is no reason to fail a write that was made.
    let _ = out.write_fmt(text);
    let _ = out.flush();
}

fn normalized_field(host: &str) -> Result<String, CliError> {
    parse_field(host)
        .map(|key| key.display())
        .map_err(|e| CliError::new(Exit::Data, format!("invalid host {host:?}: {e}")))
}

/// The connections a write needs: commands, and with `--wait` the
/// announcements, subscribed before the write so none is missed.
pub(crate) async fn connect_for_write(
    ctx: &Context,
    wait: Option<WaitOptions>,
) -> Result<(Connection, Option<Watch>), CliError> {
    let Some(_) = wait else {
        return Ok((ctx.connect().await?, None));
    };
    let (client, subscriber) = tokio::try_join!(ctx.connect(), ctx.connect())?;
    let watch = Watch::subscribe(subscriber.into_inner(), &ctx.routes_key)
        .await
        .map_err(|e| ctx.redis_error(&e))?;
    Ok((client, Some(watch)))
}

/// The write itself, queued in `trx`: the hash and its change log (a
/// stream appended in the same transaction), so that every replica
/// patches the field instead of reading the whole hash (`sync::changelog`).
async fn queue_set(trx: &Transaction, key: &str, field: &str, value: &str) -> Result<(), Error> {
    crate::sync::changelog::queue_set(trx, key, field, value).await
}

async fn queue_del(trx: &Transaction, key: &str, field: &str) -> Result<(), Error> {
    crate::sync::changelog::queue_del(trx, key, field).await
}

/// Runs a write transaction: `MULTI HGET <write> XADD TIME EXEC`. Returns the
/// field's value before the write, the write's own reply, and the Redis
/// time of the write: every table whose watermark is at or after it has
/// the write. (A `TIME` read after the transaction could be later than a
/// fast replica's read of the write, and a wait for it might never end.)
pub(crate) async fn run_write(
    ctx: &Context,
    trx: Transaction,
) -> Result<(Option<String>, Value, RedisMicros), CliError> {
    let _: () = trx
        .custom(
            CustomCommand::new_static("TIME", None, false),
            Vec::<Value>::new(),
        )
        .await
        .map_err(|e| ctx.redis_error(&e))?;
    let replies: Vec<Value> = trx.exec(true).await.map_err(|e| ctx.redis_error(&e))?;
    let unexpected = || {
        CliError::new(
            Exit::Unavailable,
            "unexpected reply from Redis to the write",
        )
    };
    // HGET, the write, its change-log entry, TIME.
    let [previous, reply, _entry, time]: [Value; 4] =
        replies.try_into().map_err(|_| unexpected())?;
    let previous = previous.as_string();
    let time = parse_time(&time).ok_or_else(unexpected)?;
    Ok((previous, reply, time))
}

async fn set(
    ctx: &Context,
    host: &str,
    backends: &str,
    wait: Option<WaitOptions>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let field = normalized_field(host)?;
    let value = backends.trim();
    parse_backends(value).map_err(|e| {
        CliError::new(
            Exit::Data,
            format!("refusing to write {backends:?} for {field}: {e}"),
        )
    })?;
    let (client, watch) = connect_for_write(ctx, wait).await?;
    let trx = client.multi();
    let queued: Result<(), Error> = async {
        let _: () = trx.hget(&ctx.routes_key, field.as_str()).await?;
        queue_set(&trx, &ctx.routes_key, &field, value).await
    }
    .await;
    queued.map_err(|e| ctx.redis_error(&e))?;
    let (previous, _, write_time) = run_write(ctx, trx).await?;
    let note = match previous.as_deref() {
        None => " (new)".to_owned(),
        Some(old) if old == value => " (unchanged)".to_owned(),
        Some(old) => format!(" (was {old})"),
    };
    print(out, format_args!("{field} -> {value}{note}\n"));
    // Even an unchanged value is waited for: Redis announces every HSET,
    // and replicas re-read on it.
    match (watch, wait) {
        (Some(watch), Some(options)) => {
            wait_for_replicas(ctx, &client, watch, write_time, options, out).await
        }
        _ => Ok(()),
    }
}

async fn del(
    ctx: &Context,
    host: &str,
    wait: Option<WaitOptions>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let field = normalized_field(host)?;
    let deleted = logged_del(ctx, &ctx.routes_key, &field, wait, out, |previous| {
        let was = previous.map(|v| format!(" (was {v})")).unwrap_or_default();
        format!("deleted {field}{was}")
    })
    .await?;
    if !deleted {
        let note = if wait.is_some() {
            " (no change to wait for)"
        } else {
            ""
        };
        print(
            out,
            format_args!("no route for {field}: nothing deleted{note}\n"),
        );
    }
    Ok(())
}

/// Deletes `field` of the followed hash `key` through the change log
/// (`route del`, `cert del`); prints `said(previous value)` and, with
/// `--wait`, waits for the replicas. False when the hash had no such
/// field: Redis announces no event for it and no replica will re-read,
/// so there is nothing to wait for.
pub(crate) async fn logged_del(
    ctx: &Context,
    key: &str,
    field: &str,
    wait: Option<WaitOptions>,
    out: &mut dyn Write,
    said: impl FnOnce(Option<String>) -> String,
) -> Result<bool, CliError> {
    let (client, watch) = connect_for_write(ctx, wait).await?;
    let trx = client.multi();
    let queued: Result<(), Error> = async {
        let _: () = trx.hget(key, field).await?;
        queue_del(&trx, key, field).await
    }
    .await;
    queued.map_err(|e| ctx.redis_error(&e))?;
    let (previous, deleted, write_time) = run_write(ctx, trx).await?;
    if deleted.as_u64() == Some(0) {
        return Ok(false);
    }
    print(out, format_args!("{}\n", said(previous)));
    if let (Some(watch), Some(options)) = (watch, wait) {
        wait_for_replicas(ctx, &client, watch, write_time, options, out).await?;
    }
    Ok(true)
}

pub(crate) async fn wait_for_replicas(
    ctx: &Context,
    client: &Client,
    watch: Watch,
    write_time: RedisMicros,
    options: WaitOptions,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let report = watch
        .wait(client, write_time, options.timeout)
        .await
        .map_err(|e| ctx.redis_error(&e))?;
    let gone = describe_gone(&report.gone);
    match report.progress {
        Progress::Live => {
            print(
                out,
                format_args!(
                    "live on {} replica(s) after {:.1} ms{gone}\n",
                    report.caught_up.len(),
                    report.took.as_secs_f64() * 1000.0
                ),
            );
            Ok(())
        }
        Progress::NoReplicas if options.allow_no_replicas => {
            print(
                out,
                format_args!("no live replica: nothing to wait for{gone}\n"),
            );
            Ok(())
        }
        Progress::NoReplicas => Err(CliError::new(
            Exit::NoReplicas,
            format!(
                "written, but no replica is live to serve it (none in {} refreshed within its expiry){gone}; \
                 --allow-no-replicas accepts that",
                replicas::registry_key(&ctx.routes_key)
            ),
        )),
        Progress::Waiting => Err(lagging_error(&report, options)),
    }
}

fn describe_gone(gone: &[(String, Gone)]) -> String {
    if gone.is_empty() {
        return String::new();
    }
    let names: Vec<String> = gone
        .iter()
        .map(|(id, how)| match how {
            Gone::Left => format!("{id} (left)"),
            Gone::Expired => format!("{id} (stopped reporting)"),
        })
        .collect();
    format!("; not waited for: {}", names.join(", "))
}

fn lagging_error(report: &WaitReport, options: WaitOptions) -> CliError {
    let total = report.caught_up.len() + report.lagging.len();
    let names: Vec<String> = report.lagging.iter().map(describe_lagging).collect();
    CliError::new(
        Exit::Lagging,
        format!(
            "written, but {} of {total} live replica(s) had not caught up after {}: {}",
            report.lagging.len(),
            humantime::format_duration(options.timeout),
            names.join(", ")
        ),
    )
}

fn describe_lagging(lagging: &Lagging) -> String {
    let id = &lagging.id;
    if let Some(held) = lagging.held {
        return format!(
            "{id} (holds a removal of {} to {} routes: write them back, or confirm with `switchyard route accept-removal`)",
            held.current, held.next
        );
    }
    if lagging.notifications == "polling" {
        return format!("{id} (no notifications: catches up at its periodic resync)");
    }
    id.clone()
}

async fn list(ctx: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let client = ctx.connect().await?;
    let routes: std::collections::BTreeMap<String, String> = client
        .hgetall(&ctx.routes_key)
        .await
        .map_err(|e| ctx.redis_error(&e))?;
    let mut text = String::new();
    for (host, value) in routes {
        let note = match parse_backends(&value) {
            Ok(_) => String::new(),
            Err(e) => format!("\t# invalid: {e}"),
        };
        text.push_str(&format!("{host}\t{value}{note}\n"));
    }
    print(out, format_args!("{text}"));
    Ok(())
}

/// `SET <routes-key>:accept-removal <unix-ms> PX 60000`, with Redis's
/// clock: replicas holding a mass removal apply it while the key exists.
async fn accept_removal(ctx: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let client = ctx.connect().await?;
    let time: Value = client
        .custom(
            CustomCommand::new_static("TIME", None, false),
            Vec::<Value>::new(),
        )
        .await
        .map_err(|e| ctx.redis_error(&e))?;
    let now_ms = parse_time(&time)
        .ok_or_else(|| CliError::new(Exit::Unavailable, "unexpected reply from Redis to TIME"))?
        / 1000;
    let key = format!("{}:accept-removal", ctx.routes_key);
    let _: Value = client
        .set(
            &key,
            now_ms,
            Some(fred::types::Expiration::PX(ACCEPT_REMOVAL_TTL_MS as i64)),
            None,
            false,
        )
        .await
        .map_err(|e| ctx.redis_error(&e))?;
    let registry = replicas::read(&client, &ctx.routes_key)
        .await
        .map_err(|e| ctx.redis_error(&e))?;
    let holding: Vec<String> = registry
        .live()
        .filter_map(|r| {
            r.held
                .map(|h| format!("{} ({} -> {} routes)", r.id, h.current, h.next))
        })
        .collect();
    let valid = ACCEPT_REMOVAL_TTL_MS / 1000;
    if holding.is_empty() {
        print(
            out,
            format_args!(
                "removal accepted for the next {valid} s ({key}); no replica holds one right now\n"
            ),
        );
    } else {
        print(
            out,
            format_args!(
                "removal accepted for the next {valid} s ({key}); replicas holding one apply it at their next read: {}\n",
                holding.join(", ")
            ),
        );
    }
    Ok(())
}
