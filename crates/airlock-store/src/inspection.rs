//! The tenant's content-inspection state: its redaction profile (versioned, validated by the
//! caller), its tokenization key, and the token vault that lets tokens be restored later.
//!
//! The key and every vault value are sealed with the tenant's DEK, each bound to its row. The
//! vault keeps a value only until its retention runs out; a token already mapped to another
//! live value is refused, so a collision can never restore the wrong value.

use std::collections::HashMap;
use std::time::Duration;

use airlock_types::Timestamp;
use airlock_vault::Context;
use secrecy::{ExposeSecret, SecretBox, SecretSlice};
use serde_json::{Map, Value};
use sqlx::Row;

use crate::audit::Operation;
use crate::principal::TenantScope;
use crate::{Store, StoreError};

/// A version of the tenant's redaction profile.
#[derive(Debug, Clone)]
pub struct InspectionProfile {
    /// Increments with every change.
    pub version: i64,
    /// The profile as JSON, as validated by the caller.
    pub spec: String,
    /// When it was written.
    pub created_at: Timestamp,
    /// Who wrote it.
    pub created_by: String,
}

/// A value the vault keeps so that its token can be restored.
#[derive(Clone)]
pub struct VaultEntry {
    /// The token core (`EMAIL_3f9a0c41d2b7`).
    pub token: String,
    /// The kind name.
    pub kind: String,
    /// The original value.
    pub value: String,
}

impl std::fmt::Debug for VaultEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultEntry")
            .field("token", &self.token)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn key_context() -> Context<'static> {
    Context { table: "tokenization_keys", column: "sealed", row: "1" }
}

fn vault_context(token: &str) -> Context<'_> {
    Context { table: "token_vault", column: "sealed", row: token }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// The profile in force, if the tenant has written one.
    pub async fn inspection_profile(
        &self,
        scope: &TenantScope,
    ) -> Result<Option<InspectionProfile>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let row = sqlx::query(
            "SELECT version, spec, created_at, created_by FROM inspection_profiles ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(db.database().pool())
        .await?;
        row.map(|row| {
            Ok(InspectionProfile {
                version: row.try_get("version")?,
                spec: row.try_get("spec")?,
                created_at: Timestamp::from_millis(row.try_get("created_at")?),
                created_by: row.try_get("created_by")?,
            })
        })
        .transpose()
    }

    /// Writes a new version of the profile (validated by the caller), on the record.
    pub async fn put_inspection_profile(
        &self,
        scope: &TenantScope,
        spec: &str,
    ) -> Result<InspectionProfile, StoreError> {
        let (text, author) = (spec.to_owned(), scope.actor().id.clone());
        let operation: Operation = Box::new(move |conn, event| {
            Box::pin(async move {
                let current: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM inspection_profiles")
                        .fetch_one(&mut *conn)
                        .await?;
                sqlx::query(
                    "INSERT INTO inspection_profiles (version, spec, created_at, created_by) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(current + 1)
                .bind(text.as_str())
                .bind(Timestamp::now().as_millis())
                .bind(author.as_str())
                .execute(&mut *conn)
                .await?;
                event.metadata.insert("version".into(), Value::from(current + 1));
                Ok(())
            })
        });
        let mut metadata = Map::new();
        metadata.insert("sha256".into(), Value::from(airlock_crypto::sha256(spec.as_bytes()).to_hex()));
        self.record_with(scope, "inspection.profile_updated", &[], metadata, operation).await?;
        self.inspection_profile(scope)
            .await?
            .ok_or_else(|| StoreError::Audit("the profile written is not readable".into()))
    }

    /// The tenant's tokenization key, created on first use.
    pub async fn tokenization_key(&self, scope: &TenantScope) -> Result<SecretSlice<u8>, StoreError> {
        let dek = self.dek(scope.tenant_id()).await?;
        let db = self.tenant_db(scope).await?;
        let pool = db.database().pool();
        let read = || sqlx::query_scalar::<_, Vec<u8>>("SELECT sealed FROM tokenization_keys WHERE id = 1");
        let sealed = match read().fetch_optional(pool).await? {
            Some(sealed) => sealed,
            None => {
                let key = SecretBox::new(Box::new(airlock_crypto::random_array::<32>()));
                let sealed = dek.seal(key_context(), key.expose_secret());
                // Two first uses may race; the first key written is the key.
                sqlx::query(
                    "INSERT INTO tokenization_keys (id, sealed, created_at) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(sealed)
                .bind(Timestamp::now().as_millis())
                .execute(pool)
                .await?;
                read().fetch_one(pool).await?
            }
        };
        let key = dek.open(key_context(), &sealed)?;
        if key.expose_secret().len() != 32 {
            return Err(StoreError::Corrupt {
                table: "tokenization_keys",
                detail: "key is not 32 bytes".into(),
            });
        }
        Ok(SecretSlice::from(key.expose_secret().to_vec()))
    }

    /// Keeps the values of `entries` for `retention` (extending it for values already kept),
    /// and deletes values whose retention has run out.
    /// A token that already stands for a different live value is refused: nothing restores
    /// the wrong value.
    pub async fn remember_tokens(
        &self,
        scope: &TenantScope,
        entries: &[VaultEntry],
        retention: Duration,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let dek = self.dek(scope.tenant_id()).await?;
        let db = self.tenant_db(scope).await?;
        let now = Timestamp::now().as_millis();
        let expires = now.saturating_add(millis(retention));
        // One transaction for the whole batch: one commit, and a concurrent writer of the
        // same token cannot slip in between the read and the write.
        let (mut tx, _gate) = db.database().begin_write().await?;
        // Values past their retention go now (reads already ignore them); the expiry index
        // makes this cheap when there are none.
        sqlx::query("DELETE FROM token_vault WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
        for entry in entries {
            let kept = sqlx::query("SELECT sealed, expires_at FROM token_vault WHERE token = $1")
                .bind(entry.token.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = kept else {
                let sealed = dek.seal(vault_context(&entry.token), entry.value.as_bytes());
                sqlx::query(
                    "INSERT INTO token_vault (token, kind, sealed, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(entry.token.as_str())
                .bind(entry.kind.as_str())
                .bind(sealed)
                .bind(now)
                .bind(expires)
                .execute(&mut *tx)
                .await?;
                continue;
            };
            let (kept, kept_until): (Vec<u8>, i64) = (row.try_get("sealed")?, row.try_get("expires_at")?);
            if dek.open(vault_context(&entry.token), &kept)?.expose_secret() != entry.value.as_bytes() {
                return Err(StoreError::Refused(format!(
                    "token `{}` already stands for another value; the value cannot be tokenized",
                    entry.token
                )));
            }
            if kept_until < expires {
                sqlx::query("UPDATE token_vault SET expires_at = $1 WHERE token = $2")
                    .bind(expires)
                    .bind(entry.token.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The live values of the given tokens (unknown and expired ones are left out).
    pub async fn lookup_tokens(
        &self,
        scope: &TenantScope,
        tokens: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut found = HashMap::new();
        if tokens.is_empty() {
            return Ok(found);
        }
        let dek = self.dek(scope.tenant_id()).await?;
        let db = self.tenant_db(scope).await?;
        let now = Timestamp::now().as_millis();
        for token in tokens {
            if found.contains_key(token) {
                continue;
            }
            let sealed: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT sealed FROM token_vault WHERE token = $1 AND expires_at > $2")
                    .bind(token.as_str())
                    .bind(now)
                    .fetch_optional(db.database().pool())
                    .await?;
            if let Some(sealed) = sealed {
                let value = dek.open(vault_context(token), &sealed)?;
                let value = String::from_utf8(value.expose_secret().to_vec()).map_err(|_| {
                    StoreError::Corrupt { table: "token_vault", detail: "value is not UTF-8".into() }
                })?;
                found.insert(token.clone(), value);
            }
        }
        Ok(found)
    }

    /// Deletes the values whose retention has run out; returns how many.
    pub async fn purge_expired_tokens(&self, scope: &TenantScope) -> Result<u64, StoreError> {
        let db = self.tenant_db(scope).await?;
        let done = sqlx::query("DELETE FROM token_vault WHERE expires_at <= $1")
            .bind(Timestamp::now().as_millis())
            .execute(db.database().pool())
            .await?;
        Ok(done.rows_affected())
    }
}
