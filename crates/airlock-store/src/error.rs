//! The store's errors.

use std::path::PathBuf;

/// A storage operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or read.
    #[error("cannot use data directory `{path}`: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A migration failed or an applied migration no longer matches its file.
    #[error("database migration failed: {source}")]
    Migration {
        /// What sqlx reported.
        source: sqlx::migrate::MigrateError,
    },
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A record with the same unique name already exists.
    #[error("{what} already exists")]
    Conflict {
        /// What collided, in words (`a tenant with slug \`acme\``).
        what: String,
    },
    /// The record does not exist (or is not visible to the caller).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, in words.
        what: String,
    },
    /// A tenant database belongs to a different tenant than the one it was opened for.
    #[error("tenant database `{path}` belongs to another tenant; refusing to open it")]
    TenantMismatch {
        /// The database file.
        path: PathBuf,
    },
    /// A stored value could not be read back.
    #[error("corrupt record in `{table}`: {detail}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The audit log could not be written or read.
    #[error("audit log: {0}")]
    Audit(String),
    /// A key could not be unwrapped or a sealed value opened.
    #[error(transparent)]
    Vault(#[from] airlock_vault::VaultError),
    /// An owner's data keys cannot be unwrapped: its key-encryption key is revoked, disabled
    /// or unreachable, or was never configured here. Nothing sealed for it can be read, so
    /// everything that needs it fails closed; other owners are unaffected.
    #[error("the data of {owner} is unavailable: {reason}")]
    KeyUnavailable {
        /// `tenant ten_…` or `the platform`.
        owner: String,
        /// Why, without secrets.
        reason: String,
    },
    /// The request conflicts with the current state (already decided, expired, ended); the
    /// message says how, in full.
    #[error("{0}")]
    Refused(String),
    /// The caller asked for something its principal may not do.
    #[error("{0}")]
    Forbidden(String),
    /// The input was refused before touching the database.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Corrupt { table, detail: detail.to_string() }
    }

    /// Maps a unique-constraint violation to [`StoreError::Conflict`].
    pub(crate) fn conflict_on_unique(error: sqlx::Error, what: impl FnOnce() -> String) -> Self {
        let unique = error.as_database_error().is_some_and(|e| e.is_unique_violation());
        if unique { Self::Conflict { what: what() } } else { Self::Database(error) }
    }
}

/// Why a presented credential was refused. The HTTP layer answers every variant the same
/// way (401, with no hint of which), and logs the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not of the form of any Airlock credential.
    #[error("malformed credential")]
    Malformed,
    /// Well formed, but no such key or session, or the secret does not match.
    #[error("unknown credential")]
    Unknown,
    /// Revoked by its owner or an admin.
    #[error("revoked credential")]
    Revoked,
    /// Past its expiry (or, for a session, idle too long).
    #[error("expired credential")]
    Expired,
    /// Its owner (user, agent or tenant) is disabled or deleted.
    #[error("credential owner disabled")]
    OwnerDisabled,
    /// Wrong e-mail address or password.
    #[error("invalid login")]
    InvalidLogin,
}
