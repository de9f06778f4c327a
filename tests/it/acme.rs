//! Automatic certificates in the running proxy, against a real ACME
//! server: Debian's `pebble` (and `pebble-challtestsrv` as its DNS, which
//! resolves every name to 127.0.0.1), started per test on free ports with
//! a TLS certificate made at test time; a private redis-server; real
//! proxies (`switchyard::run_with`, each on a runtime of its own so that a
//! test can kill one). Validation is real: Pebble's HTTP-01 port is one
//! replica's cleartext listener, which answers from the challenge table it
//! follows in memory, whichever replica placed the order.
//!
//! Debian's Pebble (2.4) has no `PEBBLE_VA_ALWAYS_INVALID`: a CA that
//! refuses is one whose validation reaches nobody (nothing listens on its
//! HTTP-01 port), which fails every authorization with a problem document.

use crate::support::{
    free_port, patience, request, send, test_config, Backend, Endpoints, ProxyHandle, RedisServer,
};
use crate::tls_support::{Scratch, TestCa};
use bytes::Bytes;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::acme::plan::HostRecord;
use switchyard::config::{AcmeConfig, Config};
use switchyard::routes::FieldKey;
use switchyard::sync::changelog::{self, Change};
use switchyard::tls::certs;
use tokio::sync::oneshot;

/// A Pebble ACME server and its DNS, killed on drop.
struct Pebble {
    child: Child,
    dns: Option<Child>,
    dir: Scratch,
    directory: String,
    ca_file: std::path::PathBuf,
}

#[derive(Default)]
struct PebbleOptions {
    /// Where Pebble sends HTTP-01 validation (a replica's cleartext
    /// port); `None`: a free port where nothing answers.
    validation_port: Option<u16>,
    /// Lifetime of issued certificates.
    validity: Option<Duration>,
}

impl Pebble {
    fn start(options: PebbleOptions) -> Pebble {
        let dir = Scratch::new("pebble");
        let ca = TestCa::new();
        let leaf = ca.leaf(&["127.0.0.1", "localhost"]);
        let cert = dir.write("pebble-cert.pem", &leaf.chain_pem);
        let key = dir.write("pebble-key.pem", &leaf.key_pem);
        let ca_file = dir.write("pebble-ca.pem", &ca.cert_pem);
        let (listen, management, dns_port) = (free_port(), free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": options.validation_port.unwrap_or_else(free_port),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(validity) = options.validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config_file = dir.write("pebble.json", config.to_string());
        // Every name resolves to 127.0.0.1 (and no IPv6 address, where
        // nothing listens).
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv is installed (apt-get install pebble)");
        let log = std::fs::File::create(dir.path("pebble.log")).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every good nonce accepted, no authorization reused: each
            // order is one new order with one fresh authorization.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble is installed (apt-get install pebble)");
        let pebble = Pebble {
            child,
            dns: Some(dns),
            directory: format!("https://127.0.0.1:{listen}/dir"),
            ca_file,
            dir,
        };
        let deadline = Instant::now() + patience();
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not listen: {}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pebble
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("pebble.log")).unwrap_or_default()
    }

    /// Orders Pebble was asked for.
    fn orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dns) = &mut self.dns {
            let _ = dns.kill();
            let _ = dns.wait();
        }
    }
}

/// Test timings: a tick of 50 ms, locks of 2 s, short backoff.
fn acme_config(pebble: &Pebble, patterns: &[&str]) -> AcmeConfig {
    let mut acme = AcmeConfig::new(switchyard::acme::DomainPatterns::parse(patterns).unwrap());
    acme.directory = pebble.directory.clone();
    acme.ca_file = Some(pebble.ca_file.clone());
    acme.email = Some("ops@cloud.test".into());
    acme.tick = Duration::from_millis(50);
    acme.lock_ttl = Duration::from_secs(2);
    acme.backoff_min = Duration::from_millis(400);
    acme.backoff_max = Duration::from_secs(5);
    acme.order_timeout = Duration::from_secs(20);
    acme
}

/// A replica's configuration: the tests' usual one, ACME on, one thread.
fn replica_config(redis: &RedisServer, acme: AcmeConfig) -> Config {
    let mut config = test_config(&redis.url());
    config.acme = Some(acme);
    config.server.worker_threads = 1;
    config
}

/// The real proxy (`switchyard::run_with`) on a runtime of its own, so
/// that it can be killed as a process dies: the runtime is dropped with
/// every task in it, nothing released, nothing announced.
struct Replica {
    endpoints: Endpoints,
    stop: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for Replica {
    type Target = Endpoints;

    fn deref(&self) -> &Endpoints {
        &self.endpoints
    }
}

impl Replica {
    /// Starts a replica serving cleartext traffic on `proxy`; returns at
    /// once.
    fn start(config: Config, proxy: std::net::TcpListener) -> Replica {
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoints = Endpoints {
            addr: proxy.local_addr().unwrap(),
            admin: admin.local_addr().unwrap(),
        };
        proxy.set_nonblocking(true).unwrap();
        admin.set_nonblocking(true).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let was_killed = runtime.block_on(async move {
                let listeners = switchyard::Listeners {
                    proxy: tokio::net::TcpListener::from_std(proxy).unwrap(),
                    admin: tokio::net::TcpListener::from_std(admin).unwrap(),
                    tls: None,
                };
                let run = switchyard::run_with(
                    config,
                    listeners,
                    async {
                        let _ = stopped.await;
                    },
                    switchyard::reload::Reload::new(),
                );
                tokio::select! {
                    _ = run => false,
                    Ok(()) = killed => true,
                }
            });
            if was_killed {
                runtime.shutdown_background();
            }
        });
        Replica {
            endpoints,
            stop: Some(stop),
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    /// Stops gracefully (orders in flight release their lock) and waits.
    async fn stop(mut self) {
        drop(self.stop.take());
        self.join().await;
    }

    /// Dies as a killed replica does.
    async fn kill(mut self) {
        let _ = self.kill.take().unwrap().send(());
        self.join().await;
    }

    async fn join(&mut self) {
        let thread = self.thread.take().unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await
        .expect("the replica stops")
        .unwrap()
        .unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// Replicas of one Redis, and the Pebble that validates against the first
/// one's cleartext listener.
struct Cluster {
    pebble: Pebble,
    redis: RedisServer,
    replicas: Vec<Replica>,
}

impl Cluster {
    /// `n` ready replicas with `--acme-domains *.cloud.com`; `tweak`
    /// changes their ACME settings (and the Redis user's, `configure`).
    async fn start(
        n: usize,
        validity: Option<Duration>,
        tweak: impl Fn(&mut AcmeConfig),
    ) -> Cluster {
        Cluster::start_with(n, validity, RedisServer::start(), tweak, |_| {}).await
    }

    async fn start_with(
        n: usize,
        validity: Option<Duration>,
        redis: RedisServer,
        tweak: impl Fn(&mut AcmeConfig),
        configure: impl Fn(&mut Config),
    ) -> Cluster {
        let listeners: Vec<_> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let pebble = Pebble::start(PebbleOptions {
            validation_port: Some(listeners[0].local_addr().unwrap().port()),
            validity,
        });
        let mut acme = acme_config(&pebble, &["*.cloud.com"]);
        tweak(&mut acme);
        let replicas: Vec<Replica> = listeners
            .into_iter()
            .map(|listener| {
                let mut config = replica_config(&redis, acme.clone());
                configure(&mut config);
                Replica::start(config, listener)
            })
            .collect();
        for replica in &replicas {
            replica.wait_ready().await;
        }
        Cluster {
            pebble,
            redis,
            replicas,
        }
    }

    /// A metric summed over the replicas.
    async fn metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for replica in &self.replicas {
            sum += replica.metric(name).await;
        }
        sum
    }

    async fn stop(self) {
        for replica in self.replicas {
            replica.stop().await;
        }
    }
}

const ISSUED: &str = "switchyard_acme_orders_total{outcome=\"issued\"}";
const FAILED: &str = "switchyard_acme_orders_total{outcome=\"failed\"}";
/// Answers of the proxy's own 2xx class: with routes to a closed port, a
/// 2xx is an HTTP-01 answer.
const ANSWERED_2XX: &str = "switchyard_requests_total{class=\"2xx\"}";
/// A route to a port where nothing listens.
const NOWHERE: &str = "127.0.0.1:9";

fn cert_value(redis: &RedisServer, host: &str) -> String {
    redis.cli(&["HGET", "routes:certs", host]).trim().to_owned()
}

/// Reloads that patched the table from a change log.
const BY_LOG: &str = "switchyard_reload_builds_total{how=\"log\"}";

/// The newest entry of the certs hash's change log, decoded as replicas
/// decode it, and what the hash holds for that entry's field.
async fn last_cert_log_entry(redis: &RedisServer) -> Option<(Change, Option<Bytes>)> {
    use fred::prelude::*;
    use fred::types::{CustomCommand, Value};
    let client = Builder::from_config(fred::prelude::Config::from_url(&redis.url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let reply: Value = client
        .custom(
            CustomCommand::new_static("XREVRANGE", None, false),
            vec!["routes:certs:log", "+", "-", "COUNT", "1"],
        )
        .await
        .unwrap();
    let (id, body) = changelog::decode_range(reply).unwrap().into_iter().next()?;
    let entry = changelog::decode(id, &body.into_array()).expect("cert set's format");
    let held: Option<Bytes> = client
        .hget("routes:certs", &entry.change.field[..])
        .await
        .unwrap();
    client.quit().await.unwrap();
    Some((entry.change, held))
}

/// `switchyard cert list` against `redis`.
fn cert_list(redis: &RedisServer) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["cert", "list", "--redis-url", &redis.url()])
        .env_remove("REDIS_URL")
        .env_remove("SWITCHYARD_CERTS_SECRET_FILE")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn record(redis: &RedisServer, host: &str) -> Option<HostRecord> {
    serde_json::from_str(redis.cli(&["HGET", "routes:acme:hosts", host]).trim()).ok()
}

/// The certificate stored for `host`, loaded as a replica loads it.
fn loaded(redis: &RedisServer, host: &str) -> Option<certs::CertInfo> {
    let value = cert_value(redis, host);
    let field = FieldKey::Exact(host.to_owned());
    certs::load(
        value.as_bytes(),
        Some(&field),
        None,
        std::time::SystemTime::now(),
    )
    .ok()
    .map(|c| c.info)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Asserts that Pebble's order count is `expected` and stays so while the
/// replicas run many more ticks (a "nothing more happens" check needs a
/// window; it is watched throughout, not slept through).
async fn orders_stay_at(pebble: &Pebble, expected: usize) {
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(pebble.orders(), expected, "pebble log:\n{}", pebble.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_matching_host_gets_a_certificate_validated_on_any_replica() {
    let cluster = Cluster::start(3, None, |_| {}).await;
    let (redis, pebble) = (&cluster.redis, &cluster.pebble);
    let hand = TestCa::new().leaf(&["manual.cloud.com"]);
    redis.cli(&[
        "HSET",
        "routes:certs",
        "manual.cloud.com",
        &format!("{}{}", hand.chain_pem, hand.key_pem),
    ]);

    let started = Instant::now();
    redis.hset("app.cloud.com", NOWHERE);
    redis.hset("other.example.net", NOWHERE);
    redis.hset("manual.cloud.com", NOWHERE);
    redis.hset("*.cloud.com", NOWHERE);
    assert_eventually!(
        loaded(redis, "app.cloud.com").is_some(),
        "no certificate for app.cloud.com; pebble log:\n{}",
        pebble.log()
    );
    let issued_in = started.elapsed();
    let info = loaded(redis, "app.cloud.com").unwrap();
    assert_eq!(info.names, ["app.cloud.com"]);
    assert!(info.issuer.contains("Pebble"), "issuer {}", info.issuer);
    assert!(issued_in < Duration::from_secs(10), "took {issued_in:?}");
    println!("FIGURES acme: route HSET -> certificate (real HTTP-01, 3 replicas): {issued_in:?}");
    // Every replica follows the certs hash: each serves the issued
    // certificate (what its TLS resolver reads, shown by `/certs`).
    for (i, replica) in cluster.replicas.iter().enumerate() {
        assert_eventually!(
            {
                let certs = replica.admin_get("/certs").await.json();
                certs["hosts"]["app.cloud.com"]["serving"]["issuer"]
                    .as_str()
                    .is_some_and(|issuer| issuer.contains("Pebble"))
            },
            "replica {i} does not serve the issued certificate"
        );
    }
    // The certificate came with its change-log entry, as `cert set`
    // writes it: each replica patched that field from the log (every
    // other write of this test is a plain HSET), and `cert list` names
    // every replica as serving it.
    let (entry, held) = last_cert_log_entry(redis)
        .await
        .expect("a change-log entry");
    assert_eq!(&entry.field[..], b"app.cloud.com");
    assert_eq!(entry.value, held, "the entry sets what the hash holds");
    for (i, replica) in cluster.replicas.iter().enumerate() {
        assert_eventually!(
            replica.metric(BY_LOG).await >= 1.0,
            "replica {i} did not patch the certificate from the log"
        );
    }
    assert_eventually!(
        {
            let list = cert_list(redis);
            list.lines()
                .any(|l| l.starts_with("app.cloud.com ") && l.contains("all (3)"))
        },
        "cert list does not name every replica: {}",
        cert_list(redis)
    );
    // Pebble really validated, on the replica it talks to, which answered
    // from memory (its routes lead nowhere: a 2xx is its own answer).
    assert_eventually!(
        cluster.replicas[0].metric(ANSWERED_2XX).await >= 1.0,
        "the replica Pebble talks to answered no challenge"
    );

    // What the order left: a record naming the leaf, no lock, no lease, no
    // token, one account key; one order, on one replica.
    let record = record(redis, "app.cloud.com").expect("a record");
    assert!(record.leaf_sha256.is_some());
    assert_eq!(record.failures, 0);
    assert_eventually!(
        redis
            .cli(&["EXISTS", "routes:acme:lock:app.cloud.com"])
            .trim()
            == "0"
            && redis.cli(&["ZCARD", "routes:acme:inflight"]).trim() == "0"
            && redis.cli(&["HLEN", "routes:acme:challenges"]).trim() == "0",
        "the lock, the lease and the token are gone"
    );
    assert_eq!(redis.cli(&["EXISTS", "routes:acme:account"]).trim(), "1");
    assert_eventually!(cluster.metric(ISSUED).await == 1.0, "issued metric");

    // Many more ticks: the non-matching host, the wildcard route and the
    // host whose certificate was set by hand get nothing.
    orders_stay_at(pebble, 1).await;
    assert_eq!(cert_value(redis, "other.example.net"), "");
    assert_eq!(cert_value(redis, "*.cloud.com"), "");
    assert!(cert_value(redis, "manual.cloud.com").starts_with(hand.chain_pem.trim()));
    assert_eq!(redis.cli(&["HLEN", "routes:certs"]).trim(), "2");
    assert_eq!(cluster.metric(ISSUED).await, 1.0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_order_twenty_new_hosts_exactly_once_each() {
    let cluster = Cluster::start(3, None, |acme| acme.max_concurrent = 4).await;
    let (redis, pebble) = (&cluster.redis, &cluster.pebble);
    let hosts: Vec<String> = (0..20).map(|i| format!("app{i}.cloud.com")).collect();
    let started = Instant::now();
    let mut hset = String::from("HSET routes");
    for host in &hosts {
        hset.push_str(&format!(" {host} {NOWHERE}"));
    }
    redis.pipe(&format!("{hset}\n"));

    // The cluster-wide cap holds at every moment we look.
    let deadline = Instant::now() + patience() * 2;
    loop {
        let leases: u64 = redis
            .cli(&["ZCARD", "routes:acme:inflight"])
            .trim()
            .parse()
            .unwrap();
        assert!(leases <= 4, "{leases} orders in flight, cap 4");
        if hosts.iter().all(|h| loaded(redis, h).is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every host got its certificate; pebble log:\n{}",
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "FIGURES acme: 20 hosts, 3 replicas, cap 4, real HTTP-01: all issued in {:?}",
        started.elapsed()
    );
    // Exactly one order per host: 20 orders in all (watched for a while)
    // and 20 hosts certified, so none was ordered twice; each validated
    // through the replica Pebble talks to.
    orders_stay_at(pebble, 20).await;
    assert_eventually!(
        cluster.replicas[0].metric(ANSWERED_2XX).await >= 20.0,
        "the replica Pebble talks to answered fewer than 20 challenges"
    );
    assert_eventually!(cluster.metric(ISSUED).await == 20.0, "issued metric");
    let mut issued = Vec::new();
    for replica in &cluster.replicas {
        issued.push(replica.metric(ISSUED).await);
    }
    assert_eq!(issued.iter().sum::<f64>(), 20.0);
    assert!(
        issued.iter().filter(|n| **n > 0.0).count() >= 2,
        "the work is shared: {issued:?}"
    );
    cluster.stop().await;
}

/// A replica takes the lock, then hangs talking to its CA (a server that
/// accepts and never answers) and is killed. While it lives its lock is
/// kept alive past its TTL and the other replica waits; once it is dead,
/// the other orders when the lock expires, and the CA validates through
/// the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_order_leaves_the_host_to_another_once_its_lock_expires() {
    let survivor_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pebble = Pebble::start(PebbleOptions {
        validation_port: Some(survivor_listener.local_addr().unwrap().port()),
        ..Default::default()
    });
    let redis = RedisServer::start();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let good = acme_config(&pebble, &["*.cloud.com"]);
    let mut hanging = good.clone();
    hanging.directory = format!("https://127.0.0.1:{silent_port}/dir");
    hanging.order_timeout = Duration::from_secs(60);
    let lock_ttl = good.lock_ttl;

    let doomed = Replica::start(
        replica_config(&redis, hanging),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    doomed.wait_ready().await;
    redis.hset("app.cloud.com", NOWHERE);
    assert_eventually!(
        redis
            .cli(&["EXISTS", "routes:acme:lock:app.cloud.com"])
            .trim()
            == "1",
        "the first replica takes the lock"
    );
    let survivor = Replica::start(replica_config(&redis, good), survivor_listener);
    survivor.wait_ready().await;
    // Longer than a lock's life: a live holder keeps it (watched
    // throughout).
    let until = Instant::now() + lock_ttl + lock_ttl / 2;
    while Instant::now() < until {
        assert_eq!(cert_value(&redis, "app.cloud.com"), "");
        assert_eq!(pebble.orders(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    doomed.kill().await;
    let killed_at = Instant::now();
    assert_eventually!(
        loaded(&redis, "app.cloud.com").is_some(),
        "no certificate after the holder died; pebble log:\n{}",
        pebble.log()
    );
    // The lock expires within its TTL; the order then waits for the dead
    // replica's registry entry to expire (3 s) before asking the CA to
    // validate, as it waits for every live replica to hold the token.
    let bound = lock_ttl.max(Duration::from_secs(3)) + Duration::from_secs(5);
    assert!(
        killed_at.elapsed() < bound,
        "took {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(pebble.orders(), 1);
    // (Counted once the order has released its lock, just after the
    // write.)
    assert_eventually!(survivor.metric(ISSUED).await == 1.0, "issued metric");
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lock_and_lease_expire_then_another_replica_orders() {
    let cluster_redis = RedisServer::start();
    // What a replica killed mid-order leaves: its lock on the host, its
    // lease (the cap is 1, so the lease alone blocks every order), and
    // nobody to renew them.
    let dead_for = Duration::from_millis(1500);
    let left_at = Instant::now();
    cluster_redis.cli(&[
        "SET",
        "routes:acme:lock:app.cloud.com",
        "dead-replica:1",
        "PX",
        &dead_for.as_millis().to_string(),
    ]);
    cluster_redis.cli(&[
        "EVAL",
        "local t = redis.call('TIME') \
         return redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1]), 'dead-replica:1|app.cloud.com')",
        "1",
        "routes:acme:inflight",
        &dead_for.as_millis().to_string(),
    ]);
    let cluster = Cluster::start_with(
        1,
        None,
        cluster_redis,
        |acme| acme.max_concurrent = 1,
        |_| {},
    )
    .await;
    let (redis, pebble) = (&cluster.redis, &cluster.pebble);
    redis.hset("app.cloud.com", NOWHERE);
    assert_eventually!(
        loaded(redis, "app.cloud.com").is_some(),
        "no certificate after the dead lock expired; pebble log:\n{}",
        pebble.log()
    );
    assert!(
        left_at.elapsed() >= dead_for,
        "ordered after {:?}, while the dead replica's lock still held",
        left_at.elapsed()
    );
    assert_eq!(pebble.orders(), 1);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_ca_is_recorded_with_its_problem_and_retried_with_backoff() {
    // Real validation that reaches nobody: each authorization becomes
    // invalid with a problem document.
    let pebble = Pebble::start(PebbleOptions::default());
    let redis = RedisServer::start();
    let app = Backend::echo("app").await;
    let hand = TestCa::new().leaf(&["manual.cloud.com"]);
    let hand_value = format!("{}{}", hand.chain_pem, hand.key_pem);
    redis.cli(&["HSET", "routes:certs", "manual.cloud.com", &hand_value]);
    let replica = ProxyHandle::start_ready(replica_config(
        &redis,
        acme_config(&pebble, &["*.cloud.com"]),
    ))
    .await;
    redis.hset("app.cloud.com", &app.target());
    redis.hset("manual.cloud.com", NOWHERE);

    let mut seen: Vec<HostRecord> = Vec::new();
    let deadline = Instant::now() + patience() * 2;
    while seen.last().is_none_or(|r| r.failures < 3) {
        if let Some(r) = record(&redis, "app.cloud.com") {
            if seen.last().is_none_or(|last| last.failures != r.failures) {
                seen.push(r);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no third failure: {seen:?}; pebble log:\n{}",
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = seen.last().unwrap();
    let error = last.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("the CA refused") && error.contains("urn:ietf:params:acme:error:"),
        "the CA's problem document is kept: {error}"
    );
    // Each retry waits for the previous failure's backoff (400 ms, then
    // doubled): the third failure's retry time is at least 1.6 s after the
    // second's.
    let retry = |failures: u32| {
        seen.iter()
            .find(|r| r.failures == failures)
            .and_then(|r| r.retry_at_ms)
            .unwrap_or_else(|| panic!("no record of failure {failures}: {seen:?}"))
    };
    assert!(
        retry(3) - retry(2) >= 1600,
        "backoff not respected: {seen:?}"
    );
    assert_eventually!(replica.metric(FAILED).await >= 3.0, "failed metric");
    // Nothing else broke: the host is served, no certificate written, the
    // one set by hand kept, no token left behind.
    assert!(replica.serves("app.cloud.com", "app").await);
    assert_eq!(cert_value(&redis, "app.cloud.com"), "");
    assert_eq!(
        cert_value(&redis, "manual.cloud.com"),
        hand_value.trim_end()
    );
    replica.shutdown().await;
    assert_eq!(redis.cli(&["HLEN", "routes:acme:challenges"]).trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_before_it_expires() {
    let cluster = Cluster::start(1, Some(Duration::from_secs(9)), |_| {}).await;
    let redis = &cluster.redis;
    redis.hset("app.cloud.com", NOWHERE);
    assert_eventually!(
        record(redis, "app.cloud.com").is_some_and(|r| r.leaf_sha256.is_some()),
        "first certificate; pebble log:\n{}",
        cluster.pebble.log()
    );
    let first = record(redis, "app.cloud.com").unwrap();
    let first_value = cert_value(redis, "app.cloud.com");
    let deadline = Instant::now() + patience();
    loop {
        let now = record(redis, "app.cloud.com").unwrap();
        if now.leaf_sha256 != first.leaf_sha256 {
            // Renewed while the first one was still valid, not before two
            // thirds of its lifetime.
            let (nb, na) = (first.not_before.unwrap(), first.not_after.unwrap());
            let renewed_at = now.not_before.unwrap();
            assert!(renewed_at <= na, "renewed after expiry: {first:?} {now:?}");
            assert!(
                renewed_at + 1 >= switchyard::acme::plan::renew_at(nb, na),
                "renewed too early: {first:?} {now:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not renewed: {first:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(cert_value(redis, "app.cloud.com"), first_value);
    assert!(loaded(redis, "app.cloud.com").is_some());
    assert_eventually!(
        cluster.metric("switchyard_acme_renewals_total").await >= 1.0,
        "renewals metric"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_the_account_key_and_the_certificate_key_are_sealed() {
    use switchyard::tls::seal::{Purpose, Sealer, Secret, BEGIN};
    let secret = Secret::from_bytes(&[7u8; 32]).unwrap();
    let cluster = {
        let secret = secret.clone();
        Cluster::start_with(
            1,
            None,
            RedisServer::start(),
            |_| {},
            move |c| c.tls.secret = Some(secret.clone()),
        )
        .await
    };
    let redis = &cluster.redis;
    redis.hset("app.cloud.com", NOWHERE);
    assert_eventually!(
        !cert_value(redis, "app.cloud.com").is_empty(),
        "no certificate; pebble log:\n{}",
        cluster.pebble.log()
    );
    let account = redis.cli(&["GET", "routes:acme:account"]);
    assert!(account.starts_with(BEGIN), "account key in plaintext");
    assert!(!account.contains("PRIVATE KEY"));
    let value = cert_value(redis, "app.cloud.com");
    assert!(value.contains(BEGIN) && !value.contains("PRIVATE KEY"));
    // Loads with the secret, as every replica that has it will.
    let sealer = Sealer::new(&secret, Purpose::CertKey);
    let field = FieldKey::Exact("app.cloud.com".into());
    let cert = certs::load(
        value.as_bytes(),
        Some(&field),
        Some(&sealer),
        std::time::SystemTime::now(),
    )
    .expect("the sealed value loads with the secret");
    assert!(cert.info.sealed);
    cluster.stop().await;
}

/// The rights README.md ("Automatic certificates") adds for a replica with
/// `--acme-domains`, beside the proxy's own: its code block, as written.
fn readme_acme_acl() -> String {
    let readme = include_str!("../../README.md");
    let at = readme
        .find("Redis rights of a replica with `--acme-domains`")
        .expect("README has the ACME rights");
    let block = &readme[at..];
    let start = block.find("```\n").expect("a code block") + 4;
    let end = start + block[start..].find("```").expect("its end");
    block[start..end]
        .replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A replica running as a user with the proxy's ACL plus the documented
/// ACME rights follows the challenges, orders, records and releases its
/// lock with no denial in `ACL LOG`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_is_enough() {
    // The proxy's line of README.md ("Redis permissions").
    let proxy_acl =
        "on >acme-pw resetkeys ~routes ~routes:log ~routes:accept-removal ~routes:replicas \
         ~routes:certs ~routes:certs:log ~routes:certs:accept-removal \
         resetchannels &__keyspace@0__:routes &__keyspace@0__:routes:log \
         &__keyspace@0__:routes:accept-removal &routes:replicas &__keyspace@0__:routes:certs \
         &__keyspace@0__:routes:certs:log &__keyspace@0__:routes:certs:accept-removal \
         -@all +select +ping +subscribe +config|get +config|set +multi +exec +time +hgetall \
         +dump +hlen +hscan +xrange +xrevrange +exists +hset +hdel +publish +client|id +info";
    let redis = RedisServer::builder()
        .acl_user("switchyard", &format!("{proxy_acl} {}", readme_acme_acl()))
        .start();
    assert_eq!(redis.cli(&["ACL", "LOG", "RESET"]).trim(), "OK");
    let url = format!("redis://switchyard:acme-pw@127.0.0.1:{}/0", redis.port);
    let cluster = Cluster::start_with(
        1,
        None,
        redis,
        |_| {},
        |c| {
            c.sync.redis = switchyard::config::parse_redis_url(&url).unwrap();
            c.sync.redis_url = url.clone();
        },
    )
    .await;
    let redis = &cluster.redis;
    redis.hset("app.cloud.com", NOWHERE);
    assert_eventually!(
        loaded(redis, "app.cloud.com").is_some(),
        "no certificate; ACL LOG: {}; pebble log:\n{}",
        redis.cli(&["ACL", "LOG"]),
        cluster.pebble.log()
    );
    assert_eventually!(
        redis
            .cli(&["EXISTS", "routes:acme:lock:app.cloud.com"])
            .trim()
            == "0",
        "the lock is released"
    );
    let log = redis.cli(&["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "denials: {log}");
    let readyz = cluster.replicas[0].readyz().await;
    assert_eq!(readyz.0, 200, "{readyz:?}");
    cluster.stop().await;
}

/// The cleartext listener answers `GET /.well-known/acme-challenge/TOKEN`
/// from the challenge table it follows: a known, unexpired token gets the
/// key authorization (no backend, a request id); anything else goes to the
/// route as usual (an app may run its own ACME client). Tokens come and go
/// without the removal guard holding them, and the answers go on with
/// Redis down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_are_answered_from_memory_even_with_redis_down() {
    let mut redis = RedisServer::start();
    let app = Backend::echo("app").await;
    redis.hset("app.cloud.com", &app.target());
    // Automatic certificates on, for hosts no route has (no order runs;
    // the CA is never asked).
    let mut acme =
        AcmeConfig::new(switchyard::acme::DomainPatterns::parse(&["*.nothing.test"]).unwrap());
    acme.directory = "https://127.0.0.1:1/dir".into();
    let mut config = test_config(&redis.url());
    config.acme = Some(acme);
    config.proxy.access_log = true;
    let proxy = ProxyHandle::start_ready(config).await;
    let path = |token: &str| format!("/.well-known/acme-challenge/{token}");
    let skew = switchyard::acme::challenges::CLOCK_SKEW_ALLOWANCE.as_millis() as i64;
    let now = unix_ms();
    redis.cli(&[
        "HSET",
        "routes:acme:challenges",
        "tok",
        &format!("{} tok.thumb", now + 60_000),
        "expired",
        &format!("{} expired.thumb", now - skew - 60_000),
        "bad",
        "nonsense",
    ]);
    assert_eventually!(
        proxy.get("app.cloud.com", &path("tok")).await.status == 200
            && proxy
                .get("app.cloud.com", &path("tok"))
                .await
                .backend()
                .is_none(),
        "the token is not answered"
    );
    let answer = send(
        proxy.addr,
        request(
            "GET",
            "app.cloud.com",
            &path("tok"),
            &[("x-request-id", "req-1")],
            "",
        ),
    )
    .await;
    assert_eq!(answer.body, "tok.thumb");
    assert_eq!(answer.headers["content-type"], "text/plain");
    assert_eq!(answer.headers["x-request-id"], "req-1");
    assert!(proxy
        .get("other.host", &path("tok"))
        .await
        .body
        .contains("tok.thumb"));
    // Everything else is the route's: unknown, expired and malformed
    // tokens, other methods, other paths.
    for token in ["unknown", "expired", "bad", ""] {
        let r = proxy.get("app.cloud.com", &path(token)).await;
        assert_eq!(r.backend().as_deref(), Some("app"), "{token}: {r:?}");
    }
    let post = send(
        proxy.addr,
        request("POST", "app.cloud.com", &path("tok"), &[], "x"),
    )
    .await;
    assert_eq!(post.backend().as_deref(), Some("app"));
    let prefix = proxy
        .get("app.cloud.com", "/.well-known/acme-challenge-tok")
        .await;
    assert_eq!(prefix.backend().as_deref(), Some("app"));

    // Removals are this hash's normal life: all its tokens deleted at once
    // are not held back.
    redis.cli(&["DEL", "routes:acme:challenges"]);
    assert_eventually!(
        proxy
            .get("app.cloud.com", &path("tok"))
            .await
            .backend()
            .as_deref()
            == Some("app"),
        "a deleted token is still answered"
    );
    redis.cli(&[
        "HSET",
        "routes:acme:challenges",
        "again",
        &format!("{} again.thumb", now + 60_000),
    ]);
    assert_eventually!(
        proxy.get("app.cloud.com", &path("again")).await.body == "again.thumb",
        "the token is not answered"
    );

    // Redis gone: the table in memory still answers.
    redis.kill();
    assert_eventually!(
        proxy.readyz().await.1["redis"] != "connected",
        "the proxy did not notice Redis is gone"
    );
    let r = proxy.get("app.cloud.com", &path("again")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "again.thumb"));
    proxy.shutdown().await;
}

/// The Redis operations the coordination rests on, one by one against a
/// real server: the lock, the cap, keeping alive, the guarded write, the
/// token sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordination_scripts_hold_against_a_real_redis() {
    use fred::prelude::*;
    use switchyard::acme::store::{challenge_answer, Keys, Store, Written};
    let redis = RedisServer::start();
    let client = Builder::from_config(fred::prelude::Config::from_url(&redis.url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let store = Store {
        client,
        keys: Keys::new("routes", "routes:certs"),
    };
    let ttl = Duration::from_secs(5);
    let host = "app.cloud.com";

    // One holder per host.
    assert!(store.lock(host, "a", ttl).await.unwrap());
    assert!(!store.lock(host, "b", ttl).await.unwrap());
    // At most two leases; a holder's own lease is refreshed, not counted
    // twice.
    assert!(store.lease("a|1", 2, ttl).await.unwrap());
    assert!(store.lease("a|1", 2, ttl).await.unwrap());
    assert!(store.lease("b|2", 2, ttl).await.unwrap());
    assert!(!store.lease("c|3", 2, ttl).await.unwrap());
    assert_eq!(store.leases().await.unwrap(), 2);
    // An expired lease (a dead replica's) frees its slot.
    assert!(store
        .lease("b|2", 2, Duration::from_millis(1))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.lease("c|3", 2, ttl).await.unwrap());

    // Keeping alive extends the holder's lock only.
    redis.cli(&["PEXPIRE", "routes:acme:lock:app.cloud.com", "100"]);
    assert!(store.keep(host, "a", "a|1", ttl).await.unwrap());
    let pttl: i64 = redis
        .cli(&["PTTL", "routes:acme:lock:app.cloud.com"])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 1000, "lock not extended: {pttl}");
    assert!(!store.keep(host, "b", "b|2", ttl).await.unwrap());

    // The guarded write: refused to a holder that lost the lock, refused
    // when the field changed since the order started, done otherwise.
    let record = HostRecord {
        leaf_sha256: Some("ab".into()),
        ..HostRecord::default()
    };
    assert_eq!(
        store
            .write_cert(host, "b", None, "VALUE", &record)
            .await
            .unwrap(),
        Written::LockLost
    );
    redis.cli(&["HSET", "routes:certs", host, "BY HAND"]);
    assert_eq!(
        store
            .write_cert(host, "a", None, "VALUE", &record)
            .await
            .unwrap(),
        Written::FieldChanged
    );
    assert_eq!(cert_value(&redis, host), "BY HAND");
    assert_eq!(
        store
            .write_cert(host, "a", Some(b"BY HAND"), "VALUE", &record)
            .await
            .unwrap(),
        Written::Yes
    );
    assert_eq!(cert_value(&redis, host), "VALUE");
    assert_eq!(store.record(host).await.unwrap(), Some(record));
    // Only the write that happened is in the change log, in `cert set`'s
    // format (what replicas patch from).
    assert_eq!(redis.cli(&["XLEN", "routes:certs:log"]).trim(), "1");
    let (entry, held) = last_cert_log_entry(&redis).await.expect("an entry");
    assert_eq!(
        (&entry.field[..], entry.value.as_deref()),
        (host.as_bytes(), Some(&b"VALUE"[..]))
    );
    assert_eq!(held.as_deref(), Some(&b"VALUE"[..]));

    // Release: only the holder's lock goes; the lease goes with it.
    store.release(host, "b", "b|2").await.unwrap();
    assert_eq!(
        redis
            .cli(&["EXISTS", "routes:acme:lock:app.cloud.com"])
            .trim(),
        "1"
    );
    store.release(host, "a", "a|1").await.unwrap();
    assert_eq!(
        redis
            .cli(&["EXISTS", "routes:acme:lock:app.cloud.com"])
            .trim(),
        "0"
    );
    assert_eq!(store.leases().await.unwrap(), 1);

    // Tokens carry their expiry (Redis time); expired ones are swept. A
    // write says its Redis time (what replicas' watermarks are compared
    // with).
    let written_at = store
        .put_challenge("live", "live.thumb", ttl)
        .await
        .unwrap();
    store
        .put_challenge("stale", "stale.thumb", Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now_ms = {
        let t = redis.cli(&["TIME"]);
        let mut parts = t.lines().map(|l| l.trim().parse::<i64>().unwrap());
        parts.next().unwrap() * 1000 + parts.next().unwrap() / 1000
    };
    assert!(
        (written_at / 1000) as i64 <= now_ms && (written_at / 1000) as i64 > now_ms - 1000,
        "{written_at} vs {now_ms}"
    );
    let live = redis.cli(&["HGET", "routes:acme:challenges", "live"]);
    assert_eq!(
        challenge_answer(live.trim().as_bytes(), now_ms),
        Some(&b"live.thumb"[..])
    );
    assert_eq!(store.sweep_challenges().await.unwrap(), 1);
    assert_eq!(
        redis.cli(&["HKEYS", "routes:acme:challenges"]).trim(),
        "live"
    );

    // The account key is created once: a second maker is not used.
    let first = store.account_key(|| "KEY-1".into()).await.unwrap();
    let second = store.account_key(|| "KEY-2".into()).await.unwrap();
    assert_eq!((&first[..], &second[..]), (&b"KEY-1"[..], &b"KEY-1"[..]));
}

/// The binary with `--acme-domains` follows the challenges too: an answer
/// is access-logged like any request (no backend), and HTTP/2 clients
/// (prior knowledge, cleartext) get the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_challenges_logs_them_and_answers_http2_too() {
    use http_body_util::BodyExt;
    let redis = RedisServer::start();
    let app = Backend::echo("app").await;
    redis.hset("app.cloud.com", &app.target());
    let proxy = crate::support::ProxyProcess::start(|cmd| {
        cmd.args(["--redis-url", &redis.url()])
            .args(["--acme-domains", "*.nothing.test"])
            .args(["--acme-directory", "https://127.0.0.1:1/dir"])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info");
    });
    proxy.wait_ready().await;
    let path = "/.well-known/acme-challenge/tok";
    redis.cli(&[
        "HSET",
        "routes:acme:challenges",
        "tok",
        &format!("{} tok.thumb", unix_ms() + 60_000),
    ]);
    assert_eventually!(
        proxy.get("app.cloud.com", path).await.body == "tok.thumb",
        "the token is not answered"
    );
    // (Requests made before the token arrived went to the app.)
    let (line, seen) = proxy
        .wait_json_line(|v| v["target"] == "access" && v["path"] == path && v["backend"] == "-");
    let line = line.unwrap_or_else(|| panic!("no access line of the answer; saw {seen:?}"));
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["bytes"], "tok.thumb".len(), "{line}");
    assert!(line["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let ask = |path: &str| {
        http::Request::builder()
            .uri(format!("http://app.cloud.com{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let answer = sender.send_request(ask(path)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-request-id"));
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"tok.thumb");
    let other = sender
        .send_request(ask("/.well-known/acme-challenge/unknown"))
        .await
        .unwrap();
    assert_eq!(other.headers()["x-backend"], "app");
}

/// What an order waits for before it asks the CA to validate: once
/// `replicas_caught_up` says every live replica has the token's write,
/// every replica answers the token at once (no polling here), whichever
/// the CA reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_replicas_have_caught_up_every_one_answers_the_token() {
    use fred::prelude::*;
    use switchyard::acme::store::{Keys, Store};
    use switchyard::replicas::wait::Progress;
    let redis = RedisServer::start();
    let app = Backend::echo("app").await;
    redis.hset("app.cloud.com", &app.target());
    let client = Builder::from_config(fred::prelude::Config::from_url(&redis.url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let store = Store {
        client,
        keys: Keys::new("routes", "routes:certs"),
    };
    let ttl = Duration::from_secs(60);
    // Nobody to wait for yet.
    let t = store.put_challenge("early", "early.k", ttl).await.unwrap();
    assert_eq!(
        store.replicas_caught_up(t, ttl).await.unwrap(),
        Progress::NoReplicas
    );

    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut acme =
            AcmeConfig::new(switchyard::acme::DomainPatterns::parse(&["*.nothing.test"]).unwrap());
        acme.directory = "https://127.0.0.1:1/dir".into();
        replicas.push(ProxyHandle::start_ready(replica_config(&redis, acme)).await);
    }
    for round in 0..5 {
        let token = format!("tok{round}");
        let key_authorization = format!("{token}.thumb");
        let t = store
            .put_challenge(&token, &key_authorization, ttl)
            .await
            .unwrap();
        assert_eq!(
            store.replicas_caught_up(t, ttl).await.unwrap(),
            Progress::Live
        );
        for replica in &replicas {
            let r = replica
                .get(
                    "app.cloud.com",
                    &format!("/.well-known/acme-challenge/{token}"),
                )
                .await;
            assert_eq!(r.body, key_authorization, "round {round}: {r:?}");
        }
    }
    for replica in replicas {
        replica.shutdown().await;
    }
}
