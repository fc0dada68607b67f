//! Ed25519 signatures (RFC 8032): tenant signing keys for checkpoints and receipts.

use ed25519_dalek::{Signer as _, Verifier as _};
use secrecy::{ExposeSecret, SecretBox};

/// An Ed25519 private key. Its seed never leaves this type except through
/// [`SigningKey::seed`], whose callers encrypt it for storage.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey {
    inner: ed25519_dalek::VerifyingKey,
}

impl SigningKey {
    /// A new key from the operating system's random source.
    #[must_use]
    pub fn generate() -> Self {
        Self { inner: ed25519_dalek::SigningKey::from_bytes(&crate::random_array::<32>()) }
    }

    /// Rebuilds a key from its 32-byte seed.
    #[must_use]
    pub fn from_seed(seed: &SecretBox<[u8; 32]>) -> Self {
        Self { inner: ed25519_dalek::SigningKey::from_bytes(seed.expose_secret()) }
    }

    /// The 32-byte seed, for encrypted storage.
    #[must_use]
    pub fn seed(&self) -> SecretBox<[u8; 32]> {
        SecretBox::new(Box::new(self.inner.to_bytes()))
    }

    /// The public half.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey { inner: self.inner.verifying_key() }
    }

    /// Signs `message`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {:?})", self.verifying_key())
    }
}

impl VerifyingKey {
    /// Parses a 32-byte public key, refusing encodings that are not a valid point.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes = <[u8; 32]>::try_from(bytes).ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok().map(|inner| Self { inner })
    }

    /// The 32-byte encoding.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.inner.to_bytes()
    }

    /// Whether `signature` is this key's signature over `message`. Uses strict verification
    /// (no malleable or small-order signatures).
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.inner.verify_strict(message, &signature).is_ok()
            && self.inner.verify(message, &signature).is_ok()
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.to_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8032_test_1() {
        // RFC 8032 §7.1, TEST 1 (empty message).
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let key = SigningKey::from_seed(&SecretBox::new(Box::new(<[u8; 32]>::try_from(seed).unwrap())));
        assert_eq!(
            hex::encode(key.verifying_key().to_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let signature = key.sign(b"");
        assert_eq!(
            hex::encode(signature),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(key.verifying_key().verify(b"", &signature));
        assert!(!key.verifying_key().verify(b"x", &signature));
        assert!(!key.verifying_key().verify(b"", &signature[..63]));
    }

    #[test]
    fn seeds_round_trip() {
        let key = SigningKey::generate();
        let again = SigningKey::from_seed(&key.seed());
        assert_eq!(key.verifying_key(), again.verifying_key());
    }
}
