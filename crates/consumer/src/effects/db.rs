//! Database effects with a dedup row in the same transaction.

use std::collections::HashSet;
use std::future::Future;

use sqlx::{Database, Pool, Postgres, Sqlite, Transaction};

use crate::handler::{Handler, HandlerError};
use crate::record::{Output, Record};

/// How long a dedup row is kept: longer than any record can come again. Retry and dead-letter topics keep
/// records [`crate::ROUTING_RETENTION_DAYS`] days, and a dead letter replayed on the last of them is seen
/// again as it was; twice that leaves room for the source topics' own retention.
pub const DEDUP_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(2 * crate::ROUTING_RETENTION_DAYS as u64 * 24 * 3600);

/// Applies the effects of records inside a database transaction opened by [`DbEffects`].
pub trait DbHandler<DB: Database>: Send + Sync + 'static {
    /// Applies the effects of `records` (only those not applied before) in `tx`; the caller commits.
    fn apply(
        &self,
        tx: &mut Transaction<'static, DB>,
        records: &[&Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A [`Handler`] that applies a [`DbHandler`]'s effects exactly once per `(consumer, event id)`.
pub struct DbEffects<DB: Database, H> {
    pool: Pool<DB>,
    consumer: String,
    handler: H,
}

impl<DB: Database, H> DbEffects<DB, H> {
    /// Effects of `handler` for the consumer named `consumer` (usually the group id) in `pool`'s database.
    pub fn new(pool: Pool<DB>, consumer: impl Into<String>, handler: H) -> Self {
        Self {
            pool,
            consumer: consumer.into(),
            handler,
        }
    }

    /// What forgets this consumer's old dedup rows: cheap to clone, so it can run beside the runtime.
    pub fn pruner(&self) -> DedupPruner<DB> {
        DedupPruner {
            pool: self.pool.clone(),
            consumer: self.consumer.clone(),
        }
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.handler
    }
}

/// Maps a database error to a handler error: lost connections, timeouts, serialization failures, deadlocks
/// and a busy SQLite file are transient; anything else the database refused is permanent.
pub fn db_error(error: sqlx::Error) -> HandlerError {
    let transient = match &error {
        sqlx::Error::Database(e) => {
            let code = e.code().map(|c| c.into_owned()).unwrap_or_default();
            // PostgreSQL classes 08 (connection), 40 (rollback: serialization, deadlock), 53 (resources),
            // 57 (operator intervention); SQLite 5 and 6 (busy, locked).
            // SQLite codes are short numbers whose low byte is the primary code (517 is SQLITE_BUSY_SNAPSHOT);
            // PostgreSQL codes always have five characters.
            let sqlite_busy = code.len() < 5 && code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
            ["08", "40", "53", "57"].iter().any(|c| code.starts_with(c)) || sqlite_busy
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    if transient {
        HandlerError::transient(error)
    } else {
        HandlerError::permanent(error)
    }
}

/// Keeps the records whose ids were newly inserted, each id once (a batch may hold the same event twice).
fn fresh<'a>(batch: &'a [Record], ids: &[String], inserted: HashSet<String>) -> Vec<&'a Record> {
    let mut inserted = inserted;
    batch
        .iter()
        .zip(ids)
        .filter(|(_, id)| inserted.remove(id.as_str()))
        .map(|(record, _)| record)
        .collect()
}

impl<H: DbHandler<Postgres>> DbEffects<Postgres, H> {
    /// Creates the dedup table if missing.
    ///
    /// An existing table is left alone without any DDL, so a service whose database role may not create
    /// tables starts once the migrations made it. `CREATE TABLE IF NOT EXISTS` is not safe against itself
    /// in PostgreSQL: two roles starting at once can both pass the check and one fails on the catalog's
    /// unique index. A transaction-scoped advisory lock serialises them.
    pub async fn ensure_schema(&self) -> Result<(), sqlx::Error> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('consumer_dedup') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if exists {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('orderflow.consumer_dedup'))")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS consumer_dedup (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (consumer, event_id))",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

/// Forgets one consumer's dedup rows once they are older than any record could be re-delivered: without it
/// `consumer_dedup` grows by a row per event for ever.
#[derive(Debug, Clone)]
pub struct DedupPruner<DB: Database> {
    pool: Pool<DB>,
    consumer: String,
}

impl DedupPruner<Postgres> {
    /// Deletes the consumer's dedup rows applied more than `age` ago; returns how many.
    pub async fn prune(&self, age: std::time::Duration) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM consumer_dedup WHERE consumer = $1 AND applied_at < now() - make_interval(secs => $2)",
        )
        .bind(&self.consumer)
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

impl DedupPruner<Sqlite> {
    /// Deletes the consumer's dedup rows applied more than `age` ago; returns how many.
    pub async fn prune(&self, age: std::time::Duration) -> Result<u64, sqlx::Error> {
        // `applied_at` is ISO 8601 text in UTC, which sorts as time does.
        let done = sqlx::query(
            "DELETE FROM consumer_dedup WHERE consumer = $1 \
             AND applied_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || $2 || ' seconds')",
        )
        .bind(&self.consumer)
        .bind(age.as_secs() as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

impl<H: DbHandler<Postgres>> Handler for DbEffects<Postgres, H> {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let ids: Vec<String> = batch.iter().map(Record::event_id).collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let inserted: Vec<(String,)> = sqlx::query_as(
            "INSERT INTO consumer_dedup (consumer, event_id) SELECT $1, unnest($2::text[])
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(&self.consumer)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let records = fresh(batch, &ids, inserted.into_iter().map(|(id,)| id).collect());
        if !records.is_empty() {
            self.handler.apply(&mut tx, &records).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Vec::new())
    }
}

impl<H: DbHandler<Sqlite>> DbEffects<Sqlite, H> {
    /// Creates the dedup table if missing.
    pub async fn ensure_schema(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS consumer_dedup (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                PRIMARY KEY (consumer, event_id))",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl<H: DbHandler<Sqlite>> Handler for DbEffects<Sqlite, H> {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let ids: Vec<String> = batch.iter().map(Record::event_id).collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // One statement per chunk (SQLite allows 32,766 bound parameters) instead of one per record.
        let mut inserted = HashSet::new();
        for chunk in ids.chunks(1_000) {
            let mut insert =
                sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO consumer_dedup (consumer, event_id) ");
            insert.push_values(chunk, |mut row, id| {
                row.push_bind(&self.consumer).push_bind(id);
            });
            insert.push(" ON CONFLICT DO NOTHING RETURNING event_id");
            let rows: Vec<(String,)> = insert
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            inserted.extend(rows.into_iter().map(|(id,)| id));
        }
        let records = fresh(batch, &ids, inserted);
        if !records.is_empty() {
            self.handler.apply(&mut tx, &records).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Vec::new())
    }
}
