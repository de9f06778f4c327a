//! Certificate propagation benchmark: how long from a write to the certs
//! hash until every replica's TLS listener serves the new certificate,
//! with `--certs` other certificates in the hash (the issue's "a cert HSET
//! reaches 3 replicas in ≤ 2 ms p99 at 1,000 certs").
//!
//! The tool fills the certs hash itself (a test CA and one ECDSA P-256
//! leaf per host, made here with rcgen), then changes one probe host's
//! certificate back and forth between two leaves, written either plain
//! (`HSET`: every replica reads the whole hash) or logged (`MULTI HSET
//! XADD EXEC`, what `switchyard cert set` writes: every replica reads the
//! change log). The clock starts just before the write is sent.
//!
//! "Served" means the TLS listener itself hands out the new leaf, so every
//! poll is a fresh TLS handshake (no resumption) with the probe host as
//! SNI. The poll only needs the leaf, so it costs less than a client's
//! handshake: a client verifier that takes the leaf and stops the
//! handshake there (returning it as an error: no chain or signature
//! verification, no Finished), `TCP_NODELAY`, one `ClientConfig` for
//! every poll. The server's side is a whole first flight (certificate
//! chosen, key exchange, signature), as for any client. A polling round
//! asks every replica still behind at once, one thread per replica, and
//! lasts as long as the slowest answer; a replica's time is when its first
//! answer with the new leaf came back.
//!
//! References in each `RESULT`: `poll_*`, the length of a round asking
//! every replica with no change in flight (a change cannot be seen sooner
//! than a round takes), and `write_*`, the write's own round trip. After
//! each change, `--verify` such rounds check that no replica flaps back to
//! the old leaf (`wrong`); they are the `poll_*` samples.
//!
//! With `--admin` (each replica's admin listener, in `--tls` order), the
//! tool also reads when each replica installed the table it now serves
//! (`/certs`, `installed_at_us`, read once the new leaf is seen, untimed):
//! `installed_*` is the time from the write until the last replica made
//! the change live, the moment after which every handshake gets the new
//! leaf, without the polling round a handshake probe adds on top. Same
//! machine, same clock.
//!
//! Output: `RESULT kind=cert-plain|cert-logged ...` lines (bench/run.sh,
//! phase `certs`).

#[path = "common.rs"]
mod common;

use clap::Parser;
use common::{quantile, Redis};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

#[derive(Parser)]
struct Args {
    /// Redis address (host:port).
    #[arg(long)]
    redis: String,
    /// The certs hash the replicas follow.
    #[arg(long, default_value = "routes:certs")]
    key: String,
    /// A replica's TLS listener (`--tls-listen`); repeat for several.
    #[arg(long = "tls", required = true)]
    replicas: Vec<String>,
    /// A replica's admin listener, in the order of `--tls` (optional: the
    /// `installed_*` figures).
    #[arg(long = "admin")]
    admins: Vec<String>,
    /// Certificates in the hash besides the probe host's.
    #[arg(long, default_value_t = 1000)]
    certs: usize,
    /// Measured changes per kind.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// `plain`, `logged`, or `both`.
    #[arg(long, default_value = "both")]
    kinds: String,
    /// Unmeasured changes first (see bench/propagation.rs: idle vCPUs wake
    /// slowly until the hypervisor has adapted).
    #[arg(long, default_value_t = 2000)]
    warmup_ms: u64,
    /// Pause between changes, so that changes are not coalesced.
    #[arg(long, default_value_t = 5)]
    gap_ms: u64,
    /// Pause between polling rounds (µs).
    #[arg(long, default_value_t = 100)]
    poll_interval_us: u64,
    /// Give up on one change after this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Handshakes with every replica after each change, checked for a flap
    /// back to the old leaf.
    #[arg(long, default_value_t = 3)]
    verify: usize,
    #[arg(long, default_value = "")]
    label: String,
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "cert_propagation bench CA");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).expect("CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The hash value for `host` (chain, then key) and the leaf's DER.
    fn leaf(&self, host: &str) -> (String, Vec<u8>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![host.to_owned()]).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        let value = format!("{}{}{}", cert.pem(), self.pem, key.serialize_pem());
        (value, cert.der().to_vec())
    }
}

/// The leaf a server sent, carried out of the handshake by the error that
/// stops it.
#[derive(Debug)]
struct SeenLeaf(Vec<u8>);

impl std::fmt::Display for SeenLeaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "leaf seen ({} bytes); handshake stopped", self.0.len())
    }
}

impl std::error::Error for SeenLeaf {}

/// A certificate "verifier" that only reads the leaf: it returns it as an
/// error, so the client stops right after the server's first flight (no
/// chain or signature verification, no Finished). The server has already
/// chosen the certificate and signed for it, as for any client.
#[derive(Debug)]
struct LeafOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for LeafOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Err(rustls::Error::Other(rustls::OtherError(Arc::new(
            SeenLeaf(end_entity.to_vec()),
        ))))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("the leaf was never accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("the leaf was never accepted".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client that reads the leaf a TLS listener serves for a name: a fresh
/// handshake per call, stopped once the leaf is seen.
#[derive(Clone)]
struct Handshaker {
    /// Shared by every call and thread (the verifier holds no state).
    config: Arc<rustls::ClientConfig>,
}

impl Handshaker {
    fn new() -> Handshaker {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LeafOnly(provider)))
            .with_no_client_auth();
        // Every poll is a full handshake: a resumed one would not show a
        // new certificate.
        config.resumption = rustls::client::Resumption::disabled();
        Handshaker {
            config: Arc::new(config),
        }
    }

    /// The leaf `addr` serves for `host`.
    fn leaf(&self, addr: &str, host: &str) -> io::Result<Vec<u8>> {
        let mut sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let name = ServerName::try_from(host.to_owned()).map_err(io::Error::other)?;
        let mut conn =
            rustls::ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                let seen = e
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                    .and_then(|e| match e {
                        rustls::Error::Other(other) => other.0.downcast_ref::<SeenLeaf>(),
                        _ => None,
                    });
                return match seen {
                    Some(SeenLeaf(leaf)) => Ok(leaf.clone()),
                    None => Err(e),
                };
            }
        }
        Err(io::Error::other("handshake done without a certificate"))
    }
}

/// One thread per replica, so that a polling round asks every replica at
/// once and lasts as long as the slowest answer.
struct Pollers {
    jobs: Vec<mpsc::Sender<Arc<Vec<u8>>>>,
    answers: mpsc::Receiver<(usize, io::Result<bool>)>,
}

impl Pollers {
    fn start(client: &Handshaker, replicas: &[String], host: &str) -> Pollers {
        let (answer_tx, answers) = mpsc::channel();
        let jobs = replicas
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let (tx, rx) = mpsc::channel::<Arc<Vec<u8>>>();
                let (client, addr, host, answer_tx) = (
                    client.clone(),
                    addr.clone(),
                    host.to_owned(),
                    answer_tx.clone(),
                );
                std::thread::spawn(move || {
                    for want in rx {
                        let got = client.leaf(&addr, &host).map(|leaf| leaf == *want);
                        if answer_tx.send((i, got)).is_err() {
                            return;
                        }
                    }
                });
                tx
            })
            .collect();
        Pollers { jobs, answers }
    }

    /// One handshake with each replica in `which`, all at once: whether
    /// each returned `want`, and when its answer came, in the order of
    /// `which`.
    fn round(&self, which: &[usize], want: &Arc<Vec<u8>>) -> Vec<(io::Result<bool>, Instant)> {
        for &i in which {
            self.jobs[i].send(want.clone()).expect("poller thread");
        }
        let mut got: Vec<Option<(io::Result<bool>, Instant)>> =
            which.iter().map(|_| None).collect();
        for _ in which {
            let (i, answer) = self.answers.recv().expect("poller thread");
            let at = which.iter().position(|&w| w == i).expect("asked");
            got[at] = Some((answer, Instant::now()));
        }
        got.into_iter().map(|a| a.expect("answered")).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Logged,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "cert-plain",
            Kind::Logged => "cert-logged",
        }
    }

    /// The commands that set `field` to `value` in `key`.
    fn write(self, key: &str, field: &str, value: &str) -> Vec<Vec<Vec<u8>>> {
        let b = |s: &str| s.as_bytes().to_vec();
        let hset = vec![b("HSET"), b(key), b(field), b(value)];
        match self {
            Kind::Plain => vec![hset],
            Kind::Logged => vec![
                vec![b("MULTI")],
                hset,
                vec![
                    b("XADD"),
                    b(&format!("{key}:log")),
                    b("MAXLEN"),
                    b("~"),
                    b("10000"),
                    b("*"),
                    b("op"),
                    b("set"),
                    b("field"),
                    b(field),
                    b("value"),
                    b(value),
                ],
                vec![b("EXEC")],
            ],
        }
    }
}

struct Bench {
    args: Args,
    redis: Redis,
    pollers: Pollers,
    probe: String,
}

#[derive(Default)]
struct Series {
    all: Vec<f64>,
    each: Vec<f64>,
    writes: Vec<f64>,
    polls: Vec<f64>,
    /// Write → the last replica's install of the change (`--admin`).
    installed: Vec<f64>,
    timeouts: usize,
    wrong: usize,
    errors: usize,
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// When the replica at `admin` installed the certificate table it serves
/// (`/certs`, `installed_at_us`).
fn installed_at_us(admin: &str) -> io::Result<u64> {
    let mut sock = TcpStream::connect(admin)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.write_all(b"GET /certs HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer)?;
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| &answer[at + 4..])
        .ok_or_else(|| io::Error::other("no body"))?;
    let json: serde_json::Value = serde_json::from_slice(body).map_err(io::Error::other)?;
    json["installed_at_us"]
        .as_u64()
        .ok_or_else(|| io::Error::other("no installed_at_us"))
}

impl Bench {
    /// Writes `value` for the probe host and times until every replica's
    /// listener returns `want`.
    fn measure(&mut self, kind: Kind, value: &str, want: &Arc<Vec<u8>>, series: &mut Series) {
        let commands = kind.write(&self.args.key, &self.probe, value);
        let mut encoded = Vec::new();
        for command in &commands {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            common::encode(&args, &mut encoded);
        }
        let n = self.args.replicas.len();
        let mut first: Vec<Option<f64>> = vec![None; n];
        let timeout = Duration::from_millis(self.args.timeout_ms);
        let wall = unix_us(SystemTime::now());
        let started = Instant::now();
        if self.redis.pipeline(&encoded, commands.len()).is_err() {
            series.errors += 1;
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        series.writes.push(ms(started.elapsed()));
        while first.iter().any(Option::is_none) && started.elapsed() < timeout {
            let behind: Vec<usize> = (0..n).filter(|&i| first[i].is_none()).collect();
            for (&i, (answer, at)) in behind.iter().zip(self.pollers.round(&behind, want)) {
                match answer {
                    Ok(true) => first[i] = Some(ms(at - started)),
                    Ok(false) => {}
                    Err(_) => series.errors += 1,
                }
            }
            if self.args.poll_interval_us > 0 && first.iter().any(Option::is_none) {
                std::thread::sleep(Duration::from_micros(self.args.poll_interval_us));
            }
        }
        if first.iter().all(Option::is_some) {
            series
                .all
                .push(first.iter().flatten().copied().fold(0.0, f64::max));
            if !self.args.admins.is_empty() {
                let installed: io::Result<Vec<u64>> = self
                    .args
                    .admins
                    .iter()
                    .map(|a| installed_at_us(a))
                    .collect();
                match installed.map(|at| at.into_iter().max().unwrap_or(0)) {
                    Ok(last) if last >= wall => {
                        series.installed.push((last - wall) as f64 / 1e3);
                    }
                    // Installed before the write: not this change's table.
                    _ => series.errors += 1,
                }
            }
        } else {
            series.timeouts += 1;
        }
        series.each.extend(first.iter().flatten());
        // Verification rounds: every replica keeps the new leaf; each
        // round's length is the reference for what polling alone costs.
        let every: Vec<usize> = (0..n).collect();
        for _ in 0..self.args.verify {
            let round = Instant::now();
            for (answer, _) in self.pollers.round(&every, want) {
                match answer {
                    Ok(true) => {}
                    Ok(false) => series.wrong += 1,
                    Err(_) => series.errors += 1,
                }
            }
            series.polls.push(ms(round.elapsed()));
        }
    }

    /// Polls until every replica serves `want`, untimed (setup).
    fn settle(&self, want: &Arc<Vec<u8>>) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let every: Vec<usize> = (0..self.args.replicas.len()).collect();
        while !self
            .pollers
            .round(&every, want)
            .iter()
            .all(|(answer, _)| matches!(answer, Ok(true)))
        {
            if Instant::now() > deadline {
                return Err(io::Error::other("a replica never served the probe"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

fn print(kind: Kind, label: &str, replicas: usize, mut s: Series) {
    for list in [
        &mut s.all,
        &mut s.each,
        &mut s.writes,
        &mut s.polls,
        &mut s.installed,
    ] {
        list.sort_by(f64::total_cmp);
    }
    println!(
        "RESULT kind={} label={label:?} replicas={replicas} n={} timeouts={} \
         p50_ms={:.3} p99_ms={:.3} max_ms={:.3} each_p50_ms={:.3} each_p99_ms={:.3} \
         write_p50_ms={:.3} write_p99_ms={:.3} poll_p50_ms={:.3} poll_p99_ms={:.3} \
         installed_p50_ms={:.3} installed_p99_ms={:.3} installed_max_ms={:.3} wrong={} errors={}",
        kind.name(),
        s.all.len() + s.timeouts,
        s.timeouts,
        quantile(&s.all, 0.50),
        quantile(&s.all, 0.99),
        s.all.last().copied().unwrap_or(f64::NAN),
        quantile(&s.each, 0.50),
        quantile(&s.each, 0.99),
        quantile(&s.writes, 0.50),
        quantile(&s.writes, 0.99),
        quantile(&s.polls, 0.50),
        quantile(&s.polls, 0.99),
        quantile(&s.installed, 0.50),
        quantile(&s.installed, 0.99),
        s.installed.last().copied().unwrap_or(f64::NAN),
        s.wrong,
        s.errors,
    );
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let kinds: Vec<Kind> = match args.kinds.as_str() {
        "plain" => vec![Kind::Plain],
        "logged" => vec![Kind::Logged],
        "both" => vec![Kind::Plain, Kind::Logged],
        other => panic!("--kinds: plain, logged or both, not {other:?}"),
    };
    let ca = Ca::new();
    let mut redis = Redis::connect(&args.redis)?;
    // The background certificates, one per host, in pipelined batches.
    let started = Instant::now();
    for chunk in (0..args.certs).collect::<Vec<_>>().chunks(100) {
        let mut encoded = Vec::new();
        for i in chunk {
            let host = format!("c{i}.certbench.test");
            let (value, _) = ca.leaf(&host);
            common::encode(
                &[
                    b"HSET",
                    args.key.as_bytes(),
                    host.as_bytes(),
                    value.as_bytes(),
                ],
                &mut encoded,
            );
        }
        redis.pipeline(&encoded, chunk.len())?;
    }
    eprintln!(
        "filled {} with {} certificates in {:.1} s",
        args.key,
        args.certs,
        started.elapsed().as_secs_f64()
    );
    let probe = format!("probe-{}.certbench.test", std::process::id());
    let leaves = [ca.leaf(&probe), ca.leaf(&probe)];
    let leaves = leaves.map(|(value, der)| (value, Arc::new(der)));
    let pollers = Pollers::start(&Handshaker::new(), &args.replicas, &probe);
    let label = args.label.clone();
    let replicas = args.replicas.len();
    let mut bench = Bench {
        args,
        redis,
        pollers,
        probe,
    };
    for kind in kinds {
        let key = bench.args.key.clone();
        let probe = bench.probe.clone();
        // The setup write goes the way the measured ones do: a plain HSET
        // before logged changes makes every replica read the whole hash,
        // which settle() does not wait for when the leaf was already
        // there, and which then overlaps the measured changes.
        let mut encoded = Vec::new();
        let commands = kind.write(&key, &probe, &leaves[0].0);
        for command in &commands {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            common::encode(&args, &mut encoded);
        }
        bench.redis.pipeline(&encoded, commands.len())?;
        bench.settle(&leaves[0].1)?;
        let warmup = Instant::now();
        let mut scratch = Series::default();
        let mut at = 0;
        while warmup.elapsed() < Duration::from_millis(bench.args.warmup_ms) {
            at = 1 - at;
            bench.measure(kind, &leaves[at].0, &leaves[at].1, &mut scratch);
        }
        let mut series = Series::default();
        for _ in 0..bench.args.changes {
            at = 1 - at;
            bench.measure(kind, &leaves[at].0, &leaves[at].1, &mut series);
            std::thread::sleep(Duration::from_millis(bench.args.gap_ms));
        }
        print(kind, &label, replicas, series);
    }
    let key = bench.args.key.clone();
    let probe = bench.probe.clone();
    bench.redis.cmd_str(&["HDEL", &key, &probe])?;
    Ok(())
}
