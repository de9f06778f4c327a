//! The TLS side of a running proxy that needs no TLS listener: the default
//! certificate from `--tls-cert`/`--tls-key` in `/certs` and the metrics,
//! followed as the files change, a bad new pair reported and the old one
//! kept; bad TLS flags refused at start.

use crate::support::*;
use crate::tls_support::{display, Scratch, TestCa};
use std::time::Duration;
use switchyard::config::CertFilePaths;

#[tokio::test]
async fn the_default_certificate_follows_its_files() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = Scratch::new("tls-admin");
    let (one, two) = (
        ca.leaf(&["*.cloud.com"]),
        ca.leaf(&["*.cloud.com", "cloud.com"]),
    );
    let mut config = test_config(&redis.url());
    config.tls.default_files = Some(CertFilePaths {
        cert: dir.write("cert.pem", &one.chain_pem),
        key: dir.write("key.pem", &one.key_pem),
    });
    config.tls.file_poll_interval = Duration::from_millis(20);
    let proxy = ProxyHandle::start(config).await;
    let default_names = |doc: &serde_json::Value| doc["default"]["names"].clone();
    assert_eventually!(
        default_names(&proxy.admin_get("/certs").await.json())
            == serde_json::json!(["*.cloud.com"]),
        "the default certificate never showed in /certs"
    );
    let certs = proxy.admin_get("/certs").await.json();
    assert_eq!(certs["default"]["source"], "file");
    assert_eq!(
        certs["default"]["cert_file"],
        display(&dir.path("cert.pem"))
    );
    assert_eq!(certs["default_problem"], serde_json::Value::Null);
    assert_eq!(proxy.metric("switchyard_tls_certificates").await, 1.0);
    let expiry = proxy
        .metric("switchyard_tls_certificate_earliest_expiry_timestamp_seconds")
        .await;
    assert_eq!(expiry, certs["default"]["not_after_unix"].as_f64().unwrap());

    // A new certificate whose key has not arrived: reported, the old one serves.
    dir.write("cert.pem", &two.chain_pem);
    assert_eventually!(
        proxy.admin_get("/certs").await.json()["default_problem"]["reason"]
            .as_str()
            .is_some_and(|r| r.ends_with("the private key does not match the certificate")),
        "the mismatched pair was not reported"
    );
    let certs = proxy.admin_get("/certs").await.json();
    assert_eq!(default_names(&certs), serde_json::json!(["*.cloud.com"]));
    assert_eq!(certs["default_problem"]["serving_previous"], true);
    assert_eq!(
        proxy.metric("switchyard_tls_invalid_certificates").await,
        1.0
    );
    assert_eq!(
        proxy
            .metric("switchyard_tls_file_loads_total{outcome=\"error\"}")
            .await,
        1.0
    );

    // The key arrives: the new pair serves.
    dir.write("key.pem", &two.key_pem);
    assert_eventually!(
        default_names(&proxy.admin_get("/certs").await.json())
            == serde_json::json!(["*.cloud.com", "cloud.com"]),
        "the new pair never served"
    );
    assert_eq!(
        proxy.metric("switchyard_tls_invalid_certificates").await,
        0.0
    );
    proxy.shutdown().await;
}

#[test]
fn bad_tls_flags_are_usage_errors() {
    let dir = Scratch::new("tls-flags");
    let missing = display(&dir.path("missing.pem"));
    let short = display(&dir.write("short", "0123"));
    for (args, says) in [
        (
            vec![
                "--tls-cert",
                missing.as_str(),
                "--tls-key",
                missing.as_str(),
            ],
            "--tls-cert",
        ),
        (vec!["--tls-cert", short.as_str()], "--tls-key"),
        (
            vec!["--certs-secret-file", short.as_str()],
            "--certs-secret-file",
        ),
        (vec!["--certs-key", ""], "--certs-key"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env_remove("REDIS_URL")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
