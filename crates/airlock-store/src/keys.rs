//! The store's side of the key hierarchy: each owner's data-encryption keys, unwrapped
//! through the owner's keyring and kept in memory for a short time; a tenant's own
//! key-encryption key (BYOK); and the registry of every sealed column.
//!
//! Unwrapped keys are cached per owner for `ttl`, then unwrapped again. That bounds how long
//! a revoked key-encryption key keeps working here (a tenant that revokes its KMS key is cut
//! off within `ttl`), and how long another process (a rotation run from the command line)
//! takes to see a new data-key version. Each owner has its own slot, so one tenant's slow or
//! unreachable KMS never holds up another tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airlock_types::{TenantId, Timestamp};
use airlock_vault::{ConnectOptions, Dek, DekSet, Keyring, ProviderSpec, VaultError, WrappedDek};
use sqlx::Row;

use crate::{Database, StoreError};

/// The owner name of the platform's own keys (the control plane's audit signing key).
pub(crate) const PLATFORM: &str = "platform";

/// A column holding values sealed with its database owner's DEK: the table, the column, and
/// the column whose text value is the row part of the associated data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SealedColumn {
    pub(crate) table: &'static str,
    pub(crate) column: &'static str,
    /// Statements over the column, written out so every statement stays static text.
    pub(crate) select_stale: &'static str,
    pub(crate) count_stale: &'static str,
    pub(crate) update: &'static str,
}

/// Declares a sealed column and the statements a rotation runs over it.
macro_rules! sealed_column {
    ($table:literal, $column:literal, $key:literal) => {
        SealedColumn {
            table: $table,
            column: $column,
            // Rows whose value was sealed by another version than `$2`, after rowid `$1`.
            select_stale: concat!(
                "SELECT rowid AS rid, CAST(",
                $key,
                " AS TEXT) AS row_key, ",
                $column,
                " AS sealed FROM ",
                $table,
                " WHERE rowid > $1 AND ",
                $column,
                " IS NOT NULL AND substr(",
                $column,
                ", 1, 4) != $2",
                " ORDER BY rowid LIMIT $3"
            ),
            count_stale: concat!(
                "SELECT COUNT(*) FROM ",
                $table,
                " WHERE ",
                $column,
                " IS NOT NULL AND substr(",
                $column,
                ", 1, 4) != $1"
            ),
            // Compare-and-set: a value changed since it was read is left for the next pass.
            update: concat!(
                "UPDATE ",
                $table,
                " SET ",
                $column,
                " = $1 WHERE rowid = $2 AND ",
                $column,
                " = $3"
            ),
        }
    };
}

/// Every sealed column of a tenant's database. A new sealed column must be listed here, or a
/// rotation would leave it under a key it then destroys; `every_sealed_column_is_listed`
/// checks the schema for BLOB columns named `sealed…` or `…_sealed`.
pub(crate) const TENANT_SEALED: &[SealedColumn] = &[
    sealed_column!("signing_keys", "sealed_seed", "version"),
    sealed_column!("credentials", "sealed", "id"),
    sealed_column!("tokenization_keys", "sealed", "id"),
    sealed_column!("token_vault", "sealed", "token"),
    sealed_column!("model_routes", "key_sealed", "id"),
];

/// Every sealed column of the control plane (sealed with the platform's DEK).
pub(crate) const PLATFORM_SEALED: &[SealedColumn] =
    &[sealed_column!("signing_keys", "sealed_seed", "version")];

/// How a tenant's DEKs are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKek {
    /// The tenant's own provider, when it brought one; `None` for the platform's KEK.
    pub own: Option<ProviderSpec>,
    /// The id of the KEK that wraps the tenant's keys now.
    pub kek_id: String,
}

#[derive(Default)]
struct Slot {
    loaded: Option<(Arc<DekSet>, Instant)>,
    failed: Option<(String, Instant)>,
}

/// A failed unwrap is retried at most this often, so a tenant whose KMS is down does not
/// send every request to it.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(2);

/// The owners' keys, as this process sees them.
pub(crate) struct Keys {
    keyring: Keyring,
    connect: ConnectOptions,
    ttl: Duration,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

fn describe(owner: &str) -> String {
    if owner == PLATFORM { "the platform".to_owned() } else { format!("tenant `{owner}`") }
}

/// Maps a failure to unwrap an owner's key to the store's error.
fn unavailable(owner: &str, error: &VaultError) -> StoreError {
    StoreError::KeyUnavailable { owner: describe(owner), reason: error.to_string() }
}

impl Keys {
    pub(crate) fn new(keyring: Keyring, connect: ConnectOptions, ttl: Duration) -> Self {
        Self { keyring, connect, ttl, slots: Mutex::new(HashMap::new()) }
    }

    fn slot(&self, owner: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(owner.to_owned()).or_default().clone()
    }

    /// Forgets an owner's cached keys, so the next use unwraps them again.
    pub(crate) fn forget(&self, owner: &str) {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).remove(owner);
    }

    /// The platform's keyring: wraps with the configured KEK.
    pub(crate) fn platform_keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The keyring an owner's DEKs are wrapped with: the tenant's own KEK when it has one.
    pub(crate) async fn keyring(&self, control: &Database, owner: &str) -> Result<Keyring, StoreError> {
        match tenant_kek_spec(control, owner).await? {
            Some(spec) => {
                let provider =
                    airlock_vault::connect(&spec, &self.connect).await.map_err(|e| unavailable(owner, &e))?;
                Ok(self.keyring.with_current(provider))
            }
            None => Ok(self.keyring.clone()),
        }
    }

    /// Connects a provider a tenant proposes as its own.
    pub(crate) async fn connect(&self, spec: &ProviderSpec) -> Result<Keyring, VaultError> {
        Ok(self.keyring.with_current(airlock_vault::connect(spec, &self.connect).await?))
    }

    /// An owner's DEKs, from the cache while fresh. The platform's first key is created on
    /// first use; a tenant's is created with the tenant, so a tenant without keys has been
    /// deleted.
    pub(crate) async fn dek_set(&self, control: &Database, owner: &str) -> Result<Arc<DekSet>, StoreError> {
        let slot = self.slot(owner);
        let mut slot = slot.lock().await;
        if let Some((set, at)) = &slot.loaded
            && at.elapsed() < self.ttl
        {
            return Ok(set.clone());
        }
        if let Some((reason, at)) = &slot.failed
            && at.elapsed() < RETRY_FAILED_AFTER.min(self.ttl)
        {
            return Err(StoreError::KeyUnavailable { owner: describe(owner), reason: reason.clone() });
        }
        match self.load(control, owner).await {
            Ok(set) => {
                let set = Arc::new(set);
                *slot = Slot { loaded: Some((set.clone(), Instant::now())), failed: None };
                Ok(set)
            }
            Err(error) => {
                if let StoreError::KeyUnavailable { reason, .. } = &error {
                    *slot = Slot { loaded: None, failed: Some((reason.clone(), Instant::now())) };
                } else {
                    slot.loaded = None;
                }
                Err(error)
            }
        }
    }

    /// Reads and unwraps an owner's DEKs, bypassing the cache.
    pub(crate) async fn load(&self, control: &Database, owner: &str) -> Result<DekSet, StoreError> {
        let keyring = self.keyring(control, owner).await?;
        let mut rows = stored_keys(control, owner).await?;
        if rows.is_empty() && owner == PLATFORM {
            self.create(control, &keyring, owner, 1).await?;
            rows = stored_keys(control, owner).await?;
        }
        if rows.is_empty() {
            return Err(StoreError::NotFound { what: format!("the data keys of {}", describe(owner)) });
        }
        let mut deks = Vec::with_capacity(rows.len());
        for (version, stored) in &rows {
            deks.push(keyring.unwrap(owner, *version, stored).await.map_err(|e| unavailable(owner, &e))?);
        }
        DekSet::new(deks).ok_or_else(|| StoreError::corrupt("data_keys", "no keys"))
    }

    /// Generates, wraps and stores DEK `version` for `owner`. Fails if that version exists.
    pub(crate) async fn create(
        &self,
        control: &Database,
        keyring: &Keyring,
        owner: &str,
        version: u32,
    ) -> Result<(), StoreError> {
        let dek = Dek::generate(owner, version);
        let wrapped = keyring.wrap(&dek).await.map_err(|e| unavailable(owner, &e))?;
        insert_key(control.pool(), owner, version, &wrapped).await?;
        Ok(())
    }

    /// A new tenant's first DEK, wrapped with the platform's KEK and inserted in `tx`. It is
    /// cached at once, since other connections cannot see it before `tx` commits; the caller
    /// forgets it if `tx` does not.
    pub(crate) async fn create_for_tenant(
        &self,
        tx: &mut sqlx::AnyConnection,
        tenant: &TenantId,
    ) -> Result<(), StoreError> {
        let dek = Dek::generate(tenant.as_str(), 1);
        let wrapped = self.keyring.wrap(&dek).await.map_err(|e| unavailable(tenant.as_str(), &e))?;
        insert_key(&mut *tx, tenant.as_str(), 1, &wrapped).await?;
        let set = Arc::new(DekSet::new([dek]).ok_or_else(|| StoreError::corrupt("data_keys", "no keys"))?);
        *self.slot(tenant.as_str()).lock().await = Slot { loaded: Some((set, Instant::now())), failed: None };
        Ok(())
    }
}

async fn insert_key<'e, E>(
    executor: E,
    owner: &str,
    version: u32,
    wrapped: &WrappedDek,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO data_keys (owner, version, kek_id, wrapped, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(owner)
    .bind(i64::from(version))
    .bind(wrapped.kek_id.as_str())
    .bind(wrapped.wrapped.as_slice())
    .bind(Timestamp::now().as_millis())
    .execute(executor)
    .await?;
    Ok(())
}

/// An owner's stored keys, oldest first.
pub(crate) async fn stored_keys(
    control: &Database,
    owner: &str,
) -> Result<Vec<(u32, WrappedDek)>, StoreError> {
    let rows =
        sqlx::query("SELECT version, kek_id, wrapped FROM data_keys WHERE owner = $1 ORDER BY version")
            .bind(owner)
            .fetch_all(control.pool())
            .await?;
    rows.iter()
        .map(|row| {
            let version = u32::try_from(row.try_get::<i64, _>("version")?)
                .map_err(|e| StoreError::corrupt("data_keys", e))?;
            Ok((version, WrappedDek { kek_id: row.try_get("kek_id")?, wrapped: row.try_get("wrapped")? }))
        })
        .collect()
}

/// When an owner's key `version` was created.
pub(crate) async fn created_at(
    control: &Database,
    owner: &str,
    version: u32,
) -> Result<Timestamp, StoreError> {
    let at: i64 = sqlx::query_scalar("SELECT created_at FROM data_keys WHERE owner = $1 AND version = $2")
        .bind(owner)
        .bind(i64::from(version))
        .fetch_one(control.pool())
        .await?;
    Ok(Timestamp::from_millis(at))
}

/// A tenant's own KEK, if it brought one.
pub(crate) async fn tenant_kek_spec(
    control: &Database,
    owner: &str,
) -> Result<Option<ProviderSpec>, StoreError> {
    if owner == PLATFORM {
        return Ok(None);
    }
    let spec: Option<String> = sqlx::query_scalar("SELECT spec FROM tenant_keks WHERE tenant_id = $1")
        .bind(owner)
        .fetch_optional(control.pool())
        .await?;
    spec.map(|text| serde_json::from_str(&text).map_err(|e| StoreError::corrupt("tenant_keks", e)))
        .transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::migrations::Set;

    /// Every column of `set`'s schema whose name says it holds a sealed value.
    async fn sealed_columns_in_schema(set: Set) -> Vec<(String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(&dir.path().join("schema.sqlite"), false, 1).await.unwrap();
        db.migrate(set).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        let mut found = Vec::new();
        for table in tables {
            let columns = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info(\"{table}\")")))
                .fetch_all(db.pool())
                .await
                .unwrap();
            for column in columns {
                let name: String = column.try_get("name").unwrap();
                if name.starts_with("sealed") || name.ends_with("_sealed") {
                    found.push((table.clone(), name));
                }
            }
        }
        db.close().await;
        found.sort();
        found
    }

    fn listed(columns: &[SealedColumn]) -> Vec<(String, String)> {
        let mut listed: Vec<_> = columns.iter().map(|c| (c.table.to_owned(), c.column.to_owned())).collect();
        listed.sort();
        listed
    }

    /// A sealed column missing from the registry would be left under a key that a rotation
    /// then destroys, and would be exported unredacted.
    #[tokio::test]
    async fn every_sealed_column_is_listed() {
        assert_eq!(sealed_columns_in_schema(Set::Tenant).await, listed(TENANT_SEALED));
        assert_eq!(sealed_columns_in_schema(Set::Control).await, listed(PLATFORM_SEALED));
    }
}
