//! The key hierarchy: a key-encryption key (KEK) from a provider wraps one data-encryption
//! key (DEK) per tenant; the DEK seals the tenant's sensitive values, each bound by
//! associated data to its tenant, table, column and row, so a ciphertext copied anywhere
//! else fails to open.
//!
//! The provider so far is a local key file (owner-only, created on first use in dev mode);
//! KMS providers will implement the same wrap/unwrap. All primitives come from
//! `airlock-crypto`.

use std::path::{Path, PathBuf};

use airlock_crypto::{AeadError, AeadKey};
use airlock_types::TenantId;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox};

/// A key-hierarchy failure.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key file could not be read or created.
    #[error("key file `{path}`: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The key file does not hold a 32-byte key in base64.
    #[error("key file `{0}` does not hold a base64 256-bit key")]
    BadKeyFile(PathBuf),
    /// The key file can be read by other users.
    #[error("key file `{0}` is readable by group or others; make it owner-only (chmod 600)")]
    KeyFilePermissions(PathBuf),
    /// A wrapped key or sealed value did not open: wrong key, wrong place, or altered.
    #[error("cannot decrypt {0}: wrong key, wrong context, or altered data")]
    Decrypt(&'static str),
}

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

/// The key-encryption key.
pub struct Kek {
    key: AeadKey,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

fn dek_aad(tenant: &TenantId) -> Vec<u8> {
    format!("airlock/v1\0dek\0{tenant}").into_bytes()
}

impl Kek {
    /// Reads the KEK from a key file, creating one with owner-only permissions when it is
    /// missing and `create` is set. A file readable by group or others is refused.
    pub fn from_file(path: &Path, create: bool) -> Result<Self, VaultError> {
        let io = |source| VaultError::KeyFile { path: path.to_path_buf(), source };
        if !path.exists() && create {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let key = airlock_crypto::random_array::<32>();
            write_owner_only(path, format!("{}\n", STANDARD.encode(key)).as_bytes()).map_err(io)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(VaultError::KeyFilePermissions(path.to_path_buf()));
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let bytes = STANDARD.decode(text.trim()).map_err(|_| VaultError::BadKeyFile(path.to_path_buf()))?;
        let key = <[u8; 32]>::try_from(bytes).map_err(|_| VaultError::BadKeyFile(path.to_path_buf()))?;
        Ok(Self { key: AeadKey::from_bytes(SecretBox::new(Box::new(key))) })
    }

    /// Wraps a tenant's DEK for storage.
    #[must_use]
    pub fn wrap(&self, tenant: &TenantId, dek: &Dek) -> Vec<u8> {
        self.key.seal(&dek_aad(tenant), dek.key.bytes().expose_secret())
    }

    /// Unwraps a tenant's stored DEK.
    pub fn unwrap(&self, tenant: &TenantId, wrapped: &[u8]) -> Result<Dek, VaultError> {
        let bytes = self
            .key
            .open(&dek_aad(tenant), wrapped)
            .map_err(|AeadError| VaultError::Decrypt("the tenant key"))?;
        let key = <[u8; 32]>::try_from(bytes).map_err(|_| VaultError::Decrypt("the tenant key"))?;
        Ok(Dek { tenant: tenant.clone(), key: AeadKey::from_bytes(SecretBox::new(Box::new(key))) })
    }
}

fn write_owner_only(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A tenant's data-encryption key.
pub struct Dek {
    tenant: TenantId,
    key: AeadKey,
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dek({}, ..)", self.tenant)
    }
}

impl Dek {
    /// A new DEK for `tenant`.
    #[must_use]
    pub fn generate(tenant: &TenantId) -> Self {
        Self { tenant: tenant.clone(), key: AeadKey::generate() }
    }

    fn aad(&self, at: Context<'_>) -> Vec<u8> {
        format!("airlock/v1\0{}\0{}\0{}\0{}", self.tenant, at.table, at.column, at.row).into_bytes()
    }

    /// Seals a value stored at `at`.
    #[must_use]
    pub fn seal(&self, at: Context<'_>, plaintext: &[u8]) -> Vec<u8> {
        self.key.seal(&self.aad(at), plaintext)
    }

    /// Opens a value sealed at `at`.
    pub fn open(&self, at: Context<'_>, sealed: &[u8]) -> Result<SecretBox<[u8]>, VaultError> {
        self.key
            .open(&self.aad(at), sealed)
            .map(|bytes| SecretBox::new(bytes.into_boxed_slice()))
            .map_err(|AeadError| VaultError::Decrypt("a sealed value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Context<'static> = Context { table: "signing_keys", column: "sealed_seed", row: "1" };

    #[test]
    fn a_value_opens_only_where_it_was_sealed() {
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let dek = Dek::generate(&a);
        let sealed = dek.seal(AT, b"seed");
        assert_eq!(dek.open(AT, &sealed).unwrap().expose_secret(), b"seed");
        let other_row = Context { row: "2", ..AT };
        assert!(dek.open(other_row, &sealed).is_err());
        let other_column = Context { column: "public_key", ..AT };
        assert!(dek.open(other_column, &sealed).is_err());
        assert!(Dek::generate(&b).open(AT, &sealed).is_err());
    }

    #[test]
    fn a_wrapped_dek_unwraps_only_for_its_tenant_and_kek() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::from_file(&dir.path().join("keys/kek.key"), true).unwrap();
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let dek = Dek::generate(&a);
        let wrapped = kek.wrap(&a, &dek);
        let sealed = dek.seal(AT, b"seed");
        let again = kek.unwrap(&a, &wrapped).unwrap();
        assert_eq!(again.open(AT, &sealed).unwrap().expose_secret(), b"seed");
        assert!(kek.unwrap(&b, &wrapped).is_err());
        let other = Kek::from_file(&dir.path().join("other.key"), true).unwrap();
        assert!(other.unwrap(&a, &wrapped).is_err());
        // The same file gives the same KEK.
        let reread = Kek::from_file(&dir.path().join("keys/kek.key"), false).unwrap();
        assert!(reread.unwrap(&a, &wrapped).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_owner_only_and_readable_ones_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        Kek::from_file(&path, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Kek::from_file(&path, false), Err(VaultError::KeyFilePermissions(_))));
        assert!(matches!(
            Kek::from_file(&dir.path().join("missing.key"), false),
            Err(VaultError::KeyFile { .. })
        ));
        std::fs::write(dir.path().join("bad.key"), "short").unwrap();
        std::fs::set_permissions(dir.path().join("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(Kek::from_file(&dir.path().join("bad.key"), false), Err(VaultError::BadKeyFile(_))));
    }
}
