//! The TLS side of a client connection: the rustls server configuration
//! (TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, the certificate chosen by
//! SNI from the [`CertStore`](super::CertStore)) and the handshake:
//! bounded in time, counted, and refused with the `unrecognized_name`
//! alert when no certificate fits (README.md, "HTTPS").
//!
//! Why the ClientHello is read first ([`LazyConfigAcceptor`]): rustls
//! answers a resolver that finds nothing with `access_denied`, which tells
//! a client nothing useful; reading the hello first lets the acceptor
//! choose, and send `unrecognized_name` itself (a 7-byte plaintext alert
//! record, valid before any key exchange in TLS 1.2 and 1.3).

use super::resolver::Resolver;
use crate::state::SharedState;
use rustls::server::Acceptor;
use rustls::{ProtocolVersion, ServerConfig};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::LazyConfigAcceptor;

pub use tokio_rustls::server::TlsStream;

/// A TLS connection is served by the request path like a TCP one; its
/// quick acknowledgements go to the TCP socket underneath.
impl<IO: crate::proxy::io::Socket> crate::proxy::io::Socket for TlsStream<IO> {
    fn quickack(&self) {
        self.get_ref().0.quickack()
    }
}

/// The negotiated TLS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub const ALL: [TlsVersion; 2] = [TlsVersion::Tls12, TlsVersion::Tls13];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "tls1.2",
            TlsVersion::Tls13 => "tls1.3",
        }
    }
}

/// The application protocol chosen by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http11,
    /// The client offered no protocol we speak (or none at all): HTTP/1.1,
    /// or the HTTP/2 preface, as on a cleartext connection.
    None,
}

impl Alpn {
    pub const ALL: [Alpn; 3] = [Alpn::H2, Alpn::Http11, Alpn::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Alpn::H2 => "h2",
            Alpn::Http11 => "http/1.1",
            Alpn::None => "none",
        }
    }
}

/// How a handshake failed, the `outcome` label of `tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No certificate for the name (or no name and no default certificate).
    NoCertificate,
    Timeout,
    /// Anything else: a protocol error, no common version or cipher suite,
    /// the client left.
    Failed,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 3] = [
        HandshakeFailure::NoCertificate,
        HandshakeFailure::Timeout,
        HandshakeFailure::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Failed => "failed",
        }
    }
}

/// What an established TLS connection tells the request path: the
/// version, the protocol to speak (`h2` goes straight to HTTP/2) and the
/// name the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: TlsVersion,
    pub alpn: Alpn,
    /// The SNI, lowercase, as the client sent it.
    pub server_name: Option<Box<str>>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no certificate for {}", .0.as_deref().unwrap_or("a client without SNI"))]
    NoCertificate(Option<Box<str>>),
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
    #[error("handshake failed: {0}")]
    Failed(io::Error),
}

impl HandshakeError {
    pub fn failure(&self) -> HandshakeFailure {
        match self {
            HandshakeError::NoCertificate(_) => HandshakeFailure::NoCertificate,
            HandshakeError::Timeout(_) => HandshakeFailure::Timeout,
            HandshakeError::Failed(_) => HandshakeFailure::Failed,
        }
    }
}

/// TLS alert descriptions (RFC 8446 §6).
const HANDSHAKE_FAILURE: u8 = 40;
const UNRECOGNIZED_NAME: u8 = 112;

/// A fatal alert as a plaintext record: content type 21 (alert), legacy
/// record version TLS 1.2, length 2, level fatal (2), description.
fn alert_record(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// Accepts TLS on client connections. One per listener, shared by every
/// worker thread.
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    state: Arc<SharedState>,
    handshake_timeout: Duration,
}

impl TlsAcceptor {
    pub fn new(state: Arc<SharedState>, handshake_timeout: Duration) -> TlsAcceptor {
        let mut config = ServerConfig::builder_with_provider(super::certs::provider().clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(state.clone())));
        // Server preference: h2 when the client offers it.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless session tickets under keys shared through Redis, so a
        // client resumes on any replica (see `tls::tickets`).
        config.ticketer = state.tickets.clone();
        TlsAcceptor {
            config: Arc::new(config),
            state,
            handshake_timeout,
        }
    }

    /// Runs the server side of a handshake on `io`, within the handshake
    /// timeout, and counts its outcome.
    pub async fn accept<IO>(&self, io: IO) -> Result<(TlsStream<IO>, TlsInfo), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let deadline = Instant::now() + self.handshake_timeout;
        let result = self.handshake(io, deadline).await;
        let metrics = &self.state.metrics.tls;
        match &result {
            Ok((stream, info)) => {
                metrics.handshake_completed(info.version, info.alpn);
                let kind = stream.get_ref().1.handshake_kind();
                self.state.tickets.metrics.handshake(kind);
            }
            Err(e) => metrics.handshake_failed(e.failure()),
        }
        result
    }

    async fn handshake<IO>(
        &self,
        io: IO,
        deadline: Instant,
    ) -> Result<(TlsStream<IO>, TlsInfo), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = HandshakeError::Timeout(self.handshake_timeout);
        let mut hello = LazyConfigAcceptor::new(Acceptor::default(), io);
        let start = match timeout_at(deadline, &mut hello).await {
            Err(_) => return Err(timeout),
            Ok(Err(e)) => return Err(HandshakeError::Failed(e)),
            Ok(Ok(start)) => start,
        };
        let server_name: Option<Box<str>> = start.client_hello().server_name().map(Box::from);
        if self.state.certs.choose(server_name.as_deref()).is_none() {
            let description = match server_name {
                Some(_) => UNRECOGNIZED_NAME,
                None => HANDSHAKE_FAILURE,
            };
            let mut io = start.io;
            let _ = timeout_at(deadline, async {
                io.write_all(&alert_record(description)).await?;
                io.shutdown().await
            })
            .await;
            return Err(HandshakeError::NoCertificate(server_name));
        }
        let stream = match timeout_at(deadline, start.into_stream(self.config.clone())).await {
            Err(_) => return Err(timeout),
            Ok(Err(e)) => return Err(HandshakeError::Failed(e)),
            Ok(Ok(stream)) => stream,
        };
        let (_, connection) = stream.get_ref();
        let version = match connection.protocol_version() {
            Some(ProtocolVersion::TLSv1_2) => TlsVersion::Tls12,
            _ => TlsVersion::Tls13,
        };
        let alpn = match connection.alpn_protocol() {
            Some(b"h2") => Alpn::H2,
            Some(b"http/1.1") => Alpn::Http11,
            _ => Alpn::None,
        };
        Ok((
            stream,
            TlsInfo {
                version,
                alpn,
                server_name,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs;
    use crate::tls::resolver::DefaultCert;
    use crate::tls::seal::{Purpose, Sealer, Secret};
    use crate::tls::table::{CertTable, LoadContext};
    use crate::tls::testing::{days, TestCa};
    use bytes::Bytes;
    use rustls::AlertDescription;
    use rustls_pki_types::ServerName;
    use std::net::SocketAddr;
    use std::time::SystemTime;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    /// A proxy's certificates: `app.cloud.com`, `*.cloud.com`, broken
    /// entries for `bad*.cloud.com`... and optionally a default.
    struct Fixture {
        ca: TestCa,
        state: Arc<SharedState>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let ca = TestCa::new();
            let state = SharedState::new();
            let sealer = Sealer::new(&Secret::from_bytes(&[1; 32]).unwrap(), Purpose::CertKey);
            let other = Sealer::new(&Secret::from_bytes(&[2; 32]).unwrap(), Purpose::CertKey);
            let app = ca.leaf(&["app.cloud.com"]);
            let sealed_app = ca.leaf(&["sealed.cloud.com"]);
            let bad = ca.leaf(&["bad.other.org"]);
            let entries = vec![
                ("app.cloud.com".to_string(), app.value()),
                (
                    "sealed.cloud.com".to_string(),
                    sealed_app.sealed_value(&sealer, "sealed.cloud.com"),
                ),
                ("*.cloud.com".to_string(), ca.leaf(&["*.cloud.com"]).value()),
                // Broken values, each for a host with nothing else to fall
                // back on: bad PEM, a mismatched key, expired, sealed with
                // another secret.
                (
                    "pem.other.org".to_string(),
                    "-----BEGIN CERTIFICATE-----\n!!\n".into(),
                ),
                (
                    "mismatch.other.org".to_string(),
                    format!(
                        "{}{}",
                        ca.leaf(&["mismatch.other.org"]).chain_pem,
                        app.key_pem
                    ),
                ),
                (
                    "expired.other.org".to_string(),
                    ca.leaf_valid(&["expired.other.org"], days(-9), days(-1))
                        .value(),
                ),
                (
                    "bad.other.org".to_string(),
                    bad.sealed_value(&other, "bad.other.org"),
                ),
            ];
            let raw: Vec<(Bytes, Bytes)> = entries
                .into_iter()
                .map(|(f, v)| (Bytes::from(f), Bytes::from(v)))
                .collect();
            let ctx = LoadContext {
                sealer: Some(&sealer),
                now: SystemTime::now(),
            };
            let (table, _) = CertTable::build(&raw, &CertTable::unloaded(), ctx);
            assert_eq!(table.invalid().len(), 4, "{:?}", table.invalid());
            state
                .certs
                .install_table(Arc::new(table), &state.metrics.tls);
            Fixture { ca, state }
        }

        fn with_default(self) -> Fixture {
            let leaf = self.ca.leaf(&["default.example", "other.org", "127.0.0.1"]);
            let cert = certs::load(leaf.value().as_bytes(), None, None, SystemTime::now()).unwrap();
            self.state.certs.install_default(
                DefaultCert {
                    cert: Arc::new(cert),
                    cert_file: "default.pem".into(),
                    key_file: "default.key".into(),
                    loaded_at: SystemTime::now(),
                },
                &self.state.metrics.tls,
            );
            self
        }

        /// Accepts one connection; on success answers "hello" over TLS.
        async fn serve_one(
            &self,
            timeout: Duration,
        ) -> (SocketAddr, JoinHandle<Result<TlsInfo, HandshakeError>>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = TlsAcceptor::new(self.state.clone(), timeout);
            let task = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let (mut tls, info) = acceptor.accept(tcp).await?;
                tls.write_all(b"hello").await.unwrap();
                tls.shutdown().await.unwrap();
                Ok(info)
            });
            (addr, task)
        }

        async fn connect(
            &self,
            name: &str,
            config: Arc<rustls::ClientConfig>,
        ) -> (Result<String, io::Error>, Result<TlsInfo, HandshakeError>) {
            let (addr, server) = self.serve_one(Duration::from_secs(10)).await;
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from(name.to_owned()).unwrap();
            let client = async {
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                let mut body = String::new();
                tls.read_to_string(&mut body).await?;
                Ok(body)
            }
            .await;
            (client, server.await.unwrap())
        }

        fn metric(&self, needle: &str) -> bool {
            self.state.metrics.render().lines().any(|l| l == needle)
        }
    }

    fn alert(result: &Result<String, io::Error>) -> Option<AlertDescription> {
        let error = result.as_ref().err()?;
        match error.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::AlertReceived(alert) => Some(*alert),
            _ => None,
        }
    }

    #[tokio::test]
    async fn sni_chooses_exact_then_wildcard_then_default() {
        let f = Fixture::new().with_default();
        let h2 = f.ca.client_config(&[b"h2", b"http/1.1"]);
        for name in [
            "app.cloud.com",
            "x.cloud.com",
            "sealed.cloud.com",
            "other.org",
        ] {
            let (client, server) = f.connect(name, h2.clone()).await;
            assert_eq!(client.unwrap(), "hello", "{name}");
            let info = server.unwrap();
            assert_eq!(info.server_name.as_deref(), Some(name));
            assert_eq!((info.version, info.alpn), (TlsVersion::Tls13, Alpn::H2));
        }
        // The broken entries fall back to the default certificate, whose
        // name the client then refuses: what a browser shows.
        let (client, server) = f.connect("mismatch.other.org", h2.clone()).await;
        assert!(client.unwrap_err().to_string().contains("certificate"));
        assert!(server.is_err());
        // No SNI (an IP address): the default certificate.
        let (client, server) = f.connect("127.0.0.1", h2).await;
        assert_eq!(client.unwrap(), "hello");
        assert_eq!(server.unwrap().server_name, None);
        assert!(f.metric(
            "switchyard_tls_handshakes_total{alpn=\"h2\",outcome=\"ok\",version=\"tls1.3\"} 5"
        ));
    }

    #[tokio::test]
    async fn no_certificate_refuses_with_unrecognized_name() {
        let f = Fixture::new();
        let config = f.ca.client_config(&[]);
        for name in [
            "nobody.example",
            "cloud.com",
            "pem.other.org",
            "mismatch.other.org",
            "expired.other.org",
            "bad.other.org",
        ] {
            let (client, server) = f.connect(name, config.clone()).await;
            assert_eq!(
                alert(&client),
                Some(AlertDescription::UnrecognisedName),
                "{name}: {client:?}"
            );
            assert!(
                matches!(&server, Err(HandshakeError::NoCertificate(Some(n))) if &**n == name),
                "{server:?}"
            );
        }
        // Without SNI and without a default certificate.
        let (client, server) = f.connect("127.0.0.1", config).await;
        assert_eq!(alert(&client), Some(AlertDescription::HandshakeFailure));
        assert!(matches!(server, Err(HandshakeError::NoCertificate(None))));
        assert!(f.metric(
            "switchyard_tls_handshakes_total{alpn=\"none\",outcome=\"no_certificate\",version=\"none\"} 7"
        ));
    }

    /// Offered protocols, offered versions, and what is chosen.
    type Case<'a> = (
        &'a [&'a [u8]],
        &'a [&'static rustls::SupportedProtocolVersion],
        TlsVersion,
        Alpn,
    );

    #[tokio::test]
    async fn alpn_and_versions_are_negotiated() {
        let f = Fixture::new();
        let cases: [Case<'_>; 4] = [
            (
                &[b"http/1.1"],
                &[&rustls::version::TLS13],
                TlsVersion::Tls13,
                Alpn::Http11,
            ),
            (
                &[b"h2", b"http/1.1"],
                &[&rustls::version::TLS12],
                TlsVersion::Tls12,
                Alpn::H2,
            ),
            (
                &[],
                &[&rustls::version::TLS12],
                TlsVersion::Tls12,
                Alpn::None,
            ),
            (
                &[b"http/1.1", b"h2"],
                &[&rustls::version::TLS13],
                TlsVersion::Tls13,
                Alpn::H2,
            ),
        ];
        for (alpn, versions, version, chosen) in cases {
            let config = f.ca.client_config_versions(alpn, versions);
            let (client, server) = f.connect("app.cloud.com", config).await;
            assert_eq!(client.unwrap(), "hello");
            let info = server.unwrap();
            assert_eq!((info.version, info.alpn), (version, chosen), "{alpn:?}");
        }
        // A protocol we do not speak: refused by rustls (RFC 7301 §3.2).
        let config = f.ca.client_config(&[b"spdy/3"]);
        let (client, server) = f.connect("app.cloud.com", config).await;
        assert_eq!(
            alert(&client),
            Some(AlertDescription::NoApplicationProtocol)
        );
        assert!(matches!(server, Err(HandshakeError::Failed(_))));
    }

    #[tokio::test]
    async fn silent_and_slow_handshakes_are_cut() {
        let f = Fixture::new();
        let timeout = Duration::from_millis(300);
        // Silent: connects and sends nothing.
        let (addr, server) = f.serve_one(timeout).await;
        // Read before connecting: the server's clock starts after this.
        let started = std::time::Instant::now();
        let _silent = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::Timeout(_))
        ));
        assert!(started.elapsed() >= timeout);
        // Slow: the first bytes of a ClientHello, then nothing.
        let (addr, server) = f.serve_one(timeout).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::Timeout(_))
        ));
        // Not TLS at all: refused at once.
        let (addr, server) = f.serve_one(timeout).await;
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::Failed(_))
        ));
        assert!(f.metric(
            "switchyard_tls_handshakes_total{alpn=\"none\",outcome=\"timeout\",version=\"none\"} 2"
        ));
        assert!(f.metric(
            "switchyard_tls_handshakes_total{alpn=\"none\",outcome=\"failed\",version=\"none\"} 1"
        ));
    }

    fn install_default(f: &Fixture, names: &[&str]) {
        let leaf = f.ca.leaf(names);
        let cert = certs::load(leaf.value().as_bytes(), None, None, SystemTime::now()).unwrap();
        f.state.certs.install_default(
            DefaultCert {
                cert: Arc::new(cert),
                cert_file: "default.pem".into(),
                key_file: "default.key".into(),
                loaded_at: SystemTime::now(),
            },
            &f.state.metrics.tls,
        );
    }

    /// The names of the certificate a client was served.
    fn served_names(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<String> {
        let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_new_certificate_serves_new_connections_and_keeps_open_ones() {
        let f = Fixture::new();
        install_default(&f, &["one.example"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = Arc::new(TlsAcceptor::new(f.state.clone(), Duration::from_secs(10)));
        // An echo server, a task per connection.
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let (mut tls, _) = acceptor.accept(tcp).await.unwrap();
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = tls.read(&mut buf).await {
                        tls.write_all(&buf[..n]).await.unwrap();
                    }
                });
            }
        });
        let connector = tokio_rustls::TlsConnector::from(f.ca.client_config(&[]));
        let connect = |name: &'static str| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from(name).unwrap();
                connector.connect(name, tcp).await.unwrap()
            }
        };
        let mut old = connect("one.example").await;
        assert_eq!(served_names(&old), ["one.example"]);
        install_default(&f, &["two.example"]);
        let new = connect("two.example").await;
        assert_eq!(served_names(&new), ["two.example"]);
        // The connection opened before the change carries on.
        old.write_all(b"still here").await.unwrap();
        let mut echoed = [0u8; 10];
        old.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"still here");
    }

    /// `openssl s_client` against the acceptor: what it printed (stdout and
    /// stderr) and the server's outcome.
    async fn s_client(f: &Fixture, extra: &[&str]) -> (String, Result<TlsInfo, HandshakeError>) {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-s-client-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &f.ca.cert_pem).unwrap();
        let (addr, server) = f.serve_one(Duration::from_secs(10)).await;
        let mut args = vec![
            "s_client".to_owned(),
            "-connect".to_owned(),
            addr.to_string(),
            "-CAfile".to_owned(),
            ca_file.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let output = tokio::process::Command::new("openssl")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("openssl is installed");
        let _ = std::fs::remove_dir_all(&dir);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (text, server.await.unwrap())
    }

    #[tokio::test]
    async fn openssl_s_client_sees_the_right_certificates() {
        let f = Fixture::new().with_default();
        for (name, subject, verified) in [
            ("app.cloud.com", "CN = app.cloud.com", true),
            ("x.cloud.com", "CN = *.cloud.com", true),
            ("unknown.example", "CN = default.example", false),
        ] {
            let mut args = vec!["-servername", name, "-alpn", "h2,http/1.1"];
            if verified {
                args.extend(["-verify_hostname", name, "-verify_return_error"]);
            }
            let (out, server) = s_client(&f, &args).await;
            assert!(
                out.contains(&format!("subject={subject}\n")),
                "{name}: {out}"
            );
            assert!(out.contains("New, TLSv1.3"), "{out}");
            assert!(out.contains("ALPN protocol: h2"), "{out}");
            assert!(
                !verified || out.contains("Verify return code: 0 (ok)"),
                "{out}"
            );
            assert!(server.is_ok(), "{server:?}");
        }
        let (out, server) = s_client(
            &f,
            &[
                "-servername",
                "app.cloud.com",
                "-tls1_2",
                "-alpn",
                "http/1.1",
                "-verify_return_error",
            ],
        )
        .await;
        assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
        assert!(out.contains("New, TLSv1.2"), "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert_eq!(server.unwrap().version, TlsVersion::Tls12);
    }

    #[tokio::test]
    async fn openssl_s_client_gets_unrecognized_name() {
        let f = Fixture::new();
        let (out, server) = s_client(&f, &["-servername", "nobody.example"]).await;
        assert!(
            out.contains("unrecognized name") && out.contains("alert number 112"),
            "{out}"
        );
        assert!(matches!(server, Err(HandshakeError::NoCertificate(_))));
    }
}
