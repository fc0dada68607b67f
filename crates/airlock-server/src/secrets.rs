//! Server secrets and opening the store with them.
//!
//! Production takes the server key from configuration and the key-encryption key from the
//! configured provider, and refuses to start without them; in dev mode Airlock creates
//! `<data_dir>/server.key` and `<data_dir>/keys/kek.key` (owner-only) on first start and
//! reuses them, so keys, sessions and sealed data survive restarts with no configuration.

use std::io::Write;
use std::path::Path;

use airlock_crypto::KeyedHasher;
use airlock_store::{AuditOptions, SessionPolicy, Store, StoreOptions};
use airlock_vault::{ConnectOptions, Keyring};
use anyhow::Context as _;
use secrecy::SecretSlice;

use crate::config::{Config, MIN_SECRET_BYTES, Mode};

/// Opens the data directory with the configured secrets: the one way both the server and
/// the command line reach the store.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let key = server_key(config).with_context(|| {
        format!("cannot read or create the server key under `{}`", config.data_dir.display())
    })?;
    let connect =
        ConnectOptions { create_missing_file: config.mode == Mode::Dev, ..ConnectOptions::default() };
    let current = airlock_vault::connect(&config.key_provider, &connect)
        .await
        .context("cannot load the key-encryption key")?;
    let mut previous = Vec::new();
    for spec in &config.previous_key_providers {
        let no_create = ConnectOptions::default();
        previous.push(
            airlock_vault::connect(spec, &no_create)
                .await
                .context("cannot load a previous key-encryption key")?,
        );
    }
    Store::open(
        StoreOptions {
            keyring: Keyring::new(current, previous),
            connect: ConnectOptions::default(),
            key_cache_ttl: config.key_cache_ttl,
            audit: AuditOptions {
                checkpoint_every: config.checkpoint_every,
                checkpoint_interval: config.checkpoint_interval,
            },
            data_dir: config.data_dir.clone(),
            sessions: SessionPolicy { lifetime: config.session_lifetime, idle_timeout: config.session_idle },
            log_statements: config.log_sql,
        },
        KeyedHasher::new(key),
    )
    .await
    .with_context(|| format!("cannot open the data directory `{}`", config.data_dir.display()))
}

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
