//! `switchyard cert set|del|list`: certificates for people and scripts,
//! written to the same hash the proxies follow. A chain and key are
//! checked with the proxy's own loader, on the exact value written (key
//! sealed when `--certs-secret-file` is given), and nothing is written
//! when it would not load (README.md, "HTTPS").

use super::certs::{self, CertError, CertInfo};
use super::seal::{SealError, Sealer};
use crate::cli::{CliError, Context, Exit};
use crate::config::{CertAction, TlsArgs, TlsConfig};
use crate::routes::{parse_field, FieldKey};
use fred::prelude::*;
use std::path::Path;
use std::time::SystemTime;

fn refused(field: &str, e: &CertError) -> CliError {
    CliError::new(
        Exit::Data,
        format!("refusing to write the certificate of {field}: {e}"),
    )
}

/// Runs a `cert` command; returns what to print on success.
pub async fn cert(ctx: &Context, args: &TlsArgs, action: CertAction) -> Result<String, CliError> {
    let config = TlsConfig::from_args(args)?;
    let sealer = config.cert_sealer();
    match action {
        CertAction::Set { host, cert, key } => {
            let field = field_of(&host)?;
            let value = value_for(&field, &read(&cert)?, &read(&key)?, sealer.as_ref())?;
            let client = ctx.connect().await?;
            let _: () = client
                .hset(&config.certs_key, (field.display().as_str(), value.text))
                .await
                .map_err(|e| ctx.redis_error(&e))?;
            let info = value.info;
            Ok(format!(
                "{}: {} until {} (key {})\n",
                field.display(),
                info.names.join(", "),
                certs::rfc3339(info.not_after),
                if info.sealed {
                    "sealed"
                } else {
                    "in plaintext"
                }
            ))
        }
        CertAction::Del { host } => {
            let field = field_of(&host)?.display();
            let client = ctx.connect().await?;
            let deleted: u64 = client
                .hdel(&config.certs_key, field.as_str())
                .await
                .map_err(|e| ctx.redis_error(&e))?;
            Ok(if deleted == 0 {
                format!("no certificate for {field}: nothing deleted\n")
            } else {
                format!("deleted the certificate of {field}\n")
            })
        }
        CertAction::List => {
            let client = ctx.connect().await?;
            let mut entries: Vec<(String, bytes::Bytes)> = client
                .hgetall::<std::collections::HashMap<String, bytes::Bytes>, _>(&config.certs_key)
                .await
                .map_err(|e| ctx.redis_error(&e))?
                .into_iter()
                .collect();
            entries.sort();
            let rows: Vec<Row> = entries
                .iter()
                .map(|(field, value)| Row::of(field, value, sealer.as_ref(), SystemTime::now()))
                .collect();
            Ok(format_list(&rows))
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
        }
    }
}

pub fn format_list(rows: &[Row]) -> String {
    let mut table = vec![[
        "HOST".to_owned(),
        "NAMES".to_owned(),
        "ISSUER".to_owned(),
        "NOT AFTER".to_owned(),
        "KEY".to_owned(),
        "STATUS".to_owned(),
    ]];
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
        let dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
        table.push([
            row.field.clone(),
            dash(names),
            dash(issuer),
            dash(not_after),
            dash(key),
            row.status.clone(),
        ]);
    }
    let mut widths = [0usize; 6];
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
