//! Certificates made at test time for the TLS tests (rcgen, ECDSA P-256),
//! and a scratch directory for the files that hold them.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

pub const DAY: i64 = 86_400;

pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf: the chain (leaf, then CA) and its PKCS#8 key.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
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

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, -DAY, 90 * DAY)
    }

    /// Valid from `from` to `to` seconds from now.
    pub fn leaf_valid(&self, names: &[&str], from: i64, to: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0].clone());
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(from);
        params.not_after = now + time::Duration::seconds(to);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-it-{name}-{}-{}",
            std::process::id(),
            crate::support::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes a file atomically (temp file, rename), as deploy tools do.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn display(path: &Path) -> String {
    path.display().to_string()
}

/// A proxy with a TLS listener (and its cleartext and admin ones), run by
/// `switchyard::run_with` on this test's runtime. Dropping it asks it to
/// stop; [`TlsProxy::shutdown`] also waits until it has.
pub struct TlsProxy {
    pub endpoints: crate::support::Endpoints,
    /// The TLS listener's address.
    pub tls: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for TlsProxy {
    type Target = crate::support::Endpoints;
    fn deref(&self) -> &crate::support::Endpoints {
        &self.endpoints
    }
}

impl TlsProxy {
    /// Starts a proxy; returns at once (not waiting for readiness).
    pub async fn start(config: switchyard::config::Config) -> TlsProxy {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let (proxy, admin, tls) = (
            bind().await.unwrap(),
            bind().await.unwrap(),
            bind().await.unwrap(),
        );
        let endpoints = crate::support::Endpoints {
            addr: proxy.local_addr().unwrap(),
            admin: admin.local_addr().unwrap(),
        };
        let tls_addr = tls.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listeners = switchyard::Listeners {
            proxy,
            admin,
            tls: Some(tls),
        };
        let task = tokio::spawn(switchyard::run_with(
            config,
            listeners,
            async {
                let _ = rx.await;
            },
            switchyard::reload::Reload::new(),
        ));
        TlsProxy {
            endpoints,
            tls: tls_addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Starts a proxy and waits until `/readyz` says ready.
    pub async fn start_ready(config: switchyard::config::Config) -> TlsProxy {
        let proxy = TlsProxy::start(config).await;
        proxy.wait_ready().await;
        proxy
    }

    /// Stops the proxy and waits until it has (in-flight requests drained).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.task.take().unwrap(),
        )
        .await
        .expect("proxy did not stop")
        .unwrap();
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
