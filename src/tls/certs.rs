//! One certificate: a value of the certs hash (the PEM chain, then the PEM
//! private key or a sealed one) or the `--tls-cert`/`--tls-key` pair,
//! parsed and checked into what rustls serves. The one loader of the
//! proxy, the file watcher and `switchyard cert set` (README.md, "HTTPS").

use super::seal::{self, SealError, Sealer};
use crate::routes::FieldKey;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use x509_parser::extensions::GeneralName;

/// A value longer than this is refused outright: a chain of a few
/// certificates and a key is a few kilobytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// A certificate whose validity starts this little in the future is
/// accepted all the same: clocks of replicas and issuers differ by a few
/// seconds, and a freshly issued certificate often starts "now".
pub const NOT_BEFORE_SKEW: Duration = Duration::from_secs(300);

/// The crypto of every TLS object of the proxy: ring (fred already links
/// it; aws-lc-rs is never pulled in).
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Why a value is not served. Shown in logs, `/certs` and `cert list`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("value is larger than {MAX_VALUE_LEN} bytes")]
    TooLarge,
    #[error("PEM: {0}")]
    Pem(String),
    #[error("no certificate (expected the PEM chain, leaf first, then the private key)")]
    NoCertificate,
    #[error("no private key (expected the PEM chain, then the private key)")]
    NoKey,
    #[error("more than one private key")]
    SeveralKeys,
    #[error("password-protected private keys are not supported")]
    EncryptedKey,
    #[error("{0}")]
    Sealed(#[from] SealError),
    #[error("certificate #{index} of the chain does not parse: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("private key: {0}")]
    BadKey(String),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("expired at {not_after}")]
    Expired { not_after: String },
    #[error("not valid before {not_before}")]
    NotYetValid { not_before: String },
    #[error("the certificate does not cover {host} (it names {names})")]
    NameMismatch { host: String, names: String },
}

/// What a loaded certificate says about itself (admin `/certs`, `cert list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// The subject alternative names: DNS names (lowercase) and IP addresses.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Certificates in the chain, the leaf included.
    pub chain_len: usize,
    /// The private key was sealed (README.md, "Private keys at rest").
    pub sealed: bool,
}

impl CertInfo {
    /// Is the certificate within its validity period at `now`?
    pub fn check_time(&self, now: SystemTime) -> Result<(), CertError> {
        let now = unix_seconds(now);
        if now > self.not_after {
            return Err(CertError::Expired {
                not_after: rfc3339(self.not_after),
            });
        }
        if self.not_before > now.saturating_add(NOT_BEFORE_SKEW.as_secs() as i64) {
            return Err(CertError::NotYetValid {
                not_before: rfc3339(self.not_before),
            });
        }
        Ok(())
    }

    /// Does the certificate cover the host a hash field names? An exact
    /// host is covered by the same DNS name or by a wildcard one label up
    /// (`*.cloud.com` covers `app.cloud.com`), an IP address by the same
    /// IP address; a wildcard field (`*.cloud.com`) only by that very
    /// wildcard name, since it stands for every name below it.
    pub fn covers(&self, key: &FieldKey) -> bool {
        match key {
            // The bare `*` of routes names no certificate host.
            FieldKey::Default => false,
            FieldKey::Wildcard(suffix) => self
                .names
                .iter()
                .any(|n| n.strip_prefix("*.") == Some(suffix.as_str())),
            FieldKey::Exact(host) => {
                let ip = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok();
                self.names.iter().any(|name| match ip {
                    Some(ip) => name.parse::<IpAddr>() == Ok(ip),
                    None => {
                        name == host
                            || name.strip_prefix("*.").is_some_and(|suffix| {
                                host.split_once('.').is_some_and(|(label, rest)| {
                                    !label.is_empty() && rest == suffix
                                })
                            })
                    }
                })
            }
        }
    }
}

/// A certificate ready to serve.
#[derive(Debug)]
pub struct LoadedCert {
    pub certified: Arc<CertifiedKey>,
    pub info: CertInfo,
}

impl LoadedCert {
    /// The leaf certificate's DER: identifies what is served.
    pub fn leaf(&self) -> &[u8] {
        self.certified.cert[0].as_ref()
    }
}

/// The parts of a value, before the key is checked.
struct Parts {
    chain: Vec<CertificateDer<'static>>,
    key: KeyPart,
}

enum KeyPart {
    Plain(PrivateKeyDer<'static>),
    /// The base64 body of a sealed block.
    Sealed(Vec<u8>),
    Missing,
}

fn split(value: &[u8]) -> Result<Parts, CertError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(CertError::TooLarge);
    }
    let mut chain = Vec::new();
    let mut keys = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(value) {
        let (kind, der) = section.map_err(|e| CertError::Pem(pem_error(&e)))?;
        match kind {
            SectionKind::Certificate => chain.push(CertificateDer::from(der)),
            SectionKind::PrivateKey => keys.push(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::EcPrivateKey => keys.push(PrivateKeyDer::Sec1(der.into())),
            SectionKind::RsaPrivateKey => keys.push(PrivateKeyDer::Pkcs1(der.into())),
            _ => {}
        }
    }
    if contains(value, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(CertError::EncryptedKey);
    }
    let sealed = match seal::find_block(value) {
        Some(body) => Some(body?.to_vec()),
        None => None,
    };
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = match (keys.len(), sealed) {
        (0, None) => KeyPart::Missing,
        (0, Some(body)) => KeyPart::Sealed(body),
        (1, None) => KeyPart::Plain(keys.pop().expect("one key")),
        _ => return Err(CertError::SeveralKeys),
    };
    Ok(Parts { chain, key })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a section has no END line".into(),
        Error::IllegalSectionStart { .. } => "malformed BEGIN line".into(),
        Error::Base64Decode(_) => "a section is not valid base64".into(),
        other => other.to_string(),
    }
}

/// Loads a value: splits it, opens a sealed key (with `sealer`, for the
/// host of `host`), checks the key matches the leaf, the validity period
/// against `now`, and that the leaf covers `host` (`None` for the default
/// certificate, which covers whatever it covers).
pub fn load(
    value: &[u8],
    host: Option<&FieldKey>,
    sealer: Option<&Sealer>,
    now: SystemTime,
) -> Result<LoadedCert, CertError> {
    let Parts { chain, key } = split(value)?;
    let mut info = describe(&chain)?;
    let key = match key {
        KeyPart::Plain(key) => key,
        KeyPart::Missing => return Err(CertError::NoKey),
        KeyPart::Sealed(body) => {
            let sealer = sealer.ok_or(SealError::NoSecret)?;
            let Some(host) = host else {
                return Err(CertError::BadKey(
                    "a sealed key is only read from the certs hash, where its host is known".into(),
                ));
            };
            let pem = sealer.open(&host.display(), &body)?;
            info.sealed = true;
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    CertError::BadKey("the sealed block holds no PEM private key".into())
                }
                other => CertError::BadKey(pem_error(&other)),
            })?
        }
    };
    let certified = CertifiedKey::from_der(chain, key, provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            CertError::KeyMismatch
        }
        rustls::Error::General(reason) => CertError::BadKey(reason),
        other => CertError::BadKey(other.to_string()),
    })?;
    info.check_time(now)?;
    if let Some(host) = host {
        if !info.covers(host) {
            return Err(CertError::NameMismatch {
                host: host.display(),
                names: if info.names.is_empty() {
                    "no DNS name".into()
                } else {
                    info.names.join(", ")
                },
            });
        }
    }
    Ok(LoadedCert {
        certified: Arc::new(certified),
        info,
    })
}

/// What the chain of a value says, without looking at the key: for `cert
/// list`, which shows a sealed value even without the secret.
pub fn inspect(value: &[u8]) -> Result<CertInfo, CertError> {
    let parts = split(value)?;
    let mut info = describe(&parts.chain)?;
    info.sealed = matches!(parts.key, KeyPart::Sealed(_));
    Ok(info)
}

/// The leaf's names, issuer and validity; every certificate of the chain
/// must parse.
fn describe(chain: &[CertificateDer<'_>]) -> Result<CertInfo, CertError> {
    let mut info = None;
    for (index, der) in chain.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| {
            CertError::BadCertificate {
                index: index + 1,
                reason: e.to_string(),
            }
        })?;
        if index > 0 {
            continue;
        }
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => {
                        Some(dns.trim_end_matches('.').to_ascii_lowercase())
                    }
                    GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                return Err(CertError::BadCertificate {
                    index: 1,
                    reason: format!("subject alternative names: {e}"),
                })
            }
        };
        info = Some(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            chain_len: chain.len(),
            sealed: false,
        });
    }
    info.ok_or(CertError::NoCertificate)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Unix seconds as an RFC 3339 date (UTC), for messages.
pub fn rfc3339(unix: i64) -> String {
    let t = if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A value in its canonical form, as `cert set` writes it: each certificate
/// of the chain re-encoded as PEM (no comments, no bag attributes), then
/// the key block (PEM or sealed).
pub fn compose(chain: &[CertificateDer<'_>], key_block: &str) -> String {
    let mut out = String::new();
    for cert in chain {
        out.push_str(&pem_block("CERTIFICATE", cert.as_ref()));
    }
    out.push_str(key_block);
    out
}

/// A PEM block with 64-column base64 lines.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The PEM block of a private key, with the label of its encoding.
pub fn key_pem(key: &PrivateKeyDer<'_>) -> String {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem_block(label, key.secret_der())
}

/// The chain and the plaintext key of a `cert set` from its two files
/// (either may hold both: a key in the certificate file is ignored when a
/// key file names one).
pub fn read_pair(
    cert_pem: &[u8],
    key_pem_text: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem(pem_error(&e)))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    if contains(key_pem_text, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(CertError::EncryptedKey);
    }
    let mut keys: Vec<PrivateKeyDer<'static>> = PrivateKeyDer::pem_slice_iter(key_pem_text)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem(pem_error(&e)))?;
    match keys.len() {
        0 => Err(CertError::NoKey),
        1 => Ok((chain, keys.pop().expect("one key"))),
        _ => Err(CertError::SeveralKeys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::parse_field;
    use crate::tls::seal::{Purpose, Secret};
    use crate::tls::testing::{days, TestCa};

    fn key(field: &str) -> FieldKey {
        parse_field(field).unwrap()
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn a_chain_and_its_key_load_with_what_the_leaf_says() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["app.cloud.com", "www.app.cloud.com"]);
        let cert = load(
            leaf.value().as_bytes(),
            Some(&key("app.cloud.com")),
            None,
            now(),
        )
        .unwrap();
        assert_eq!(cert.info.names, ["app.cloud.com", "www.app.cloud.com"]);
        assert_eq!(cert.info.chain_len, 2);
        assert!(
            cert.info.issuer.contains("Switchyard Test CA"),
            "{:?}",
            cert.info.issuer
        );
        assert!(!cert.info.sealed);
        assert_eq!(cert.certified.cert.len(), 2);
        // Any field spelling of a covered name loads; others do not.
        assert!(load(
            leaf.value().as_bytes(),
            Some(&key("WWW.app.cloud.com.")),
            None,
            now()
        )
        .is_ok());
        assert!(matches!(
            load(
                leaf.value().as_bytes(),
                Some(&key("other.cloud.com")),
                None,
                now()
            ),
            Err(CertError::NameMismatch { .. })
        ));
        // The default certificate covers whatever it covers.
        assert!(load(leaf.value().as_bytes(), None, None, now()).is_ok());
    }

    #[test]
    fn every_key_encoding_loads() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.com"]);
        let rsa = ca.rsa_leaf(&["a.com"]);
        assert!(rsa.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let sec1 = format!("{}{}", leaf.chain_pem, leaf.sec1_key_pem());
        assert!(sec1.contains("-----BEGIN EC PRIVATE KEY-----"));
        for value in [leaf.value(), sec1, rsa.value()] {
            let cert = load(value.as_bytes(), Some(&key("a.com")), None, now())
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(cert.info.names, ["a.com"]);
        }
    }

    #[test]
    fn wildcards_cover_one_label() {
        let ca = TestCa::new();
        let wild = ca.leaf(&["*.cloud.com"]);
        let value = wild.value();
        for ok in ["*.cloud.com", "app.cloud.com"] {
            assert!(
                load(value.as_bytes(), Some(&key(ok)), None, now()).is_ok(),
                "{ok}"
            );
        }
        for bad in ["cloud.com", "a.b.cloud.com", "*.b.cloud.com", "*.com"] {
            assert!(
                matches!(
                    load(value.as_bytes(), Some(&key(bad)), None, now()),
                    Err(CertError::NameMismatch { .. })
                ),
                "{bad}"
            );
        }
        // An exact name never covers the wildcard field.
        let exact = ca.leaf(&["app.cloud.com"]);
        assert!(load(
            exact.value().as_bytes(),
            Some(&key("*.cloud.com")),
            None,
            now()
        )
        .is_err());
        let ip = ca.leaf(&["10.0.0.5"]);
        assert!(load(ip.value().as_bytes(), Some(&key("10.0.0.5")), None, now()).is_ok());
        assert!(load(ip.value().as_bytes(), Some(&key("10.0.0.6")), None, now()).is_err());
    }

    #[test]
    fn broken_values_are_refused_with_their_reason() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.com"]);
        let other = ca.leaf(&["a.com"]);
        let a = Some(key("a.com"));
        let check = |value: &str| load(value.as_bytes(), a.as_ref(), None, now());
        assert_eq!(check("garbage").unwrap_err(), CertError::NoCertificate);
        assert_eq!(check(&leaf.chain_pem).unwrap_err(), CertError::NoKey);
        assert_eq!(check(&leaf.key_pem).unwrap_err(), CertError::NoCertificate);
        assert_eq!(
            check(&format!("{}{}", leaf.chain_pem, other.key_pem)).unwrap_err(),
            CertError::KeyMismatch
        );
        assert_eq!(
            check(&format!(
                "{}{}{}",
                leaf.chain_pem, leaf.key_pem, other.key_pem
            ))
            .unwrap_err(),
            CertError::SeveralKeys
        );
        assert!(matches!(
            check("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"),
            Err(CertError::Pem(_))
        ));
        assert!(matches!(
            check("-----BEGIN CERTIFICATE-----\nAAAA\n"),
            Err(CertError::Pem(_))
        ));
        assert!(matches!(
            check(&format!(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{}",
                leaf.key_pem
            )),
            Err(CertError::BadCertificate { index: 1, .. })
        ));
        assert_eq!(
            check(&format!("{}-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", leaf.chain_pem)).unwrap_err(),
            CertError::EncryptedKey
        );
        assert_eq!(
            check(&"x".repeat(MAX_VALUE_LEN + 1)).unwrap_err(),
            CertError::TooLarge
        );
    }

    #[test]
    fn validity_is_checked_against_now() {
        let ca = TestCa::new();
        let expired = ca.leaf_valid(&["a.com"], days(-30), days(-1));
        let err = load(expired.value().as_bytes(), Some(&key("a.com")), None, now()).unwrap_err();
        assert!(matches!(err, CertError::Expired { .. }), "{err}");
        assert!(err.to_string().starts_with("expired at 20"), "{err}");
        let future = ca.leaf_valid(&["a.com"], days(2), days(30));
        assert!(matches!(
            load(future.value().as_bytes(), Some(&key("a.com")), None, now()),
            Err(CertError::NotYetValid { .. })
        ));
        // A certificate starting within the clock skew allowance is served.
        let fresh = ca.leaf_valid(&["a.com"], 60, days(30));
        assert!(load(fresh.value().as_bytes(), Some(&key("a.com")), None, now()).is_ok());
    }

    #[test]
    fn sealed_keys_open_for_their_host_with_the_secret() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.com", "b.com"]);
        let sealer = Sealer::new(&Secret::from_bytes(&[1; 32]).unwrap(), Purpose::CertKey);
        let sealed = leaf.sealed_value(&sealer, "a.com");
        let cert = load(sealed.as_bytes(), Some(&key("a.com")), Some(&sealer), now()).unwrap();
        assert!(cert.info.sealed);
        assert!(inspect(sealed.as_bytes()).unwrap().sealed);
        // Moved to another host the certificate also covers: refused.
        assert!(matches!(
            load(sealed.as_bytes(), Some(&key("b.com")), Some(&sealer), now()),
            Err(CertError::Sealed(SealError::Mismatch { .. }))
        ));
        assert_eq!(
            load(sealed.as_bytes(), Some(&key("a.com")), None, now()).unwrap_err(),
            CertError::Sealed(SealError::NoSecret)
        );
        let other = Sealer::new(&Secret::from_bytes(&[2; 32]).unwrap(), Purpose::CertKey);
        let err = load(sealed.as_bytes(), Some(&key("a.com")), Some(&other), now()).unwrap_err();
        assert_eq!(err, CertError::Sealed(SealError::OtherSecret));
        assert_eq!(
            err.to_string(),
            "the private key was sealed with another secret than this process's --certs-secret-file"
        );
        // A plaintext key next to a sealed one is ambiguous.
        let both = format!("{sealed}{}", leaf.key_pem);
        assert_eq!(
            load(both.as_bytes(), Some(&key("a.com")), Some(&sealer), now()).unwrap_err(),
            CertError::SeveralKeys
        );
        // Sealed for the wildcard field, opened by it.
        let wild = ca.leaf(&["*.w.com"]);
        let sealed = wild.sealed_value(&sealer, "*.w.com");
        assert!(load(
            sealed.as_bytes(),
            Some(&key("*.W.com")),
            Some(&sealer),
            now()
        )
        .is_ok());
    }

    #[test]
    fn composed_values_load_like_the_files_they_came_from() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.com"]);
        let with_noise = format!("subject=CN = a.com\n{}", leaf.chain_pem);
        let (chain, key_der) = read_pair(with_noise.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        let value = compose(&chain, &key_pem(&key_der));
        assert!(value.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let cert = load(value.as_bytes(), Some(&key("a.com")), None, now()).unwrap();
        assert_eq!(cert.info.chain_len, 2);
        assert_eq!(
            read_pair(leaf.chain_pem.as_bytes(), b"").unwrap_err(),
            CertError::NoKey
        );
        assert_eq!(
            read_pair(b"", leaf.key_pem.as_bytes()).unwrap_err(),
            CertError::NoCertificate
        );
    }
}
