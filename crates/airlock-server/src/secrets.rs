//! The server key in dev mode: generated once into the data directory, owner-only.
//!
//! Production takes the key from configuration and refuses to start without it; in dev mode
//! Airlock creates `<data_dir>/server.key` on first start and reuses it, so keys and
//! sessions survive restarts with no configuration at all.

use std::io::Write;
use std::path::Path;

use secrecy::SecretSlice;

use crate::config::{Config, MIN_SECRET_BYTES};

/// The server key to use: configured, or read from (created in) the data directory.
pub fn server_key(config: &Config) -> std::io::Result<SecretSlice<u8>> {
    if let Some(bytes) = config.server_key_bytes() {
        return Ok(bytes.into());
    }
    let path = config.data_dir.join("server.key");
    load_or_create(&path)
}

fn load_or_create(path: &Path) -> std::io::Result<SecretSlice<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim().as_bytes().to_vec();
            if key.len() < MIN_SECRET_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("`{}` holds fewer than {MIN_SECRET_BYTES} bytes", path.display()),
                ));
            }
            Ok(key.into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let key = airlock_crypto::random_base64url(48);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path)?;
            file.write_all(key.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok(key.into_bytes().into())
        }
        Err(e) => Err(e),
    }
}
