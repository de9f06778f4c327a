//! The TLS listener (`--tls-listen`) over real sockets: the handshake with
//! the default certificate (from files), `unrecognized_name` when no
//! certificate fits, HTTP/1.1 with `X-Forwarded-Proto: https`, HTTP/2 by
//! ALPN, a WebSocket upgrade, curl with a test CA, and `openssl s_client`
//! (TLS 1.3 and 1.2, the certificate by SNI, ALPN, `unrecognized_name`,
//! TLS 1.1 refused, a request typed through it).

use crate::support::*;
use crate::tls_support::{display, Scratch, TestCa, TlsProxy};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard::config::{CertFilePaths, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// `GET /` for `app.cloud.com`, the last request of its connection.
const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: app.cloud.com\r\nConnection: close\r\n\r\n";

/// A test CA, a wildcard default certificate `*.cloud.com` in files, and a
/// config serving it.
struct Setup {
    ca: TestCa,
    dir: Scratch,
    config: Config,
}

fn setup(redis: &RedisServer) -> Setup {
    let ca = TestCa::new();
    let dir = Scratch::new("tls-listener");
    let leaf = ca.leaf(&["*.cloud.com"]);
    let mut config = test_config(&redis.url());
    config.tls.default_files = Some(CertFilePaths {
        cert: dir.write("cert.pem", &leaf.chain_pem),
        key: dir.write("key.pem", &leaf.key_pem),
    });
    dir.write("ca.pem", &ca.cert_pem);
    Setup { ca, dir, config }
}

fn connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(CALL_TIMEOUT, connector(ca_pem, alpn).connect(name, tcp))
        .await
        .expect("handshake timed out")
}

impl Setup {
    /// A TLS connection to `addr` for `name`, trusting the test CA.
    async fn connect(
        &self,
        addr: SocketAddr,
        name: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        connect(addr, &self.ca.cert_pem, name, alpn).await
    }
}

/// The prologue of most tests here: a Redis, an echo backend answering as
/// `name` routed at `app.cloud.com`, the default certificate in files, and
/// a ready TLS proxy with that config, changed by `change` first.
async fn start_tls_proxy(
    name: &str,
    change: impl FnOnce(&mut Config),
) -> (RedisServer, Backend, Setup, TlsProxy) {
    let redis = RedisServer::start();
    let backend = Backend::echo(name).await;
    redis.hset("app.cloud.com", &backend.target());
    let mut setup = setup(&redis);
    change(&mut setup.config);
    let proxy = TlsProxy::start_ready(setup.config.clone()).await;
    (redis, backend, setup, proxy)
}

/// Handshakes the proxy counted as refused (no version or protocol agreed)
/// with this outcome.
async fn refused_handshakes(proxy: &TlsProxy, outcome: &str) -> f64 {
    let labels = format!("alpn=\"none\",outcome=\"{outcome}\",version=\"none\"");
    let name = format!("switchyard_tls_handshakes_total{{{labels}}}");
    proxy.endpoints.metric(&name).await
}

/// Sends a whole HTTP/1.1 request that closes the connection, and reads
/// the answer to its end.
async fn exchange(tls: &mut TlsStream<TcpStream>, request: &[u8]) -> String {
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(CALL_TIMEOUT, tls.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// HTTP/1.1 over TLS reaches the backend, which is told the client came
/// over https; the default certificate answers a name its wildcard covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_reaches_the_backend_as_https() {
    let (_redis, _backend, setup, proxy) = start_tls_proxy("tls-one", |_| {}).await;
    let mut tls = setup
        .connect(proxy.tls, "app.cloud.com", &[b"http/1.1"])
        .await
        .expect("handshake with the default certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = exchange(
        &mut tls,
        b"GET /hello?x=1 HTTP/1.1\r\nHost: app.cloud.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).expect(body);
    assert_eq!(echo["backend"], "tls-one");
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    // Cleartext still says http.
    let plain = proxy.endpoints.get("app.cloud.com", "/").await;
    assert_eq!(plain.json()["headers"]["x-forwarded-proto"], "http");
    proxy.shutdown().await;
}

/// ALPN `h2` goes straight to HTTP/2 (a hyper client, no preface sniffing
/// needed), through the same request path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_by_alpn() {
    let (_redis, _backend, setup, proxy) = start_tls_proxy("tls-h2", |_| {}).await;
    let tls = setup
        .connect(proxy.tls, "app.cloud.com", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/one", "/two"] {
        let req = hyper::Request::get(format!("https://app.cloud.com{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["backend"], "tls-h2");
        assert_eq!(echo["path"], path);
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    }
    proxy.shutdown().await;
}

/// With no certificate for the name (no default, nothing in the hash),
/// the handshake fails with the `unrecognized_name` alert; the listener
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_for_the_name_is_unrecognized_name() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let proxy = TlsProxy::start_ready(test_config(&redis.url())).await;
    for _ in 0..2 {
        let error = connect(proxy.tls, &ca.cert_pem, "nobody.test", &[b"http/1.1"])
            .await
            .expect_err("a handshake without a certificate");
        let rustls_error = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .unwrap_or_else(|| panic!("not a TLS error: {error:?}"));
        assert_eq!(
            rustls_error,
            &rustls::Error::AlertReceived(rustls::AlertDescription::UnrecognisedName)
        );
    }
    assert_eventually!(
        refused_handshakes(&proxy, "no_certificate").await == 2.0,
        "the refused handshakes were not counted"
    );
    proxy.shutdown().await;
}

/// A WebSocket upgrade over TLS: the tunnel carries frames both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls() {
    let redis = RedisServer::start();
    let echo = Backend::websocket_echo().await;
    redis.hset("ws.cloud.com", &echo.target());
    let setup = setup(&redis);
    let proxy = TlsProxy::start_ready(setup.config.clone()).await;
    let tls = setup
        .connect(proxy.tls, "ws.cloud.com", &[b"http/1.1"])
        .await
        .unwrap();
    let req = "wss://ws.cloud.com/chat".into_client_request().unwrap();
    let (mut ws, _) = tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::client_async(req, tls))
        .await
        .unwrap()
        .expect("WebSocket handshake over TLS");
    let welcome = ws.next().await.unwrap().unwrap();
    assert_eq!(welcome.into_text().unwrap().as_str(), "welcome");
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(CALL_TIMEOUT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(echoed.into_text().unwrap().contains("ping"));
    proxy.shutdown().await;
}

/// curl, checking the chain against the test CA, over HTTP/1.1 and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_the_test_ca() {
    let (_redis, _backend, setup, proxy) = start_tls_proxy("tls-curl", |_| {}).await;
    let port = proxy.tls.port();
    let ca = display(&setup.dir.path("ca.pem"));
    for version in ["--http1.1", "--http2"] {
        let ca = ca.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    version,
                    "--resolve",
                    &format!("app.cloud.com:{port}:127.0.0.1"),
                    "--cacert",
                    &ca,
                    "-w",
                    "\n%{http_code} %{http_version}",
                    &format!("https://app.cloud.com:{port}/curl"),
                ])
                .output()
                .expect("curl runs")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{version}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (body, status) = stdout.rsplit_once('\n').unwrap();
        let expected = if version == "--http2" {
            "200 2"
        } else {
            "200 1.1"
        };
        assert_eq!(status, expected);
        let echo: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(echo["backend"], "tls-curl");
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    }
    proxy.shutdown().await;
}

/// `--hsts SECONDS`: answers over TLS (HTTP/1.1 and HTTP/2) carry
/// `Strict-Transport-Security`; cleartext answers do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_on_answers_over_tls_only() {
    let (_redis, _backend, setup, proxy) =
        start_tls_proxy("tls-hsts", |c| c.proxy.hsts = Some(31_536_000)).await;
    let mut tls = setup
        .connect(proxy.tls, "app.cloud.com", &[b"http/1.1"])
        .await
        .unwrap();
    let answer = exchange(&mut tls, GET_CLOSE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\r\nStrict-Transport-Security: max-age=31536000\r\n"),
        "{answer}"
    );

    let tls = setup
        .connect(proxy.tls, "app.cloud.com", &[b"h2"])
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("https://app.cloud.com/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );

    let plain = proxy.endpoints.get("app.cloud.com", "/").await;
    assert_eq!(plain.status, 200);
    assert!(
        !plain.headers.contains_key("strict-transport-security"),
        "HSTS over cleartext"
    );
    proxy.shutdown().await;
}

/// `--redirect-https`: a cleartext request for a host the certificates
/// cover gets 308 to the https URL (the TLS listener's port, same path and
/// query); ACME challenges and hosts without a certificate are proxied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_https_for_hosts_with_a_certificate() {
    let redis = RedisServer::start();
    let backend = Backend::echo("tls-redirect").await;
    redis.hset("app.cloud.com", &backend.target());
    redis.hset("plain.test", &backend.target());
    let mut setup = setup(&redis);
    setup.config.proxy.redirect_https = Some(8443);
    let proxy = TlsProxy::start_ready(setup.config.clone()).await;
    // The default certificate loads in the background.
    assert_eventually!(
        proxy.endpoints.get("app.cloud.com", "/").await.status == 308,
        "no redirect once the certificate loaded"
    );
    let r = proxy.endpoints.get("app.cloud.com", "/a/b?x=1&y=2").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        "https://app.cloud.com:8443/a/b?x=1&y=2"
    );
    let challenge = proxy
        .endpoints
        .get("app.cloud.com", "/.well-known/acme-challenge/token")
        .await;
    assert_eq!(challenge.status, 200);
    assert_eq!(challenge.backend().as_deref(), Some("tls-redirect"));
    let plain = proxy.endpoints.get("plain.test", "/").await;
    assert_eq!(plain.status, 200, "a host without a certificate is proxied");
    // Over TLS the same host is proxied.
    let mut tls = setup
        .connect(proxy.tls, "app.cloud.com", &[b"http/1.1"])
        .await
        .unwrap();
    let answer = exchange(&mut tls, GET_CLOSE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    proxy.shutdown().await;
}

/// The binary: `--tls-listen` serves HTTPS with the files' certificate,
/// and after the files change and SIGHUP, new handshakes get the new one.
/// (The file watcher would also see the change within 2 s; that SIGHUP
/// itself reloads is `cli::a_reload_request_reads_the_default_certificate_again`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_tls_and_sighup_reloads_the_files() {
    let redis = RedisServer::start();
    let backend = Backend::echo("tls-bin").await;
    redis.hset("app.cloud.com", &backend.target());
    let ca = TestCa::new();
    let dir = Scratch::new("tls-listener-bin");
    let (one, two) = (
        ca.leaf(&["*.cloud.com"]),
        ca.leaf(&["*.cloud.com", "cloud.com"]),
    );
    let cert = dir.write("cert.pem", &one.chain_pem);
    let key = dir.write("key.pem", &one.key_pem);
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = ProxyProcess::start(|cmd| {
        cmd.env("SWITCHYARD_REDIS_URL", redis.url())
            .env("SWITCHYARD_WORKER_THREADS", "1")
            .args(["--tls-listen", &tls_addr.to_string()])
            .args(["--tls-cert", &display(&cert), "--tls-key", &display(&key)]);
    });
    proxy.wait_ready().await;
    // Whether the certificate a new handshake gets names `cloud.com`
    // itself (the second one): its DER holds the SAN dNSName `cloud.com`
    // (context tag 2, length 9).
    let served_names = || async {
        let tls = connect(tls_addr, &ca.cert_pem, "app.cloud.com", &[b"http/1.1"]).await?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let bare_domain = leaf.as_ref().windows(11).any(|w| w == b"\x82\x09cloud.com");
        Ok::<_, std::io::Error>(bare_domain)
    };
    assert_eventually!(
        served_names().await.is_ok_and(|two_names| !two_names),
        "the first certificate was never served over TLS"
    );
    dir.write("key.pem", &two.key_pem);
    dir.write("cert.pem", &two.chain_pem);
    proxy.signal("HUP");
    assert_eventually!(
        served_names().await.is_ok_and(|two_names| two_names),
        "the new certificate was not served after SIGHUP"
    );
    drop(proxy);
}

/// Whether the `openssl` command is missing; then the calling test skips,
/// saying why (`.ci/run` and `make test` install or require it).
fn openssl_missing() -> bool {
    let found = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: the openssl command is missing (apt-get install openssl)");
    }
    !found
}

/// `openssl s_client -connect addr ARGS` with `input` on its stdin, then
/// end of input: what it printed, stdout then stderr.
async fn s_client(addr: SocketAddr, args: &[&str], input: &[u8]) -> String {
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_client starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output())
        .await
        .expect("openssl s_client did not finish")
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Waits until the default certificate, which the proxy loads from its
/// files in the background, is served to s_client.
async fn default_certificate_served(tls: SocketAddr) {
    assert_eventually!(
        s_client(tls, &["-servername", "app.cloud.com"], b"")
            .await
            .contains("subject=CN = *.cloud.com\n"),
        "the default certificate was never served"
    );
}

/// `openssl s_client` over TLS 1.3 and 1.2 gets the default certificate
/// (the wildcard `*.cloud.com`, from files) for names it covers, verified
/// against the test CA for the name sent, and the protocol ALPN chose;
/// the proxy counts each handshake by version and protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_gets_the_default_certificate_over_tls13_and_tls12() {
    if openssl_missing() {
        return;
    }
    let redis = RedisServer::start();
    let setup = setup(&redis);
    let proxy = TlsProxy::start_ready(setup.config.clone()).await;
    let ca = display(&setup.dir.path("ca.pem"));
    default_certificate_served(proxy.tls).await;
    for name in ["app.cloud.com", "shop.cloud.com"] {
        let subject = "CN = *.cloud.com";
        for (flag, version, alpn, chosen) in [
            ("-tls1_3", "TLSv1.3", "h2,http/1.1", "h2"),
            ("-tls1_3", "TLSv1.3", "http/1.1", "http/1.1"),
            ("-tls1_2", "TLSv1.2", "h2,http/1.1", "h2"),
            ("-tls1_2", "TLSv1.2", "http/1.1", "http/1.1"),
        ] {
            let out = s_client(
                proxy.tls,
                &[
                    "-servername",
                    name,
                    "-CAfile",
                    &ca,
                    "-verify_hostname",
                    name,
                    "-verify_return_error",
                    flag,
                    "-alpn",
                    alpn,
                ],
                b"",
            )
            .await;
            let case = format!("{name} {flag} -alpn {alpn}");
            assert!(
                out.contains(&format!("subject={subject}\n")),
                "{case}: {out}"
            );
            assert!(
                out.contains(&format!("New, {version}, Cipher is ")),
                "{case}: {out}"
            );
            assert!(
                out.contains(&format!("ALPN protocol: {chosen}\n")),
                "{case}: {out}"
            );
            assert!(out.contains("Verify return code: 0 (ok)"), "{case}: {out}");
        }
    }
    for (version, alpn) in [
        ("tls1.3", "h2"),
        ("tls1.3", "http/1.1"),
        ("tls1.2", "h2"),
        ("tls1.2", "http/1.1"),
    ] {
        let metric = format!(
            "switchyard_tls_handshakes_total{{alpn=\"{alpn}\",outcome=\"ok\",version=\"{version}\"}}"
        );
        // One handshake per name (counted once the server has the
        // client's Finished, maybe after s_client has exited).
        assert_eventually!(
            proxy.endpoints.metric(&metric).await == 2.0,
            "{metric}: {}",
            proxy.endpoints.metric(&metric).await
        );
    }
    proxy.shutdown().await;
}

/// No certificate for the name (no default certificate, nothing in the
/// hash): s_client gets the `unrecognized_name` alert (112) and no
/// certificate, over TLS 1.3 and 1.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_gets_unrecognized_name_without_a_certificate() {
    if openssl_missing() {
        return;
    }
    let redis = RedisServer::start();
    let proxy = TlsProxy::start_ready(test_config(&redis.url())).await;
    for (name, version) in [
        ("nobody.example.org", "-tls1_3"),
        ("app.cloud.com", "-tls1_2"),
    ] {
        let out = s_client(proxy.tls, &["-servername", name, version], b"").await;
        assert!(
            out.contains("unrecognized name") && out.contains("alert number 112"),
            "{name}: {out}"
        );
        assert!(
            !out.contains("subject="),
            "{name}: a certificate was sent: {out}"
        );
    }
    assert_eventually!(
        refused_handshakes(&proxy, "no_certificate").await == 2.0,
        "the refused handshakes were not counted"
    );
    proxy.shutdown().await;
}

/// A client that offers TLS 1.1 at most is refused by the proxy with a
/// fatal alert and no certificate. The client is made able to offer it
/// (`@SECLEVEL=0`: OpenSSL 3 will not otherwise), so the refusal is the
/// server's. The alert is rustls's `handshake_failure` (40), not
/// `protocol_version`: a TLS 1.1 ClientHello has no
/// `signature_algorithms` extension, which rustls requires before it
/// looks at versions. The listener then serves TLS 1.2 as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_offering_tls11_is_refused() {
    if openssl_missing() {
        return;
    }
    let redis = RedisServer::start();
    let setup = setup(&redis);
    let proxy = TlsProxy::start_ready(setup.config.clone()).await;
    default_certificate_served(proxy.tls).await;
    let out = s_client(
        proxy.tls,
        &[
            "-servername",
            "app.cloud.com",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
        b"",
    )
    .await;
    assert!(out.contains("Protocol  : TLSv1.1"), "not offered: {out}");
    assert!(
        out.contains("alert handshake failure") && out.contains("alert number 40"),
        "{out}"
    );
    assert!(!out.contains("subject="), "a certificate was sent: {out}");
    assert_eventually!(
        refused_handshakes(&proxy, "failed").await == 1.0,
        "the refused handshake was not counted"
    );
    let out = s_client(proxy.tls, &["-servername", "app.cloud.com", "-tls1_2"], b"").await;
    assert!(out.contains("New, TLSv1.2, Cipher is "), "{out}");
    proxy.shutdown().await;
}

/// An HTTP/1.1 request typed into s_client reaches the backend, which is
/// told the client came over https.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_through_openssl_s_client_arrives_as_https() {
    if openssl_missing() {
        return;
    }
    let (_redis, _backend, setup, proxy) = start_tls_proxy("tls-s-client", |_| {}).await;
    let ca = display(&setup.dir.path("ca.pem"));
    default_certificate_served(proxy.tls).await;
    // -quiet: only the answer on stdout, and no hang-up at the end of the
    // input (the proxy closes after the answer: `Connection: close`).
    let out = s_client(
        proxy.tls,
        &[
            "-quiet",
            "-servername",
            "app.cloud.com",
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-alpn",
            "http/1.1",
        ],
        b"GET /typed?by=hand HTTP/1.1\r\nHost: app.cloud.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let start = out
        .find("HTTP/1.1 ")
        .unwrap_or_else(|| panic!("no answer: {out}"));
    let answer = &out[start..];
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body_start = answer.find("\r\n\r\n").expect("a whole head") + 4;
    let body_end = answer.rfind('}').expect("a JSON body") + 1;
    let echo: serde_json::Value =
        serde_json::from_str(&answer[body_start..body_end]).expect(answer);
    assert_eq!(echo["backend"], "tls-s-client");
    assert_eq!(echo["path"], "/typed?by=hand");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    proxy.shutdown().await;
}
