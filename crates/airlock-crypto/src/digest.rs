//! SHA-256 digests and HMAC-SHA256 keyed hashes.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A 32-byte digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a digest from stored bytes, refusing any other length.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Lowercase hex, as digests are written in the API and the audit log.
    #[must_use]
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Compares two digests in constant time.
    #[must_use]
    pub fn ct_eq(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Lowercase hex of `bytes`.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// SHA-256 of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> Digest {
    use sha2::Digest as _;
    Digest(Sha256::digest(data).into())
}

/// SHA-256 over data that arrives in pieces (a file or stream being written).
#[derive(Clone, Default)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    /// An empty hash.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next piece.
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        self.0.update(data);
    }

    /// The digest of everything added.
    #[must_use]
    pub fn finish(self) -> Digest {
        use sha2::Digest as _;
        Digest(self.0.finalize().into())
    }
}

impl std::fmt::Debug for Sha256Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256Stream(..)")
    }
}

/// SHA-256 of the concatenation of `parts`, without copying them together.
#[must_use]
pub fn sha256_parts(parts: &[&[u8]]) -> Digest {
    use sha2::Digest as _;
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    Digest(hasher.finalize().into())
}

/// Compares two byte strings in time that depends only on their lengths.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// HMAC-SHA256 under a server-held key.
///
/// Airlock stores API-key and session secrets only as keyed hashes: a copy of the database
/// alone is not enough to test a guessed secret, and the hash is fast to check because the
/// secrets themselves carry 256 bits of entropy (passwords, which do not, use Argon2id).
pub struct KeyedHasher {
    key: SecretSlice<u8>,
}

impl KeyedHasher {
    /// A hasher under `key`, which should be at least 32 random bytes.
    #[must_use]
    pub fn new(key: SecretSlice<u8>) -> Self {
        Self { key }
    }

    /// HMAC-SHA256 over `domain`, a zero byte, and `data`. The domain separates uses of the
    /// one key (`"api-key"`, `"session"`, `"csrf"`), so a value from one can never stand in
    /// for another.
    #[must_use]
    pub fn hash(&self, domain: &str, data: &[u8]) -> Digest {
        hmac_sha256(self.key.expose_secret(), &[domain.as_bytes(), &[0], data])
    }
}

/// HMAC-SHA256 under `key` over the concatenation of `parts`.
#[must_use]
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Digest {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac_key());
    for part in parts {
        mac.update(part);
    }
    Digest(mac.finalize().into_bytes().into())
}

#[expect(clippy::panic, reason = "HMAC accepts keys of any length; this branch cannot be reached")]
fn unreachable_hmac_key() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 rejected a key")
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            hex::encode(sha256(b"abc").0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", &[b"what do ya ", b"want for nothing?"]).0),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn domains_separate() {
        let hasher = KeyedHasher::new(vec![7u8; 32].into());
        assert_ne!(hasher.hash("api-key", b"x").0, hasher.hash("session", b"x").0);
    }
}
