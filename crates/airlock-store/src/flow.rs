//! What the flow guard reads and keeps: the tenant's allowlists of known contacts, payees and
//! domains, its flow settings, and what a run's executed actions returned.

use airlock_types::{RunId, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;

use crate::audit::Operation;
use crate::principal::TenantScope;
use crate::versioned::{FLOW_SETTINGS, Version};
use crate::{Store, StoreError};

/// The lists an allowlist entry can be on.
pub const ALLOWLISTS: [&str; 3] = ["contacts", "payees", "domains"];
/// Longest allowlist value.
const MAX_VALUE: usize = 320;

/// An allowlist entry.
#[derive(Debug, Clone, Serialize)]
pub struct AllowlistEntry {
    /// Its id (`alw_…`).
    pub id: String,
    /// `contacts`, `payees` or `domains`.
    pub list: String,
    /// The value: an e-mail address or phone number, an IBAN or account number, a domain.
    pub value: String,
    /// Why it is there.
    pub note: String,
    /// The user who added it.
    pub owner: String,
    /// When it was added.
    pub created_at: Timestamp,
    /// When it stops counting, if ever.
    pub expires_at: Option<Timestamp>,
}

/// An allowlist entry, with whether it still counts now.
#[derive(Debug, Clone)]
pub struct LiveEntry {
    /// The entry.
    pub entry: AllowlistEntry,
    /// Unexpired, and its owner still an active user of the tenant.
    pub valid: bool,
}

/// An executed action's output, for the flow rules.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Its position among the run's actions, from 1.
    pub position: u32,
    /// The tool.
    pub tool: String,
    /// The recorded outcome (`output`, and the injection scan under `injection`).
    pub outcome: Value,
}

fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<AllowlistEntry, StoreError> {
    Ok(AllowlistEntry {
        id: row.try_get("id")?,
        list: row.try_get("list")?,
        value: row.try_get("value")?,
        note: row.try_get("note")?,
        owner: row.try_get("owner")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(Timestamp::from_millis),
    })
}

impl Store {
    /// Adds an entry to one of the tenant's allowlists, owned by the scope's principal, which
    /// must be a user: an entry vouches for a value, and a person vouches.
    pub async fn add_allowlist_entry(
        &self,
        scope: &TenantScope,
        list: &str,
        value: &str,
        note: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<AllowlistEntry, StoreError> {
        if scope.actor().kind != "user" {
            return Err(StoreError::Forbidden("allowlist entries are added by people, not agents".into()));
        }
        if !ALLOWLISTS.contains(&list) {
            return Err(StoreError::Invalid(format!("`{list}` is not a list (contacts, payees or domains)")));
        }
        let value = value.trim();
        let spaced = list == "domains" && value.chars().any(char::is_whitespace);
        if value.is_empty() || value.len() > MAX_VALUE || value.chars().any(char::is_control) || spaced {
            return Err(StoreError::Invalid(format!(
                "the value must be 1 to {MAX_VALUE} characters without control characters (and a domain without spaces)"
            )));
        }
        if note.chars().count() > 200 || note.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "the note must be at most 200 characters without control characters".into(),
            ));
        }
        if expires_at.is_some_and(|at| at.as_millis() <= Timestamp::now().as_millis()) {
            return Err(StoreError::Invalid("the expiry must be in the future".into()));
        }
        let entry = AllowlistEntry {
            id: format!("alw_{}", airlock_crypto::random_hex(16)),
            list: list.to_owned(),
            value: value.to_owned(),
            note: note.to_owned(),
            owner: scope.actor().id.clone(),
            created_at: Timestamp::now(),
            expires_at,
        };
        let row = entry.clone();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO allowlist_entries (id, list, value, note, owner, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(row.id.as_str())
                .bind(row.list.as_str())
                .bind(row.value.as_str())
                .bind(row.note.as_str())
                .bind(row.owner.as_str())
                .bind(row.created_at.as_millis())
                .bind(row.expires_at.map(Timestamp::as_millis))
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    StoreError::conflict_on_unique(e, || format!("`{}` on the {} list", row.value, row.list))
                })?;
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("list".into(), Value::from(entry.list.as_str()));
        metadata.insert(
            "expires_at".into(),
            entry.expires_at.map_or(Value::Null, |t| Value::from(t.to_rfc3339())),
        );
        self.record_with(scope, "allowlist.added", &[("entry", entry.id.as_str())], metadata, operation)
            .await?;
        Ok(entry)
    }

    /// Every entry of the tenant's allowlists.
    pub async fn allowlist(&self, scope: &TenantScope) -> Result<Vec<AllowlistEntry>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let rows = sqlx::query(
            "SELECT id, list, value, note, owner, created_at, expires_at FROM allowlist_entries ORDER BY list, value",
        )
        .fetch_all(db.database().pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Removes an entry.
    pub async fn remove_allowlist_entry(&self, scope: &TenantScope, id: &str) -> Result<(), StoreError> {
        let entry = id.to_owned();
        let operation: Operation = Box::new(move |conn, _event| {
            Box::pin(async move {
                let removed = sqlx::query("DELETE FROM allowlist_entries WHERE id = $1")
                    .bind(entry.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    return Err(StoreError::NotFound { what: format!("allowlist entry `{entry}`") });
                }
                Ok(())
            })
        });
        self.record_with(scope, "allowlist.removed", &[("entry", id)], Map::new(), operation).await?;
        Ok(())
    }

    /// The entries, each revalidated now: unexpired, and its owner still an active user of
    /// the tenant.
    pub async fn live_allowlist(&self, scope: &TenantScope) -> Result<Vec<LiveEntry>, StoreError> {
        let entries = self.allowlist(scope).await?;
        let active: Vec<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND disabled_at IS NULL")
                .bind(scope.tenant_id().as_str())
                .fetch_all(self.control().pool())
                .await?;
        let now = Timestamp::now().as_millis();
        Ok(entries
            .into_iter()
            .map(|entry| {
                let valid =
                    entry.expires_at.is_none_or(|at| at.as_millis() > now) && active.contains(&entry.owner);
                LiveEntry { entry, valid }
            })
            .collect())
    }

    /// The flow settings in force, if the tenant has written any.
    pub async fn flow_settings(&self, scope: &TenantScope) -> Result<Option<Version>, StoreError> {
        self.latest_version(scope, &FLOW_SETTINGS).await
    }

    /// Writes a new version of the flow settings (validated by the caller), on the record.
    pub async fn put_flow_settings(
        &self,
        scope: &TenantScope,
        settings: &str,
    ) -> Result<Version, StoreError> {
        self.put_version(scope, &FLOW_SETTINGS, settings).await
    }

    /// What the run's executed actions returned, in order, numbered by their position among
    /// all of the run's actions.
    pub async fn run_outputs(&self, scope: &TenantScope, run: &RunId) -> Result<Vec<RunOutput>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let rows = sqlx::query("SELECT tool, outcome FROM actions WHERE run_id = $1 ORDER BY created_at, id")
            .bind(run.as_str())
            .fetch_all(db.database().pool())
            .await?;
        let mut out = Vec::new();
        for (index, row) in rows.iter().enumerate() {
            let Some(text) = row.try_get::<Option<String>, _>("outcome")? else { continue };
            let outcome: Value =
                serde_json::from_str(&text).map_err(|e| StoreError::corrupt("actions", e))?;
            out.push(RunOutput {
                position: u32::try_from(index + 1).unwrap_or(u32::MAX),
                tool: row.try_get("tool")?,
                outcome,
            });
        }
        Ok(out)
    }
}
