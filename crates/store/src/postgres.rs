//! PostgreSQL backend (production).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use crate::{
    RelayLease, StoreError, audit::audit_queries, backend::shared_queries, charges::charge_queries,
    history::history_queries, idempotency::idempotency_queries, inventory::inventory_queries,
    join::join_queries, reconcile::reconcile_queries,
};

/// Advisory-lock key that elects the single active outbox relay ("orderflow" in ASCII).
const RELAY_LOCK_KEY: i64 = 0x6f72_6465_7266_6c6f;

/// A PostgreSQL connection pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    /// Connects with at most `max_connections` pooled connections.
    ///
    /// Every session commits with `synchronous_commit=on`, whatever the server's default: a `201`, a cancel,
    /// a charge or any consumer's effect is acknowledged only once its commit is on disk (with the server's
    /// `fsync` on), so a crash of the database loses nothing it acknowledged. Group commit keeps the cost to
    /// one flush per batch of orders.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The connection pool, for consumers that apply effects in their own transactions.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations from `migrations/postgres`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await?;
        Ok(())
    }

    /// See [`crate::Store::grant_service_role`]; `role` is already checked to be a plain identifier.
    pub(crate) async fn grant_service_role(&self, role: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let statements = [
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
            // The audit trail is append-only for the service: rows are never changed or removed.
            format!("REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {role}"),
            // The service reads which migrations ran, never records one.
            format!("REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM {role}"),
            // Before PostgreSQL 15 every role may create in `public` through PUBLIC: take that away too.
            format!("REVOKE CREATE ON SCHEMA public FROM {role}"),
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
        ];
        for statement in statements {
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A connection listening on [`crate::OUTBOX_CHANNEL`], which every transaction that adds outbox rows
    /// notifies on commit.
    pub(crate) async fn outbox_listener(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(crate::OUTBOX_CHANNEL).await?;
        Ok(listener)
    }

    /// Takes the relay's advisory lock on a connection of its own (waits while another process holds it).
    pub async fn acquire_relay_lease(&self) -> Result<RelayLease, StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .execute(&mut conn)
            .await?;
        Ok(RelayLease::Postgres(conn))
    }
}

shared_queries!(PgStore, Postgres);
charge_queries!(PgStore, Postgres);
inventory_queries!(PgStore, Postgres, " FOR UPDATE");
audit_queries!(PgStore, Postgres);
reconcile_queries!(PgStore, Postgres);
history_queries!(PgStore, Postgres);
idempotency_queries!(PgStore, Postgres);
join_queries!(PgStore, Postgres, " FOR UPDATE SKIP LOCKED");
