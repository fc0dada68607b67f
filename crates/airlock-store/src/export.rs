//! A tenant's export: everything of the tenant's in one signed archive (see
//! `airlock_audit::archive`), streamed out in chunks as it is written.
//!
//! The archive holds every table of the tenant's database as JSON Lines, the tenant's rows
//! of the control plane (`control_*`: the tenant, its users, agents, API keys and data-key
//! versions), the audit log in its verifiable form with the signing keys' verifier strings,
//! and a manifest signed with the tenant's audit signing key. Nothing secret is in it: sealed
//! columns are replaced by `"[redacted]"`, and password hashes, key hashes and wrapped keys
//! are left out. The audit log's own tables are not repeated as tables.
//!
//! Rows are read from the database as a stream and serialised by SQLite itself
//! (`json_object`), so memory stays bounded by one batch of rows and the compressor's window,
//! whatever the tenant's size; a bounded channel makes a slow reader slow the export down.

use airlock_audit::archive::{ArchiveInfo, ArchiveWriter, SharedBuffer};
use airlock_types::Timestamp;
use futures_util::TryStreamExt as _;
use serde_json::Map;
use sqlx::Row;
use tokio::sync::mpsc;

use crate::auditlog::{export_header, export_page, signing_keys};
use crate::keys::TENANT_SEALED;
use crate::principal::{Principal, TenantScope};
use crate::tenant::{current_signer, origin};
use crate::{Database, Store, StoreError};

/// Bytes of archive produced, with where the export stands.
#[derive(Debug, Clone)]
pub struct ExportChunk {
    /// The next bytes of the archive.
    pub bytes: Vec<u8>,
    /// The entry being written.
    pub entry: String,
    /// Rows (lines) written so far, in all entries.
    pub rows: u64,
    /// Uncompressed bytes written so far.
    pub uncompressed: u64,
}

/// A finished export.
#[derive(Debug, Clone, Copy)]
pub struct ExportSummary {
    /// Rows (lines) in all entries.
    pub rows: u64,
    /// Uncompressed bytes in all entries.
    pub uncompressed: u64,
    /// Bytes of archive.
    pub archive_bytes: u64,
}

/// Columns whose values are secrets of another kind than sealed ones: kept out of exports.
const SECRET_COLUMNS: &[(&str, &str)] = &[("runs", "lease_hash")];

/// Tables an export leaves out: the audit log's (exported in its verifiable form) and
/// bookkeeping.
fn skipped(table: &str) -> bool {
    matches!(table, "audit_entries" | "audit_checkpoints" | "_sqlx_migrations")
        || table.starts_with("sqlite_")
}

fn redacted(table: &str, column: &str) -> bool {
    TENANT_SEALED.iter().any(|s| s.table == table && s.column == column)
        || SECRET_COLUMNS.iter().any(|(t, c)| *t == table && *c == column)
}

/// Control-plane rows of a tenant, each as one JSON object. No password hashes, key hashes
/// or wrapped keys.
const CONTROL_TABLES: &[(&str, &str)] = &[
    (
        "control_tenant",
        "SELECT json_object('id', id, 'slug', slug, 'name', name, 'created_at', created_at) \
         FROM tenants WHERE id = $1",
    ),
    (
        "control_users",
        "SELECT json_object('id', u.id, 'email', u.email, 'name', u.name, 'created_at', u.created_at, \
         'disabled_at', u.disabled_at, \
         'has_password', json(CASE WHEN u.password_hash IS NULL THEN 'false' ELSE 'true' END), \
         'roles', (SELECT json_group_array(role) FROM user_roles r WHERE r.user_id = u.id)) \
         FROM users u WHERE u.tenant_id = $1 ORDER BY u.created_at, u.id",
    ),
    (
        "control_agents",
        "SELECT json_object('id', id, 'name', name, 'description', description, 'created_at', created_at, \
         'disabled_at', disabled_at) FROM agents WHERE tenant_id = $1 ORDER BY created_at, id",
    ),
    (
        "control_api_keys",
        "SELECT json_object('id', id, 'owner_kind', owner_kind, 'owner_id', owner_id, 'name', name, \
         'created_at', created_at, 'expires_at', expires_at, 'revoked_at', revoked_at, \
         'last_used_at', last_used_at) FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
    ),
    (
        "control_data_keys",
        "SELECT json_object('version', version, 'kek_id', kek_id, 'created_at', created_at) \
         FROM data_keys WHERE owner = $1 ORDER BY version",
    ),
];

/// The archive being written, and the reader its bytes go to.
struct Sink {
    archive: ArchiveWriter<SharedBuffer>,
    buffer: SharedBuffer,
    chunks: mpsc::Sender<ExportChunk>,
    sent: u64,
}

fn archive_error(error: airlock_audit::ArchiveError) -> StoreError {
    StoreError::Audit(format!("export archive: {error}"))
}

/// Sends what the archive produced since the last call.
async fn send(
    buffer: &SharedBuffer,
    chunks: &mpsc::Sender<ExportChunk>,
    sent: &mut u64,
    progress: (&str, u64, u64),
) -> Result<(), StoreError> {
    let bytes = buffer.take();
    if bytes.is_empty() {
        return Ok(());
    }
    *sent += bytes.len() as u64;
    let (entry, rows, uncompressed) = progress;
    chunks
        .send(ExportChunk { bytes, entry: entry.to_owned(), rows, uncompressed })
        .await
        .map_err(|_| StoreError::Refused("the export's reader went away; the export stopped".into()))
}

impl Sink {
    async fn flush(&mut self) -> Result<(), StoreError> {
        let progress = (
            self.archive.current_entry().unwrap_or_default(),
            self.archive.rows_written(),
            self.archive.bytes_written(),
        );
        send(&self.buffer, &self.chunks, &mut self.sent, progress).await
    }

    /// Writes the rows `sql` yields (one JSON text each) as table `name`.
    async fn table(
        &mut self,
        db: &Database,
        name: &str,
        sql: &str,
        bind: Option<&str>,
    ) -> Result<(), StoreError> {
        self.archive.start_table(name).map_err(archive_error)?;
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        let query = match bind {
            Some(value) => query.bind(value.to_owned()),
            None => query,
        };
        let mut rows = query.fetch(db.pool());
        let mut pending = 0usize;
        while let Some(row) = rows.try_next().await? {
            // SQLite's `json_object` writes compact JSON with control characters escaped:
            // one line, kept as it is.
            let text: String = row.try_get(0)?;
            self.archive.write_line(&text).map_err(archive_error)?;
            pending += 1;
            if pending >= ROWS_PER_CHUNK {
                pending = 0;
                self.flush().await?;
            }
        }
        drop(rows);
        self.flush().await
    }
}

/// Rows written between hand-overs to the reader.
const ROWS_PER_CHUNK: usize = 256;

/// Quotes an identifier read from the database's own schema.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The statement that reads table `table` as JSON objects, redacting secret columns and
/// writing other BLOBs as hex.
async fn table_statement(db: &Database, table: &str) -> Result<String, StoreError> {
    let columns = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({})", quoted(table))))
        .fetch_all(db.pool())
        .await?;
    let mut fields = Vec::with_capacity(columns.len());
    for column in &columns {
        let name: String = column.try_get("name")?;
        let declared: String = column.try_get("type")?;
        let value = if redacted(table, &name) {
            format!("CASE WHEN {0} IS NULL THEN NULL ELSE '[redacted]' END", quoted(&name))
        } else if declared.eq_ignore_ascii_case("BLOB") {
            format!("lower(hex({}))", quoted(&name))
        } else {
            quoted(&name)
        };
        fields.push(format!("'{}', {value}", name.replace('\'', "''")));
    }
    Ok(format!("SELECT json_object({}) FROM {} ORDER BY rowid", fields.join(", "), quoted(table)))
}

impl Store {
    /// Exports the tenant (see the module documentation), sending the archive's bytes to
    /// `chunks` as they are produced. The export is recorded in the tenant's log (covered by
    /// the archive's audit log) and in the platform log. Operators only.
    pub async fn export_tenant(
        &self,
        by: &Principal,
        scope: &TenantScope,
        chunks: mpsc::Sender<ExportChunk>,
    ) -> Result<ExportSummary, StoreError> {
        crate::identity::require_operator(by)?;
        let db = self.tenant_db(scope).await?;
        let dek = self.dek(scope.tenant_id()).await?;
        let tenant = scope.tenant_id().as_str();
        self.record_platform(by, "tenant.exported", &[("tenant", tenant)], Map::new()).await?;
        self.record(scope, "tenant.exported", &[], Map::new()).await?;
        let checkpoint = self.audit_checkpoint(scope).await?;
        let (header, size) = export_header(origin(scope.tenant_id()), checkpoint)?;

        let buffer = SharedBuffer::default();
        let info = ArchiveInfo {
            tenant: tenant.to_owned(),
            origin: origin(scope.tenant_id()),
            created_at_ms: Timestamp::now().as_millis(),
            airlock_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let archive = ArchiveWriter::new(buffer.clone(), info).map_err(archive_error)?;
        let mut sink = Sink { archive, buffer, chunks, sent: 0 };

        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(db.database().pool())
                .await?;
        for table in tables.iter().filter(|t| !skipped(t)) {
            let sql = table_statement(db.database(), table).await?;
            sink.table(db.database(), table, &sql, None).await?;
        }
        for (name, sql) in CONTROL_TABLES {
            sink.table(self.control(), name, sql, Some(tenant)).await?;
        }

        sink.archive.start_file(airlock_audit::archive::AUDIT_LOG).map_err(archive_error)?;
        sink.archive.write_line(&header).map_err(archive_error)?;
        let mut from = 0;
        while from < size {
            let page = export_page(db.database(), from, size, 1000).await?;
            for line in &page {
                sink.archive.write_line(line).map_err(archive_error)?;
            }
            from += 1000;
            sink.flush().await?;
        }
        let verifiers: Vec<String> =
            signing_keys(db.database()).await?.into_iter().map(|k| k.verifier).collect();
        let keys = serde_json::to_vec_pretty(&verifiers).map_err(|e| StoreError::Audit(e.to_string()))?;
        sink.archive.add_file("audit/keys.json", &keys).map_err(archive_error)?;

        let signer = current_signer(db.database(), &origin(scope.tenant_id()), &dek).await?;
        let (rows, uncompressed) = (sink.archive.rows_written(), sink.archive.bytes_written());
        let Sink { archive, buffer, chunks, mut sent } = sink;
        archive.finish(&signer).map_err(archive_error)?;
        send(&buffer, &chunks, &mut sent, (airlock_audit::archive::MANIFEST, rows, uncompressed)).await?;
        Ok(ExportSummary { rows, uncompressed, archive_bytes: sent })
    }
}
