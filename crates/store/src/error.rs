//! Errors of the store boundary.

use std::path::PathBuf;

/// What can go wrong talking to the source of truth.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is neither `postgres://...` nor `sqlite://...`, or is malformed.
    #[error("unsupported database URL: {0}")]
    BadUrl(String),
    /// The folder of the SQLite file could not be created.
    #[error("creating the database folder {path}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why it could not be created.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be reached or refused the statement.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A database role name that is not a plain lower-case identifier, or roles on SQLite.
    #[error("cannot grant to database role '{0}': expected a lower-case identifier on PostgreSQL")]
    BadRole(String),
    /// The group commit holding this write failed as a whole (the database could not be reached or
    /// refused the transaction); nothing of it was written.
    #[error("group commit failed")]
    Batch(#[source] std::sync::Arc<StoreError>),
    /// The group-commit writer has stopped (the process is shutting down).
    #[error("the order writer has stopped")]
    WriterStopped,
    /// A write met a concurrent one it cannot decide against (an idempotency key that expired while it was
    /// being claimed); trying again decides it.
    #[error("concurrent change: {0}")]
    Conflict(String),
    /// A stored row does not describe a valid domain value (the database was edited by hand?).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// Table the row came from.
        table: &'static str,
        /// What is wrong with it.
        reason: String,
        /// The parser's error, when a stored value failed to parse.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// True when the database could not be reached, was too busy or is shutting down (or the order writer
    /// stopped): the same call may succeed later. False for faults a retry does not fix (a corrupt row, a
    /// statement the database refuses, a bad URL).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(e) => is_unavailable(e),
            Self::Batch(e) => e.is_unavailable(),
            Self::WriterStopped | Self::Conflict(_) => true,
            Self::BadUrl(_)
            | Self::DataDir { .. }
            | Self::Migration(_)
            | Self::BadRole(_)
            | Self::Corrupt { .. } => false,
        }
    }
}

/// Lost or refused connections, an exhausted or closed pool, and the database's own "try again" answers:
/// PostgreSQL classes 08 (connection), 40 (serialization failure, deadlock), 53 (resources) and 57 (operator
/// intervention, e.g. shutting down); SQLite busy or locked.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            let code = e.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite codes are short numbers whose low byte is the primary code (517 is SQLITE_BUSY_SNAPSHOT);
            // PostgreSQL codes always have five characters.
            let sqlite_busy = code.len() < 5 && code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
            ["08", "40", "53", "57"].iter().any(|c| code.starts_with(c)) || sqlite_busy
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}
