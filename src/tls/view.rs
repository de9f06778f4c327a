//! What the admin endpoint's `/certs` shows (README.md, "Admin endpoint"):
//! like `/routes`, every host of the certs hash with the certificate it is
//! served, the default certificate, and every entry not served as
//! written, with why. Private keys never appear.

use super::certs::{rfc3339, CertInfo};
use super::resolver::CertStore;
use serde_json::{json, Value};
use std::time::SystemTime;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn describe(info: &CertInfo) -> Value {
    json!({
        "names": info.names,
        "subject": info.subject,
        "issuer": info.issuer,
        "not_before": rfc3339(info.not_before),
        "not_after": rfc3339(info.not_after),
        "not_after_unix": info.not_after,
        "chain": info.chain_len,
        "sealed": info.sealed,
    })
}

/// The `/certs` document.
pub fn certs_json(store: &CertStore) -> Value {
    let table = store.table();
    let hosts: serde_json::Map<String, Value> = table
        .hosts()
        .into_iter()
        .map(|(host, cert)| {
            let mut entry = json!({
                "source": "redis",
                "field": String::from_utf8_lossy(cert.field()),
                "serving": cert.serving().map(|c| describe(&c.info)),
            });
            if let Some(problem) = cert.problem() {
                entry["problem"] = json!(problem.to_string());
                entry["serving_previous"] = json!(cert.serving().is_some());
            }
            (host, entry)
        })
        .collect();
    let default = store.default_cert().map(|d| {
        let mut entry = describe(&d.cert.info);
        entry["source"] = json!("file");
        entry["cert_file"] = json!(d.cert_file.display().to_string());
        entry["key_file"] = json!(d.key_file.display().to_string());
        entry["loaded_at_ms"] = json!(unix_ms(d.loaded_at));
        entry
    });
    let stats = store.stats();
    json!({
        "version": table.version,
        "source": table.source,
        "built_at_ms": unix_ms(table.built_at),
        "installed_at_us": table.installed_at.map(unix_us),
        "table_watermark_us": table.watermark,
        "loaded": stats.loaded,
        "earliest_not_after": stats.earliest_not_after.map(rfc3339),
        "hosts": hosts,
        "default": default,
        "default_problem": *store.file_problem(),
        "invalid": table.invalid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SharedState;
    use crate::tls::table::{CertTable, LoadContext};
    use crate::tls::testing::TestCa;
    use bytes::Bytes;
    use std::sync::Arc;

    #[test]
    fn hosts_default_and_problems_are_shown_without_keys() {
        let ca = TestCa::new();
        let state = SharedState::new();
        let good = ca.leaf(&["a.com"]);
        let raw = vec![
            (Bytes::from("a.com"), Bytes::from(good.value())),
            (Bytes::from("b.com"), Bytes::from("garbage")),
        ];
        let ctx = LoadContext {
            sealer: None,
            now: SystemTime::now(),
        };
        let table = CertTable::build(&raw, &CertTable::unloaded(), ctx).0;
        state
            .certs
            .install_table(Arc::new(table), &state.metrics.tls);
        let doc = certs_json(&state.certs);
        assert_eq!(doc["hosts"]["a.com"]["serving"]["names"], json!(["a.com"]));
        assert_eq!(doc["hosts"]["a.com"]["source"], "redis");
        assert_eq!(doc["hosts"]["b.com"]["serving"], Value::Null);
        assert_eq!(doc["hosts"]["b.com"]["serving_previous"], false);
        assert_eq!(doc["invalid"][0]["field"], "b.com");
        assert_eq!(doc["default"], Value::Null);
        assert_eq!(doc["loaded"], 1);
        let text = doc.to_string();
        assert!(!text.contains("PRIVATE KEY") && !text.contains(&good.key_pem[30..60]));
    }
}
