//! Certificates from Redis, followed exactly like routes (README.md,
//! "Certificates in Redis"): real proxies with a TLS listener and their own
//! Redis, checked by the leaf a real handshake returns (rustls client,
//! test CA made at test time). `HSET`/`HDEL` reach every replica; bad
//! values are reported and the last valid certificate keeps serving;
//! Redis down, resyncs, snapshot boot, readiness, a swap under load, and
//! `cert set --wait` / `cert list`.

use crate::support::*;
use crate::tls_support::{display, Leaf, Scratch, TestCa, TlsProxy as Replica, DAY};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard::config::CertFilePaths;
use switchyard::tls::seal::{Purpose, Sealer, Secret};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const CERTS: &str = "routes:certs";

fn connector(ca: &TestCa) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// The leaf a fresh handshake for `name` returns (checked against the
/// test CA and the name), or the handshake's error.
async fn leaf_for(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> Result<Vec<u8>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = tokio::time::timeout(CALL_TIMEOUT, connector.connect(server_name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok(leaf)
}

/// The leaf's DER, to compare with what a handshake returns.
fn der(leaf: &Leaf) -> Vec<u8> {
    CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn value(leaf: &Leaf) -> String {
    format!("{}{}", leaf.chain_pem, leaf.key_pem)
}

fn hset_cert(redis: &RedisServer, field: &str, value: &str) {
    let out = redis.cli(&["HSET", CERTS, field, value]);
    assert!(out.trim().parse::<u64>().is_ok(), "HSET failed: {out}");
}

/// Whether the handshake for `name` returns `leaf`.
async fn serves(connector: &TlsConnector, addr: SocketAddr, name: &str, leaf: &Leaf) -> bool {
    leaf_for(connector, addr, name)
        .await
        .is_ok_and(|got| got == der(leaf))
}

/// Whether the handshake for `name` fails with `unrecognized_name`.
async fn unrecognized(connector: &TlsConnector, addr: SocketAddr, name: &str) -> bool {
    match leaf_for(connector, addr, name).await {
        Ok(_) => false,
        Err(e) => {
            e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
                == Some(&rustls::Error::AlertReceived(
                    rustls::AlertDescription::UnrecognisedName,
                ))
        }
    }
}

/// A certificate written with `HSET` is served by each of three replicas;
/// `HDEL` falls back to the wildcard, then the default certificate (here
/// `*.cloud.com`, which a client asking for `other.org` refuses). Bad values
/// (garbage, a key that does not match, expired, sealed without the
/// secret) are reported in `/certs` and the metrics while the host's last
/// valid certificate keeps serving and other hosts are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hset_and_hdel_reach_every_replica_and_bad_values_change_nothing() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = Scratch::new("tls-sync");
    let default = ca.leaf(&["*.cloud.com"]);
    let mut config = test_config(&redis.url());
    config.tls.default_files = Some(CertFilePaths {
        cert: dir.write("cert.pem", &default.chain_pem),
        key: dir.write("key.pem", &default.key_pem),
    });
    let mut replicas = Vec::new();
    for i in 0..3 {
        let mut config = config.clone();
        config.sync.replica_id = format!("tls-sync-{i}-{}", free_port());
        replicas.push(Replica::start_ready(config).await);
    }
    let tls = connector(&ca);
    let (app, wild, other) = (
        ca.leaf(&["app.cloud.com"]),
        ca.leaf(&["*.cloud.com"]),
        ca.leaf(&["other.org"]),
    );
    for r in &replicas {
        assert!(serves(&tls, r.tls, "app.cloud.com", &default).await);
        assert!(leaf_for(&tls, r.tls, "other.org").await.is_err());
    }
    hset_cert(&redis, "app.cloud.com", &value(&app));
    hset_cert(&redis, "*.cloud.com", &value(&wild));
    hset_cert(&redis, "other.org", &value(&other));
    for r in &replicas {
        assert_eventually!(
            serves(&tls, r.tls, "app.cloud.com", &app).await,
            "app.cloud.com on {}",
            r.tls
        );
        assert_eventually!(serves(&tls, r.tls, "x.cloud.com", &wild).await, "wildcard");
        assert_eventually!(serves(&tls, r.tls, "other.org", &other).await, "other.org");
    }

    // Bad values: reported, and the last valid certificate keeps serving.
    let mismatched = format!("{}{}", app.chain_pem, other.key_pem);
    let expired = ca.leaf_valid(&["app.cloud.com"], -10 * DAY, -DAY);
    let sealer = Sealer::new(&Secret::from_bytes(&[3; 32]).unwrap(), Purpose::CertKey);
    let sealed = format!(
        "{}{}",
        app.chain_pem,
        sealer.seal("app.cloud.com", app.key_pem.as_bytes())
    );
    for (bad, reason) in [
        ("garbage".to_owned(), "no certificate"),
        (mismatched, "does not match"),
        (value(&expired), "expired at"),
        (sealed, "no --certs-secret-file"),
    ] {
        hset_cert(&redis, "app.cloud.com", &bad);
        for r in &replicas {
            assert_eventually!(
                r.admin_get("/certs").await.json()["invalid"][0]["reason"]
                    .as_str()
                    .is_some_and(|why| why.contains(reason)),
                "{reason} not reported: {}",
                r.admin_get("/certs").await.body
            );
            let certs = r.admin_get("/certs").await.json();
            assert_eq!(certs["invalid"][0]["field"], "app.cloud.com", "{certs}");
            assert_eq!(certs["invalid"][0]["serving_previous"], true, "{certs}");
            assert_eq!(
                r.metric("switchyard_tls_invalid_certificates").await,
                1.0,
                "{reason}"
            );
            assert!(serves(&tls, r.tls, "app.cloud.com", &app).await, "{reason}");
            assert!(serves(&tls, r.tls, "other.org", &other).await, "{reason}");
            assert!(serves(&tls, r.tls, "y.cloud.com", &wild).await, "{reason}");
        }
    }
    hset_cert(&redis, "app.cloud.com", &value(&app));
    for r in &replicas {
        assert_eventually!(
            r.metric("switchyard_tls_invalid_certificates").await == 0.0,
            "the good value is back"
        );
    }

    // HDEL: the exact host falls back to the wildcard, then to the default
    // certificate.
    redis.cli(&["HDEL", CERTS, "app.cloud.com"]);
    for r in &replicas {
        assert_eventually!(
            serves(&tls, r.tls, "app.cloud.com", &wild).await,
            "wildcard after HDEL"
        );
    }
    redis.cli(&["HDEL", CERTS, "*.cloud.com"]);
    for r in &replicas {
        assert_eventually!(
            serves(&tls, r.tls, "app.cloud.com", &default).await,
            "default after HDEL"
        );
    }
    redis.cli(&["HDEL", CERTS, "other.org"]);
    for r in &replicas {
        assert_eventually!(
            leaf_for(&tls, r.tls, "other.org").await.is_err(),
            "the default certificate after HDEL, which does not cover other.org"
        );
        assert_eq!(r.metric("switchyard_tls_certificates").await, 1.0);
    }
    for r in replicas {
        r.shutdown().await;
    }
}

/// Redis killed: certificates keep serving. Redis back: a change made
/// then is applied (the reconnect reads the hash again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_outlive_redis_and_follow_it_when_it_returns() {
    let mut redis = RedisServer::start();
    let ca = TestCa::new();
    let tls = connector(&ca);
    let (one, two) = (ca.leaf(&["a.cloud.com"]), ca.leaf(&["a.cloud.com"]));
    hset_cert(&redis, "a.cloud.com", &value(&one));
    let replica = Replica::start_ready(test_config(&redis.url())).await;
    assert_eventually!(serves(&tls, replica.tls, "a.cloud.com", &one).await, "one");
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    redis.kill();
    assert_eventually!(
        replica.readyz().await.1["redis"] != "connected",
        "the outage is noticed"
    );
    for _ in 0..5 {
        assert!(serves(&tls, replica.tls, "a.cloud.com", &one).await);
    }
    redis.spawn();
    hset_cert(&redis, "a.cloud.com", &value(&two));
    assert_eventually!(
        serves(&tls, replica.tls, "a.cloud.com", &two).await,
        "the change made after the outage"
    );
    replica.shutdown().await;
}

/// The safety nets cover the certs hash: a write that sent no event is
/// found by the periodic resync (counted as drift), and one made while
/// the subscriber was cut off by the resync that follows the reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_and_reconnect_resyncs_repair_the_certificates() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let tls = connector(&ca);
    let (a, b) = (ca.leaf(&["a.cloud.com"]), ca.leaf(&["b.cloud.com"]));
    let mut config = test_config(&redis.url());
    config.sync.resync_interval = Duration::from_millis(300);
    let replica = Replica::start_ready(config).await;
    // Drift: notifications off, so the write sends no event (the periodic
    // resync turns them on again: keep switching them off until found).
    let drift_before = replica.metric("switchyard_drift_total").await;
    redis.pipe(&format!(
        "MULTI\nCONFIG SET notify-keyspace-events \"\"\nHSET {CERTS} a.cloud.com \"{}\"\nEXEC\n",
        value(&a).replace('\n', "\\n")
    ));
    assert_eventually!(
        serves(&tls, replica.tls, "a.cloud.com", &a).await,
        "the periodic resync found the certificate"
    );
    assert_eventually!(
        replica.metric("switchyard_drift_total").await > drift_before,
        "counted as drift"
    );
    replica.shutdown().await;
    // Reconnect (periodic resync an hour away): the write happens while no
    // subscriber exists, so only the resync after reconnecting finds it.
    let replica = Replica::start_ready(test_config(&redis.url())).await;
    assert_eventually!(serves(&tls, replica.tls, "a.cloud.com", &a).await, "a");
    redis.pipe(&format!(
        "MULTI\nCLIENT KILL TYPE pubsub\nHSET {CERTS} b.cloud.com \"{}\"\nEXEC\n",
        value(&b).replace('\n', "\\n")
    ));
    assert_eventually!(
        serves(&tls, replica.tls, "b.cloud.com", &b).await,
        "the reconnect's resync found the certificate"
    );
    assert!(
        replica
            .metric("switchyard_resyncs_total{reason=\"reconnect\"}")
            .await
            >= 1.0
    );
    replica.shutdown().await;
}

/// A replica that boots while Redis is down serves the certificates of
/// its snapshot, a host with an invalid value its last valid one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_boot_with_redis_down_serves_the_snapshots_certificates() {
    let mut redis = RedisServer::start();
    let ca = TestCa::new();
    let tls = connector(&ca);
    let dir = Scratch::new("tls-snapshot");
    let snapshot = dir.path("snapshot");
    let (a, b) = (ca.leaf(&["a.cloud.com"]), ca.leaf(&["b.cloud.com"]));
    hset_cert(&redis, "a.cloud.com", &value(&a));
    hset_cert(&redis, "b.cloud.com", &value(&b));
    let mut config = test_config(&redis.url());
    config.sync.snapshot_file = Some(snapshot.clone());
    let replica = Replica::start_ready(config.clone()).await;
    assert_eventually!(serves(&tls, replica.tls, "b.cloud.com", &b).await, "b");
    hset_cert(&redis, "b.cloud.com", "garbage");
    let written = |path: &std::path::Path| {
        switchyard::snapshot::read(path)
            .ok()
            .flatten()
            .and_then(|s| s.images.get(CERTS).cloned())
            .is_some_and(|image| image.entries.len() == 2 && image.last_valid.len() == 1)
    };
    assert_eventually!(written(&snapshot), "the certificates are in the snapshot");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&snapshot).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the snapshot may hold keys: owner only");
    replica.shutdown().await;
    redis.kill();

    let replica = Replica::start(config).await;
    assert_eventually!(replica.ready().await, "not ready from the snapshot");
    assert_ne!(replica.readyz().await.1["redis"], "connected");
    assert!(serves(&tls, replica.tls, "a.cloud.com", &a).await);
    assert!(
        serves(&tls, replica.tls, "b.cloud.com", &b).await,
        "the last valid certificate of an invalid value"
    );
    let certs = replica.admin_get("/certs").await.json();
    assert_eq!(certs["source"], "snapshot", "{certs}");
    assert_eq!(certs["invalid"][0]["field"], "b.cloud.com", "{certs}");
    replica.shutdown().await;
}

/// `/readyz` says ready only once both hashes are loaded: a certs key
/// Redis cannot read as a hash keeps the replica unready (routes loaded or
/// not), and it becomes ready when the key is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_routes_and_the_certificates() {
    let redis = RedisServer::start();
    redis.hset("app.cloud.com", "127.0.0.1:9");
    redis.cli(&["SET", CERTS, "not a hash"]);
    let replica = Replica::start(test_config(&redis.url())).await;
    // The routes load, and the certs hash's failed read (just after) is
    // reported.
    assert_eventually!(
        {
            let body = replica.readyz().await.1;
            body["hashes"][0]["loaded"] == true
                && body["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(CERTS))
        },
        "the routes load and the certs hash's error is reported"
    );
    let (code, body) = replica.readyz().await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["hashes"][1]["key"], CERTS, "{body}");
    assert_eq!(body["hashes"][1]["loaded"], false, "{body}");
    assert!(
        body["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(CERTS)),
        "{body}"
    );
    redis.cli(&["DEL", CERTS]);
    replica.wait_ready().await;
    let (_, body) = replica.readyz().await;
    assert_eq!(body["hashes"][1]["loaded"], true, "{body}");
    replica.shutdown().await;
}

/// Four clients handshaking in a loop while the host's certificate is
/// replaced 50 times: no handshake fails, each returns one of the
/// certificates written, and the last one ends up served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_under_load_fails_no_handshake() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let leaves: Vec<Leaf> = (0..51).map(|_| ca.leaf(&["app.cloud.com"])).collect();
    hset_cert(&redis, "app.cloud.com", &value(&leaves[0]));
    let replica = Replica::start_ready(test_config(&redis.url())).await;
    let tls = connector(&ca);
    assert_eventually!(
        serves(&tls, replica.tls, "app.cloud.com", &leaves[0]).await,
        "first"
    );
    let known: Arc<Vec<Vec<u8>>> = Arc::new(leaves.iter().map(der).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (tls, known, stop) = (tls.clone(), known.clone(), stop.clone());
            let (ok, failed) = (ok.clone(), failed.clone());
            let addr = replica.tls;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match leaf_for(&tls, addr, "app.cloud.com").await {
                        Ok(leaf) if known.contains(&leaf) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => failed.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("handshake failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for leaf in &leaves[1..] {
        hset_cert(&redis, "app.cloud.com", &value(leaf));
        // Let some handshakes happen under each certificate.
        let seen = ok.load(Ordering::Relaxed);
        assert_eventually!(ok.load(Ordering::Relaxed) > seen, "handshakes go on");
    }
    assert_eventually!(
        serves(&tls, replica.tls, "app.cloud.com", &leaves[50]).await,
        "the last certificate"
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("FIGURES cert swap under load: {ok} handshakes, {failed} failed, 50 swaps");
    assert_eq!(failed, 0, "{failed} of {} handshakes failed", ok + failed);
    assert!(ok >= 50);
    replica.shutdown().await;
}

fn switchyard(redis: &RedisServer, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .args(["--redis-url", &redis.url()])
            .env_remove("REDIS_URL")
            .env_remove("SWITCHYARD_CERTS_SECRET_FILE")
            .env_remove("SWITCHYARD_CERTS_KEY")
            .output()
            .unwrap()
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `cert set --wait` returns once every live replica serves the
/// certificate (checked at once, no polling); `cert del --wait` likewise;
/// `cert list` names the replicas serving each value and shows what the
/// ACME records say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_set_wait_and_cert_list_know_which_replicas_serve() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let tls = connector(&ca);
    let dir = Scratch::new("tls-sync-cli");
    let mut replicas = Vec::new();
    for i in 0..3 {
        let mut config = test_config(&redis.url());
        config.sync.replica_id = format!("cli-{i}-{}", free_port());
        replicas.push(Replica::start_ready(config).await);
    }
    assert_eventually!(
        redis.cli(&["HLEN", "routes:replicas"]).trim() == "3",
        "every replica registered"
    );
    for round in 0..3 {
        let leaf = ca.leaf(&["app.cloud.com"]);
        let cert = dir.write("fullchain.pem", &leaf.chain_pem);
        let key = dir.write("key.pem", &leaf.key_pem);
        let out = switchyard(
            &redis,
            &[
                "cert",
                "set",
                "app.cloud.com",
                "--cert",
                &display(&cert),
                "--key",
                &display(&key),
                "--wait",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let said = text(&out.stdout);
        assert!(said.contains("live on 3 replica(s)"), "{said}");
        assert!(
            said.starts_with("app.cloud.com: app.cloud.com until"),
            "{said}"
        );
        for r in &replicas {
            assert!(
                serves(&tls, r.tls, "app.cloud.com", &leaf).await,
                "round {round}: {} does not serve it yet",
                r.tls
            );
        }
    }
    // Logged: the replicas patched the field rather than reading the hash.
    assert!(redis.cli(&["XLEN", "routes:certs:log"]).trim() == "3");

    // An automatic certificate (its leaf is the one the ACME record
    // names) and one whose order keeps failing.
    let auto = ca.leaf(&["auto.cloud.com"]);
    hset_cert(&redis, "auto.cloud.com", &value(&auto));
    let record = serde_json::json!({
        "leaf_sha256": sha256_hex(&der(&auto)),
        "not_before": 1_800_000_000i64,
        "not_after": 1_800_000_000i64 + 90 * DAY,
        "failures": 0,
    });
    let failing = serde_json::json!({
        "failures": 2,
        "retry_at_ms": 1_900_000_000_000i64,
        "last_error": "urn:ietf:params:acme:error:connection",
    });
    redis.cli(&[
        "HSET",
        "routes:acme:hosts",
        "auto.cloud.com",
        &record.to_string(),
        "app.cloud.com",
        &failing.to_string(),
    ]);
    for r in &replicas {
        assert_eventually!(
            serves(&tls, r.tls, "auto.cloud.com", &auto).await,
            "auto.cloud.com"
        );
    }
    let out = switchyard(&redis, &["cert", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[0].contains("AUTO") && lines[0].contains("SERVED BY"),
        "{list}"
    );
    let app = lines[1];
    assert!(app.starts_with("app.cloud.com "), "{list}");
    assert!(app.contains(" all (3) ") && app.ends_with("ok"), "{list}");
    assert!(
        app.contains("urn:ietf:params:acme:error:connection"),
        "{list}"
    );
    assert!(app.contains("2030-03-17"), "the retry time: {list}");
    let auto_line = lines[2];
    assert!(auto_line.starts_with("auto.cloud.com "), "{list}");
    assert!(auto_line.contains(" yes "), "{list}");
    // Renewal at two thirds of 90 days after 2027-01-15T08:00:00Z.
    assert!(auto_line.contains("2027-03-16"), "the renewal time: {list}");

    // A replica that stops is no longer listed as serving.
    let stopped = replicas.pop().unwrap();
    stopped.shutdown().await;
    let out = switchyard(&redis, &["cert", "list"]);
    assert!(
        text(&out.stdout).contains(" all (2) "),
        "{}",
        text(&out.stdout)
    );

    let out = switchyard(&redis, &["cert", "del", "app.cloud.com", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("live on 2 replica(s)"),
        "{}",
        text(&out.stdout)
    );
    for r in &replicas {
        assert!(unrecognized(&tls, r.tls, "app.cloud.com").await);
    }
    let out = switchyard(&redis, &["cert", "del", "app.cloud.com", "--wait"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("nothing deleted (no change to wait for)"),
        "{}",
        text(&out.stdout)
    );
    for r in replicas {
        r.shutdown().await;
    }
}

/// The `ACL SETUSER certs-admin` line of README.md, as arguments, with
/// `PASSWORD` replaced by `pw`.
fn readme_certs_admin_acl() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("ACL SETUSER certs-admin ")
        .expect("README has the certs-admin line");
    let mut line = String::new();
    for part in readme[start..].lines() {
        match part.trim_end().strip_suffix('\\') {
            Some(continued) => line.push_str(continued),
            None => {
                line.push_str(part);
                break;
            }
        }
    }
    line.split_whitespace()
        .map(|w| w.replace(">PASSWORD", ">pw"))
        .collect()
}

/// README.md's line for whoever sets certificates is enough for every
/// `cert` command, `--wait` and `cert list` included: Redis denies it
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_certs_admin_acl_line_denies_nothing() {
    let redis = RedisServer::start();
    let acl = readme_certs_admin_acl();
    let args: Vec<&str> = acl.iter().map(String::as_str).collect();
    assert_eq!(redis.cli(&args).trim(), "OK", "{acl:?}");
    let replica = Replica::start_ready(test_config(&redis.url())).await;
    assert_eventually!(
        redis.cli(&["HLEN", "routes:replicas"]).trim() == "1",
        "the replica registered"
    );
    redis.cli(&["ACL", "LOG", "RESET"]);
    let ca = TestCa::new();
    let dir = Scratch::new("certs-admin");
    let leaf = ca.leaf(&["app.cloud.com"]);
    let cert = display(&dir.write("fullchain.pem", &leaf.chain_pem));
    let key = display(&dir.write("key.pem", &leaf.key_pem));
    let url = format!("redis://certs-admin:pw@127.0.0.1:{}/0", redis.port);
    let run = |args: &[&str]| {
        tokio::task::block_in_place(|| {
            Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args(args)
                .args(["--redis-url", &url])
                .env_remove("REDIS_URL")
                .env_remove("SWITCHYARD_CERTS_SECRET_FILE")
                .env_remove("SWITCHYARD_CERTS_KEY")
                .output()
                .unwrap()
        })
    };
    for args in [
        &[
            "cert",
            "set",
            "app.cloud.com",
            "--cert",
            cert.as_str(),
            "--key",
            key.as_str(),
            "--wait",
        ][..],
        &["cert", "list"],
        &["cert", "del", "app.cloud.com", "--wait"],
        &["cert", "accept-removal"],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let log = redis.cli(&["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "denied: {log}");
    replica.shutdown().await;
}
