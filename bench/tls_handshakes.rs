//! Full TLS handshakes per second, for bench/tls.sh: `--conns` clients on
//! one thread (like `wrk -t1`), each opening a new TCP connection and a
//! new TLS 1.3 session for every request (`GET /`, `Connection: close`),
//! reading the answer and closing, for `--seconds`.
//!
//! Why not wrk or h2load with `Connection: close`: both keep the OpenSSL
//! session of a connection slot and offer it again on the next connect, so
//! against a server that issues tickets most of their "new" connections
//! are resumptions (no certificate, no signature). Here resumption is off
//! in the client (`Resumption::disabled()`) and every handshake is checked
//! to be a full one; a resumed one would be counted apart and fail the run.
//! The client verifies the chain against the bench's CA, as a browser does.
//!
//! Prints one line:
//! `HANDSHAKES requests=N duration_us=D p50_us=A p99_us=B errors=E resumed=R`
//! (latency: from `connect` to the whole answer, the handshake included).

use clap::Parser;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser)]
struct Args {
    /// The TLS listener, ip:port.
    #[arg(long)]
    addr: SocketAddr,
    /// SNI and Host header.
    #[arg(long)]
    host: String,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Clients, each with one connection at a time.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    resumed: u64,
    first_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before a whole answer")]
    Truncated,
    #[error("answer not understood: {0}")]
    Parse(#[from] httparse::Error),
    #[error("status {0}")]
    Status(u16),
}

fn main() {
    let args = Args::parse();
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(&args.ca).expect("the CA file is readable");
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("the CA file is PEM")).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(args.host.clone()).expect("a valid host name");
    let request: Arc<[u8]> = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.host
    )
    .into_bytes()
    .into();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let tallies: Vec<Tally> = runtime.block_on(async {
        let clients: Vec<_> = (0..args.conns)
            .map(|_| {
                let (connector, name, request) = (connector.clone(), name.clone(), request.clone());
                tokio::spawn(client(args.addr, connector, name, request, deadline))
            })
            .collect();
        let mut tallies = Vec::new();
        for c in clients {
            tallies.push(c.await.unwrap());
        }
        tallies
    });
    let elapsed = started.elapsed();

    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let percentile = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1]
    };
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let resumed: u64 = tallies.iter().map(|t| t.resumed).sum();
    if let Some(e) = tallies.iter().find_map(|t| t.first_error.as_ref()) {
        eprintln!("tls_handshakes: first error: {e}");
    }
    println!(
        "HANDSHAKES requests={} duration_us={} p50_us={} p99_us={} errors={} resumed={}",
        latencies.len(),
        elapsed.as_micros(),
        percentile(50.0),
        percentile(99.0),
        errors,
        resumed
    );
}

/// Requests, each on a new connection with a full handshake, until the
/// deadline.
async fn client(
    addr: SocketAddr,
    connector: TlsConnector,
    name: ServerName<'static>,
    request: Arc<[u8]>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        let start = Instant::now();
        match one_request(addr, &connector, &name, &request, &mut buf).await {
            Ok(kind) => {
                // Counted either way; a resumed handshake is reported apart.
                if kind != Some(HandshakeKind::Full) {
                    tally.resumed += 1;
                }
                let us = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
                tally.latencies_us.push(us);
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                // A refused connection would otherwise spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    tally
}

/// Connect, handshake, send the request, read the whole answer (by its
/// `Content-Length`), close. Returns the kind of handshake.
async fn one_request(
    addr: SocketAddr,
    connector: &TlsConnector,
    name: &ServerName<'static>,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Option<HandshakeKind>, RequestError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    let kind = tls.get_ref().1.handshake_kind();
    tls.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Err(RequestError::Truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = response.parse(&buf[..])? else {
            continue;
        };
        let status = response.code.unwrap_or(0);
        if status != 200 {
            return Err(RequestError::Status(status));
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let complete = if header("transfer-encoding").is_some() {
            // Chunked (the bench's backends send a length; this is a guard):
            // the last chunk ends the body.
            buf[head_len..].ends_with(b"0\r\n\r\n")
        } else {
            let body_len = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            buf.len() >= head_len + body_len
        };
        if complete {
            return Ok(kind);
        }
    }
}
