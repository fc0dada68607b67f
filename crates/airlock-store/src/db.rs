//! A database connection pool, whichever backend it runs on.
//!
//! Airlock's SQL is written once and runs on SQLite and PostgreSQL through sqlx's `Any`
//! driver; backend differences are confined to this module (connection settings) and to the
//! per-backend migration folders.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::StoreError;
use crate::migrations::Set;

/// Which database engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file in write-ahead-log mode.
    Sqlite,
}

/// A pool of connections to one database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// Taken by every write transaction of this process, in arrival order. SQLite admits one
    /// writer at a time; without the gate, this process's writers would contend inside
    /// SQLite, whose busy handler waits by sleeping 1, 2, 5, 10 ms and more. Writers in other
    /// processes (a CLI on the same data directory) still meet the busy timeout.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction and this process's write gate, held until it ends.
pub(crate) type WriteTx = (sqlx::Transaction<'static, sqlx::Any>, tokio::sync::OwnedMutexGuard<()>);

/// Characters that would change the meaning of a path inside a `sqlite://` URL.
fn encode_sqlite_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            _ => out.push(c),
        }
    }
    out
}

impl Database {
    /// Opens (creating if missing) a SQLite database file in WAL mode with full fsync on
    /// commit, foreign keys enforced, deleted content overwritten with zeros (so a destroyed
    /// key or an expired token value does not linger in free pages), and a busy timeout so
    /// concurrent writers (the server and a CLI on the same data directory) wait rather than
    /// fail.
    pub async fn open_sqlite(
        path: &Path,
        log_statements: bool,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", encode_sqlite_path(path));
        let mut options: AnyConnectOptions = url.parse().map_err(StoreError::from)?;
        options = if log_statements {
            options.log_statements(tracing::log::LevelFilter::Debug)
        } else {
            options.disable_statement_logging()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(300)))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; \
                         PRAGMA synchronous = FULL; \
                         PRAGMA foreign_keys = ON; \
                         PRAGMA secure_delete = ON; \
                         PRAGMA busy_timeout = 5000;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, backend: Backend::Sqlite, write_gate: Arc::new(tokio::sync::Mutex::new(())) })
    }

    /// The pool, for repositories in this crate.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the pending migrations of `set` for this backend.
    pub(crate) async fn migrate(&self, set: Set) -> Result<(), StoreError> {
        let migrator = Migrator::with_migrations(set.migrations(self.backend));
        migrator.run(&self.pool).await.map_err(|source| StoreError::Migration { source })
    }

    /// Begins a transaction that holds the database's write lock from its first statement,
    /// so what it reads cannot be changed by another writer (another Airlock process on the
    /// same data directory) before it commits.
    /// The second value is this process's write gate; keep it until the transaction ends.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let gate = Arc::clone(&self.write_gate).lock_owned().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        Ok((tx, gate))
    }

    /// Runs a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Runs one statement given as text. For maintenance and for tests that play an attacker
    /// with file access; application code uses bound, static statements.
    pub async fn execute_raw(&self, statement: &str) -> Result<u64, StoreError> {
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&self.pool).await?;
        Ok(result.rows_affected())
    }

    /// Copies the write-ahead log into the database and truncates it, so content deleted
    /// from the database is gone from the log file too.
    pub(crate) async fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
