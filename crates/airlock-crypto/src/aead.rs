//! Authenticated encryption: AES-256-GCM with a random 96-bit nonce per message.
//!
//! Callers never see or choose a nonce: [`AeadKey::seal`] draws one from the OS and
//! prepends it to the ciphertext, [`AeadKey::open`] reads it back. Random nonces are safe
//! for up to 2^32 messages per key, far beyond one tenant key's use between rotations. The
//! associated data binds a ciphertext to where it belongs (tenant, table, column, row), so
//! a ciphertext moved elsewhere fails to decrypt.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::{ExposeSecret, SecretBox};

const NONCE_BYTES: usize = 12;

/// A 256-bit AES-GCM key.
pub struct AeadKey {
    key: SecretBox<[u8; 32]>,
}

/// Decryption failed: wrong key, wrong associated data, or a modified ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed: wrong key, wrong context, or modified data")]
pub struct AeadError;

impl AeadKey {
    /// A new random key.
    #[must_use]
    pub fn generate() -> Self {
        Self { key: SecretBox::new(Box::new(crate::random_array::<32>())) }
    }

    /// A key from 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: SecretBox<[u8; 32]>) -> Self {
        Self { key: bytes }
    }

    /// The key's bytes, for wrapping under another key.
    #[must_use]
    pub fn bytes(&self) -> &SecretBox<[u8; 32]> {
        &self.key
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.key.expose_secret().into())
    }

    /// Encrypts `plaintext` bound to `aad`; returns nonce ‖ ciphertext ‖ tag.
    #[must_use]
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = crate::random_array::<NONCE_BYTES>();
        let mut out = nonce.to_vec();
        // Encryption with a valid key and in-memory buffers cannot fail; an empty result
        // would fail to open, never leak.
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .unwrap_or_default();
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`AeadKey::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AeadError> {
        if sealed.len() < NONCE_BYTES + 16 {
            return Err(AeadError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| AeadError)
    }
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = AeadKey::generate();
        let sealed = key.seal(b"tenant/a|signing_keys|seed|1", b"secret");
        assert_eq!(key.open(b"tenant/a|signing_keys|seed|1", &sealed).unwrap(), b"secret");
        assert_eq!(key.open(b"tenant/b|signing_keys|seed|1", &sealed), Err(AeadError));
        assert_eq!(AeadKey::generate().open(b"tenant/a|signing_keys|seed|1", &sealed), Err(AeadError));
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(key.open(b"tenant/a|signing_keys|seed|1", &flipped), Err(AeadError));
        assert_eq!(key.open(b"", &sealed[..10]), Err(AeadError));
    }

    #[test]
    fn nonces_differ() {
        let key = AeadKey::generate();
        assert_ne!(key.seal(b"", b"same"), key.seal(b"", b"same"));
    }
}
