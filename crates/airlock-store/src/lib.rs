//! Airlock's storage: the control-plane database, one database per tenant, their migrations,
//! and the repositories over them.
//!
//! The control plane holds tenants, users, agents, operators, API keys and sessions. Each
//! tenant's own data lives in that tenant's database, reached only through a [`TenantScope`],
//! which only an authenticated [`Principal`] (or the platform operator, for tenant
//! administration) can produce. No function here takes a tenant id from a request.
//!
//! SQL is plain and static: the same statements run on every backend (`$1` placeholders
//! work on SQLite and PostgreSQL alike), and each backend has its own migration folder.

mod approvals;
mod audit;
mod auditlog;
mod db;
mod error;
mod export;
mod flow;
mod identity;
mod inspection;
mod keys;
mod lifecycle;
mod migrations;
mod models;
mod platform;
mod principal;
mod rotation;
mod runs;
mod tenant;
mod tools;
mod versioned;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airlock_crypto::KeyedHasher;
use airlock_types::TenantId;
use airlock_vault::{ConnectOptions, DekSet, Keyring};

pub use approvals::{Approval, ApprovalDecision, ApprovalRequest, KillSwitch, Settlement};
pub use audit::{Appended, AuditOptions, SignedCheckpoint};
pub use auditlog::{AuditFilter, InclusionProof, SigningKeyInfo, StoredEntry};
pub use db::{Backend, Database};
pub use error::{AuthError, StoreError};
pub use export::{ExportChunk, ExportSummary};
pub use flow::{ALLOWLISTS, AllowlistEntry, LiveEntry, RunOutput};
pub use identity::{Agent, ApiKey, CreatedApiKey, CreatedSession, KeyOwner, NewUser, Session, Tenant, User};
pub use inspection::{InspectionProfile, VaultEntry};
pub use keys::TenantKek;
pub use lifecycle::{DELETION_REQUEST_LIFETIME, Deletion};
pub use models::{
    BudgetLimits, ModelAlias, ModelRoute, ModelSettings, NewModelRoute, OpenedRoute, Reserve, Settle,
};
pub use platform::PLATFORM_ORIGIN;
pub use principal::{Credential, Principal, PrincipalKind, TenantScope};
pub use rotation::{BadRow, DekRotation, KekRotation, RotateOptions};
pub use runs::{Action, LeaseError, NewAction, NewRun, OpenedRun, Run};
pub use tenant::{TenantDb, origin as audit_origin};
pub use tools::{Credential as ToolCredential, PolicyVersion, Tool, ToolSpec};
pub use versioned::Version;

/// How long console sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// The longest a session lives, however active.
    pub lifetime: Duration,
    /// A session unused for this long ends.
    pub idle_timeout: Duration,
}

/// Where and how the store keeps its data.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The key-encryption keys: the current one wraps new data keys, previous ones still
    /// unwrap what they wrapped until a KEK rotation re-wraps it.
    pub keyring: Keyring,
    /// How tenants' own KEK providers are connected.
    pub connect: ConnectOptions,
    /// How long unwrapped data keys are kept in memory before being unwrapped again: the
    /// longest a revoked KEK keeps working, and the longest another process's key rotation
    /// takes to be seen here.
    pub key_cache_ttl: Duration,
    /// When audit checkpoints are signed.
    pub audit: AuditOptions,
    /// The data directory: `control.sqlite` and `tenants/<tenant id>.sqlite` live here.
    pub data_dir: PathBuf,
    /// Session lifetimes.
    pub sessions: SessionPolicy,
    /// Log every SQL statement at debug level (a debug option; refused in production).
    pub log_statements: bool,
}

/// The storage layer: the control plane and every tenant's database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    control: Database,
    tenants: tenant::TenantDatabases,
    hasher: KeyedHasher,
    sessions: SessionPolicy,
    keys: keys::Keys,
    audit: AuditOptions,
    /// The platform's audit log, started on first use (its signing key is sealed with the
    /// platform's data key, which an external KEK provider may have to unwrap).
    platform_log: tokio::sync::OnceCell<audit::AuditWriter>,
}

impl Store {
    /// Opens (creating if needed) the data directory, and migrates the control plane.
    ///
    /// `hasher` keys the hashes under which API keys and session tokens are stored; the same
    /// key must be used on every start, or every issued credential stops working.
    pub async fn open(options: StoreOptions, hasher: KeyedHasher) -> Result<Self, StoreError> {
        let dir = &options.data_dir;
        std::fs::create_dir_all(dir.join("tenants"))
            .map_err(|source| StoreError::DataDir { path: dir.clone(), source })?;
        let control = Database::open_sqlite(&dir.join("control.sqlite"), options.log_statements, 8).await?;
        control.migrate(migrations::Set::Control).await?;
        let store = Self {
            inner: Arc::new(Inner {
                control,
                tenants: tenant::TenantDatabases::new(
                    dir.join("tenants"),
                    options.log_statements,
                    options.audit,
                ),
                hasher,
                sessions: options.sessions,
                keys: keys::Keys::new(options.keyring, options.connect, options.key_cache_ttl),
                audit: options.audit,
                platform_log: tokio::sync::OnceCell::new(),
            }),
        };
        store.remove_deleted_tenant_files().await?;
        Ok(store)
    }

    /// The data directory's control-plane database.
    #[must_use]
    pub fn control(&self) -> &Database {
        &self.inner.control
    }

    /// Whether the control plane answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.control.ping().await
    }

    /// Closes every database cleanly (checkpointing SQLite's write-ahead log).
    pub async fn close(&self) {
        self.inner.tenants.close_all().await;
        self.inner.control.close().await;
    }

    /// The tenant's own database, for a scope an authenticated principal produced.
    pub async fn tenant_db(&self, scope: &TenantScope) -> Result<TenantDb, StoreError> {
        let dek = self.dek(scope.tenant_id()).await?;
        self.inner.tenants.open(scope.tenant_id(), &dek).await
    }

    /// The tenant's data-encryption keys, unwrapped through its keyring.
    pub(crate) async fn dek(&self, tenant: &TenantId) -> Result<Arc<DekSet>, StoreError> {
        self.inner.keys.dek_set(self.control(), tenant.as_str()).await
    }

    fn hasher(&self) -> &KeyedHasher {
        &self.inner.hasher
    }
}
