//! TLS session resumption on any replica (README.md, "Session resumption
//! on any replica"): real replicas with `--tls-listen` sharing ticket keys
//! through their own Redis, and a rustls client (TLS 1.3, one session store
//! for all connections) that makes a real request on every connection.

use crate::support::*;
use crate::tls_support::{Scratch, TestCa, TlsProxy as Replica};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::HandshakeKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard::config::{CertFilePaths, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "app.cloud.com";
const TICKETS_KEY: &str = "routes:tls:tickets";

/// What a replica's `/tickets` view tells.
trait TicketsView {
    async fn tickets(&self) -> serde_json::Value;
    async fn keys(&self) -> (Vec<String>, Option<String>);
}

impl TicketsView for Replica {
    /// `/tickets`.
    async fn tickets(&self) -> serde_json::Value {
        self.admin_get("/tickets").await.json()
    }

    /// The ids of the shared keys this replica holds, and the one it
    /// encrypts with (empty while it uses its local ticketer).
    async fn keys(&self) -> (Vec<String>, Option<String>) {
        let view = self.tickets().await;
        let mut ids = Vec::new();
        let mut encrypting = None;
        for key in view["keys"].as_array().into_iter().flatten() {
            let id = key["id"].as_str().unwrap().to_owned();
            if key["encrypting"] == true {
                encrypting = Some(id.clone());
            }
            ids.push(id);
        }
        (ids, encrypting)
    }
}

/// A Redis, an echo backend routed from `app.cloud.com`, a test CA and a
/// default certificate `*.cloud.com` in files.
struct Cluster {
    redis: RedisServer,
    _backend: Backend,
    ca: TestCa,
    _dir: Scratch,
    config: Config,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster::with_redis(RedisServer::start(), test_config).await
    }

    async fn with_redis(redis: RedisServer, config: impl FnOnce(&str) -> Config) -> Cluster {
        let backend = Backend::echo("resumed").await;
        redis.hset(HOST, &backend.target());
        let ca = TestCa::new();
        let dir = Scratch::new("tls-resumption");
        let leaf = ca.leaf(&["*.cloud.com"]);
        let mut config = config(&redis.url());
        config.tls.default_files = Some(CertFilePaths {
            cert: dir.write("cert.pem", &leaf.chain_pem),
            key: dir.write("key.pem", &leaf.key_pem),
        });
        // Replicas read the keys often, so a test sees keys and rotations
        // within a fraction of a second.
        config.tls.ticket_refresh = Duration::from_millis(100);
        Cluster {
            redis,
            _backend: backend,
            ca,
            _dir: dir,
            config,
        }
    }

    /// Replicas started at once, ready and holding the same shared keys.
    async fn replicas(&self, n: usize, config: &Config) -> Vec<Replica> {
        let mut replicas = Vec::new();
        for _ in 0..n {
            replicas.push(Replica::start(config.clone()).await);
        }
        for r in &replicas {
            r.wait_ready().await;
        }
        wait_same_keys(&replicas).await;
        replicas
    }

    /// A TLS 1.3 client whose connections share one session store.
    fn client(&self) -> TlsConnector {
        self.client_of(&rustls::version::TLS13)
    }

    /// A client of one TLS version whose connections share one session store.
    fn client_of(&self, version: &'static rustls::SupportedProtocolVersion) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::in_memory_sessions(64);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// Waits until every replica uses shared keys, the same set, encrypting
/// with the same key.
async fn wait_same_keys(replicas: &[Replica]) {
    assert_eventually!(
        {
            let mut views = Vec::new();
            for r in replicas {
                views.push(r.keys().await);
            }
            views[0].1.is_some() && views.iter().all(|v| *v == views[0])
        },
        "replicas never agreed on shared ticket keys"
    );
}

/// One connection: a handshake and a real request through the proxy
/// (`Connection: close`, answer read to the end, so the client has
/// processed the session tickets the server sent). The handshake's kind,
/// or why it failed.
async fn request(client: &TlsConnector, addr: SocketAddr) -> Result<HandshakeKind, String> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(HOST.to_owned()).unwrap();
        let mut tls = client
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let kind = tls
            .get_ref()
            .1
            .handshake_kind()
            .ok_or("no handshake kind")?;
        tls.write_all(
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer);
        if !answer.starts_with("HTTP/1.1 200") || !answer.contains("\"resumed\"") {
            return Err(format!("unexpected answer: {answer}"));
        }
        Ok(kind)
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn resumed(kind: HandshakeKind) -> bool {
    kind == HandshakeKind::Resumed
}

/// The measure: 100 connections round-robin over 3 replicas, each
/// resuming with the ticket the previous connection got from another
/// replica. At least 95 % of the connections after the first resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_any_of_three_replicas() {
    let cluster = Cluster::new().await;
    let replicas = cluster.replicas(3, &cluster.config).await;

    // Explicitly: a ticket from replica 0 resumes on replica 1.
    let client = cluster.client();
    assert_eq!(
        request(&client, replicas[0].tls).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request(&client, replicas[1].tls).await,
        Ok(HandshakeKind::Resumed)
    );

    // Round-robin: rustls's client store hands out the newest ticket, the
    // one the previous connection (another replica) sent.
    let client = cluster.client();
    const CONNECTIONS: usize = 100;
    let mut kinds = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let replica = &replicas[i % replicas.len()];
        let kind = request(&client, replica.tls)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        kinds.push(kind);
    }
    assert_eq!(kinds[0], HandshakeKind::Full);
    let later = &kinds[1..];
    let resumed_count = later.iter().filter(|k| resumed(**k)).count();
    let rate = resumed_count as f64 / later.len() as f64;
    println!(
        "FIGURES resumption across 3 replicas, round-robin: {resumed_count}/{} connections after the first resumed ({:.1} %)",
        later.len(),
        rate * 100.0
    );
    assert!(rate >= 0.95, "resumption rate {rate}: {kinds:?}");
    // TLS 1.2 session tickets come from the same keys.
    let tls12 = cluster.client_of(&rustls::version::TLS12);
    assert_eq!(
        request(&tls12, replicas[2].tls).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request(&tls12, replicas[0].tls).await,
        Ok(HandshakeKind::Resumed),
        "a TLS 1.2 ticket resumes on another replica"
    );
    // Every replica resumed sessions, and counted them.
    for r in &replicas {
        let resumed = r
            .metric("switchyard_tls_handshake_kinds_total{kind=\"resumed\"}")
            .await;
        assert!(resumed >= 30.0, "{resumed} resumed on {}", r.tls);
        assert!(r.metric("switchyard_tls_ticket_keys").await >= 1.0);
    }
    for r in replicas {
        r.shutdown().await;
    }
}

/// Rotation with a short period: a new key becomes the one that encrypts
/// while the previous one still opens its tickets (on another replica),
/// until it is retired, from Redis and from the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_adds_a_key_and_keeps_the_previous_until_retired() {
    let cluster = Cluster::new().await;
    let mut config = cluster.config.clone();
    // Lead 300 ms: a key is added 2.7 s after the previous one, encrypts
    // from 3 s, and is retired when 6.3 s old. Tickets live 3 s.
    config.tls.ticket_rotation = Duration::from_secs(3);
    let replicas = cluster.replicas(2, &config).await;
    let (a, b) = (&replicas[0], &replicas[1]);

    // A client holding a ticket made with one known key: the key
    // encrypting on `a` was the same before and after its handshake, and
    // at least 1 s old (so the ticket, valid 3 s, is still valid when the
    // next key takes over).
    let (old_key, client) = {
        let mut found = None;
        assert_eventually!(
            {
                let view = a.tickets().await;
                let encrypting = view["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|k| k["encrypting"] == true)
                    .cloned()
                    .unwrap();
                let age = view["redis_time_ms"].as_i64().unwrap()
                    - encrypting["created_ms"].as_i64().unwrap();
                if age >= 1000 {
                    let client = cluster.client();
                    assert_eq!(request(&client, a.tls).await, Ok(HandshakeKind::Full));
                    let after = a.keys().await.1.unwrap();
                    if encrypting["id"] == after.as_str() {
                        found = Some((after, client));
                    }
                }
                found.is_some()
            },
            "the encrypting key never held still across a handshake"
        );
        found.unwrap()
    };

    // A new key is made and encrypts on `b`; the old one is still held.
    assert_eventually!(
        {
            let (ids, encrypting) = b.keys().await;
            ids.contains(&old_key) && encrypting.is_some_and(|e| e != old_key)
        },
        "no new key took over from {old_key}"
    );
    assert_eq!(
        request(&client, b.tls).await,
        Ok(HandshakeKind::Resumed),
        "a ticket of the previous key resumes on another replica"
    );

    // Retired: gone from Redis and from the replicas.
    for r in &replicas {
        assert_eventually!(
            !r.keys().await.0.contains(&old_key),
            "{old_key} was never retired"
        );
    }
    assert!(!cluster
        .redis
        .cli(&["HKEYS", TICKETS_KEY])
        .contains(&old_key));
    // The hash stays small: the keys of two rotations and a new one.
    let held = cluster.redis.cli(&["HLEN", TICKETS_KEY]);
    assert!(held.trim().parse::<u32>().unwrap() <= 3, "{held}");
    let mut added = 0.0;
    for r in &replicas {
        added += r.metric("switchyard_tls_ticket_keys_added_total").await;
    }
    assert!(added >= 3.0, "{added} keys added");
    // Resumption goes on under the new keys.
    let client = cluster.client();
    assert_eq!(request(&client, a.tls).await, Ok(HandshakeKind::Full));
    assert_eq!(request(&client, b.tls).await, Ok(HandshakeKind::Resumed));
    for r in replicas {
        r.shutdown().await;
    }
}

/// A ticket whose key is gone (retired while a client still holds a
/// ticket, here deleted by hand) gets a full handshake, never a failure;
/// a replica left without keys adds one, and resumption goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_of_a_deleted_key_gets_a_full_handshake() {
    let cluster = Cluster::new().await;
    let replicas = cluster.replicas(2, &cluster.config).await;
    let client = cluster.client();
    assert_eq!(
        request(&client, replicas[0].tls).await,
        Ok(HandshakeKind::Full)
    );
    let (old, _) = replicas[0].keys().await;
    cluster.redis.cli(&["DEL", TICKETS_KEY]);
    assert_eventually!(
        {
            let (a, b) = (replicas[0].keys().await, replicas[1].keys().await);
            a == b && a.1.is_some() && !a.0.iter().any(|id| old.contains(id))
        },
        "the replicas did not move to a new key"
    );
    assert_eq!(
        request(&client, replicas[1].tls).await,
        Ok(HandshakeKind::Full),
        "a ticket of a key that is gone: a full handshake"
    );
    assert_eq!(
        request(&client, replicas[0].tls).await,
        Ok(HandshakeKind::Resumed)
    );
    let failed =
        "switchyard_tls_handshakes_total{alpn=\"none\",outcome=\"failed\",version=\"none\"}";
    assert_eq!(replicas[1].metric(failed).await, 0.0);
    for r in replicas {
        r.shutdown().await;
    }
}

/// Redis down: the replicas keep their keys, so a ticket from one still
/// resumes on the other, and new tickets too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_keeps_working_while_redis_is_down() {
    let mut cluster = Cluster::new().await;
    let replicas = cluster.replicas(2, &cluster.config).await;
    cluster.redis.kill();
    for r in &replicas {
        assert_eventually!(
            !r.tickets().await["last_error"].is_null(),
            "the replica did not notice Redis is down"
        );
    }
    let client = cluster.client();
    assert_eq!(
        request(&client, replicas[0].tls).await,
        Ok(HandshakeKind::Full)
    );
    for i in 1..10 {
        assert_eq!(
            request(&client, replicas[i % 2].tls).await,
            Ok(HandshakeKind::Resumed),
            "connection {i}"
        );
    }
    for r in &replicas {
        assert_eq!(r.tickets().await["source"], "redis");
    }
    for r in replicas {
        r.shutdown().await;
    }
}

/// A replica started after a client got its ticket reads the shared keys
/// at boot and resumes the client's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_later_resumes_sessions_of_the_others() {
    let cluster = Cluster::new().await;
    let first = cluster.replicas(1, &cluster.config).await;
    let client = cluster.client();
    assert_eq!(
        request(&client, first[0].tls).await,
        Ok(HandshakeKind::Full)
    );

    let later = Replica::start(cluster.config.clone()).await;
    later.wait_ready().await;
    let mut all = first;
    all.push(later);
    wait_same_keys(&all).await;
    assert_eq!(
        request(&client, all[1].tls).await,
        Ok(HandshakeKind::Resumed)
    );
    for r in all {
        r.shutdown().await;
    }
}

/// With `--certs-secret-file`, keys are sealed in Redis. A replica with
/// another secret cannot open them: it says so (`/tickets`, metrics), uses
/// tickets of its own, and a ticket of the others gets a full handshake
/// there. A junk entry is reported and changes nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keys_open_only_with_the_secret_and_bad_entries_are_reported() {
    let cluster = Cluster::new().await;
    let secret = |b: u8| switchyard::tls::seal::Secret::from_bytes(&[b; 32]).unwrap();
    let mut sealed = cluster.config.clone();
    sealed.tls.secret = Some(secret(1));
    let replicas = cluster.replicas(2, &sealed).await;
    let stored = cluster.redis.cli(&["HGETALL", TICKETS_KEY]);
    assert!(stored.contains("BEGIN SWITCHYARD SEALED KEY"), "{stored}");

    cluster
        .redis
        .cli(&["HSET", TICKETS_KEY, "junk", "not a key"]);
    let client = cluster.client();
    assert_eq!(
        request(&client, replicas[0].tls).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request(&client, replicas[1].tls).await,
        Ok(HandshakeKind::Resumed)
    );
    for r in &replicas {
        assert_eventually!(
            r.tickets().await["invalid"][0]["field"] == "junk",
            "junk not reported: {}",
            r.tickets().await
        );
        assert_eq!(r.metric("switchyard_tls_ticket_keys_invalid").await, 1.0);
    }

    let mut other = cluster.config.clone();
    other.tls.secret = Some(secret(2));
    let stranger = Replica::start(other).await;
    stranger.wait_ready().await;
    assert_eventually!(
        stranger.tickets().await["invalid"]
            .as_array()
            .is_some_and(|i| i.iter().any(|e| e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("another secret")))),
        "the other secret not reported: {}",
        stranger.tickets().await
    );
    assert_eq!(stranger.tickets().await["source"], "local");
    assert_eq!(stranger.metric("switchyard_tls_ticket_keys").await, 0.0);
    assert_eq!(
        request(&client, stranger.tls).await,
        Ok(HandshakeKind::Full),
        "a ticket it cannot open: a full handshake, not a failure"
    );
    // Its own tickets resume on it.
    assert_eq!(
        request(&client, stranger.tls).await,
        Ok(HandshakeKind::Resumed)
    );
    stranger.shutdown().await;
    for r in replicas {
        r.shutdown().await;
    }
}

/// The rights README.md gives a replica with `--tls-listen` (its replica
/// line plus `~routes:tls:tickets +eval`) are enough: keys are made and
/// read with no denial in `ACL LOG`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_acl_covers_ticket_keys() {
    let mut acl = crate::cli::readme_acl("switchyard");
    acl.extend(["~routes:tls:tickets".to_owned(), "+eval".to_owned()]);
    let redis = RedisServer::start();
    let args: Vec<&str> = acl.iter().map(String::as_str).collect();
    assert_eq!(redis.cli(&args).trim(), "OK", "{acl:?}");
    let port = redis.port;
    let cluster = Cluster::with_redis(redis, |_| {
        test_config(&format!("redis://switchyard:pw@127.0.0.1:{port}/0"))
    })
    .await;
    assert_eq!(cluster.redis.cli(&["ACL", "LOG", "RESET"]).trim(), "OK");
    let replicas = cluster.replicas(2, &cluster.config).await;
    let client = cluster.client();
    assert_eq!(
        request(&client, replicas[0].tls).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request(&client, replicas[1].tls).await,
        Ok(HandshakeKind::Resumed)
    );
    for r in replicas {
        r.shutdown().await;
    }
    let log = cluster.redis.cli(&["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "denied: {log}");
}
