//! The key hierarchy: a key-encryption key (KEK) from a provider wraps each owner's
//! data-encryption keys (DEKs); a DEK seals its owner's sensitive values, each bound by
//! associated data to its owner, table, column and row, so a ciphertext copied anywhere else
//! fails to open.
//!
//! An owner is a tenant or the platform (the control plane's own audit signing key). An
//! owner may hold several DEK versions while a rotation re-encrypts its rows; every sealed
//! value names the version that sealed it.
//!
//! Providers (see [`provider`]) sit behind one trait: a local key file, a key in an
//! environment variable, HashiCorp Vault or OpenBao Transit, AWS KMS, Azure Key Vault and
//! Google Cloud KMS. The KEK itself never leaves an external provider. All primitives come
//! from `airlock-crypto`.

mod dek;
pub mod provider;

pub use dek::{Context, Dek, DekSet, sealed_version};
pub use provider::{ConnectOptions, KekProvider, Keyring, ProviderSpec, WrapContext, WrappedDek, connect};

/// A key-hierarchy failure.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A key file could not be read or created.
    #[error("key file `{path}`: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A key file or variable does not hold a 32-byte key in base64.
    #[error("{0} does not hold a base64 256-bit key")]
    BadKey(String),
    /// The key file can be read by other users.
    #[error("key file `{0}` is readable by group or others; make it owner-only (chmod 600)")]
    KeyFilePermissions(std::path::PathBuf),
    /// A provider's configuration is incomplete or contradictory.
    #[error("key provider: {0}")]
    Config(String),
    /// The provider refused or could not be reached: a revoked, disabled or deleted key, an
    /// expired credential, or a network failure. Nothing the key protects can be read.
    #[error("the key-encryption key `{kek}` is unavailable: {reason}")]
    Unavailable {
        /// The key's id.
        kek: String,
        /// What the provider said, without credentials.
        reason: String,
    },
    /// A DEK was wrapped by a key this Airlock does not hold.
    #[error(
        "the data key was wrapped by key-encryption key `{0}`, which is not configured (add it to `key_provider.previous`)"
    )]
    UnknownKek(String),
    /// A wrapped key or sealed value did not open: wrong key, wrong place, or altered.
    #[error("cannot decrypt {0}: wrong key, wrong context, or altered data")]
    Decrypt(&'static str),
}
