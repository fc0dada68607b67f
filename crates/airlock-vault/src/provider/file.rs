//! A KEK held in a local file: the embedded default.

use std::path::Path;

use airlock_crypto::{AeadError, AeadKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox};

use super::{BoxFuture, KekProvider, WrapContext};
use crate::VaultError;

/// A KEK held in this process's memory, read from a file (or, see `Env`, a variable).
pub struct LocalKek {
    id: String,
    key: AeadKey,
}

impl std::fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalKek({})", self.id)
    }
}

impl LocalKek {
    /// A KEK from its bytes; `kind` prefixes its id (`file`, `env`).
    #[must_use]
    pub fn from_bytes(kind: &str, key: SecretBox<[u8; 32]>) -> Self {
        // The id is a fingerprint: it names the key without revealing anything about it.
        let digest = airlock_crypto::sha256_parts(&[b"airlock kek id\0", key.expose_secret()]);
        let id = format!("{kind}:{}", airlock_crypto::to_hex(digest.as_bytes().get(..8).unwrap_or_default()));
        Self { id, key: AeadKey::from_bytes(key) }
    }

    /// A KEK from base64 text; `what` names where it came from, for errors.
    pub fn from_base64(kind: &str, text: &str, what: &str) -> Result<Self, VaultError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| VaultError::BadKey(what.to_owned()))?;
        let key = <[u8; 32]>::try_from(bytes).map_err(|_| VaultError::BadKey(what.to_owned()))?;
        Ok(Self::from_bytes(kind, SecretBox::new(Box::new(key))))
    }

    /// Reads the KEK from a key file, creating one with owner-only permissions when it is
    /// missing and `create` is set. A file readable by group or others is refused.
    pub fn from_file(path: &Path, create: bool) -> Result<Self, VaultError> {
        let io = |source| VaultError::KeyFile { path: path.to_path_buf(), source };
        if !path.exists() && create {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            write_owner_only(path, format!("{}\n", new_key_base64()).as_bytes()).map_err(io)?;
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
        Self::from_base64("file", &text, &format!("key file `{}`", path.display()))
    }
}

/// A new random 256-bit key in base64, as key files hold it.
#[must_use]
pub fn new_key_base64() -> String {
    STANDARD.encode(airlock_crypto::random_array::<32>())
}

/// Writes a new file readable by its owner only; refuses to replace an existing one.
pub fn write_owner_only(path: &Path, contents: &[u8]) -> std::io::Result<()> {
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

impl KekProvider for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        dek: &'a SecretBox<[u8; 32]>,
    ) -> BoxFuture<'a, Result<Vec<u8>, VaultError>> {
        let wrapped = self.key.seal(&at.aad(), dek.expose_secret());
        Box::pin(async move { Ok(wrapped) })
    }

    fn unwrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<SecretBox<[u8; 32]>, VaultError>> {
        let opened = self
            .key
            .open(&at.aad(), wrapped)
            .map_err(|AeadError| VaultError::Decrypt("the data key"))
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).map_err(|_| VaultError::Decrypt("the data key")))
            .map(|key| SecretBox::new(Box::new(key)));
        Box::pin(async move { opened })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dek, Keyring};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_wrapped_dek_unwraps_only_for_its_owner_version_and_kek() {
        let dir = tempfile::tempdir().unwrap();
        let kek: Arc<dyn KekProvider> =
            Arc::new(LocalKek::from_file(&dir.path().join("keys/kek.key"), true).unwrap());
        let ring = Keyring::new(kek.clone(), vec![]);
        let dek = Dek::generate("ten_a", 1);
        let stored = ring.wrap(&dek).await.unwrap();
        assert_eq!(stored.kek_id, kek.id());
        let again = ring.unwrap("ten_a", 1, &stored).await.unwrap();
        assert_eq!(again.bytes().expose_secret(), dek.bytes().expose_secret());
        assert!(ring.unwrap("ten_b", 1, &stored).await.is_err());
        assert!(ring.unwrap("ten_a", 2, &stored).await.is_err());
        // Another KEK is not even tried for a DEK it did not wrap.
        let other: Arc<dyn KekProvider> =
            Arc::new(LocalKek::from_file(&dir.path().join("other.key"), true).unwrap());
        assert!(matches!(
            Keyring::new(other.clone(), vec![]).unwrap("ten_a", 1, &stored).await,
            Err(VaultError::UnknownKek(_))
        ));
        // …but a keyring that lists it as previous unwraps it, and re-wraps with the new one.
        let rotated = Keyring::new(other.clone(), vec![kek.clone()]);
        let dek = rotated.unwrap("ten_a", 1, &stored).await.unwrap();
        assert_eq!(rotated.wrap(&dek).await.unwrap().kek_id, other.id());
        // The same file gives the same KEK and id.
        let reread = LocalKek::from_file(&dir.path().join("keys/kek.key"), false).unwrap();
        assert_eq!(reread.id(), kek.id());
        // A forged id cannot make another key unwrap it.
        let forged = crate::provider::WrappedDek { kek_id: other.id().to_owned(), ..stored };
        assert!(matches!(rotated.unwrap("ten_a", 1, &forged).await, Err(VaultError::Decrypt(_))));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_owner_only_and_readable_ones_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        LocalKek::from_file(&path, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(LocalKek::from_file(&path, false), Err(VaultError::KeyFilePermissions(_))));
        assert!(matches!(
            LocalKek::from_file(&dir.path().join("missing.key"), false),
            Err(VaultError::KeyFile { .. })
        ));
        std::fs::write(dir.path().join("bad.key"), "short").unwrap();
        std::fs::set_permissions(dir.path().join("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            LocalKek::from_file(&dir.path().join("bad.key"), false),
            Err(VaultError::BadKey(_))
        ));
    }
}
