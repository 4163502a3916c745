//! SQLite backend (embedded default: one file under the data directory, one process).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{
    RelayLease, StoreError, audit::audit_queries, backend::shared_queries, charges::charge_queries,
    history::history_queries, idempotency::idempotency_queries, inventory::inventory_queries,
    join::join_queries, reconcile::reconcile_queries,
};

/// A SQLite connection pool over one database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `sqlite://path`, in WAL mode with full fsync so that an
    /// order answered with 201 survives a crash. The pool has one connection (see below), so
    /// `_max_connections` is not used.
    pub async fn connect(url: &str, _max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        // One connection, whatever was asked: SQLite has one writer at a time, and in WAL mode a transaction
        // that reads and then writes fails at once with SQLITE_BUSY_SNAPSHOT (no busy timeout helps) when
        // another connection committed in between. With every role of the embedded default sharing this
        // file, queueing for the one connection is both correct and faster than failing and retrying.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The connection pool, for consumers that apply effects in their own transactions.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Applies pending migrations from `migrations/sqlite`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    /// SQLite serves one process, so this process is the relay.
    pub async fn acquire_relay_lease(&self) -> Result<RelayLease, StoreError> {
        Ok(RelayLease::Sqlite)
    }
}

shared_queries!(SqliteStore, Sqlite);
charge_queries!(SqliteStore, Sqlite);
inventory_queries!(SqliteStore, Sqlite, "");
audit_queries!(SqliteStore, Sqlite);
reconcile_queries!(SqliteStore, Sqlite);
history_queries!(SqliteStore, Sqlite);
idempotency_queries!(SqliteStore, Sqlite);
join_queries!(SqliteStore, Sqlite, "");
