//! A tenant's keys and end of life: bringing its own key-encryption key, and deletion.
//!
//! Deleting a tenant destroys its data keys (crypto-shred: every copy of its database,
//! backups included, keeps only ciphertext for its sealed columns), marks the tenant row as
//! its tombstone, revokes its API keys, ends its sessions, removes its users and agents, and
//! records the deletion in the platform log, all in one control-plane transaction; then its
//! database files are removed. Files left by a crash in between are removed when the store
//! next opens.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airlock_types::{TenantId, Timestamp};
use airlock_vault::{Dek, ProviderSpec};
use futures_util::FutureExt as _;
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value};

use crate::identity::require_operator;
use crate::keys::{TenantKek, stored_keys, tenant_kek_spec};
use crate::principal::{Principal, TenantScope};
use crate::{Store, StoreError};

/// How long a deletion request waits for a second operator.
pub const DELETION_REQUEST_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The outcome of asking to delete a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The tenant is deleted.
    Deleted {
        /// Data keys destroyed.
        keys_destroyed: u64,
        /// Whether its database file was there to remove.
        database_removed: bool,
    },
    /// Recorded; a second operator must ask too before it expires.
    AwaitingApproval {
        /// Who asked.
        requested_by: String,
        /// When the request lapses.
        expires_at: Timestamp,
    },
}

impl Store {
    /// How the tenant's data keys are wrapped. Operators only.
    pub async fn tenant_kek(&self, by: &Principal, scope: &TenantScope) -> Result<TenantKek, StoreError> {
        require_operator(by)?;
        let own = tenant_kek_spec(self.control(), scope.tenant_id().as_str()).await?;
        let keyring = self.inner.keys.keyring(self.control(), scope.tenant_id().as_str()).await?;
        Ok(TenantKek { own, kek_id: keyring.current_id().to_owned() })
    }

    /// Has the tenant's data keys wrapped by its own KEK (`Some`), or by the platform's again
    /// (`None`). The new key is tried first (wrap and unwrap), then every data key of the
    /// tenant is re-wrapped and the change recorded, in one transaction. Operators only.
    pub async fn set_tenant_kek(
        &self,
        by: &Principal,
        scope: &TenantScope,
        spec: Option<ProviderSpec>,
    ) -> Result<TenantKek, StoreError> {
        require_operator(by)?;
        let tenant = scope.tenant_id().as_str().to_owned();
        let keys = &self.inner.keys;
        let new_ring = match &spec {
            Some(ProviderSpec::File { .. } | ProviderSpec::Env { .. }) => {
                return Err(StoreError::Invalid(
                    "a tenant's own key must be held by an external provider \
                     (`vault_transit`, `aws_kms`, `azure_key_vault` or `gcp_kms`)"
                        .into(),
                ));
            }
            Some(spec) => keys.connect(spec).await?,
            None => keys.platform_keyring().clone(),
        };
        let probe = Dek::generate(&tenant, u32::MAX);
        let works = match new_ring.wrap(&probe).await {
            Ok(wrapped) => new_ring
                .unwrap(&tenant, u32::MAX, &wrapped)
                .await
                .map(|back| back.bytes().expose_secret() == probe.bytes().expose_secret()),
            Err(error) => Err(error),
        };
        match works {
            Ok(true) => {}
            Ok(false) => return Err(StoreError::Refused("the key did not give back what it wrapped".into())),
            Err(error) => return Err(StoreError::Refused(format!("the key cannot be used: {error}"))),
        }
        let old_ring = keys.keyring(self.control(), &tenant).await?;
        let mut rewrapped = Vec::new();
        for (version, stored) in stored_keys(self.control(), &tenant).await? {
            let dek = old_ring.unwrap(&tenant, version, &stored).await?;
            rewrapped.push((version, stored.wrapped, new_ring.wrap(&dek).await?));
        }
        let spec_json = spec
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let kek_id = new_ring.current_id().to_owned();
        let mut metadata = Map::new();
        metadata.insert("kek".into(), Value::from(kek_id.as_str()));
        metadata.insert("own".into(), Value::from(spec.is_some()));
        let (by_id, owner) = (by.id_str().to_owned(), tenant.clone());
        let operation: crate::audit::Operation = Box::new(move |conn, _event| {
            async move {
                for (version, old, new) in rewrapped {
                    let changed = sqlx::query(
                        "UPDATE data_keys SET kek_id = $1, wrapped = $2 WHERE owner = $3 AND version = $4 AND wrapped = $5",
                    )
                    .bind(new.kek_id.as_str())
                    .bind(new.wrapped.as_slice())
                    .bind(owner.as_str())
                    .bind(i64::from(version))
                    .bind(old.as_slice())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if changed != 1 {
                        return Err(StoreError::Refused(
                            "the tenant's keys changed meanwhile (a rotation?); try again".into(),
                        ));
                    }
                }
                match spec_json {
                    Some(json) => {
                        sqlx::query(
                            "INSERT INTO tenant_keks (tenant_id, spec, set_by, set_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (tenant_id) DO UPDATE SET spec = $2, set_by = $3, set_at = $4",
                        )
                        .bind(owner.as_str())
                        .bind(json)
                        .bind(by_id)
                        .bind(Timestamp::now().as_millis())
                        .execute(&mut *conn)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM tenant_keks WHERE tenant_id = $1")
                            .bind(owner.as_str())
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                Ok(())
            }
            .boxed()
        });
        let subject = [("tenant", tenant.as_str())];
        self.record_platform_with(by, "keys.kek_changed", &subject, metadata.clone(), Some(operation))
            .await?;
        keys.forget(&tenant);
        self.record(scope, "keys.kek_changed", &[], metadata).await?;
        Ok(TenantKek { own: spec, kek_id })
    }

    /// Deletes a tenant (see the module documentation). `confirm` must be the tenant's slug.
    /// With `second_operator`, the first call records a request and a call by another
    /// operator within [`DELETION_REQUEST_LIFETIME`] deletes. Operators only.
    pub async fn delete_tenant(
        &self,
        by: &Principal,
        scope: &TenantScope,
        confirm: &str,
        second_operator: bool,
    ) -> Result<Deletion, StoreError> {
        require_operator(by)?;
        if confirm != scope.slug().as_str() {
            return Err(StoreError::Invalid(format!(
                "to confirm, give the tenant's slug `{}`; nothing was deleted",
                scope.slug()
            )));
        }
        let tenant = scope.tenant_id().clone();
        let now = Timestamp::now();
        let approved_by = if second_operator {
            let pending: Option<(String, i64)> = sqlx::query_as(
                "SELECT requested_by, expires_at FROM tenant_deletion_requests WHERE tenant_id = $1",
            )
            .bind(tenant.as_str())
            .fetch_optional(self.control().pool())
            .await?;
            match pending {
                Some((requested_by, expires_at)) if expires_at > now.as_millis() => {
                    if requested_by == by.id_str() {
                        return Err(StoreError::Refused(
                            "you asked for this deletion; another operator must approve it".into(),
                        ));
                    }
                    Some(requested_by)
                }
                _ => return self.request_deletion(by, &tenant, now).await,
            }
        } else {
            None
        };
        let mut metadata = Map::new();
        metadata.insert("slug".into(), Value::from(scope.slug().as_str()));
        if let Some(first) = &approved_by {
            metadata.insert("requested_by".into(), Value::from(first.as_str()));
        }
        let (owner, by_id) = (tenant.as_str().to_owned(), by.id_str().to_owned());
        let destroyed_keys = Arc::new(AtomicU64::new(0));
        let counter = destroyed_keys.clone();
        let operation: crate::audit::Operation = Box::new(move |conn, event| {
            async move {
                let at = Timestamp::now().as_millis();
                let marked = sqlx::query(
                    "UPDATE tenants SET deleted_at = $1, deleted_by = $2, deletion_approved_by = $3 \
                     WHERE id = $4 AND deleted_at IS NULL",
                )
                .bind(at)
                .bind(by_id)
                .bind(approved_by)
                .bind(owner.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if marked != 1 {
                    return Err(StoreError::Refused("the tenant is already deleted".into()));
                }
                let destroyed = sqlx::query("DELETE FROM data_keys WHERE owner = $1")
                    .bind(owner.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                for statement in [
                    "DELETE FROM tenant_keks WHERE tenant_id = $1",
                    "DELETE FROM tenant_deletion_requests WHERE tenant_id = $1",
                    "DELETE FROM sessions WHERE tenant_id = $1",
                    "DELETE FROM user_roles WHERE user_id IN (SELECT id FROM users WHERE tenant_id = $1)",
                    "DELETE FROM users WHERE tenant_id = $1",
                    "DELETE FROM agents WHERE tenant_id = $1",
                ] {
                    sqlx::query(statement).bind(owner.as_str()).execute(&mut *conn).await?;
                }
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL",
                )
                .bind(at)
                .bind(owner.as_str())
                .execute(&mut *conn)
                .await?;
                event.metadata.insert("keys_destroyed".into(), Value::from(destroyed));
                counter.store(destroyed, Ordering::Relaxed);
                Ok(())
            }
            .boxed()
        });
        let appended = self
            .record_platform_with(
                by,
                "tenant.deleted",
                &[("tenant", tenant.as_str())],
                metadata,
                Some(operation),
            )
            .await?;
        tracing::info!(tenant = %tenant, entry = appended.index, "tenant deleted");
        self.inner.keys.forget(tenant.as_str());
        self.inner.tenants.forget(&tenant).await;
        // The destroyed key's bytes were zeroed in the database (`secure_delete`); this
        // removes the older page images from the write-ahead log as well.
        if let Err(error) = self.control().checkpoint_truncate().await {
            tracing::warn!(%error, "could not truncate the control plane's write-ahead log after a deletion");
        }
        let keys_destroyed = destroyed_keys.load(Ordering::Relaxed);
        let database_removed = self.inner.tenants.remove_files(&tenant)?;
        Ok(Deletion::Deleted { keys_destroyed, database_removed })
    }

    async fn request_deletion(
        &self,
        by: &Principal,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<Deletion, StoreError> {
        let lifetime = i64::try_from(DELETION_REQUEST_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        let expires_at = Timestamp::from_millis(now.as_millis().saturating_add(lifetime));
        let (owner, by_id) = (tenant.as_str().to_owned(), by.id_str().to_owned());
        let operation: crate::audit::Operation = Box::new(move |conn, _event| {
            async move {
                sqlx::query(
                    "INSERT INTO tenant_deletion_requests (tenant_id, requested_by, requested_at, expires_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE \
                     SET requested_by = $2, requested_at = $3, expires_at = $4",
                )
                .bind(owner)
                .bind(by_id)
                .bind(now.as_millis())
                .bind(expires_at.as_millis())
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
            .boxed()
        });
        let mut metadata = Map::new();
        metadata.insert("expires_at".into(), Value::from(expires_at.to_rfc3339()));
        self.record_platform_with(
            by,
            "tenant.deletion_requested",
            &[("tenant", tenant.as_str())],
            metadata,
            Some(operation),
        )
        .await?;
        Ok(Deletion::AwaitingApproval { requested_by: by.id_str().to_owned(), expires_at })
    }

    /// Removes the database files of deleted tenants that a crash left behind.
    pub(crate) async fn remove_deleted_tenant_files(&self) -> Result<(), StoreError> {
        let deleted: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE deleted_at IS NOT NULL")
            .fetch_all(self.control().pool())
            .await?;
        for id in deleted {
            let Ok(tenant) = TenantId::parse(&id) else { continue };
            if self.inner.tenants.remove_files(&tenant)? {
                tracing::warn!(tenant = %tenant, "removed the database of a deleted tenant left by an interrupted deletion");
            }
        }
        Ok(())
    }
}
