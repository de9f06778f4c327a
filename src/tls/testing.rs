//! Test certificates made at test time: a CA and leaves signed by it
//! (rcgen, ECDSA P-256; RSA keys through the `openssl` binary, which rcgen
//! cannot generate with ring).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::process::Command;
use std::sync::Arc;

/// Seconds from now, for validity periods.
pub fn days(n: i64) -> i64 {
    n * 86_400
}

pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
pub struct Leaf {
    /// The leaf, then the CA.
    pub chain_pem: String,
    /// PKCS#8 (ECDSA) or PKCS#1 (RSA).
    pub key_pem: String,
}

impl Leaf {
    /// A hash value: the chain, then the key.
    pub fn value(&self) -> String {
        format!("{}{}", self.chain_pem, self.key_pem)
    }

    /// A hash value for `field` with the key sealed by `sealer`.
    pub fn sealed_value(&self, sealer: &crate::tls::seal::Sealer, field: &str) -> String {
        format!(
            "{}{}",
            self.chain_pem,
            sealer.seal(field, self.key_pem.as_bytes())
        )
    }

    /// The key in SEC1 form (`EC PRIVATE KEY`).
    pub fn sec1_key_pem(&self) -> String {
        openssl(&["ec"], self.key_pem.as_bytes())
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Switchyard Test CA");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An ECDSA P-256 leaf for `names`, valid from yesterday for 90 days.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, days(-1), days(90))
    }

    /// A leaf valid from `from` to `to` seconds from now.
    pub fn leaf_valid(&self, names: &[&str], from: i64, to: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = self.sign(names, from, to, &key);
        Leaf {
            chain_pem: format!("{cert}{}", self.cert_pem),
            key_pem: key.serialize_pem(),
        }
    }

    /// An RSA 2048 leaf, its key in PKCS#1 form (`RSA PRIVATE KEY`).
    pub fn rsa_leaf(&self, names: &[&str]) -> Leaf {
        let pkcs8 = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            b"",
        );
        let key = KeyPair::from_pem(&pkcs8).unwrap();
        let cert = self.sign(names, days(-1), days(90), &key);
        Leaf {
            chain_pem: format!("{cert}{}", self.cert_pem),
            key_pem: openssl(&["rsa", "-traditional"], pkcs8.as_bytes()),
        }
    }

    fn sign(&self, names: &[&str], from: i64, to: i64, key: &KeyPair) -> String {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(from);
        params.not_after = now + time::Duration::seconds(to);
        params.signed_by(key, &self.issuer).unwrap().pem()
    }

    /// The CA as the only root of a rustls client.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_config_versions(alpn, rustls::ALL_VERSIONS)
    }

    pub fn client_config_versions(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls_pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(super::certs::provider().clone())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Runs `openssl ARGS` with `input` on stdin; its stdout.
pub fn openssl(args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed (README.md: tests need it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `condition` every 10 ms until it holds; panics after the tests'
/// patience (`SWITCHYARD_TEST_PATIENCE_MS`, default 15 s).
pub async fn eventually(mut condition: impl FnMut() -> bool) {
    let patience = std::env::var("SWITCHYARD_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            std::time::Duration::from_secs(15),
            std::time::Duration::from_millis,
        );
    let deadline = tokio::time::Instant::now() + patience;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in {patience:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
