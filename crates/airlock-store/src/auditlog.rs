//! Reading and writing a tenant's audit log through the store: recording events, paging
//! through the verifiable export, filtered listing, proofs, and the signing keys.

use std::collections::BTreeMap;

use airlock_audit::export::{CheckpointLine, ExportHeader};
use airlock_audit::{Event, Hash, NoteVerifier, merkle};
use airlock_crypto::VerifyingKey;
use airlock_types::Timestamp;
use serde_json::{Map, Value};
use sqlx::Row;

use crate::audit::{Appended, SignedCheckpoint};
use crate::principal::TenantScope;
use crate::tenant::{current_signer, insert_signing_key, origin};
use crate::{Store, StoreError};

/// Filters for listing entries.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Entries at or after this time.
    pub since: Option<Timestamp>,
    /// Entries before this time.
    pub until: Option<Timestamp>,
    /// Entries of this type, or of every type under it when it ends with `.` (`auth.`).
    pub event_type: Option<String>,
    /// Entries by this actor id.
    pub actor: Option<String>,
}

/// One stored entry.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Its index.
    pub index: u64,
    /// Its canonical JSON.
    pub canonical: String,
}

/// An entry with its inclusion proof.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    /// The entry's index.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// The entry's canonical JSON.
    pub entry: String,
    /// Its leaf hash.
    pub leaf_hash: Hash,
    /// The audit path.
    pub proof: Vec<Hash>,
}

/// A signing key, current or retired.
#[derive(Debug, Clone)]
pub struct SigningKeyInfo {
    /// Its version (1, 2, …).
    pub version: i64,
    /// Its verifier key string (`name+id+key`).
    pub verifier: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was retired, if it was.
    pub retired_at: Option<Timestamp>,
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("`{value}` is out of range")))
}

fn to_u64(value: i64, table: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|e| StoreError::corrupt(table, e))
}

impl Store {
    /// Records an event in the scope's tenant log, acted by the scope's principal, and
    /// returns once it is durable.
    pub async fn record(
        &self,
        scope: &TenantScope,
        event_type: &str,
        subject: &[(&str, &str)],
        metadata: Map<String, Value>,
    ) -> Result<Appended, StoreError> {
        self.append(scope, event_type, subject, metadata, None, false).await
    }

    /// Runs `operation` on the scope's tenant database and records the event, in one
    /// transaction: both happen, durably, or neither does. The operation may complete the
    /// event before it is sealed.
    pub(crate) async fn record_with(
        &self,
        scope: &TenantScope,
        event_type: &str,
        subject: &[(&str, &str)],
        metadata: Map<String, Value>,
        operation: crate::audit::Operation,
    ) -> Result<Appended, StoreError> {
        self.append(scope, event_type, subject, metadata, Some(operation), false).await
    }

    /// As [`Store::record_with`], and signs a checkpoint covering the entry in the same commit.
    pub(crate) async fn record_with_checkpoint(
        &self,
        scope: &TenantScope,
        event_type: &str,
        subject: &[(&str, &str)],
        metadata: Map<String, Value>,
        operation: crate::audit::Operation,
    ) -> Result<Appended, StoreError> {
        self.append(scope, event_type, subject, metadata, Some(operation), true).await
    }

    async fn append(
        &self,
        scope: &TenantScope,
        event_type: &str,
        subject: &[(&str, &str)],
        metadata: Map<String, Value>,
        operation: Option<crate::audit::Operation>,
        checkpoint: bool,
    ) -> Result<Appended, StoreError> {
        let db = self.tenant_db(scope).await?;
        let subject: BTreeMap<String, String> =
            subject.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let event = Event {
            time: Timestamp::now().to_rfc3339(),
            event_type: event_type.to_owned(),
            actor: scope.actor().clone(),
            subject,
            metadata,
        };
        db.audit.append_with(event, operation, checkpoint).await
    }

    /// A signed checkpoint covering every entry so far.
    pub async fn audit_checkpoint(&self, scope: &TenantScope) -> Result<SignedCheckpoint, StoreError> {
        self.tenant_db(scope).await?.audit.checkpoint().await
    }

    /// Starts an export: records it, then returns the header line (with a checkpoint
    /// covering the export event itself) and the number of entries the export holds.
    pub async fn audit_export_begin(
        &self,
        scope: &TenantScope,
        format: &str,
    ) -> Result<(String, u64), StoreError> {
        let mut metadata = Map::new();
        metadata.insert("format".into(), Value::from(format));
        self.record(scope, "audit.exported", &[], metadata).await?;
        let checkpoint = self.audit_checkpoint(scope).await?;
        export_header(origin(scope.tenant_id()), checkpoint)
    }

    /// The export lines for entries `from..min(from + limit, size)`, each stored checkpoint
    /// placed right after the last entry it covers.
    pub async fn audit_export_page(
        &self,
        scope: &TenantScope,
        from: u64,
        size: u64,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        let db = self.tenant_db(scope).await?;
        export_page(db.database(), from, size, limit).await
    }

    /// Entries matching `filter` with index greater than `after`, in order, at most `limit`.
    pub async fn audit_entries(
        &self,
        scope: &TenantScope,
        filter: &AuditFilter,
        after: Option<u64>,
        limit: u64,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let (type_exact, type_prefix) = match filter.event_type.as_deref() {
            Some(t) if t.ends_with('.') => (None, Some(format!("{t}%"))),
            Some(t) => (Some(t.to_owned()), None),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT idx, canonical FROM audit_entries \
             WHERE idx > $1 \
               AND ($2 IS NULL OR time_ms >= $2) AND ($3 IS NULL OR time_ms < $3) \
               AND ($4 IS NULL OR type = $4) AND ($5 IS NULL OR type LIKE $5) \
               AND ($6 IS NULL OR actor_id = $6) \
             ORDER BY idx LIMIT $7",
        )
        .bind(after.map(to_i64).transpose()?.unwrap_or(-1))
        .bind(filter.since.map(Timestamp::as_millis))
        .bind(filter.until.map(Timestamp::as_millis))
        .bind(type_exact)
        .bind(type_prefix)
        .bind(filter.actor.clone())
        .bind(to_i64(limit)?)
        .fetch_all(db.database().pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredEntry {
                    index: to_u64(row.try_get("idx")?, "audit_entries")?,
                    canonical: row.try_get("canonical")?,
                })
            })
            .collect()
    }

    async fn leaves(&self, scope: &TenantScope, size: u64) -> Result<Vec<Hash>, StoreError> {
        let db = self.tenant_db(scope).await?;
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT leaf_hash FROM audit_entries WHERE idx < $1 ORDER BY idx")
                .bind(to_i64(size)?)
                .fetch_all(db.database().pool())
                .await?;
        let leaves: Vec<Hash> = rows
            .iter()
            .map(|b| Hash::from_slice(b).ok_or_else(|| StoreError::corrupt("audit_entries", "bad leaf hash")))
            .collect::<Result<_, _>>()?;
        if leaves.len() as u64 != size {
            return Err(StoreError::NotFound { what: format!("a log of size {size}") });
        }
        Ok(leaves)
    }

    /// Entry `index` with its inclusion proof in the tree of `size` entries.
    pub async fn audit_inclusion_proof(
        &self,
        scope: &TenantScope,
        index: u64,
        size: u64,
    ) -> Result<InclusionProof, StoreError> {
        if index >= size {
            return Err(StoreError::Invalid(format!("entry {index} is not in a tree of {size} entries")));
        }
        let leaves = self.leaves(scope, size).await?;
        let position = usize::try_from(index).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let proof =
            merkle::inclusion_proof(&leaves, position).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let db = self.tenant_db(scope).await?;
        let entry: String = sqlx::query_scalar("SELECT canonical FROM audit_entries WHERE idx = $1")
            .bind(to_i64(index)?)
            .fetch_one(db.database().pool())
            .await?;
        let leaf_hash = leaves
            .get(position)
            .copied()
            .ok_or_else(|| StoreError::NotFound { what: format!("entry {index}") })?;
        Ok(InclusionProof { index, size, entry, leaf_hash, proof })
    }

    /// The consistency proof between the trees of `size1` and `size2` entries.
    pub async fn audit_consistency_proof(
        &self,
        scope: &TenantScope,
        size1: u64,
        size2: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        if size1 == 0 || size1 > size2 {
            return Err(StoreError::Invalid("sizes must satisfy 0 < from <= to".into()));
        }
        let leaves = self.leaves(scope, size2).await?;
        let first = usize::try_from(size1).map_err(|e| StoreError::Invalid(e.to_string()))?;
        merkle::consistency_proof(&leaves, first).map_err(|e| StoreError::Invalid(e.to_string()))
    }

    /// The tenant's signing keys, newest first.
    pub async fn audit_keys(&self, scope: &TenantScope) -> Result<Vec<SigningKeyInfo>, StoreError> {
        let db = self.tenant_db(scope).await?;
        signing_keys(db.database()).await
    }

    /// Retires the current signing key and starts signing with a new one. The old public
    /// key stays published, so what it signed keeps verifying. Records the rotation and
    /// signs a checkpoint with the new key at once.
    pub async fn rotate_signing_key(&self, scope: &TenantScope) -> Result<SigningKeyInfo, StoreError> {
        let db = self.tenant_db(scope).await?;
        let dek = self.dek(scope.tenant_id()).await?;
        let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM signing_keys")
            .fetch_one(db.database().pool())
            .await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(Timestamp::now().as_millis())
            .execute(db.database().pool())
            .await?;
        let origin = origin(scope.tenant_id());
        insert_signing_key(db.database(), &origin, &dek, current + 1).await?;
        let signer = current_signer(db.database(), &origin, &dek).await?;
        db.audit.set_signer(signer).await?;
        let mut metadata = Map::new();
        metadata.insert("version".into(), Value::from(current + 1));
        self.record(scope, "audit.key_rotated", &[], metadata).await?;
        db.audit.checkpoint().await?;
        self.audit_keys(scope)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Audit("no signing key after rotation".into()))
    }
}

/// An export's header line for a log whose current checkpoint is `checkpoint`.
pub(crate) fn export_header(
    origin: String,
    checkpoint: SignedCheckpoint,
) -> Result<(String, u64), StoreError> {
    let header = ExportHeader { airlock_audit_export: 1, origin, checkpoint: checkpoint.note };
    let line = serde_json::to_string(&header).map_err(|e| StoreError::Audit(e.to_string()))?;
    Ok((line, checkpoint.size))
}

/// A page of a log's export lines (see [`Store::audit_export_page`]).
pub(crate) async fn export_page(
    db: &crate::Database,
    from: u64,
    size: u64,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    let end = size.min(from.saturating_add(limit));
    if from >= end {
        return Ok(Vec::new());
    }
    let entries =
        sqlx::query("SELECT idx, canonical FROM audit_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx")
            .bind(to_i64(from)?)
            .bind(to_i64(end)?)
            .fetch_all(db.pool())
            .await?;
    let checkpoints =
        sqlx::query("SELECT size, note FROM audit_checkpoints WHERE size > $1 AND size <= $2 ORDER BY size")
            .bind(to_i64(from)?)
            .bind(to_i64(end)?)
            .fetch_all(db.pool())
            .await?;
    let mut notes = BTreeMap::new();
    for row in &checkpoints {
        notes.insert(to_u64(row.try_get("size")?, "audit_checkpoints")?, row.try_get::<String, _>("note")?);
    }
    let mut lines = Vec::with_capacity(entries.len() + notes.len());
    for row in &entries {
        let index = to_u64(row.try_get("idx")?, "audit_entries")?;
        lines.push(row.try_get::<String, _>("canonical")?);
        if let Some(note) = notes.remove(&(index + 1)) {
            let line = serde_json::to_string(&CheckpointLine { checkpoint: note })
                .map_err(|e| StoreError::Audit(e.to_string()))?;
            lines.push(line);
        }
    }
    Ok(lines)
}

/// A log's signing keys, newest first.
pub(crate) async fn signing_keys(db: &crate::Database) -> Result<Vec<SigningKeyInfo>, StoreError> {
    let rows = sqlx::query(
        "SELECT version, name, public_key, created_at, retired_at FROM signing_keys ORDER BY version DESC",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let public: Vec<u8> = row.try_get("public_key")?;
            let key = VerifyingKey::from_bytes(&public)
                .ok_or_else(|| StoreError::corrupt("signing_keys", "bad public key"))?;
            let name: String = row.try_get("name")?;
            Ok(SigningKeyInfo {
                version: row.try_get("version")?,
                verifier: verifier_string(&name, &key)?,
                created_at: Timestamp::from_millis(row.try_get("created_at")?),
                retired_at: row.try_get::<Option<i64>, _>("retired_at")?.map(Timestamp::from_millis),
            })
        })
        .collect()
}

fn verifier_string(name: &str, key: &VerifyingKey) -> Result<String, StoreError> {
    use base64::Engine as _;
    let mut material = vec![0x01];
    material.extend_from_slice(&key.to_bytes());
    let id = Hash::of(&[name.as_bytes(), b"\n", &material]);
    let vkey =
        format!("{name}+{}+{}", hex_prefix(&id), base64::engine::general_purpose::STANDARD.encode(material));
    // Round-trip through the parser so a published key is always one verifiers accept.
    NoteVerifier::parse(&vkey).map(|v| v.to_string()).map_err(|e| StoreError::Audit(e.to_string()))
}

fn hex_prefix(hash: &Hash) -> String {
    hash.to_hex().chars().take(8).collect()
}
