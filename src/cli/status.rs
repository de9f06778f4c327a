//! `switchyard status`: the replica registry as a table (or JSON): what
//! each live replica serves, when it last read the hash, whether it holds
//! a removal, and which replicas stopped reporting.

use super::{CliError, Context};
use crate::replicas::{self, Registry, ReplicaStatus};
use serde::Serialize;
use std::io::Write;

/// Runs `status`, printing to `out`.
pub async fn status(ctx: &Context, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let client = ctx.connect().await?;
    let registry = replicas::read(&client, &ctx.routes_key)
        .await
        .map_err(|e| ctx.redis_error(&e))?;
    // Housekeeping on the side: a user allowed to read but not to delete
    // still gets the status.
    let _ = replicas::prune(&client, &ctx.routes_key, &registry).await;
    let text = if json {
        format_json(&registry)
    } else {
        format_table(&registry)
    };
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

#[derive(Serialize)]
struct StatusJson<'a> {
    /// Redis time of the read (µs).
    now_us: u64,
    live: Vec<&'a ReplicaStatus>,
    /// Entries whose deadline passed: not counted by `--wait`.
    stale: Vec<&'a ReplicaStatus>,
}

fn format_json(registry: &Registry) -> String {
    let doc = StatusJson {
        now_us: registry.now,
        live: registry.live().collect(),
        stale: registry.stale().collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("status serialises");
    text.push('\n');
    text
}

/// Seconds between two Redis times (µs), for people.
fn age(now: u64, then: u64) -> String {
    format!("{:.1}s", now.saturating_sub(then) as f64 / 1e6)
}

pub fn format_table(registry: &Registry) -> String {
    let row = |cells: [&str; 9]| {
        format!(
            "{:<28} {:>8} {:>8} {:>8} {:>9} {:<10} {:<9} {:<9} {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8]
        )
    };
    let mut out = row([
        "REPLICA",
        "VERSION",
        "ROUTES",
        "INVALID",
        "LAST READ",
        "REDIS",
        "NOTIFY",
        "SOURCE",
        "STATE",
    ]);
    let mut live = 0;
    for r in registry.live() {
        live += 1;
        // Since the replica's last read of the hash (its watermark), in
        // Redis's own clock: up to the resync interval when nothing changes.
        let last_read = r
            .watermark
            .map(|w| age(registry.now, w))
            .unwrap_or_else(|| "-".into());
        let state = match r.held {
            Some(h) => format!("held: removal of {} to {} routes", h.current, h.next),
            None => "ok".into(),
        };
        out.push_str(&row([
            &r.id,
            &r.table_version.to_string(),
            &r.routes.to_string(),
            &r.invalid.to_string(),
            &last_read,
            &r.redis,
            &r.notifications,
            &r.source,
            &state,
        ]));
    }
    out.push_str(&format!("{live} live replica(s)\n"));
    let stale: Vec<String> = registry
        .stale()
        .map(|r| {
            format!(
                "{} (deadline passed {} ago)",
                r.id,
                age(registry.now, r.expires_us)
            )
        })
        .collect();
    if !stale.is_empty() {
        out.push_str(&format!(
            "stopped reporting (not counted): {}\n",
            stale.join(", ")
        ));
    }
    if !registry.unreadable.is_empty() {
        out.push_str(&format!(
            "unreadable entries (ignored): {}\n",
            registry.unreadable.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::HeldRemoval;

    fn entry(id: &str, watermark: Option<u64>, expires_us: u64) -> ReplicaStatus {
        ReplicaStatus {
            id: id.into(),
            table_version: 4,
            watermark,
            routes: 12,
            invalid: 1,
            last_sync_ms: None,
            notifications: "keyspace".into(),
            redis: "connected".into(),
            source: "redis".into(),
            held: None,
            expires_us,
        }
    }

    #[test]
    fn the_table_shows_live_replicas_holds_and_stale_ones() {
        let now = 100_000_000;
        let mut held = entry("r2", Some(now - 2_000_000), now + 1);
        held.held = Some(HeldRemoval {
            current: 12,
            next: 0,
        });
        let registry = Registry {
            now,
            entries: vec![
                entry("r1", Some(now - 400_000), now + 1),
                held,
                entry("r3", None, now - 9_000_000),
            ],
            unreadable: vec!["junk".into()],
        };
        let text = format_table(&registry);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("REPLICA"), "{text}");
        assert!(
            lines[1].starts_with("r1 ") && lines[1].contains(" 0.4s ") && lines[1].ends_with(" ok"),
            "{text}"
        );
        assert!(
            lines[2].contains("2.0s") && lines[2].ends_with("held: removal of 12 to 0 routes"),
            "{text}"
        );
        assert_eq!(lines[3], "2 live replica(s)");
        assert_eq!(
            lines[4],
            "stopped reporting (not counted): r3 (deadline passed 9.0s ago)"
        );
        assert_eq!(lines[5], "unreadable entries (ignored): junk");
        let json: serde_json::Value = serde_json::from_str(&format_json(&registry)).unwrap();
        assert_eq!(json["live"].as_array().unwrap().len(), 2);
        assert_eq!(json["live"][1]["held"]["next"], 0);
        assert_eq!(json["stale"][0]["id"], "r3");
    }
}
