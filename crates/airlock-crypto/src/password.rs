//! Password hashing with Argon2id.
//!
//! Parameters follow the OWASP recommendation for Argon2id (19 MiB, two passes, one lane).
//! Verification of an unknown user runs against a fixed dummy hash with the same parameters,
//! so the time a login takes does not reveal whether the account exists.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

/// A stored password hash in PHC string format (`$argon2id$v=19$m=19456,t=2,p=1$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string read from storage. It is parsed when verified.
    #[must_use]
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string, for storage.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// Hashing a password failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password is shorter than the minimum length.
    #[error("the password is too short: use at least {min} characters")]
    TooShort {
        /// The minimum length in characters.
        min: usize,
    },
    /// The password is longer than the maximum length.
    #[error("the password is too long: use at most {max} bytes")]
    TooLong {
        /// The maximum length in bytes.
        max: usize,
    },
    /// Argon2 refused its input.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted; bounds the work an unauthenticated request can cause.
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, Some(32)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a new password with a fresh random salt.
pub fn hash_password(password: &SecretString) -> Result<PasswordHash, PasswordError> {
    let secret = password.expose_secret();
    if secret.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort { min: MIN_PASSWORD_CHARS });
    }
    if secret.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong { max: MAX_PASSWORD_BYTES });
    }
    let salt = SaltString::encode_b64(&crate::random_array::<16>())
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    argon2()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| PasswordHash(hash.to_string()))
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let salt = SaltString::encode_b64(&[0u8; 16]).ok()?;
    argon2()
        .hash_password(b"airlock dummy password for unknown users", &salt)
        .ok()
        .map(|hash| hash.to_string())
});

/// Verifies `password` against `stored`, or, when there is no stored hash (unknown user,
/// or a user without a password), against a dummy hash so the call costs the same.
/// Returns `true` only for a stored hash that matches.
#[must_use]
pub fn verify_password(password: &SecretString, stored: Option<&PasswordHash>) -> bool {
    let secret = password.expose_secret();
    // Oversized input is refused before hashing, but still after the same amount of work
    // an ordinary failure costs, so length does not become a timing oracle.
    let candidate = if secret.len() > MAX_PASSWORD_BYTES { &b""[..] } else { secret.as_bytes() };
    let (phc, real) = match stored {
        Some(hash) => (Some(hash.0.as_str()), true),
        None => (DUMMY_HASH.as_deref(), false),
    };
    let Some(parsed) = phc.and_then(|phc| argon2::PasswordHash::new(phc).ok()) else {
        return false;
    };
    let matched = argon2().verify_password(candidate, &parsed).is_ok();
    matched && real && secret.len() <= MAX_PASSWORD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn hash_then_verify() {
        let hash = hash_password(&secret("correct horse battery staple")).unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password(&secret("correct horse battery staple"), Some(&hash)));
        assert!(!verify_password(&secret("correct horse battery stapler"), Some(&hash)));
    }

    #[test]
    fn salts_differ() {
        let a = hash_password(&secret("correct horse battery staple")).unwrap();
        let b = hash_password(&secret("correct horse battery staple")).unwrap();
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn unknown_user_never_verifies() {
        assert!(!verify_password(&secret("airlock dummy password for unknown users"), None));
    }

    #[test]
    fn short_and_long_passwords_are_refused() {
        assert!(matches!(hash_password(&secret("short")), Err(PasswordError::TooShort { .. })));
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(hash_password(&secret(&long)), Err(PasswordError::TooLong { .. })));
    }

    #[test]
    fn a_corrupt_stored_hash_does_not_verify() {
        let corrupt = PasswordHash::from_stored("$argon2id$garbage".into());
        assert!(!verify_password(&secret("anything at all here"), Some(&corrupt)));
    }
}
