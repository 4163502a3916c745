//! The orders role's status follower: moves each order in the source of truth along the pipeline's outcomes
//! (payment received or failed, stock allocated or rejected).
//!
//! The orders service is the one place that decides consistency, so it keeps the order's status itself:
//! a cancel is checked against the status the pipeline reached. Each change is a guarded update (the order
//! must still be where the change starts from, below the change's version) written with a
//! `(consumer, event id)` dedup row in the same database transaction; offsets are committed after. A late
//! outcome for a cancelled order changes nothing. Changed orders are written through the cache once
//! committed (read back in one batched read), so the next read shows the new status.

use std::sync::Arc;

use chrono::DateTime;
use orderflow_cache::OrderCache;
use orderflow_consumer::effects::{DbEffects, DbHandler};
use orderflow_consumer::{ConsumerRuntime, Delivery, Handler, HandlerError, Output, Record};
use orderflow_domain::{OrderId, OrderStatus};
use orderflow_events::{
    AvroCodec, Event, InventoryAllocated, InventoryRejected, PaymentFailed, PaymentReceived, topics,
};
use orderflow_store::{PgStore, SqliteStore, StatusChange, Store, StoreError};
use sqlx::{Postgres, Sqlite, Transaction};
use tokio_util::sync::CancellationToken;

use crate::{Backends, RoleError, decode_error, store_error};

/// The topics whose events move an order's status, with the status each leads to.
pub(crate) const OUTCOMES: [(&str, OrderStatus); 4] = [
    (topics::PAYMENT_RECEIVED, OrderStatus::Paid),
    (topics::PAYMENT_FAILED, OrderStatus::PaymentFailed),
    (topics::INVENTORY_ALLOCATED, OrderStatus::Allocated),
    (topics::INVENTORY_REJECTED, OrderStatus::Rejected),
];

/// Turns outcome records into status changes.
#[derive(Clone)]
struct Follower {
    codec: Arc<AvroCodec>,
    /// Full topic name (with the deployment prefix) and the status its events lead to.
    topics: Vec<(String, OrderStatus)>,
}

/// The envelope fields of `E` that a status change needs.
async fn envelope<E: Event>(codec: &AvroCodec, payload: &[u8]) -> Result<(String, i64, i64), HandlerError> {
    let event = codec.decode::<E>(payload).await.map_err(decode_error)?;
    Ok((
        event.order_id().to_owned(),
        event.order_version(),
        event.occurred_at(),
    ))
}

impl Follower {
    async fn change(&self, record: &Record) -> Result<StatusChange, HandlerError> {
        let source = record.source_topic();
        let to = self
            .topics
            .iter()
            .find(|(topic, _)| topic == source)
            .map(|(_, status)| *status)
            .ok_or_else(|| HandlerError::permanent(format!("no status follows from topic {source}")))?;
        let payload = record.payload.as_deref().unwrap_or_default();
        let (order_id, version, at) = match to {
            OrderStatus::Paid => envelope::<PaymentReceived>(&self.codec, payload).await?,
            OrderStatus::PaymentFailed => envelope::<PaymentFailed>(&self.codec, payload).await?,
            OrderStatus::Allocated => envelope::<InventoryAllocated>(&self.codec, payload).await?,
            _ => envelope::<InventoryRejected>(&self.codec, payload).await?,
        };
        let invalid = |reason: String| HandlerError::permanent(format!("{source} record: {reason}"));
        let order_id: OrderId = order_id.parse().map_err(|e| invalid(format!("order id: {e}")))?;
        let from = to.pipeline_predecessors();
        let at = DateTime::from_timestamp_micros(at)
            .ok_or_else(|| invalid(format!("occurred_at {at} is out of range")))?;
        Ok(StatusChange {
            order_id,
            from,
            to,
            version,
            at,
        })
    }
}

impl DbHandler<Postgres> for Follower {
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        for record in records {
            let change = self.change(record).await?;
            PgStore::advance_status(tx, &change).await.map_err(store_error)?;
        }
        Ok(())
    }
}

impl DbHandler<Sqlite> for Follower {
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        for record in records {
            let change = self.change(record).await?;
            SqliteStore::advance_status(tx, &change)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }
}

/// Writes the batch's orders through the cache once their changes are committed, as the API does after
/// its own writes, so readers see the new status at once (the cache keeps the newer of two versions). The
/// changed orders are read back in one batched read.
struct WriteThrough<H> {
    effects: H,
    store: Store,
    cache: OrderCache,
}

impl<H: Handler> Handler for WriteThrough<H> {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let outputs = self.effects.handle(batch).await?;
        let mut ids: Vec<OrderId> = batch
            .iter()
            .filter_map(|r| std::str::from_utf8(r.key.as_deref()?).ok()?.parse().ok())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // The changes are committed: a failed read only leaves the cache to expire or be refreshed later.
        match self.store.get_orders(&ids).await {
            Ok(orders) => {
                let keys: Vec<(String, &orderflow_domain::Order)> =
                    orders.iter().map(|o| (o.id.to_string(), o)).collect();
                futures::future::join_all(keys.iter().map(|(key, order)| self.cache.refresh(key, order)))
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not re-read changed orders; dropping them from the cache");
                let keys: Vec<String> = ids.iter().map(OrderId::to_string).collect();
                futures::future::join_all(keys.iter().map(|key| self.cache.invalidate(key))).await;
            }
        }
        Ok(outputs)
    }
}

/// Follows the outcome topics until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(group: String, backends: Backends, shutdown: CancellationToken) -> Result<(), RoleError> {
    let group = backends.bus.group(&group);
    let follower = Follower {
        codec: backends.codec.clone(),
        topics: OUTCOMES
            .iter()
            .map(|(topic, status)| (backends.bus.topic(topic), *status))
            .collect(),
    };
    let topics: Vec<String> = follower.topics.iter().map(|(t, _)| t.clone()).collect();
    let consumer = crate::consumer_settings(
        &backends.bus,
        group.clone(),
        topics.clone(),
        Delivery::AtLeastOnce,
    );
    tracing::info!(?topics, group, "orders following the pipeline's outcomes");
    let cache = backends.cache.clone();
    match &backends.store {
        Store::Postgres(pg) => {
            let effects = DbEffects::new(pg.pool().clone(), group, follower);
            effects.ensure_schema().await.map_err(StoreError::from)?;
            let handler = WriteThrough {
                effects,
                store: backends.store.clone(),
                cache: cache.clone(),
            };
            backends
                .consumers
                .watch(
                    crate::Role::Orders,
                    ConsumerRuntime::new(backends.bus.clone(), consumer, handler),
                )
                .run(shutdown)
                .await?;
        }
        Store::Sqlite(sqlite) => {
            let effects = DbEffects::new(sqlite.pool().clone(), group, follower);
            effects.ensure_schema().await.map_err(StoreError::from)?;
            let handler = WriteThrough {
                effects,
                store: backends.store.clone(),
                cache: cache.clone(),
            };
            backends
                .consumers
                .watch(
                    crate::Role::Orders,
                    ConsumerRuntime::new(backends.bus.clone(), consumer, handler),
                )
                .run(shutdown)
                .await?;
        }
    }
    Ok(())
}
