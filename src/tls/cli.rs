//! `switchyard cert set|del|list|accept-removal`: certificates for people
//! and scripts, written to the same hash the proxies follow. A chain and
//! key are checked with the proxy's own loader, on the exact value written
//! (key sealed when `--certs-secret-file` is given), and nothing is written
//! when it would not load. Writes go through the change log like `route
//! set/del` (`MULTI HGET HSET|HDEL XADD TIME EXEC`), so replicas patch the
//! one field, and `--wait` waits for every live replica the same way.
//! `cert list` says which live replicas serve each value and, for
//! automatic certificates, what the ACME records say (README.md, "HTTPS").

use super::certs::{self, CertError, CertInfo};
use super::seal::{SealError, Sealer};
use crate::acme::plan::{self, HostRecord};
use crate::cli::route::{connect_for_write, logged_del, print, run_write, wait_for_replicas};
use crate::cli::{CliError, Context, Exit};
use crate::config::{CertAction, TlsArgs, TlsConfig};
use crate::replicas::{self, parse_time, Registry};
use crate::routes::{parse_field, FieldKey, RedisMicros};
use crate::sync::changelog::{self, StreamId};
use bytes::Bytes;
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

/// How many of the newest change-log entries `cert list` reads to learn
/// when each value was written.
const LIST_LOG_ENTRIES: usize = 2_000;
/// How long an `accept-removal` confirmation stays valid.
const ACCEPT_REMOVAL_TTL_MS: i64 = 60_000;

fn refused(field: &str, e: &CertError) -> CliError {
    CliError::new(
        Exit::Data,
        format!("refusing to write the certificate of {field}: {e}"),
    )
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, None, false)
}

/// Runs a `cert` command, printing to `out`.
pub async fn cert(
    ctx: &Context,
    args: &TlsArgs,
    action: CertAction,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let config = TlsConfig::from_args(args)?;
    let sealer = config.cert_sealer();
    match action {
        CertAction::Set {
            host,
            cert,
            key,
            wait,
        } => {
            let field = field_of(&host)?;
            let value = value_for(&field, &read(&cert)?, &read(&key)?, sealer.as_ref())?;
            let field = field.display();
            let wait = wait.options();
            let (client, watch) = connect_for_write(ctx, wait).await?;
            let trx = client.multi();
            let queued: Result<(), Error> = async {
                let _: () = trx.hget(&config.certs_key, field.as_str()).await?;
                changelog::queue_set(&trx, &config.certs_key, &field, &value.text).await
            }
            .await;
            queued.map_err(|e| ctx.redis_error(&e))?;
            let (previous, _, write_time) = run_write(ctx, trx).await?;
            let info = value.info;
            let note = match previous {
                None => " (new)",
                Some(old) if old == value.text => " (unchanged)",
                Some(_) => " (replaced)",
            };
            print(
                out,
                format_args!(
                    "{field}: {} until {} (key {}){note}\n",
                    info.names.join(", "),
                    certs::rfc3339(info.not_after),
                    if info.sealed {
                        "sealed"
                    } else {
                        "in plaintext"
                    }
                ),
            );
            match (watch, wait) {
                (Some(watch), Some(options)) => {
                    wait_for_replicas(ctx, &client, watch, write_time, options, out).await
                }
                _ => Ok(()),
            }
        }
        CertAction::Del { host, wait } => {
            let field = field_of(&host)?.display();
            let wait = wait.options();
            let deleted = logged_del(ctx, &config.certs_key, &field, wait, out, |_| {
                format!("deleted the certificate of {field}")
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
                    format_args!("no certificate for {field}: nothing deleted{note}\n"),
                );
            }
            Ok(())
        }
        CertAction::List => {
            let client = ctx.connect().await?;
            let listing = read_listing(ctx, &client, &config.certs_key).await?;
            let now = SystemTime::now();
            let rows: Vec<Row> = listing
                .entries
                .iter()
                .map(|(field, value)| {
                    let mut row = Row::of(field, value, sealer.as_ref(), now);
                    row.served_by = Some(listing.served_by(field, value));
                    row.acme = listing.acme.get(field.as_str()).map(|r| Acme::of(r, value));
                    row
                })
                .collect();
            print(out, format_args!("{}", format_list(&rows)));
            Ok(())
        }
        CertAction::AcceptRemoval => {
            let client = ctx.connect().await?;
            let time: Value = client
                .custom(cmd("TIME"), Vec::<Value>::new())
                .await
                .map_err(|e| ctx.redis_error(&e))?;
            let now_ms = parse_time(&time).ok_or_else(|| {
                CliError::new(Exit::Unavailable, "unexpected reply from Redis to TIME")
            })? / 1000;
            let key = crate::sync::guard::accept_key(&config.certs_key);
            let _: Value = client
                .set(
                    &key,
                    now_ms,
                    Some(fred::types::Expiration::PX(ACCEPT_REMOVAL_TTL_MS)),
                    None,
                    false,
                )
                .await
                .map_err(|e| ctx.redis_error(&e))?;
            print(
                out,
                format_args!(
                    "removal of certificates accepted for the next {} s ({key})\n",
                    ACCEPT_REMOVAL_TTL_MS / 1000
                ),
            );
            Ok(())
        }
    }
}

/// What `cert list` reads: the hash with Redis's time, the newest log
/// entries, the replica registry and the ACME records.
struct Listing {
    entries: Vec<(String, Bytes)>,
    /// Redis time of the hash read.
    read_at: RedisMicros,
    /// The newest logged write of each field: when, and the value set
    /// (`None`: deleted).
    written: HashMap<Bytes, (StreamId, Option<Bytes>)>,
    /// `None` when the registry cannot be read (no rights).
    registry: Option<Registry>,
    acme: HashMap<String, HostRecord>,
}

async fn read_listing(ctx: &Context, client: &Client, key: &str) -> Result<Listing, CliError> {
    let trx = client.multi();
    let queued: Result<(), Error> = async {
        let _: () = trx.custom(cmd("TIME"), Vec::<Value>::new()).await?;
        let _: () = trx.hgetall(key).await?;
        Ok(())
    }
    .await;
    queued.map_err(|e| ctx.redis_error(&e))?;
    let replies: Vec<Value> = trx.exec(true).await.map_err(|e| ctx.redis_error(&e))?;
    let unexpected = || CliError::new(Exit::Unavailable, "unexpected reply from Redis to the read");
    let [time, hash]: [Value; 2] = replies.try_into().map_err(|_| unexpected())?;
    let read_at = parse_time(&time).ok_or_else(unexpected)?;
    let mut entries: Vec<(String, Bytes)> = hash
        .convert::<HashMap<String, Bytes>>()
        .map_err(|e| ctx.redis_error(&e))?
        .into_iter()
        .collect();
    entries.sort();
    // The rest only adds columns: a refusal (ACL) leaves them empty.
    let log: Value = client
        .custom(
            cmd("XREVRANGE"),
            vec![
                Value::from(changelog::log_key(key)),
                "+".into(),
                "-".into(),
                "COUNT".into(),
                LIST_LOG_ENTRIES.to_string().into(),
            ],
        )
        .await
        .unwrap_or(Value::Null);
    let mut written = HashMap::new();
    for (id, body) in changelog::decode_range(log).unwrap_or_default() {
        if let Ok(entry) = changelog::decode(id, &body.into_array()) {
            // Newest first: the first entry of a field is its last write.
            written
                .entry(entry.change.field)
                .or_insert((id, entry.change.value));
        }
    }
    let registry = replicas::read(client, &ctx.routes_key).await.ok();
    let hosts = crate::acme::store::Keys::new(&ctx.routes_key, key).hosts;
    let acme = client
        .hgetall::<HashMap<String, Bytes>, _>(&hosts)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(host, v)| Some((host, serde_json::from_slice(&v).ok()?)))
        .collect();
    Ok(Listing {
        entries,
        read_at,
        written,
        registry,
        acme,
    })
}

impl Listing {
    /// When `value` was written to `field`, as far as the log tells: the
    /// time of the field's newest logged write when it set this very value
    /// (to the millisecond: a stream id's precision); else the time of this
    /// read (a plain `HSET`, or an entry past the log's cap).
    fn write_time(&self, field: &str, value: &[u8]) -> RedisMicros {
        match self.written.get(field.as_bytes()) {
            Some((id, Some(set))) if &set[..] == value => id.ms * 1000,
            _ => self.read_at,
        }
    }

    /// Which live replicas serve what the hash holds for `field`: those
    /// whose watermark is at or after the write (README.md, "Replicas and
    /// `--wait`").
    fn served_by(&self, field: &str, value: &[u8]) -> ServedBy {
        let Some(registry) = &self.registry else {
            return ServedBy::Unknown;
        };
        let written = self.write_time(field, value);
        let live: Vec<_> = registry.live().collect();
        ServedBy::Replicas {
            serving: live
                .iter()
                .filter(|r| r.has_caught_up_with(written))
                .map(|r| r.id.clone())
                .collect(),
            live: live.len(),
        }
    }
}

/// The "SERVED BY" column of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedBy {
    /// The registry could not be read.
    Unknown,
    Replicas {
        serving: Vec<String>,
        live: usize,
    },
}

impl std::fmt::Display for ServedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServedBy::Unknown => f.write_str("?"),
            ServedBy::Replicas { live: 0, .. } => f.write_str("no live replica"),
            ServedBy::Replicas { serving, live } if serving.len() == *live => {
                write!(f, "all ({live})")
            }
            ServedBy::Replicas { serving, live } if serving.is_empty() => {
                write!(f, "none of {live}")
            }
            ServedBy::Replicas { serving, live } => {
                write!(f, "{} ({} of {live})", serving.join(","), serving.len())
            }
        }
    }
}

/// The ACME columns of a row (README.md, "Automatic certificates").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// The value's leaf is the one the ACME task wrote for the host.
    pub automatic: bool,
    /// Unix seconds: the renewal of an automatic certificate, or the next
    /// retry after a failure.
    pub next: Option<i64>,
    pub last_error: Option<String>,
}

impl Acme {
    pub fn of(record: &HostRecord, value: &[u8]) -> Acme {
        let leaf = CertificateDer::pem_slice_iter(value)
            .next()
            .and_then(Result::ok)
            .map(|der| {
                let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
                digest
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            });
        let automatic = leaf.is_some() && record.leaf_sha256 == leaf;
        let retry = record
            .retry_at_ms
            .filter(|_| record.failures > 0)
            .map(|ms| ms / 1000);
        let renewal = match (automatic, record.not_before, record.not_after) {
            (true, Some(from), Some(to)) => Some(plan::renew_at(from, to)),
            _ => None,
        };
        Acme {
            automatic,
            next: retry.or(renewal),
            last_error: record.last_error.clone().filter(|_| record.failures > 0),
        }
    }
}

fn field_of(host: &str) -> Result<FieldKey, CliError> {
    parse_field(host).map_err(|e| CliError::new(Exit::Data, format!("invalid host {host:?}: {e}")))
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| {
        CliError::new(
            Exit::NoInput,
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// A value ready to write, and what it holds.
pub struct CertValue {
    pub text: String,
    pub info: CertInfo,
}

/// The value `cert set` writes for `field` from the two files: the chain
/// and the key in canonical PEM, the key sealed with `sealer` when given;
/// checked by loading the very value, as a replica will.
pub fn value_for(
    field: &FieldKey,
    cert_pem: &[u8],
    key_pem: &[u8],
    sealer: Option<&Sealer>,
) -> Result<CertValue, CliError> {
    let shown = field.display();
    let (chain, key) = certs::read_pair(cert_pem, key_pem).map_err(|e| refused(&shown, &e))?;
    let key_block = match sealer {
        Some(sealer) => sealer.seal(&shown, certs::key_pem(&key).as_bytes()),
        None => certs::key_pem(&key),
    };
    let text = certs::compose(&chain, &key_block);
    let loaded = certs::load(text.as_bytes(), Some(field), sealer, SystemTime::now())
        .map_err(|e| refused(&shown, &e))?;
    Ok(CertValue {
        text,
        info: loaded.info,
    })
}

/// One line of `cert list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub field: String,
    pub info: Option<CertInfo>,
    /// `ok`, or why a replica would not serve the value as written.
    pub status: String,
    /// Which live replicas serve the value (`None`: not asked).
    pub served_by: Option<ServedBy>,
    /// What the ACME records say of the host, if it has one.
    pub acme: Option<Acme>,
}

impl Row {
    pub fn of(field: &str, value: &[u8], sealer: Option<&Sealer>, now: SystemTime) -> Row {
        let key = match parse_field(field) {
            Ok(key) => key,
            Err(e) => {
                return Row {
                    field: field.to_owned(),
                    info: None,
                    status: format!("invalid: field: {e}"),
                    served_by: None,
                    acme: None,
                }
            }
        };
        let (info, status) = match certs::load(value, Some(&key), sealer, now) {
            Ok(loaded) => (Some(loaded.info), "ok".to_owned()),
            Err(CertError::Sealed(SealError::NoSecret)) => (
                certs::inspect(value).ok(),
                "sealed: key not checked without --certs-secret-file".to_owned(),
            ),
            Err(e) => (certs::inspect(value).ok(), format!("invalid: {e}")),
        };
        Row {
            field: field.to_owned(),
            info,
            status,
            served_by: None,
            acme: None,
        }
    }
}

pub fn format_list(rows: &[Row]) -> String {
    const N: usize = 10;
    const COLUMNS: [&str; N] = [
        "HOST",
        "NAMES",
        "ISSUER",
        "NOT AFTER",
        "KEY",
        "AUTO",
        "NEXT ACME",
        "LAST ACME ERROR",
        "SERVED BY",
        "STATUS",
    ];
    let mut table = vec![COLUMNS.map(str::to_owned)];
    for row in rows {
        let (names, issuer, not_after, key) = match &row.info {
            Some(info) => (
                info.names.join(","),
                info.issuer.clone(),
                certs::rfc3339(info.not_after),
                if info.sealed { "sealed" } else { "plaintext" }.to_owned(),
            ),
            None => Default::default(),
        };
        let (auto, next, error) = match &row.acme {
            Some(acme) => (
                if acme.automatic { "yes" } else { "no" }.to_owned(),
                acme.next.map(certs::rfc3339).unwrap_or_default(),
                acme.last_error.clone().unwrap_or_default(),
            ),
            None => ("no".to_owned(), String::new(), String::new()),
        };
        // Only a value a replica loads is served as written.
        let served = match (&row.served_by, row.status.starts_with("invalid")) {
            (Some(served), false) => served.to_string(),
            _ => String::new(),
        };
        let dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
        table.push([
            row.field.clone(),
            dash(names),
            dash(issuer),
            dash(not_after),
            dash(key),
            auto,
            dash(next),
            dash(error),
            dash(served),
            row.status.clone(),
        ]);
    }
    let mut widths = [0usize; N];
    for line in &table {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == line.len() - 1 {
                    cell.clone()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!("{} certificate(s)\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(serving: &[&str], live: usize) -> String {
        ServedBy::Replicas {
            serving: serving.iter().map(|s| s.to_string()).collect(),
            live,
        }
        .to_string()
    }

    #[test]
    fn served_by_says_all_some_none_or_nobody() {
        assert_eq!(served(&["a", "b"], 2), "all (2)");
        assert_eq!(served(&["a"], 3), "a (1 of 3)");
        assert_eq!(served(&[], 3), "none of 3");
        assert_eq!(served(&[], 0), "no live replica");
        assert_eq!(ServedBy::Unknown.to_string(), "?");
    }

    fn listing(log: &[(&str, u64, Option<&str>)], replicas: &[(&str, u64)]) -> Listing {
        let now = 10_000_000;
        Listing {
            entries: Vec::new(),
            read_at: now,
            written: log
                .iter()
                .map(|(field, ms, value)| {
                    (
                        Bytes::copy_from_slice(field.as_bytes()),
                        (
                            StreamId { ms: *ms, seq: 0 },
                            value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                        ),
                    )
                })
                .collect(),
            registry: Some(Registry::from_entries(
                now,
                replicas.iter().map(|(id, watermark)| {
                    let status = crate::replicas::ReplicaStatus {
                        id: id.to_string(),
                        table_version: 1,
                        watermark: Some(*watermark),
                        routes: 0,
                        invalid: 0,
                        last_sync_ms: None,
                        notifications: "keyspace".into(),
                        redis: "connected".into(),
                        source: "redis".into(),
                        held: None,
                        expires_us: now + 1,
                    };
                    (id.to_string(), serde_json::to_string(&status).unwrap())
                }),
            )),
            acme: HashMap::new(),
        }
    }

    #[test]
    fn a_replica_serves_a_value_once_its_watermark_passes_the_write() {
        let l = listing(
            &[("a.com", 5_000, Some("v1")), ("b.com", 5_000, None)],
            &[
                ("fast", 5_000_200),
                ("slow", 4_000_000),
                ("now", 10_000_000),
            ],
        );
        // The logged write of this very value: to the millisecond.
        assert_eq!(l.served_by("a.com", b"v1").to_string(), "fast,now (2 of 3)");
        // Another value than the log's (a plain HSET since), or a field the
        // log does not name: only a replica that read the hash since now.
        assert_eq!(l.served_by("a.com", b"v2").to_string(), "now (1 of 3)");
        assert_eq!(l.served_by("c.com", b"v").to_string(), "now (1 of 3)");
        assert_eq!(l.served_by("b.com", b"v").to_string(), "now (1 of 3)");
    }

    #[test]
    fn acme_columns_come_from_the_record() {
        let ca = crate::tls::testing::TestCa::new();
        let leaf = ca.leaf(&["a.com"]);
        let value = leaf.value();
        let der = CertificateDer::pem_slice_iter(value.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let sha: String = ring::digest::digest(&ring::digest::SHA256, der.as_ref())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let ours = HostRecord {
            leaf_sha256: Some(sha),
            not_before: Some(0),
            not_after: Some(90),
            ..HostRecord::default()
        };
        let acme = Acme::of(&ours, value.as_bytes());
        assert!(acme.automatic);
        assert_eq!(acme.next, Some(60));
        assert_eq!(acme.last_error, None);
        let failing = HostRecord {
            failures: 2,
            retry_at_ms: Some(7_000),
            last_error: Some("boom".into()),
            ..ours.clone()
        };
        let acme = Acme::of(&failing, value.as_bytes());
        assert_eq!(
            (acme.next, acme.last_error.as_deref()),
            (Some(7), Some("boom"))
        );
        let theirs = HostRecord {
            leaf_sha256: Some("00".into()),
            ..ours
        };
        assert!(!Acme::of(&theirs, value.as_bytes()).automatic);
    }
}
