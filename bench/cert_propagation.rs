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
//! change log). After each write it polls every replica with fresh full
//! handshakes (no resumption) until each returns the new leaf. The clock
//! starts just before the write is sent.
//!
//! A polling round is one full handshake per replica still behind, one
//! after the other: a change cannot be seen sooner than a handshake takes,
//! so each `RESULT` carries `poll_*`, the length of a round of handshakes
//! to every replica with no change in flight (the same run's reference),
//! and `write_*`, the write's own round trip.
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
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A client that makes one full handshake per call.
struct Handshaker {
    config: Arc<rustls::ClientConfig>,
}

impl Handshaker {
    fn new(ca: &Ca) -> Handshaker {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
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
            conn.complete_io(&mut sock)?;
        }
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| io::Error::other("no certificate"))?
            .to_vec();
        Ok(leaf)
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
    client: Handshaker,
    probe: String,
}

#[derive(Default)]
struct Series {
    all: Vec<f64>,
    each: Vec<f64>,
    writes: Vec<f64>,
    polls: Vec<f64>,
    timeouts: usize,
    wrong: usize,
    errors: usize,
}

impl Bench {
    /// Writes `value` for the probe host and times until every replica's
    /// handshake returns `want`.
    fn measure(&mut self, kind: Kind, value: &str, want: &[u8], series: &mut Series) {
        let commands = kind.write(&self.args.key, &self.probe, value);
        let mut encoded = Vec::new();
        for command in &commands {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            common::encode(&args, &mut encoded);
        }
        let n = self.args.replicas.len();
        let mut first: Vec<Option<f64>> = vec![None; n];
        let timeout = Duration::from_millis(self.args.timeout_ms);
        let started = Instant::now();
        if self.redis.pipeline(&encoded, commands.len()).is_err() {
            series.errors += 1;
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        series.writes.push(ms(started.elapsed()));
        while first.iter().any(Option::is_none) && started.elapsed() < timeout {
            for (i, addr) in self.args.replicas.iter().enumerate() {
                if first[i].is_some() {
                    continue;
                }
                match self.client.leaf(addr, &self.probe) {
                    Ok(leaf) if leaf == want => first[i] = Some(ms(started.elapsed())),
                    Ok(_) => {}
                    Err(_) => series.errors += 1,
                }
            }
            if self.args.poll_interval_us > 0 {
                std::thread::sleep(Duration::from_micros(self.args.poll_interval_us));
            }
        }
        if first.iter().all(Option::is_some) {
            series
                .all
                .push(first.iter().flatten().copied().fold(0.0, f64::max));
        } else {
            series.timeouts += 1;
        }
        series.each.extend(first.iter().flatten());
        // Verification rounds: every replica keeps the new leaf; each
        // round's length is the reference for what polling alone costs.
        for _ in 0..self.args.verify {
            let round = Instant::now();
            for addr in &self.args.replicas {
                match self.client.leaf(addr, &self.probe) {
                    Ok(leaf) if leaf == want => {}
                    Ok(_) => series.wrong += 1,
                    Err(_) => series.errors += 1,
                }
            }
            series.polls.push(ms(round.elapsed()));
        }
    }

    /// Polls until every replica serves `want`, untimed (setup).
    fn settle(&self, want: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for addr in &self.args.replicas {
            while !self
                .client
                .leaf(addr, &self.probe)
                .is_ok_and(|leaf| leaf == want)
            {
                if Instant::now() > deadline {
                    return Err(io::Error::other(format!("{addr} never served the probe")));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }
}

fn print(kind: Kind, label: &str, replicas: usize, mut s: Series) {
    for list in [&mut s.all, &mut s.each, &mut s.writes, &mut s.polls] {
        list.sort_by(f64::total_cmp);
    }
    println!(
        "RESULT kind={} label={label:?} replicas={replicas} n={} timeouts={} \
         p50_ms={:.3} p99_ms={:.3} max_ms={:.3} each_p50_ms={:.3} each_p99_ms={:.3} \
         write_p50_ms={:.3} write_p99_ms={:.3} poll_p50_ms={:.3} poll_p99_ms={:.3} wrong={} errors={}",
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
    let client = Handshaker::new(&ca);
    let label = args.label.clone();
    let replicas = args.replicas.len();
    let mut bench = Bench {
        args,
        redis,
        client,
        probe,
    };
    for kind in kinds {
        let key = bench.args.key.clone();
        let probe = bench.probe.clone();
        bench.redis.cmd_str(&["HSET", &key, &probe, &leaves[0].0])?;
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
