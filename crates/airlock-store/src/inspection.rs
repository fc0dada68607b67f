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
use sqlx::Row;

use crate::principal::TenantScope;
use crate::versioned::INSPECTION_PROFILE;
use crate::{Store, StoreError};

/// A version of the tenant's redaction profile (its text is the profile as JSON).
pub type InspectionProfile = crate::versioned::Version;

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
        self.latest_version(scope, &INSPECTION_PROFILE).await
    }

    /// Writes a new version of the profile (validated by the caller), on the record.
    pub async fn put_inspection_profile(
        &self,
        scope: &TenantScope,
        spec: &str,
    ) -> Result<InspectionProfile, StoreError> {
        self.put_version(scope, &INSPECTION_PROFILE, spec).await
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
