//! The one crypto seam.
//!
//! Every cryptographic primitive Airlock uses (digests, MACs, signatures, authenticated
//! encryption, randomness, constant-time comparison, password hashing) is reached through this crate, and no other crate names a
//! crypto backend. A reviewer auditing Airlock's cryptography reads this crate and
//! `cargo tree -i sha2` confirms nothing else uses one directly.
//!
//! Callers never choose nonces, salts or parameters: those are fixed here.

mod aead;
mod digest;
mod password;
mod random;
mod sign;
mod token;

pub use aead::{AeadError, AeadKey};
pub use digest::{
    Digest, KeyedHasher, Sha256Stream, constant_time_eq, hmac_sha256, sha256, sha256_parts, to_hex,
};
pub use password::{PasswordError, PasswordHash, hash_password, verify_password};
pub use random::{random_array, random_base64url, random_hex};
pub use sign::{SigningKey, VerifyingKey};
pub use token::{SecretToken, TokenError, TokenKind};
