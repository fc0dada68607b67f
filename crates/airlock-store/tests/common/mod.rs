//! Setup shared by the store's suites: a store on a fresh data directory, and tenants in it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_crypto::KeyedHasher;
use airlock_store::{AuditOptions, Principal, SessionPolicy, Store, StoreOptions, TenantScope};
use airlock_types::TenantSlug;
use airlock_vault::provider::LocalKek;
use airlock_vault::{ConnectOptions, Keyring};

/// The server key every suite's store uses.
pub const SERVER_KEY: &[u8] = b"test server key, 32 bytes or more, not for production";

/// Options for a store in `dir`, with its key file created there, a checkpoint every
/// `checkpoint_every` entries, and sessions that idle out after `idle`.
pub fn options(dir: &Path, checkpoint_every: u64, idle: Duration) -> StoreOptions {
    StoreOptions {
        keyring: Keyring::new(
            Arc::new(LocalKek::from_file(&dir.join("keys/kek.key"), true).unwrap()),
            vec![],
        ),
        connect: ConnectOptions::default(),
        key_cache_ttl: Duration::from_secs(60),
        audit: AuditOptions { checkpoint_every, checkpoint_interval: Duration::from_secs(3600) },
        data_dir: dir.to_path_buf(),
        sessions: SessionPolicy { lifetime: Duration::from_secs(7200), idle_timeout: idle },
        log_statements: false,
    }
}

/// A store in `dir` (see [`options`]).
pub async fn open_store(dir: &Path, checkpoint_every: u64, idle: Duration) -> Store {
    Store::open(options(dir, checkpoint_every, idle), KeyedHasher::new(SERVER_KEY.to_vec().into()))
        .await
        .unwrap()
}

/// Creates tenant `slug` as the local operator and returns the operator's scope over it.
pub async fn tenant(store: &Store, slug: &str) -> TenantScope {
    let operator = Principal::local_operator();
    let slug = TenantSlug::parse(slug).unwrap();
    store.create_tenant(&operator, &slug, "").await.unwrap();
    store.operator_scope(&operator, &slug).await.unwrap()
}
