//! Data-encryption keys and the values they seal.
//!
//! A sealed value is `version (u32, big-endian) ‖ nonce ‖ ciphertext ‖ tag`. The version
//! says which of its owner's DEKs sealed it, so rows sealed before and after a rotation
//! coexist until the rotation has re-encrypted them all. The associated data binds the
//! value to its owner, DEK version, table, column and row.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_crypto::{AeadError, AeadKey};
use secrecy::SecretBox;

use crate::VaultError;

/// Where a sealed value lives; its associated data.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The table.
    pub table: &'a str,
    /// The column.
    pub column: &'a str,
    /// The row's key.
    pub row: &'a str,
}

const VERSION_BYTES: usize = 4;

/// The DEK version that sealed `sealed`, read from its header.
#[must_use]
pub fn sealed_version(sealed: &[u8]) -> Option<u32> {
    let header: [u8; VERSION_BYTES] = sealed.get(..VERSION_BYTES)?.try_into().ok()?;
    Some(u32::from_be_bytes(header))
}

/// One data-encryption key of one owner.
pub struct Dek {
    owner: String,
    version: u32,
    key: AeadKey,
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dek({} v{}, ..)", self.owner, self.version)
    }
}

impl Dek {
    /// A new random DEK.
    #[must_use]
    pub fn generate(owner: &str, version: u32) -> Self {
        Self { owner: owner.to_owned(), version, key: AeadKey::generate() }
    }

    /// A DEK from its unwrapped bytes.
    #[must_use]
    pub fn from_bytes(owner: &str, version: u32, bytes: SecretBox<[u8; 32]>) -> Self {
        Self { owner: owner.to_owned(), version, key: AeadKey::from_bytes(bytes) }
    }

    /// The key's bytes, for wrapping.
    #[must_use]
    pub fn bytes(&self) -> &SecretBox<[u8; 32]> {
        self.key.bytes()
    }

    /// Its owner: a tenant id or `platform`.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Its version.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    fn aad(&self, at: Context<'_>) -> Vec<u8> {
        format!("airlock/v2\0{}\0{}\0{}\0{}\0{}", self.owner, self.version, at.table, at.column, at.row)
            .into_bytes()
    }

    /// Seals a value stored at `at`.
    #[must_use]
    pub fn seal(&self, at: Context<'_>, plaintext: &[u8]) -> Vec<u8> {
        let mut out = self.version.to_be_bytes().to_vec();
        out.extend_from_slice(&self.key.seal(&self.aad(at), plaintext));
        out
    }

    /// Opens a value this key sealed at `at`.
    pub fn open(&self, at: Context<'_>, sealed: &[u8]) -> Result<SecretBox<[u8]>, VaultError> {
        if sealed_version(sealed) != Some(self.version) {
            return Err(VaultError::Decrypt("a sealed value"));
        }
        let body = sealed.get(VERSION_BYTES..).unwrap_or_default();
        self.key
            .open(&self.aad(at), body)
            .map(|bytes| SecretBox::new(bytes.into_boxed_slice()))
            .map_err(|AeadError| VaultError::Decrypt("a sealed value"))
    }
}

/// Every DEK an owner holds: the current one seals, any of them opens what it sealed.
#[derive(Debug, Clone)]
pub struct DekSet {
    current: Arc<Dek>,
    all: BTreeMap<u32, Arc<Dek>>,
}

impl DekSet {
    /// A set from its keys; the highest version is current. `None` when `keys` is empty.
    #[must_use]
    pub fn new(keys: impl IntoIterator<Item = Dek>) -> Option<Self> {
        let all: BTreeMap<u32, Arc<Dek>> = keys.into_iter().map(|k| (k.version, Arc::new(k))).collect();
        let current = all.values().next_back()?.clone();
        Some(Self { current, all })
    }

    /// The key new values are sealed with.
    #[must_use]
    pub fn current(&self) -> &Arc<Dek> {
        &self.current
    }

    /// Every version held, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.all.keys().copied()
    }

    /// Seals with the current key.
    #[must_use]
    pub fn seal(&self, at: Context<'_>, plaintext: &[u8]) -> Vec<u8> {
        self.current.seal(at, plaintext)
    }

    /// Opens with whichever key sealed the value.
    pub fn open(&self, at: Context<'_>, sealed: &[u8]) -> Result<SecretBox<[u8]>, VaultError> {
        let dek = sealed_version(sealed)
            .and_then(|version| self.all.get(&version))
            .ok_or(VaultError::Decrypt("a sealed value (its data key is gone)"))?;
        dek.open(at, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    const AT: Context<'static> = Context { table: "signing_keys", column: "sealed_seed", row: "1" };

    #[test]
    fn a_value_opens_only_where_it_was_sealed() {
        let dek = Dek::generate("ten_a", 1);
        let sealed = dek.seal(AT, b"seed");
        assert_eq!(dek.open(AT, &sealed).unwrap().expose_secret(), b"seed");
        assert!(dek.open(Context { row: "2", ..AT }, &sealed).is_err());
        assert!(dek.open(Context { column: "public_key", ..AT }, &sealed).is_err());
        assert!(dek.open(Context { table: "credentials", ..AT }, &sealed).is_err());
        assert!(Dek::generate("ten_b", 1).open(AT, &sealed).is_err());
        // The same key bytes under another owner or version do not open it either.
        let bytes = SecretBox::new(Box::new(*dek.bytes().expose_secret()));
        assert!(Dek::from_bytes("ten_b", 1, bytes).open(AT, &sealed).is_err());
        let bytes = SecretBox::new(Box::new(*dek.bytes().expose_secret()));
        let mut relabelled = sealed.clone();
        relabelled[..4].copy_from_slice(&2u32.to_be_bytes());
        assert!(Dek::from_bytes("ten_a", 2, bytes).open(AT, &relabelled).is_err());
    }

    #[test]
    fn a_set_opens_every_version_and_seals_with_the_newest() {
        let old = Dek::generate("ten_a", 1);
        let sealed_old = old.seal(AT, b"old");
        let set = DekSet::new([old, Dek::generate("ten_a", 2)]).unwrap();
        assert_eq!(set.current().version(), 2);
        let sealed_new = set.seal(AT, b"new");
        assert_eq!(sealed_version(&sealed_new), Some(2));
        assert_eq!(set.open(AT, &sealed_old).unwrap().expose_secret(), b"old");
        assert_eq!(set.open(AT, &sealed_new).unwrap().expose_secret(), b"new");
        let without_old = DekSet::new([Dek::generate("ten_a", 2)]).unwrap();
        assert!(without_old.open(AT, &sealed_old).is_err());
        assert!(set.open(AT, b"").is_err());
        assert!(DekSet::new([]).is_none());
    }
}
