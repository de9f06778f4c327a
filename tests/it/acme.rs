//! Automatic certificates against a real ACME server: Debian's `pebble`
//! (and `pebble-challtestsrv` as its DNS), started per test on free ports
//! with a TLS certificate made at test time; a private redis-server; the
//! real sync loop and ACME task (`switchyard::acme::run`) of one or more
//! coordinators. Phase 1: the proxy does not answer HTTP-01 yet, so Pebble
//! runs with `PEBBLE_VA_ALWAYS_VALID=1` except where refusal is the point.

use crate::support::{free_port, patience, RedisServer};
use crate::tls_support::{Scratch, TestCa};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::acme::plan::HostRecord;
use switchyard::config::{AcmeConfig, Config};
use switchyard::routes::FieldKey;
use switchyard::state::SharedState;
use switchyard::tls::certs;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A Pebble ACME server (and optionally its DNS), killed on drop.
struct Pebble {
    child: Child,
    dns: Option<Child>,
    dir: Scratch,
    directory: String,
    ca_file: std::path::PathBuf,
}

#[derive(Default)]
struct PebbleOptions {
    /// Validate every challenge without asking anyone (phase 1).
    always_valid: bool,
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
        let (listen, management) = (free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            // Nothing listens there: validation that is really attempted
            // fails with a connection problem.
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(validity) = options.validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config_file = dir.write("pebble.json", config.to_string());
        let log = std::fs::File::create(dir.path("pebble.log")).unwrap();
        let mut command = Command::new("pebble");
        command
            .arg("-config")
            .arg(&config_file)
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every good nonce accepted, no authorization reused: each
            // order is one new order with one fresh authorization.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut dns = None;
        if options.always_valid {
            command.env("PEBBLE_VA_ALWAYS_VALID", "1");
        } else {
            // Every name resolves to 127.0.0.1, where nothing answers.
            let dns_port = free_port();
            dns = Some(
                Command::new("pebble-challtestsrv")
                    .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                    .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                    .args(["-management", &format!("127.0.0.1:{}", free_port())])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("pebble-challtestsrv is installed (apt-get install pebble)"),
            );
            command.args(["-dnsserver", &format!("127.0.0.1:{dns_port}")]);
        }
        let child = command
            .spawn()
            .expect("pebble is installed (apt-get install pebble)");
        let pebble = Pebble {
            child,
            dns,
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

    /// Certificates Pebble issued.
    fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
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

/// One replica's worth of background work: the sync loop (routes) and the
/// ACME task, on a state of its own.
struct Coordinator {
    state: Arc<SharedState>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Coordinator {
    fn start(redis: &RedisServer, acme: AcmeConfig) -> Coordinator {
        Coordinator::start_with(redis, acme, |_| {})
    }

    fn start_with(
        redis: &RedisServer,
        acme: AcmeConfig,
        configure: impl FnOnce(&mut Config),
    ) -> Coordinator {
        let mut config: Config = crate::support::test_config(&redis.url());
        config.acme = Some(acme);
        configure(&mut config);
        let state = SharedState::new();
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(switchyard::sync::run(
                config.sync.clone(),
                state.clone(),
                vec![switchyard::sync::routes_hash(&config.sync, &state, None)],
                stop.child_token(),
            )),
            tokio::spawn(switchyard::acme::run(
                config,
                state.clone(),
                stop.child_token(),
            )),
        ];
        Coordinator { state, stop, tasks }
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.state.metrics.render();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Dies as a killed replica does: nothing released, nothing said.
    async fn kill(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the tasks stop")
                .unwrap();
        }
    }
}

const ISSUED: &str = "switchyard_acme_orders_total{outcome=\"issued\"}";
const FAILED: &str = "switchyard_acme_orders_total{outcome=\"failed\"}";

fn cert_value(redis: &RedisServer, host: &str) -> String {
    redis.cli(&["HGET", "routes:certs", host]).trim().to_owned()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_matching_host_gets_a_certificate_and_no_other_host_does() {
    let pebble = Pebble::start(PebbleOptions {
        always_valid: true,
        ..Default::default()
    });
    let redis = RedisServer::start();
    let hand = TestCa::new().leaf(&["manual.cloud.com"]);
    redis.cli(&[
        "HSET",
        "routes:certs",
        "manual.cloud.com",
        &format!("{}{}", hand.chain_pem, hand.key_pem),
    ]);
    let coordinator = Coordinator::start(&redis, acme_config(&pebble, &["*.cloud.com"]));

    let started = Instant::now();
    redis.hset("app.cloud.com", "127.0.0.1:9");
    redis.hset("other.example.net", "127.0.0.1:9");
    redis.hset("manual.cloud.com", "127.0.0.1:9");
    redis.hset("*.cloud.com", "127.0.0.1:9");
    assert_eventually!(
        loaded(&redis, "app.cloud.com").is_some(),
        "no certificate for app.cloud.com; pebble log:\n{}",
        pebble.log()
    );
    let issued_in = started.elapsed();
    let info = loaded(&redis, "app.cloud.com").unwrap();
    assert_eq!(info.names, ["app.cloud.com"]);
    assert!(info.issuer.contains("Pebble"), "issuer {}", info.issuer);
    assert!(issued_in < Duration::from_secs(10), "took {issued_in:?}");
    println!("FIGURES acme: route HSET -> certificate in the certs hash: {issued_in:?}");

    // What the order left: a record naming the leaf, no lock, no lease, no
    // token, one account key.
    let record = record(&redis, "app.cloud.com").expect("a record");
    assert!(record.leaf_sha256.is_some());
    assert_eq!(record.failures, 0);
    assert_eventually!(
        redis
            .cli(&["EXISTS", "routes:acme:lock:app.cloud.com"])
            .trim()
            == "0"
            && redis.cli(&["ZCARD", "routes:acme:inflight"]).trim() == "0",
        "the lock and the lease are released"
    );
    assert_eq!(redis.cli(&["HLEN", "routes:acme:challenges"]).trim(), "0");
    assert_eq!(redis.cli(&["EXISTS", "routes:acme:account"]).trim(), "1");
    assert_eventually!(coordinator.metric(ISSUED) == 1.0, "issued metric");

    // Many more ticks: the non-matching host, the wildcard route and the
    // host whose certificate was set by hand get nothing.
    orders_stay_at(&pebble, 1).await;
    assert_eq!(cert_value(&redis, "other.example.net"), "");
    assert_eq!(cert_value(&redis, "*.cloud.com"), "");
    assert!(cert_value(&redis, "manual.cloud.com").starts_with(hand.chain_pem.trim()));
    assert_eq!(redis.cli(&["HLEN", "routes:certs"]).trim(), "2");
    assert_eq!(coordinator.metric(ISSUED), 1.0);
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_coordinators_order_twenty_new_hosts_exactly_once_each() {
    let pebble = Pebble::start(PebbleOptions {
        always_valid: true,
        ..Default::default()
    });
    let redis = RedisServer::start();
    let mut acme = acme_config(&pebble, &["*.cloud.com"]);
    acme.max_concurrent = 4;
    let coordinators: Vec<Coordinator> = (0..3)
        .map(|_| Coordinator::start(&redis, acme.clone()))
        .collect();
    // Every coordinator has its routes table before the hosts arrive.
    redis.hset("ready.example.net", "127.0.0.1:9");
    assert_eventually!(
        coordinators.iter().all(|c| c.state.table().len() == 1),
        "the coordinators load their tables"
    );

    let hosts: Vec<String> = (0..20).map(|i| format!("app{i}.cloud.com")).collect();
    let started = Instant::now();
    let mut hset = String::from("HSET routes");
    for host in &hosts {
        hset.push_str(&format!(" {host} 127.0.0.1:9"));
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
        if hosts.iter().all(|h| loaded(&redis, h).is_some()) {
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
        "FIGURES acme: 20 hosts, 3 coordinators, cap 4: all issued in {:?}",
        started.elapsed()
    );
    orders_stay_at(&pebble, 20).await;
    assert_eq!(pebble.issued(), 20);
    let issued: f64 = coordinators.iter().map(|c| c.metric(ISSUED)).sum();
    assert_eq!(issued, 20.0);
    assert!(
        coordinators
            .iter()
            .filter(|c| c.metric(ISSUED) > 0.0)
            .count()
            >= 2,
        "the work is shared: {:?}",
        coordinators
            .iter()
            .map(|c| c.metric(ISSUED))
            .collect::<Vec<_>>()
    );
    for c in coordinators {
        c.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lock_and_lease_expire_then_another_replica_orders() {
    let pebble = Pebble::start(PebbleOptions {
        always_valid: true,
        ..Default::default()
    });
    let redis = RedisServer::start();
    // What a replica killed mid-order leaves: its lock on the host, its
    // lease (the cap is 1, so the lease alone blocks every order), and
    // nobody to renew them.
    let dead_for = Duration::from_millis(1500);
    let left_at = Instant::now();
    redis.cli(&[
        "SET",
        "routes:acme:lock:app.cloud.com",
        "dead-replica:1",
        "PX",
        &dead_for.as_millis().to_string(),
    ]);
    redis.cli(&[
        "EVAL",
        "local t = redis.call('TIME') \
         return redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1]), 'dead-replica:1|app.cloud.com')",
        "1",
        "routes:acme:inflight",
        &dead_for.as_millis().to_string(),
    ]);
    let mut acme = acme_config(&pebble, &["*.cloud.com"]);
    acme.max_concurrent = 1;
    let coordinator = Coordinator::start(&redis, acme);
    redis.hset("app.cloud.com", "127.0.0.1:9");
    assert_eventually!(
        loaded(&redis, "app.cloud.com").is_some(),
        "no certificate after the dead lock expired; pebble log:\n{}",
        pebble.log()
    );
    assert!(
        left_at.elapsed() >= dead_for,
        "ordered after {:?}, while the dead replica's lock still held",
        left_at.elapsed()
    );
    assert_eq!(pebble.orders(), 1);
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_ca_is_recorded_with_its_problem_and_retried_with_backoff() {
    // Real validation: Pebble resolves every name to 127.0.0.1, where
    // nothing answers HTTP-01, so each authorization becomes invalid.
    let pebble = Pebble::start(PebbleOptions::default());
    let redis = RedisServer::start();
    let hand = TestCa::new().leaf(&["manual.cloud.com"]);
    let hand_value = format!("{}{}", hand.chain_pem, hand.key_pem);
    redis.cli(&["HSET", "routes:certs", "manual.cloud.com", &hand_value]);
    let coordinator = Coordinator::start(&redis, acme_config(&pebble, &["*.cloud.com"]));
    redis.hset("app.cloud.com", "127.0.0.1:9");
    redis.hset("manual.cloud.com", "127.0.0.1:9");

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
    assert!(coordinator.metric(FAILED) >= 3.0);
    // Nothing else broke: no certificate written, the one set by hand kept.
    assert_eq!(cert_value(&redis, "app.cloud.com"), "");
    assert_eq!(
        cert_value(&redis, "manual.cloud.com"),
        hand_value.trim_end()
    );
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_before_it_expires() {
    let pebble = Pebble::start(PebbleOptions {
        always_valid: true,
        validity: Some(Duration::from_secs(9)),
    });
    let redis = RedisServer::start();
    let coordinator = Coordinator::start(&redis, acme_config(&pebble, &["*.cloud.com"]));
    redis.hset("app.cloud.com", "127.0.0.1:9");
    assert_eventually!(
        record(&redis, "app.cloud.com").is_some_and(|r| r.leaf_sha256.is_some()),
        "first certificate; pebble log:\n{}",
        pebble.log()
    );
    let first = record(&redis, "app.cloud.com").unwrap();
    let first_value = cert_value(&redis, "app.cloud.com");
    let deadline = Instant::now() + patience();
    loop {
        let now = record(&redis, "app.cloud.com").unwrap();
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
    assert_ne!(cert_value(&redis, "app.cloud.com"), first_value);
    assert!(loaded(&redis, "app.cloud.com").is_some());
    assert_eventually!(
        coordinator.metric("switchyard_acme_renewals_total") >= 1.0,
        "renewals metric"
    );
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_the_account_key_and_the_certificate_key_are_sealed() {
    use switchyard::tls::seal::{Purpose, Sealer, Secret, BEGIN};
    let pebble = Pebble::start(PebbleOptions {
        always_valid: true,
        ..Default::default()
    });
    let redis = RedisServer::start();
    let secret = Secret::from_bytes(&[7u8; 32]).unwrap();
    let coordinator = {
        let secret = secret.clone();
        Coordinator::start_with(&redis, acme_config(&pebble, &["*.cloud.com"]), move |c| {
            c.tls.secret = Some(secret)
        })
    };
    redis.hset("app.cloud.com", "127.0.0.1:9");
    assert_eventually!(
        !cert_value(&redis, "app.cloud.com").is_empty(),
        "no certificate; pebble log:\n{}",
        pebble.log()
    );
    let account = redis.cli(&["GET", "routes:acme:account"]);
    assert!(account.starts_with(BEGIN), "account key in plaintext");
    assert!(!account.contains("PRIVATE KEY"));
    let value = cert_value(&redis, "app.cloud.com");
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
    coordinator.stop().await;
}

/// The rights README.md ("Automatic certificates") gives the ACME task,
/// beside the proxy's own.
const ACME_ACL: &str = "~routes:acme:* ~routes:certs +get +set +eval +hget +hset +hdel +hgetall \
     +zcard +pexpire +del +zadd +zrem +zscore +zremrangebyscore +time";

/// A replica running as a user with the proxy's ACL plus the documented
/// ACME rights orders, renews state and releases its lock with no denial
/// in `ACL LOG`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_is_enough() {
    let pebble = Pebble::start(PebbleOptions {
        always_valid: true,
        ..Default::default()
    });
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
        .acl_user("switchyard", &format!("{proxy_acl} {ACME_ACL}"))
        .start();
    assert_eq!(redis.cli(&["ACL", "LOG", "RESET"]).trim(), "OK");
    let url = format!("redis://switchyard:acme-pw@127.0.0.1:{}/0", redis.port);
    let acme = acme_config(&pebble, &["*.cloud.com"]);
    let coordinator = Coordinator::start_with(&redis, acme, |c| {
        c.sync.redis = switchyard::config::parse_redis_url(&url).unwrap();
        c.sync.redis_url = url.clone();
    });
    redis.hset("app.cloud.com", "127.0.0.1:9");
    assert_eventually!(
        loaded(&redis, "app.cloud.com").is_some(),
        "no certificate; ACL LOG: {}",
        redis.cli(&["ACL", "LOG"])
    );
    assert_eventually!(
        redis
            .cli(&["EXISTS", "routes:acme:lock:app.cloud.com"])
            .trim()
            == "0",
        "the lock is released"
    );
    coordinator.stop().await;
    let log = redis.cli(&["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "denials: {log}");
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

    // Tokens carry their expiry (Redis time); expired ones are swept.
    store
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

/// A replica takes the lock, then hangs talking to its CA (a server that
/// accepts and never answers) and is killed. While it lives its lock is
/// kept alive past its TTL and the other replica waits; once it is dead,
/// the other replica orders when the lock expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_order_leaves_the_host_to_another_once_its_lock_expires() {
    let pebble = Pebble::start(PebbleOptions {
        always_valid: true,
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

    let doomed = Coordinator::start(&redis, hanging);
    redis.hset("app.cloud.com", "127.0.0.1:9");
    assert_eventually!(
        redis
            .cli(&["EXISTS", "routes:acme:lock:app.cloud.com"])
            .trim()
            == "1",
        "the first replica takes the lock"
    );
    let survivor = Coordinator::start(&redis, good);
    // Longer than a lock's life: a live holder keeps it.
    tokio::time::sleep(lock_ttl + lock_ttl / 2).await;
    assert_eq!(cert_value(&redis, "app.cloud.com"), "");
    assert_eq!(pebble.orders(), 0);

    doomed.kill().await;
    let killed_at = Instant::now();
    assert_eventually!(
        loaded(&redis, "app.cloud.com").is_some(),
        "no certificate after the holder died; pebble log:\n{}",
        pebble.log()
    );
    assert!(
        killed_at.elapsed() < lock_ttl + Duration::from_secs(2),
        "took {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(pebble.orders(), 1);
    assert_eq!(survivor.metric(ISSUED), 1.0);
    survivor.stop().await;
}

/// Asserts that Pebble's order count is `expected` and stays so while the
/// coordinators run many more ticks (a "nothing more happens" check needs a
/// window; it is watched throughout, not slept through).
async fn orders_stay_at(pebble: &Pebble, expected: usize) {
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(pebble.orders(), expected, "pebble log:\n{}", pebble.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
