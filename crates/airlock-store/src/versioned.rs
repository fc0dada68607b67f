//! Tenant documents kept as numbered versions: the Cedar policies, the redaction profile and
//! the model-gateway settings. Each write adds a version, in the same commit as its audit
//! entry (which carries the text's SHA-256, not the text); the highest version is in force,
//! and earlier ones stay for the record.

use airlock_types::Timestamp;
use serde_json::{Map, Value};
use sqlx::Row;

use crate::audit::Operation;
use crate::principal::TenantScope;
use crate::{Store, StoreError};

/// Where a kind of document lives and how its writes are recorded.
pub(crate) struct Document {
    /// Its table: `version`, the text column, `created_at`, `created_by`.
    pub table: &'static str,
    /// The column holding the text.
    pub column: &'static str,
    /// The audit event of a write.
    pub event: &'static str,
    /// What it is, in words, for errors.
    pub what: &'static str,
}

/// The tenant's Cedar policies.
pub(crate) const POLICIES: Document =
    Document { table: "policies", column: "text", event: "policy.updated", what: "policy" };
/// The tenant's redaction profile.
pub(crate) const INSPECTION_PROFILE: Document = Document {
    table: "inspection_profiles",
    column: "spec",
    event: "inspection.profile_updated",
    what: "redaction profile",
};
/// The tenant's model-gateway settings.
pub(crate) const MODEL_SETTINGS: Document = Document {
    table: "model_settings",
    column: "settings",
    event: "model.settings_updated",
    what: "model settings",
};

/// The tenant's flow settings.
pub(crate) const FLOW_SETTINGS: Document = Document {
    table: "flow_settings",
    column: "settings",
    event: "flow.settings_updated",
    what: "flow settings",
};

/// One version of a tenant document.
#[derive(Debug, Clone)]
pub struct Version {
    /// Its number (1, 2, …); the highest is in force.
    pub version: i64,
    /// The text, as validated by the caller.
    pub text: String,
    /// When it was written.
    pub created_at: Timestamp,
    /// Who wrote it.
    pub created_by: String,
}

impl Store {
    /// The version in force, if the tenant has written one.
    pub(crate) async fn latest_version(
        &self,
        scope: &TenantScope,
        document: &Document,
    ) -> Result<Option<Version>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT version, {} AS text, created_at, created_by FROM {} ORDER BY version DESC LIMIT 1",
            document.column, document.table
        ));
        let row = sqlx::query(sql).fetch_optional(db.database().pool()).await?;
        row.map(|row| {
            Ok(Version {
                version: row.try_get("version")?,
                text: row.try_get("text")?,
                created_at: Timestamp::from_millis(row.try_get("created_at")?),
                created_by: row.try_get("created_by")?,
            })
        })
        .transpose()
    }

    /// Writes a new version, on the record, and returns it.
    pub(crate) async fn put_version(
        &self,
        scope: &TenantScope,
        document: &Document,
        text: &str,
    ) -> Result<Version, StoreError> {
        let (body, author) = (text.to_owned(), scope.actor().id.clone());
        let (table, column) = (document.table, document.column);
        let operation: Operation = Box::new(move |conn, event| {
            Box::pin(async move {
                let current: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COALESCE(MAX(version), 0) FROM {table}"
                )))
                .fetch_one(&mut *conn)
                .await?;
                let insert = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO {table} (version, {column}, created_at, created_by) VALUES ($1, $2, $3, $4)"
                ));
                sqlx::query(insert)
                    .bind(current + 1)
                    .bind(body.as_str())
                    .bind(Timestamp::now().as_millis())
                    .bind(author.as_str())
                    .execute(&mut *conn)
                    .await?;
                event.metadata.insert("version".into(), Value::from(current + 1));
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("sha256".into(), Value::from(airlock_crypto::sha256(text.as_bytes()).to_hex()));
        self.record_with(scope, document.event, &[], metadata, operation).await?;
        self.latest_version(scope, document)
            .await?
            .ok_or_else(|| StoreError::Audit(format!("the {} written is not readable", document.what)))
    }
}
