//! Per-tenant databases: one SQLite file per tenant, opened lazily and checked on open.

use std::collections::HashMap;
use std::path::PathBuf;

use airlock_types::{TenantId, Timestamp};
use sqlx::Row;
use tokio::sync::Mutex;

use crate::migrations::Set;
use crate::{Database, StoreError};

/// A tenant's own database. Only [`crate::Store::tenant_db`] hands one out, for a
/// [`crate::TenantScope`].
#[derive(Debug, Clone)]
pub struct TenantDb {
    tenant: TenantId,
    db: Database,
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

/// The open tenant databases, keyed by tenant.
pub(crate) struct TenantDatabases {
    dir: PathBuf,
    log_statements: bool,
    open: Mutex<HashMap<TenantId, Database>>,
}

/// Connections per tenant database. Tenants are many and mostly idle, so each pool is small
/// and its idle connections close themselves.
const TENANT_POOL_SIZE: u32 = 4;

impl TenantDatabases {
    pub(crate) fn new(dir: PathBuf, log_statements: bool) -> Self {
        Self { dir, log_statements, open: Mutex::new(HashMap::new()) }
    }

    fn path(&self, tenant: &TenantId) -> PathBuf {
        // The id was parsed as `ten_` + 32 hex digits, so it is a safe file name.
        self.dir.join(format!("{tenant}.sqlite"))
    }

    /// Creates and migrates a new tenant's database, recording its owner.
    pub(crate) async fn create(&self, tenant: &TenantId) -> Result<TenantDb, StoreError> {
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
        self.open.lock().await.insert(tenant.clone(), db.clone());
        Ok(TenantDb { tenant: tenant.clone(), db })
    }

    /// Opens an existing tenant's database, refusing one that records another owner.
    pub(crate) async fn open(&self, tenant: &TenantId) -> Result<TenantDb, StoreError> {
        let mut open = self.open.lock().await;
        if let Some(db) = open.get(tenant) {
            return Ok(TenantDb { tenant: tenant.clone(), db: db.clone() });
        }
        let path = self.path(tenant);
        if !path.exists() {
            return Err(StoreError::NotFound { what: format!("database of tenant `{tenant}`") });
        }
        let db = Database::open_sqlite(&path, self.log_statements, TENANT_POOL_SIZE).await?;
        db.migrate(Set::Tenant).await?;
        Self::check_owner(&db, tenant, &path).await?;
        open.insert(tenant.clone(), db.clone());
        Ok(TenantDb { tenant: tenant.clone(), db })
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

    pub(crate) async fn close_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().await);
        for db in open.values() {
            db.close().await;
        }
    }
}
