//! Errors of the store boundary.

/// What can go wrong talking to the source of truth.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is neither `postgres://...` nor `sqlite://...`, or is malformed.
    #[error("unsupported database URL: {0}")]
    BadUrl(String),
    /// The database could not be reached or refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A database role name that is not a plain lower-case identifier, or roles on SQLite.
    #[error("cannot grant to database role '{0}': expected a lower-case identifier on PostgreSQL")]
    BadRole(String),
    /// The group commit holding this write failed as a whole (the database could not be reached or
    /// refused the transaction); nothing of it was written.
    #[error("group commit failed: {0}")]
    Batch(#[source] std::sync::Arc<StoreError>),
    /// The group-commit writer has stopped (the process is shutting down).
    #[error("the order writer has stopped")]
    WriterStopped,
    /// A stored row does not describe a valid domain value (the database was edited by hand?).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// Table the row came from.
        table: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
