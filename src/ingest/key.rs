//! The operator's pseudonymisation key.
//!
//! A pseudonym is `hex(HMAC-SHA256(key, registry number)[..16])`: stable under one key, unlinkable
//! without it. The key is 32 random bytes held by the data custodian in a file readable only by its
//! owner; it never enters the repository, the manifest or a log. What may be shown is its
//! *fingerprint*, a one-way hash that tells two keys apart without revealing either.

use std::io::Write;
use std::path::Path;

use ring::{digest, hmac, rand::SecureRandom};

use super::IngestError;

/// Key length in bytes; HMAC-SHA256 gains nothing from longer keys.
pub const KEY_LEN: usize = 32;

/// A pseudonymisation key. `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct PseudonymKey {
    bytes: [u8; KEY_LEN],
    hmac: hmac::Key,
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudonymKey")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl PseudonymKey {
    /// A fresh key from the system's secure random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system's random source failed");
        Self::from_array(bytes)
    }

    /// A key from raw bytes (tests, and keys held in an HSM export). Exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IngestError> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| IngestError::KeyFormat {
            detail: format!("a key is {KEY_LEN} bytes, this one has {}", bytes.len()),
        })?;
        Ok(Self::from_array(arr))
    }

    fn from_array(bytes: [u8; KEY_LEN]) -> Self {
        let hmac = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        Self { bytes, hmac }
    }

    /// Read a key file written by [`PseudonymKey::write_new`] (64 hex characters and a newline).
    /// A missing file is explained with the command that creates one.
    pub fn load(path: &Path) -> Result<Self, IngestError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IngestError::KeyMissing {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(IngestError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let raw = hex::decode(text.trim()).map_err(|_| IngestError::KeyFormat {
            detail: format!(
                "{} must hold {} hex characters",
                path.display(),
                KEY_LEN * 2
            ),
        })?;
        Self::from_bytes(&raw)
    }

    /// Create a new key file readable only by its owner (mode 0600). Refuses to overwrite an
    /// existing file: replacing a key silently would change every pseudonym.
    pub fn write_new(path: &Path) -> Result<Self, IngestError> {
        let key = Self::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = match opts.open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(IngestError::KeyExists {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(IngestError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let io = |source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        };
        file.write_all(format!("{}\n", hex::encode(key.bytes)).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(key)
    }

    /// A non-reversible identifier of the key: `sha256:` and the first 16 hex characters of
    /// SHA-256 over a domain tag and the key. Safe to print, log and put in manifests.
    pub fn fingerprint(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"kura pseudonym key fingerprint v1\0");
        ctx.update(&self.bytes);
        format!("sha256:{}", &hex::encode(ctx.finish().as_ref())[..16])
    }

    /// The pseudonym of a source patient key: lowercase hex of the first 16 bytes of
    /// HMAC-SHA256(key, source key), 32 characters.
    pub fn pseudonym(&self, source_key: &str) -> String {
        let mut out = String::with_capacity(32);
        self.pseudonym_into(source_key.as_bytes(), &mut out);
        out
    }

    /// Like [`pseudonym`](Self::pseudonym) but appends to a buffer, for the ingest hot path.
    pub fn pseudonym_into(&self, source_key: &[u8], out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = hmac::sign(&self.hmac, source_key);
        for b in &tag.as_ref()[..16] {
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_matches_hmac_definition() {
        let key = PseudonymKey::from_bytes(&[7u8; 32]).unwrap();
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]),
            b"K0000000001",
        );
        assert_eq!(
            key.pseudonym("K0000000001"),
            hex::encode(&tag.as_ref()[..16])
        );
        assert_eq!(key.pseudonym("K0000000001").len(), 32);
    }

    #[test]
    fn fingerprint_does_not_contain_key() {
        let key = PseudonymKey::generate();
        let fp = key.fingerprint();
        assert!(fp.starts_with("sha256:"));
        assert!(!hex::encode(key.bytes).contains(&fp[7..]));
        assert_ne!(fp, PseudonymKey::generate().fingerprint());
        assert!(!format!("{key:?}").contains(&hex::encode(key.bytes)));
    }

    #[test]
    fn rejects_short_key() {
        assert!(matches!(
            PseudonymKey::from_bytes(&[1u8; 16]),
            Err(IngestError::KeyFormat { .. })
        ));
    }
}
