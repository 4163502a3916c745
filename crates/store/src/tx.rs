//! The statements a consumer runs inside a transaction it owns (next to its dedup row), as one trait over
//! both backends, so a handler is written once for PostgreSQL and SQLite.

use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Sqlite, Transaction};

use crate::{AuditEntry, PgStore, SqliteStore, StatusChange, StoreError};

/// A database Orderflow runs on, with the in-transaction statements its consumers share.
pub trait TxStatements: sqlx::Database {
    /// Applies a pipeline status change when the order is still where the change starts from and below its
    /// version; `false` (nothing written) for a re-delivered, late or overtaken change.
    fn advance_status(
        tx: &mut Transaction<'static, Self>,
        change: &StatusChange,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Appends `entries` to the audit chain after locking its head; the caller commits.
    fn append_audit(
        tx: &mut Transaction<'static, Self>,
        entries: &[AuditEntry],
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

macro_rules! tx_statements {
    ($db:ty, $store:ty) => {
        impl TxStatements for $db {
            async fn advance_status(
                tx: &mut Transaction<'static, Self>,
                change: &StatusChange,
            ) -> Result<bool, StoreError> {
                <$store>::advance_status(tx, change).await
            }

            async fn append_audit(
                tx: &mut Transaction<'static, Self>,
                entries: &[AuditEntry],
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                <$store>::append_audit(tx, entries, at).await
            }
        }
    };
}

tx_statements!(Postgres, PgStore);
tx_statements!(Sqlite, SqliteStore);
