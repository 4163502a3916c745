//! The source of truth: orders and the transactional outbox, on PostgreSQL (production) or SQLite
//! (embedded default).
//!
//! Both backends run the same SQL (see [`backend`]; the payment provider's ledger in [`charges`]); only connecting, migrating and the relay lease differ.
//! Writing an order and its events is one transaction, so an event exists if and only if its order does.

pub mod audit;
mod backend;
mod charges;
mod error;
mod group_commit;
mod history;
mod idempotency;
mod inventory;
mod join;
mod postgres;
mod reconcile;
mod registry;
mod rows;
mod sqlite;
mod telemetry;
mod tx;

use chrono::{DateTime, Utc};
use orderflow_domain::{Order, OrderId};
use orderflow_events::EncodedEvent;

pub use audit::{AuditEntry, AuditVerdict};
pub use charges::{Charge, ChargeOutcome, ChargeTotals, Refund, RefundClaim};
pub use error::StoreError;

/// Orders that stopped moving: still waiting for a payment outcome (`CREATED`) or for stock (`PAID`) long
/// after their last change. Every step of the pipeline answers within seconds, so such an order is stuck.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stranded {
    /// How many are still `CREATED`.
    pub created: i64,
    /// How many are still `PAID`.
    pub paid: i64,
    /// The ones that have waited longest: id, status and when they last moved.
    pub oldest: Vec<(OrderId, String, DateTime<Utc>)>,
}
pub use group_commit::{GroupCommitSettings, OrderWriter};
pub use history::{ChargeFact, OrderFacts};
pub use idempotency::{IdempotencyKey, KeptResponse, KeyedWrite};
pub use inventory::{InventoryOp, InventoryOutcome, Product, StockLine};
pub use join::{JoinEntry, JoinExpired, JoinPut};
pub use postgres::PgStore;
pub use reconcile::{ChargeDiscrepancies, StockLedgerLine};
pub use sqlite::SqliteStore;
pub use tx::TxStatements;

/// An outbox row waiting to be (or already) published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Position in the outbox; the relay publishes in increasing id order.
    pub id: i64,
    /// The event's id.
    pub event_id: uuid::Uuid,
    /// Base topic name (without deployment prefix).
    pub topic: String,
    /// Record key (the order id).
    pub key: String,
    /// Event type.
    pub event_type: String,
    /// Encoded body, published unchanged.
    pub payload: Vec<u8>,
    /// Record headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// When the write that produced the event was made (the record's timestamp, see the relay).
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// One order as a console lists it: no lines, the status as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrderSummary {
    /// The order's id.
    pub id: uuid::Uuid,
    /// Who placed it.
    pub customer_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Its status now.
    pub status: String,
    /// Total in minor units of `currency`.
    pub total_minor: i64,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

/// Which orders to list, and from where: the page after `after`, in (created_at, id) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only this customer's orders.
    pub customer_id: Option<String>,
    /// Only orders in this status.
    pub status: Option<orderflow_domain::OrderStatus>,
    /// Only orders placed after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// The last order of the previous page (its creation time and id).
    pub after: Option<(DateTime<Utc>, OrderId)>,
    /// Most orders listed.
    pub limit: i64,
}

/// A status change the pipeline reports for an order (a payment or stock outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The order.
    pub order_id: OrderId,
    /// The statuses the order may be in for the change to apply.
    pub from: &'static [orderflow_domain::OrderStatus],
    /// The status it moves to.
    pub to: orderflow_domain::OrderStatus,
    /// The version it moves to.
    pub version: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL server.
    Postgres,
    /// SQLite file.
    Sqlite,
}

impl Backend {
    /// Name for logs and start-up banners.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Sqlite => "sqlite",
        }
    }
}

/// The PostgreSQL channel every transaction that adds outbox rows notifies on commit ([`OutboxWatch`]).
pub const OUTBOX_CHANNEL: &str = "orderflow_outbox";

/// The statement that notifies [`OUTBOX_CHANNEL`].
pub(crate) const NOTIFY_OUTBOX: &str = "NOTIFY orderflow_outbox";

/// Wakes a relay when another process commits outbox rows: on PostgreSQL a connection listening on
/// [`OUTBOX_CHANNEL`]; SQLite is single-process, so nothing ever arrives there (the relay's in-process
/// wake-up covers it).
pub struct OutboxWatch(Option<sqlx::postgres::PgListener>);

impl OutboxWatch {
    /// Waits for the next commit of outbox rows. Also returns (`Ok`) after the listening connection was lost
    /// and is being re-established, since commits in between went unheard; an error means it could not
    /// reconnect.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        match &mut self.0 {
            Some(listener) => {
                listener.try_recv().await?;
                Ok(())
            }
            None => std::future::pending().await,
        }
    }
}

/// Proof that this process is the only active outbox relay; held until dropped.
///
/// On PostgreSQL it is a session advisory lock on a dedicated connection (released by the server if the
/// process dies); SQLite is single-process, so the lease is implicit.
pub enum RelayLease {
    /// Holds the connection that owns the advisory lock.
    Postgres(sqlx::PgConnection),
    /// Nothing to hold.
    Sqlite,
}

impl RelayLease {
    /// Checks that the lease is still held (the lock's connection is alive).
    pub async fn check(&mut self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(conn) => {
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
                Ok(())
            }
            Self::Sqlite => Ok(()),
        }
    }
}

/// A connection pool to the source of truth.
#[derive(Clone, Debug)]
pub enum Store {
    /// PostgreSQL.
    Postgres(PgStore),
    /// SQLite.
    Sqlite(SqliteStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Postgres($s) => $e,
            Store::Sqlite($s) => $e,
        }
    };
}

impl Store {
    /// Connects to `postgres://...` / `postgresql://...` or `sqlite://path` (the file and its folder are
    /// created when missing), with at most `max_connections` pooled connections.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PgStore::connect(url, max_connections).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::connect(url, max_connections).await?))
        } else {
            Err(StoreError::BadUrl(
                "expected postgres://... or sqlite://...".into(),
            ))
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies pending schema migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.migrate().await)
    }

    /// Gives the PostgreSQL role `role` what the running service needs and nothing more: reading and
    /// writing rows of Orderflow's tables (the audit trail only appended to and read), no DDL, no
    /// migrations. Run by the migration role after [`Store::migrate`]. SQLite has no roles.
    pub async fn grant_service_role(&self, role: &str) -> Result<(), StoreError> {
        let valid = !role.is_empty()
            && role.len() <= 63
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !role.as_bytes()[0].is_ascii_digit()
            && role != "public"
            && !role.starts_with("pg_");
        if !valid {
            return Err(StoreError::BadRole(role.to_owned()));
        }
        let Store::Postgres(pg) = self else {
            return Err(StoreError::BadRole(format!("{role} (SQLite has no roles)")));
        };
        pg.grant_service_role(role).await
    }

    /// Writes the order, its lines and its event to the outbox in one transaction.
    pub async fn insert_order(&self, order: &Order, event: &EncodedEvent) -> Result<(), StoreError> {
        self.insert_orders(&[(order, event)]).await
    }

    /// Writes orders, their lines and their events to the outbox in one transaction (all or none).
    pub async fn insert_orders(&self, orders: &[(&Order, &EncodedEvent)]) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_orders(orders).await)
    }

    /// Moves an order from `before` to `after` with `event` in the outbox, in one transaction; `false` when a
    /// concurrent change got there first (nothing written).
    pub async fn update_order(
        &self,
        before: &Order,
        after: &Order,
        event: &EncodedEvent,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.update_order(before, after, event).await)
    }

    /// Reads one order with its lines.
    pub async fn get_order(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        dispatch!(self, s => s.get_order(id).await)
    }

    /// Reads the orders among `ids` that exist, with their lines (two queries, however many ids).
    pub async fn get_orders(&self, ids: &[OrderId]) -> Result<Vec<Order>, StoreError> {
        dispatch!(self, s => s.get_orders(ids).await)
    }

    /// The oldest unpublished outbox rows, in publication order.
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxRecord>, StoreError> {
        dispatch!(self, s => s.outbox_pending(limit).await)
    }

    /// Stamps the given outbox rows as published at `at`.
    pub async fn outbox_mark_published(&self, ids: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
        dispatch!(self, s => s.outbox_mark_published(ids, at).await)
    }

    /// The newest `limit` orders, newest first, without their lines.
    pub async fn recent_orders(&self, limit: i64) -> Result<Vec<OrderSummary>, StoreError> {
        dispatch!(self, s => s.recent_orders(limit).await)
    }

    /// Connections of the pool now: (open, idle), and the most it opens.
    pub fn pool_usage(&self) -> (u32, usize, u32) {
        dispatch!(self, s => s.pool_usage())
    }

    /// Number of outbox rows not yet published.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        dispatch!(self, s => s.outbox_backlog().await)
    }

    /// Orders still `CREATED` or `PAID` that last moved before `before` (see [`Stranded`]).
    pub async fn stranded_orders(&self, before: DateTime<Utc>, limit: i64) -> Result<Stranded, StoreError> {
        dispatch!(self, s => s.stranded_orders(before, limit).await)
    }

    /// Deletes rows published before `before`; returns how many.
    pub async fn outbox_prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.outbox_prune(before).await)
    }

    /// Records each charge whose order has none yet and counts an attempt on the others; returns the ledger's
    /// charge for every order asked about.
    pub async fn record_charges(&self, charges: &[Charge]) -> Result<Vec<Charge>, StoreError> {
        dispatch!(self, s => s.record_charges(charges).await)
    }

    /// Records the refunds `claims` owe (one per order; the first claim stays).
    pub async fn claim_refunds(&self, claims: &[RefundClaim]) -> Result<(), StoreError> {
        dispatch!(self, s => s.claim_refunds(claims).await)
    }

    /// Refunds the captured charge of each of `orders` with an unsettled claim, once, and returns every refund
    /// made for `orders`, now or before.
    pub async fn settle_refunds(
        &self,
        orders: &[OrderId],
        now: DateTime<Utc>,
    ) -> Result<Vec<Refund>, StoreError> {
        dispatch!(self, s => s.settle_refunds(orders, now).await)
    }

    /// The ledger's charge for `order`, if any.
    pub async fn get_charge(&self, order: OrderId) -> Result<Option<Charge>, StoreError> {
        dispatch!(self, s => s.get_charge(order).await)
    }

    /// Totals over the charge ledger.
    pub async fn charge_totals(&self) -> Result<ChargeTotals, StoreError> {
        dispatch!(self, s => s.charge_totals().await)
    }

    /// Every customer's tier (reference data).
    pub async fn customer_tiers(&self) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self, s => s.customer_tiers().await)
    }

    /// The tiers of the given customers that have one, as `(id, tier)`.
    pub async fn customer_tiers_of(&self, ids: &[&str]) -> Result<Vec<(String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, s => s.customer_tiers_of(ids).await)
    }

    /// Sets a customer's tier.
    pub async fn set_customer_tier(&self, id: &str, tier: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_customer_tier(id, tier).await)
    }

    /// Puts `products` in the catalogue if it holds none yet; says whether it did.
    pub async fn seed_catalogue(&self, products: &[Product]) -> Result<bool, StoreError> {
        dispatch!(self, s => s.seed_catalogue(products).await)
    }

    /// Creates or replaces a product.
    pub async fn put_product(&self, product: &Product) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_product(product).await)
    }

    /// Creates or replaces every product of `products`, all in one transaction.
    pub async fn put_products(&self, products: &[Product]) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_products(products).await)
    }

    /// The unit prices (minor units) of those of `skus` the catalogue holds.
    pub async fn product_prices(&self, skus: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, s => s.product_prices(skus).await)
    }

    /// The ids of the orders `filter` selects, oldest first (by creation time, then id).
    pub async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<OrderId>, StoreError> {
        dispatch!(self, s => s.list_orders(filter).await)
    }

    /// The response kept for an idempotency key, if it was used within its time.
    pub async fn kept_response(&self, key: &IdempotencyKey) -> Result<Option<KeptResponse>, StoreError> {
        dispatch!(self, s => s.kept_response(key).await)
    }

    /// Writes a new order and its event, and keeps `response` under `key`, in one transaction; when the key
    /// is taken, writes nothing and answers what it holds.
    pub async fn insert_order_once(
        &self,
        order: &Order,
        event: &EncodedEvent,
        key: &IdempotencyKey,
        response: &KeptResponse,
    ) -> Result<KeyedWrite, StoreError> {
        dispatch!(self, s => s.insert_order_once(order, event, key, response).await)
    }

    /// [`Store::update_order`] keeping `response` under `key` in the same transaction.
    pub async fn update_order_once(
        &self,
        before: &Order,
        after: &Order,
        event: &EncodedEvent,
        key: &IdempotencyKey,
        response: &KeptResponse,
    ) -> Result<KeyedWrite, StoreError> {
        dispatch!(self, s => s.update_order_once(before, after, event, key, response).await)
    }

    /// Removes idempotency keys first used before `before`; returns how many.
    pub async fn idempotency_prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.idempotency_prune(before).await)
    }

    /// One product, if it exists.
    pub async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        dispatch!(self, s => s.get_product(sku).await)
    }

    /// Every product's stock against the units its live reservations hold.
    pub async fn stock_lines(&self) -> Result<Vec<StockLine>, StoreError> {
        dispatch!(self, s => s.stock_lines().await)
    }

    /// Applies inventory operations in order in one transaction and says what each came to.
    pub async fn apply_inventory(&self, ops: &[InventoryOp]) -> Result<Vec<InventoryOutcome>, StoreError> {
        dispatch!(self, s => s.apply_inventory(ops).await)
    }

    /// Recomputes the audit chain and names the first row that does not fit.
    pub async fn verify_audit(&self) -> Result<AuditVerdict, StoreError> {
        dispatch!(self, s => s.verify_audit().await)
    }

    /// Waits until this process is the only active outbox relay.
    pub async fn acquire_relay_lease(&self) -> Result<RelayLease, StoreError> {
        dispatch!(self, s => s.acquire_relay_lease().await)
    }

    /// Stores a batch of puts into join `name` in one transaction; see [`PgStore::join_put`].
    pub async fn join_put(&self, name: &str, puts: &[JoinPut]) -> Result<Vec<JoinEntry>, StoreError> {
        dispatch!(self, s => s.join_put(name, puts).await)
    }

    /// Waiting left records of join `name` past their deadline; see [`PgStore::join_expired`].
    pub async fn join_expired(
        &self,
        name: &str,
        now_ms: i64,
        limit: i64,
        propose_id: impl FnMut() -> String,
    ) -> Result<Vec<JoinExpired>, StoreError> {
        dispatch!(self, s => s.join_expired(name, now_ms, limit, propose_id).await)
    }

    /// Takes reported keys of join `name` off the deadlines.
    pub async fn join_forget(&self, name: &str, keys: &[String]) -> Result<(), StoreError> {
        dispatch!(self, s => s.join_forget(name, keys).await)
    }

    /// Deletes up to `limit` join entries kept until before `now_ms`; returns how many.
    pub async fn join_prune(&self, now_ms: i64, limit: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.join_prune(now_ms, limit).await)
    }

    /// How many orders have each status.
    pub async fn order_status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, s => s.order_status_counts().await)
    }

    /// When the first order was created, if any was.
    pub async fn first_order_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        dispatch!(self, s => s.first_order_at().await)
    }

    /// Charges and orders that do not fit each other.
    pub async fn charge_discrepancies(&self) -> Result<ChargeDiscrepancies, StoreError> {
        dispatch!(self, s => s.charge_discrepancies().await)
    }

    /// The revenue analytics must report: captured charges less refunds (minor units).
    pub async fn captured_less_refunded_minor(&self) -> Result<i64, StoreError> {
        dispatch!(self, s => s.captured_less_refunded_minor().await)
    }

    /// Every product's stock ledger, by SKU.
    pub async fn stock_ledger(&self) -> Result<Vec<StockLedgerLine>, StoreError> {
        dispatch!(self, s => s.stock_ledger().await)
    }

    /// Up to `limit` orders after `after` in id order: id, status and version.
    pub async fn order_states(
        &self,
        after: Option<OrderId>,
        limit: i64,
    ) -> Result<Vec<(OrderId, String, i64)>, StoreError> {
        dispatch!(self, s => s.order_states(after, limit).await)
    }

    /// Up to `limit` orders after `after` in id order, each with its lines, charge and reservation.
    pub async fn order_facts(
        &self,
        after: Option<OrderId>,
        limit: i64,
    ) -> Result<Vec<OrderFacts>, StoreError> {
        dispatch!(self, s => s.order_facts(after, limit).await)
    }

    /// Listens for commits of outbox rows by any process (see [`OutboxWatch`]).
    pub async fn watch_outbox(&self) -> Result<OutboxWatch, StoreError> {
        match self {
            Store::Postgres(s) => Ok(OutboxWatch(Some(s.outbox_listener().await?))),
            Store::Sqlite(_) => Ok(OutboxWatch(None)),
        }
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        dispatch!(self, s => s.pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_notify_statement_names_the_channel() {
        assert_eq!(super::NOTIFY_OUTBOX, format!("NOTIFY {}", super::OUTBOX_CHANNEL));
    }
}
