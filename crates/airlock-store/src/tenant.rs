//! Per-tenant databases: one SQLite file per tenant, opened lazily, checked on open, each
//! with its audit writer.

use std::collections::HashMap;
use std::path::PathBuf;

use airlock_audit::NoteSigner;
use airlock_crypto::SigningKey;
use airlock_types::{TenantId, Timestamp};
use airlock_vault::{Context, DekSet};
use secrecy::{ExposeSecret, SecretBox};
use sqlx::Row;
use tokio::sync::Mutex;

use crate::audit::{AuditOptions, AuditWriter};
use crate::migrations::Set;
use crate::{Database, StoreError};

/// A tenant's own database. Only [`crate::Store::tenant_db`] hands one out, for a
/// [`crate::TenantScope`].
#[derive(Debug, Clone)]
pub struct TenantDb {
    tenant: TenantId,
    db: Database,
    pub(crate) audit: AuditWriter,
}

impl TenantDb {
    /// The tenant this database belongs to.
    #[must_use]
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    /// The underlying database.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// When the tenant's database was created.
    pub async fn created_at(&self) -> Result<Timestamp, StoreError> {
        let row = sqlx::query("SELECT created_at FROM tenant_identity WHERE singleton = 1")
            .fetch_one(self.db.pool())
            .await?;
        Ok(Timestamp::from_millis(row.try_get("created_at")?))
    }
}

/// The audit log's origin (and its signing key's name) for a tenant.
#[must_use]
pub fn origin(tenant: &TenantId) -> String {
    format!("airlock/{tenant}")
}

/// Where a signing key's sealed seed lives.
fn seed_context(version: &str) -> Context<'_> {
    Context { table: "signing_keys", column: "sealed_seed", row: version }
}

/// Reads the current signing key of the log `origin` names, creating the first one when
/// there is none.
pub(crate) async fn current_signer(
    db: &Database,
    origin: &str,
    dek: &DekSet,
) -> Result<NoteSigner, StoreError> {
    let row = sqlx::query(
        "SELECT version, sealed_seed FROM signing_keys WHERE retired_at IS NULL ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await?;
    let key = match row {
        Some(row) => {
            let version: i64 = row.try_get("version")?;
            let sealed: Vec<u8> = row.try_get("sealed_seed")?;
            let seed = dek.open(seed_context(&version.to_string()), &sealed)?;
            let seed = <[u8; 32]>::try_from(seed.expose_secret())
                .map_err(|_| StoreError::corrupt("signing_keys", "the seed is not 32 bytes"))?;
            SigningKey::from_seed(&SecretBox::new(Box::new(seed)))
        }
        None => insert_signing_key(db, origin, dek, 1).await?,
    };
    NoteSigner::new(origin, key).map_err(|e| StoreError::Audit(e.to_string()))
}

/// Generates and stores signing key `version`.
pub(crate) async fn insert_signing_key(
    db: &Database,
    origin: &str,
    dek: &DekSet,
    version: i64,
) -> Result<SigningKey, StoreError> {
    let key = SigningKey::generate();
    let sealed = dek.seal(seed_context(&version.to_string()), key.seed().expose_secret());
    sqlx::query(
        "INSERT INTO signing_keys (version, name, public_key, sealed_seed, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(version)
    .bind(origin)
    .bind(key.verifying_key().to_bytes().to_vec())
    .bind(sealed)
    .bind(Timestamp::now().as_millis())
    .execute(db.pool())
    .await?;
    Ok(key)
}

/// The open tenant databases, keyed by tenant.
pub(crate) struct TenantDatabases {
    dir: PathBuf,
    log_statements: bool,
    audit: AuditOptions,
    open: Mutex<HashMap<TenantId, TenantDb>>,
}

/// Connections per tenant database. Tenants are many and mostly idle, so each pool is small
/// and its idle connections close themselves.
const TENANT_POOL_SIZE: u32 = 4;

impl TenantDatabases {
    pub(crate) fn new(dir: PathBuf, log_statements: bool, audit: AuditOptions) -> Self {
        Self { dir, log_statements, audit, open: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn path(&self, tenant: &TenantId) -> PathBuf {
        // The id was parsed as `ten_` + 32 hex digits, so it is a safe file name.
        self.dir.join(format!("{tenant}.sqlite"))
    }

    /// Creates and migrates a new tenant's database, recording its owner. The audit writer
    /// starts when the database is first opened.
    pub(crate) async fn create(&self, tenant: &TenantId) -> Result<(), StoreError> {
        let path = self.path(tenant);
        let db = Database::open_sqlite(&path, self.log_statements, TENANT_POOL_SIZE).await?;
        db.migrate(Set::Tenant).await?;
        sqlx::query(
            "INSERT INTO tenant_identity (singleton, tenant_id, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(Timestamp::now().as_millis())
        .execute(db.pool())
        .await?;
        Self::check_owner(&db, tenant, &path).await?;
        db.close().await;
        Ok(())
    }

    /// Opens an existing tenant's database, refusing one that records another owner, and
    /// starts its audit writer.
    pub(crate) async fn open(&self, tenant: &TenantId, dek: &DekSet) -> Result<TenantDb, StoreError> {
        let mut open = self.open.lock().await;
        if let Some(handle) = open.get(tenant) {
            return Ok(handle.clone());
        }
        let path = self.path(tenant);
        if !path.exists() {
            return Err(StoreError::NotFound { what: format!("database of tenant `{tenant}`") });
        }
        let db = Database::open_sqlite(&path, self.log_statements, TENANT_POOL_SIZE).await?;
        db.migrate(Set::Tenant).await?;
        Self::check_owner(&db, tenant, &path).await?;
        let signer = current_signer(&db, &origin(tenant), dek).await?;
        let audit = AuditWriter::start(db.clone(), origin(tenant), signer, self.audit).await?;
        let handle = TenantDb { tenant: tenant.clone(), db, audit };
        open.insert(tenant.clone(), handle.clone());
        Ok(handle)
    }

    async fn check_owner(db: &Database, tenant: &TenantId, path: &std::path::Path) -> Result<(), StoreError> {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT tenant_id FROM tenant_identity WHERE singleton = 1")
                .fetch_optional(db.pool())
                .await?;
        if owner.as_deref() == Some(tenant.as_str()) {
            Ok(())
        } else {
            db.close().await;
            Err(StoreError::TenantMismatch { path: path.to_path_buf() })
        }
    }

    /// Closes a tenant's database, if open, and forgets it.
    pub(crate) async fn forget(&self, tenant: &TenantId) {
        let handle = self.open.lock().await.remove(tenant);
        if let Some(handle) = handle {
            handle.db.close().await;
        }
    }

    /// Removes a tenant's database files (the database, its write-ahead log and shared
    /// memory). Returns whether the database file existed.
    pub(crate) fn remove_files(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let path = self.path(tenant);
        let existed = path.exists();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::DataDir { path: PathBuf::from(file), source }),
            }
        }
        Ok(existed)
    }

    pub(crate) async fn close_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().await);
        for handle in open.values() {
            handle.db.close().await;
        }
    }
}
