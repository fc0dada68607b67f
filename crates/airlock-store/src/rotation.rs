//! Key rotation.
//!
//! **Data keys.** Rotating an owner's DEK adds a new version, which seals everything written
//! from then on, and re-encrypts every sealed row in batches, each batch one transaction, each
//! row a compare-and-set so a concurrent write is never overwritten. The old versions are
//! destroyed only when no row refers to them any more. Nothing else records progress: the
//! rows themselves say which version sealed them, so a rotation stopped anywhere (even by
//! SIGKILL) is resumed by running it again, and running it when an earlier one is unfinished
//! finishes that one instead of starting another. A row that cannot be opened is reported and
//! skipped; the old key is then kept, so nothing readable is lost.
//!
//! Other processes on the same data directory (a running server) cache keys for their key
//! cache TTL; the old versions are destroyed only after the new one has existed for
//! `grace`, and a last pass re-encrypts anything they sealed with an old key meanwhile.
//!
//! **Key-encryption keys.** Rotating the KEK re-wraps every stored DEK whose KEK is not the
//! current one (with `all`, every DEK: after rotating a key inside Vault or KMS, whose id
//! stays the same). DEKs do not change, so no row is re-encrypted.

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_types::Timestamp;
use airlock_vault::{Context, DekSet};
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value};
use sqlx::Row;

use crate::keys::{PLATFORM, PLATFORM_SEALED, SealedColumn, TENANT_SEALED, created_at, stored_keys};
use crate::principal::{Principal, TenantScope};
use crate::{Database, Store, StoreError};

/// How a rotation runs.
#[derive(Debug, Clone, Copy)]
pub struct RotateOptions {
    /// Report what would change, and check that every row opens; change nothing.
    pub dry_run: bool,
    /// How long a new data key must exist before the old ones are destroyed: at least the
    /// key cache TTL of every server running on this data directory. Zero when none runs.
    pub grace: Duration,
    /// Rows re-encrypted per transaction.
    pub batch: u32,
    /// For KEK rotation: re-wrap every DEK, also those already under the current KEK's id.
    pub all: bool,
}

impl Default for RotateOptions {
    fn default() -> Self {
        Self { dry_run: false, grace: Duration::from_secs(120), batch: 500, all: false }
    }
}

/// A sealed row that could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// Its table.
    pub table: String,
    /// Its column.
    pub column: String,
    /// Its key.
    pub row: String,
    /// Why it did not open.
    pub reason: String,
}

/// What a DEK rotation did (or, dry, would do).
#[derive(Debug, Clone)]
pub struct DekRotation {
    /// The owner: a tenant id, or `platform`.
    pub owner: String,
    /// The versions held before.
    pub from: Vec<u32>,
    /// The version every row ends under.
    pub to: u32,
    /// Whether this finished a rotation an earlier run started.
    pub resumed: bool,
    /// Rows re-encrypted (dry: rows that would be).
    pub reencrypted: u64,
    /// Rows that did not open.
    pub failed: Vec<BadRow>,
    /// Rows still sealed by an old version at the end (the failed ones among them).
    pub remaining: u64,
    /// The versions destroyed at the end.
    pub destroyed: Vec<u32>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl DekRotation {
    /// Whether every row is under the new key and the old keys are gone.
    #[must_use]
    pub fn finished(&self) -> bool {
        !self.dry_run
            && self.remaining == 0
            && self.from.iter().all(|v| *v == self.to || self.destroyed.contains(v))
    }
}

/// What a KEK rotation did (or, dry, would do).
#[derive(Debug, Clone)]
pub struct KekRotation {
    /// The platform KEK's id (tenants with their own KEK are re-wrapped under theirs).
    pub kek_id: String,
    /// DEKs re-wrapped (dry: that would be).
    pub rewrapped: u64,
    /// DEKs already under their current KEK, left alone.
    pub current: u64,
    /// DEKs that could not be unwrapped or re-wrapped: owner, version, why.
    pub failed: Vec<(String, u32, String)>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// A version that no DEK has, so that in a dry run every row counts as due.
const NO_VERSION: u32 = u32::MAX;

impl Store {
    /// Rotates a tenant's DEK (see the module documentation). `progress` is told the number
    /// of rows done so far. Operators only.
    pub async fn rotate_tenant_dek(
        &self,
        by: &Principal,
        scope: &TenantScope,
        options: RotateOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<DekRotation, StoreError> {
        crate::identity::require_operator(by)?;
        let db = self.tenant_db(scope).await?;
        let mut report = self
            .rotate_dek(scope.tenant_id().as_str(), db.database(), TENANT_SEALED, options, progress)
            .await?;
        if !report.dry_run {
            let metadata = rotation_metadata(&report);
            self.record(scope, "keys.dek_rotated", &[], metadata.clone()).await?;
            self.record_platform(by, "keys.dek_rotated", &[("tenant", scope.tenant_id().as_str())], metadata)
                .await?;
            report.destroyed = self.destroy_old_keys(&report).await?;
        }
        Ok(report)
    }

    /// Rotates the platform's own DEK, which seals the platform log's signing key.
    pub async fn rotate_platform_dek(
        &self,
        by: &Principal,
        options: RotateOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<DekRotation, StoreError> {
        crate::identity::require_operator(by)?;
        // The log's signing key is loaded (and the first data key created) before rotating.
        self.platform_audit_keys().await?;
        let mut report =
            self.rotate_dek(PLATFORM, self.control(), PLATFORM_SEALED, options, progress).await?;
        if !report.dry_run {
            self.record_platform(by, "keys.dek_rotated", &[("owner", PLATFORM)], rotation_metadata(&report))
                .await?;
            report.destroyed = self.destroy_old_keys(&report).await?;
        }
        Ok(report)
    }

    async fn rotate_dek(
        &self,
        owner: &str,
        db: &Database,
        columns: &[SealedColumn],
        options: RotateOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<DekRotation, StoreError> {
        let keys = &self.inner.keys;
        let control = self.control();
        let before = keys.load(control, owner).await?;
        let from: Vec<u32> = before.versions().collect();
        let resumed = from.len() > 1;
        let mut failed = BTreeMap::new();
        if options.dry_run {
            let due = if resumed { before.current().version() } else { NO_VERSION };
            let target = if resumed { due } else { before.current().version() + 1 };
            let count = reseal_pass(&before, due, db, columns, options, &mut failed, 0, progress).await?;
            return Ok(DekRotation {
                owner: owner.to_owned(),
                from,
                to: target,
                resumed,
                reencrypted: count,
                remaining: count + failed.len() as u64,
                failed: failed.into_values().collect(),
                destroyed: Vec::new(),
                dry_run: true,
            });
        }
        let set = if resumed {
            before
        } else {
            let keyring = keys.keyring(control, owner).await?;
            keys.create(control, &keyring, owner, before.current().version() + 1).await?;
            keys.forget(owner);
            keys.load(control, owner).await?
        };
        let to = set.current().version();
        let mut done = reseal_pass(&set, to, db, columns, options, &mut failed, 0, progress).await?;
        // Wait until every process has seen the new key, then catch what they sealed with an
        // old one in the meantime.
        let ready = created_at(control, owner, to).await?.as_millis().saturating_add(millis(options.grace));
        let wait = ready.saturating_sub(Timestamp::now().as_millis());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
        }
        failed.clear();
        done += reseal_pass(&set, to, db, columns, options, &mut failed, done, progress).await?;
        let header = to.to_be_bytes().to_vec();
        let mut remaining = 0u64;
        for column in columns {
            let count: i64 =
                sqlx::query_scalar(column.count_stale).bind(header.as_slice()).fetch_one(db.pool()).await?;
            remaining += u64::try_from(count).unwrap_or(0);
        }
        Ok(DekRotation {
            owner: owner.to_owned(),
            from,
            to,
            resumed,
            reencrypted: done,
            remaining,
            failed: failed.into_values().collect(),
            destroyed: Vec::new(),
            dry_run: false,
        })
    }

    /// Destroys the versions a rotation left unused, when no row still needs them; returns
    /// the versions destroyed.
    async fn destroy_old_keys(&self, report: &DekRotation) -> Result<Vec<u32>, StoreError> {
        if report.remaining > 0 {
            return Ok(Vec::new());
        }
        sqlx::query("DELETE FROM data_keys WHERE owner = $1 AND version < $2")
            .bind(report.owner.as_str())
            .bind(i64::from(report.to))
            .execute(self.control().pool())
            .await?;
        self.inner.keys.forget(&report.owner);
        Ok(report.from.iter().copied().filter(|v| *v < report.to).collect())
    }

    /// Re-wraps stored DEKs under their owner's current KEK (see the module documentation).
    /// Operators only.
    pub async fn rotate_kek(
        &self,
        by: &Principal,
        options: RotateOptions,
    ) -> Result<KekRotation, StoreError> {
        crate::identity::require_operator(by)?;
        let keys = &self.inner.keys;
        let control = self.control();
        let owners: Vec<String> = sqlx::query_scalar("SELECT DISTINCT owner FROM data_keys ORDER BY owner")
            .fetch_all(control.pool())
            .await?;
        let mut report = KekRotation {
            kek_id: keys.platform_keyring().current_id().to_owned(),
            rewrapped: 0,
            current: 0,
            failed: Vec::new(),
            dry_run: options.dry_run,
        };
        for owner in owners {
            let keyring = match keys.keyring(control, &owner).await {
                Ok(keyring) => keyring,
                Err(error) => {
                    report.failed.push((owner, 0, error.to_string()));
                    continue;
                }
            };
            for (version, stored) in stored_keys(control, &owner).await? {
                if stored.kek_id == keyring.current_id() && !options.all {
                    report.current += 1;
                    continue;
                }
                let rewrapped = match keyring.unwrap(&owner, version, &stored).await {
                    Ok(_) if options.dry_run => Ok(None),
                    Ok(dek) => keyring.wrap(&dek).await.map(Some),
                    Err(error) => Err(error),
                };
                match rewrapped {
                    Ok(None) => report.rewrapped += 1,
                    Ok(Some(new)) => {
                        let changed = sqlx::query(
                            "UPDATE data_keys SET kek_id = $1, wrapped = $2 \
                             WHERE owner = $3 AND version = $4 AND wrapped = $5",
                        )
                        .bind(new.kek_id.as_str())
                        .bind(new.wrapped.as_slice())
                        .bind(owner.as_str())
                        .bind(i64::from(version))
                        .bind(stored.wrapped.as_slice())
                        .execute(control.pool())
                        .await?
                        .rows_affected();
                        report.rewrapped += changed;
                    }
                    Err(error) => report.failed.push((owner.clone(), version, error.to_string())),
                }
            }
        }
        if !options.dry_run {
            let mut metadata = Map::new();
            metadata.insert("kek".into(), Value::from(report.kek_id.as_str()));
            metadata.insert("rewrapped".into(), Value::from(report.rewrapped));
            metadata.insert("already_current".into(), Value::from(report.current));
            metadata.insert("failed".into(), Value::from(report.failed.len()));
            self.record_platform(by, "keys.kek_rotated", &[], metadata).await?;
        }
        Ok(report)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn rotation_metadata(report: &DekRotation) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("from".into(), Value::from(report.from.clone()));
    metadata.insert("to".into(), Value::from(report.to));
    metadata.insert("resumed".into(), Value::from(report.resumed));
    metadata.insert("reencrypted".into(), Value::from(report.reencrypted));
    metadata.insert("failed".into(), Value::from(report.failed.len()));
    metadata
}

/// Re-seals, under `set`'s current key, every row of `columns` not sealed by version `due`;
/// returns how many rows changed (dry: would change). Rows that do not open go to `failed`.
#[allow(clippy::too_many_arguments)]
async fn reseal_pass(
    set: &DekSet,
    due: u32,
    db: &Database,
    columns: &[SealedColumn],
    options: RotateOptions,
    failed: &mut BTreeMap<(String, String, String), BadRow>,
    done_before: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, StoreError> {
    let header = due.to_be_bytes().to_vec();
    let mut done = 0u64;
    for column in columns {
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(column.select_stale)
                .bind(after)
                .bind(header.as_slice())
                .bind(i64::from(options.batch.max(1)))
                .fetch_all(db.pool())
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("rid")?;
            let mut updates = Vec::with_capacity(rows.len());
            for row in &rows {
                let key: String = row.try_get("row_key")?;
                let sealed = row.try_get::<Vec<u8>, _>("sealed").map_err(|e| e.to_string());
                let at = Context { table: column.table, column: column.column, row: &key };
                let opened = sealed.and_then(|sealed| match set.open(at, &sealed) {
                    Ok(plain) => Ok((plain, sealed)),
                    Err(error) => Err(error.to_string()),
                });
                match opened {
                    Ok(_) if options.dry_run => done += 1,
                    Ok((plain, sealed)) => {
                        updates.push((
                            row.try_get::<i64, _>("rid")?,
                            set.seal(at, plain.expose_secret()),
                            sealed,
                        ));
                    }
                    Err(reason) => {
                        let bad = BadRow {
                            table: column.table.to_owned(),
                            column: column.column.to_owned(),
                            row: key.clone(),
                            reason,
                        };
                        failed.insert((column.table.to_owned(), column.column.to_owned(), key), bad);
                    }
                }
            }
            if !updates.is_empty() {
                let (mut tx, _gate) = db.begin_write().await?;
                for (rid, new, old) in updates {
                    done += sqlx::query(column.update)
                        .bind(new)
                        .bind(rid)
                        .bind(old)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
            }
            progress(done_before + done);
        }
    }
    Ok(done)
}
