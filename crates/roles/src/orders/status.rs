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

use orderflow_cache::OrderCache;
use orderflow_consumer::effects::DbHandler;
use orderflow_consumer::{ConsumerSettings, Delivery, Handler, HandlerError, Output, Record};
use orderflow_domain::OrderId;
use orderflow_events::{AvroCodec, Lifecycle, LifecycleTopic, LifecycleTopics};
use orderflow_store::{StatusChange, Store, TxStatements};
use sqlx::Transaction;
use tokio_util::sync::CancellationToken;

use crate::runner::{ConsumerRole, StoreEffects};
use crate::{Backends, RoleError, decode_error, store_error};

/// The topics whose events move an order's status along the pipeline.
pub(crate) const OUTCOMES: [LifecycleTopic; 4] = [
    LifecycleTopic::PaymentReceived,
    LifecycleTopic::PaymentFailed,
    LifecycleTopic::InventoryAllocated,
    LifecycleTopic::InventoryRejected,
];

/// Turns outcome records into status changes.
#[derive(Clone)]
struct Follower {
    codec: Arc<AvroCodec>,
    /// [`OUTCOMES`] under their full names (with the deployment prefix).
    topics: LifecycleTopics,
}

impl Follower {
    async fn change(&self, record: &Record) -> Result<StatusChange, HandlerError> {
        let source = record.source_topic();
        let topic = self
            .topics
            .get(source)
            .ok_or_else(|| HandlerError::permanent(format!("no status follows from topic {source}")))?;
        let payload = record.payload.as_deref().unwrap_or_default();
        let event = Lifecycle::decode(&self.codec, topic, payload)
            .await
            .map_err(decode_error)?;
        let to = event
            .status()
            .ok_or_else(|| HandlerError::permanent(format!("no status follows from topic {source}")))?;
        Ok(StatusChange {
            order_id: event.envelope.order_id,
            from: to.pipeline_predecessors(),
            to,
            version: event.envelope.version,
            at: event.envelope.at,
        })
    }
}

impl<DB: TxStatements> DbHandler<DB> for Follower {
    async fn apply(
        &self,
        tx: &mut Transaction<'static, DB>,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        for record in records {
            let change = self.change(record).await?;
            DB::advance_status(tx, &change).await.map_err(store_error)?;
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
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "could not re-read changed orders; dropping them from the cache"
                );
                let keys: Vec<String> = ids.iter().map(OrderId::to_string).collect();
                futures::future::join_all(keys.iter().map(|key| self.cache.invalidate(key))).await;
            }
        }
        Ok(outputs)
    }
}

/// Follows the outcome topics until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(group: String, backends: Backends, shutdown: CancellationToken) -> Result<(), RoleError> {
    let role = ConsumerRole {
        role: crate::Role::Orders,
        group: &group,
        inputs: &OUTCOMES,
        delivery: Delivery::AtLeastOnce,
        concurrency: ConsumerSettings::DEFAULT_CONCURRENCY,
    };
    let follower = Follower {
        codec: backends.codec.clone(),
        topics: role.topics(&backends),
    };
    let handler = WriteThrough {
        effects: StoreEffects::open(&backends.store, role.group(&backends), follower, &shutdown).await?,
        store: backends.store.clone(),
        cache: backends.cache.clone(),
    };
    role.run(&backends, handler, shutdown).await
}
