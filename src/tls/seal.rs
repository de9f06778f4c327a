//! Sealing secrets at rest: the private key of a certificate in the certs
//! hash, encrypted with AES-256-GCM under a key derived from the
//! `--certs-secret-file` secret, the host name bound as associated data so
//! a sealed key cannot be moved to another host (README.md, "HTTPS").
//!
//! One secret serves several purposes (certificate keys, the ACME account
//! key, TLS session ticket keys): each [`Purpose`] gets its own AES key,
//! derived with HKDF-SHA256, so a block sealed for one purpose never opens
//! as another.
//!
//! The sealed form is a PEM-like block, so that it sits after the
//! certificate chain in a hash value as a plaintext key would:
//!
//! ```text
//! -----BEGIN SWITCHYARD SEALED KEY-----
//! base64 of: version (1) | key id (4) | nonce (12) | ciphertext | tag (16)
//! -----END SWITCHYARD SEALED KEY-----
//! ```
//!
//! Version 1 is AES-256-GCM with a random 96-bit nonce; the associated
//! data is the version byte followed by the context (the host name). The
//! key id, also derived from the secret, names the secret a block was
//! sealed with without revealing anything about it, so "sealed with
//! another secret" and "sealed for another host, or damaged" are told
//! apart.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Length of the secret in `--certs-secret-file`.
pub const SECRET_LEN: usize = 32;

pub const BEGIN: &str = "-----BEGIN SWITCHYARD SEALED KEY-----";
pub const END: &str = "-----END SWITCHYARD SEALED KEY-----";

const VERSION_1: u8 = 1;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// The HKDF salt: fixed, so the same secret derives the same keys on
/// every replica (the secret itself is the only input that must be secret).
const SALT: &[u8] = b"switchyard sealing v1";

/// The secret shared by the replicas and the CLI: 32 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "must hold {SECRET_LEN} random bytes, raw or as {} hex digits (e.g. `head -c 32 /dev/urandom`), found {found} bytes",
        SECRET_LEN * 2
    )]
    Length { found: usize },
}

impl Secret {
    /// The secret in a file: exactly 32 raw bytes, or 64 hex digits
    /// (surrounding whitespace, such as a final newline, ignored).
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let bytes = std::fs::read(path).map_err(|e| SecretError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Secret::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, SecretError> {
        if let Ok(raw) = <[u8; SECRET_LEN]>::try_from(bytes) {
            return Ok(Secret(raw));
        }
        let text = bytes.trim_ascii();
        if text.len() == SECRET_LEN * 2 && text.iter().all(u8::is_ascii_hexdigit) {
            let mut raw = [0u8; SECRET_LEN];
            for (byte, pair) in raw.iter_mut().zip(text.chunks(2)) {
                let pair = std::str::from_utf8(pair).expect("hex digits are ASCII");
                *byte = u8::from_str_radix(pair, 16).expect("checked hex digits");
            }
            return Ok(Secret(raw));
        }
        Err(SecretError::Length { found: bytes.len() })
    }
}

/// What a sealed block is for; each purpose seals with a key of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The private key of a certificate in the certs hash; the context is
    /// the hash field (the host name or `*.suffix`, normalised).
    CertKey,
    /// The ACME account key in Redis; the context is the account key's name.
    AcmeAccountKey,
    /// A TLS session ticket key in Redis; the context is its key id (the
    /// hash field), see `tls::tickets`.
    TicketKey,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::CertKey => b"switchyard v1 certificate key",
            Purpose::AcmeAccountKey => b"switchyard v1 acme account key",
            Purpose::TicketKey => b"switchyard v1 tls ticket key",
        }
    }
}

/// Why a sealed block did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the private key is sealed and this process has no --certs-secret-file")]
    NoSecret,
    #[error(
        "the private key was sealed with another secret than this process's --certs-secret-file"
    )]
    OtherSecret,
    #[error("the sealed private key does not open for {context}: it was sealed for another host, or damaged")]
    Mismatch { context: String },
    #[error("sealed block version {0} is not supported (this build reads version 1)")]
    Version(u8),
    #[error("malformed sealed block: {0}")]
    Malformed(&'static str),
}

/// Seals and opens blocks for one purpose.
pub struct Sealer {
    key: LessSafeKey,
    key_id: [u8; KEY_ID_LEN],
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// An HKDF output length (ring asks for it as a type).
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Sealer {
    pub fn new(secret: &Secret, purpose: Purpose) -> Sealer {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&secret.0);
        let (key_info, id_info) = (
            [purpose.label(), b" aes-256-gcm".as_slice()],
            [purpose.label(), b" key id".as_slice()],
        );
        let key = prk
            .expand(&key_info, &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut key_id = [0u8; KEY_ID_LEN];
        prk.expand(&id_info, Len(KEY_ID_LEN))
            .and_then(|okm| okm.fill(&mut key_id))
            .expect("4 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            key: LessSafeKey::new(UnboundKey::from(key)),
            key_id,
            rng: SystemRandom::new(),
        }
    }

    /// Seals `plaintext` for `context` into a PEM-like block (ends with a
    /// newline).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random generator works");
        let mut blob = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        blob.push(VERSION_1);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&nonce);
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(context)),
                &mut sealed,
            )
            .expect("a certificate key is far below AES-GCM's length limit");
        blob.extend_from_slice(&sealed);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&blob);
        let mut out = String::with_capacity(encoded.len() + encoded.len() / 64 + 80);
        out.push_str(BEGIN);
        out.push('\n');
        for line in encoded.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str(END);
        out.push('\n');
        out
    }

    /// Opens the block `body` (the base64 text between the markers, as
    /// [`find_block`] returns it) sealed for `context`.
    pub fn open(&self, context: &str, body: &[u8]) -> Result<Vec<u8>, SealError> {
        let blob = decode_body(body)?;
        if blob.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::Malformed("too short"));
        }
        if blob[0] != VERSION_1 {
            return Err(SealError::Version(blob[0]));
        }
        if blob[1..1 + KEY_ID_LEN] != self.key_id {
            return Err(SealError::OtherSecret);
        }
        let nonce: [u8; NONCE_LEN] = blob[1 + KEY_ID_LEN..HEADER_LEN]
            .try_into()
            .expect("slice of NONCE_LEN bytes");
        let mut sealed = blob[HEADER_LEN..].to_vec();
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(context)),
                &mut sealed,
            )
            .map_err(|_| SealError::Mismatch {
                context: context.to_owned(),
            })?;
        Ok(plaintext.to_vec())
    }
}

/// The version byte, then the context: both authenticated.
fn associated_data(context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + context.len());
    aad.push(VERSION_1);
    aad.extend_from_slice(context.as_bytes());
    aad
}

fn decode_body(body: &[u8]) -> Result<Vec<u8>, SealError> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| SealError::Malformed("not base64"))
}

/// The sealed block in a value, if it has one: the text between the
/// markers. More than one block, or a block without its end, is an error.
pub fn find_block(value: &[u8]) -> Option<Result<&[u8], SealError>> {
    let start = find(value, BEGIN.as_bytes())?;
    let body_start = start + BEGIN.len();
    let Some(body_len) = find(&value[body_start..], END.as_bytes()) else {
        return Some(Err(SealError::Malformed("no end marker")));
    };
    let after = body_start + body_len + END.len();
    if find(&value[after..], BEGIN.as_bytes()).is_some() {
        return Some(Err(SealError::Malformed("more than one sealed block")));
    }
    Some(Ok(&value[body_start..body_start + body_len]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> Secret {
        Secret([byte; SECRET_LEN])
    }

    fn body(block: &str) -> &[u8] {
        find_block(block.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn a_sealed_key_opens_for_its_host_only() {
        let sealer = Sealer::new(&secret(7), Purpose::CertKey);
        let block = sealer.seal("app.cloud.com", b"-----BEGIN PRIVATE KEY-----\n...");
        assert!(block.starts_with(BEGIN) && block.ends_with(&format!("{END}\n")));
        assert!(block
            .lines()
            .all(|l| l.len() <= 64 || l == BEGIN || l == END));
        assert_eq!(
            sealer.open("app.cloud.com", body(&block)).unwrap(),
            b"-----BEGIN PRIVATE KEY-----\n..."
        );
        assert_eq!(
            sealer.open("evil.cloud.com", body(&block)),
            Err(SealError::Mismatch {
                context: "evil.cloud.com".into()
            })
        );
    }

    #[test]
    fn another_secret_is_named_as_such() {
        let block = Sealer::new(&secret(1), Purpose::CertKey).seal("a.com", b"key");
        let other = Sealer::new(&secret(2), Purpose::CertKey);
        assert_eq!(
            other.open("a.com", body(&block)),
            Err(SealError::OtherSecret)
        );
    }

    #[test]
    fn two_seals_of_the_same_key_differ() {
        let sealer = Sealer::new(&secret(3), Purpose::CertKey);
        assert_ne!(sealer.seal("a.com", b"key"), sealer.seal("a.com", b"key"));
    }

    #[test]
    fn tampering_is_detected() {
        let sealer = Sealer::new(&secret(4), Purpose::CertKey);
        let block = sealer.seal("a.com", b"the private key");
        let mut blob = decode_body(body(&block)).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(&blob);
        assert!(matches!(
            sealer.open("a.com", tampered.as_bytes()),
            Err(SealError::Mismatch { .. })
        ));
        blob[0] = 9;
        let versioned = base64::engine::general_purpose::STANDARD.encode(&blob);
        assert_eq!(
            sealer.open("a.com", versioned.as_bytes()),
            Err(SealError::Version(9))
        );
        assert_eq!(
            sealer.open("a.com", b"AAAA"),
            Err(SealError::Malformed("too short"))
        );
        assert_eq!(
            sealer.open("a.com", b"!!"),
            Err(SealError::Malformed("not base64"))
        );
    }

    #[test]
    fn blocks_are_found_after_a_chain() {
        let value = format!(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{BEGIN}\nQUJD\n{END}\n"
        );
        assert_eq!(
            find_block(value.as_bytes()).unwrap().unwrap(),
            b"\nQUJD\n".as_slice()
        );
        assert!(find_block(b"-----BEGIN PRIVATE KEY-----").is_none());
        assert_eq!(
            find_block(format!("{BEGIN}\nQUJD\n").as_bytes()),
            Some(Err(SealError::Malformed("no end marker")))
        );
        assert_eq!(
            find_block(format!("{BEGIN}\n{END}\n{BEGIN}\n{END}\n").as_bytes()),
            Some(Err(SealError::Malformed("more than one sealed block")))
        );
    }

    #[test]
    fn secret_files_hold_raw_bytes_or_hex() {
        assert_eq!(Secret::from_bytes(&[5u8; 32]).unwrap(), secret(5));
        let hex = "05".repeat(32) + "\n";
        assert_eq!(Secret::from_bytes(hex.as_bytes()).unwrap(), secret(5));
        assert_eq!(
            Secret::from_bytes(b"too short\n"),
            Err(SecretError::Length { found: 10 })
        );
        assert!(Secret::from_bytes("zz".repeat(32).as_bytes()).is_err());
        assert_eq!(format!("{:?}", secret(5)), "Secret(..)");
    }
}
