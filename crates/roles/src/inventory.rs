//! The inventory role: reserves stock for each enriched (paid) order and reports `inventory.allocated` or
//! `inventory.rejected`; gives the stock back when an order is cancelled.
//!
//! Kafka to the database, exactly once in effect: the order id keys the reservation, so a re-delivered
//! record gets the recorded outcome back instead of taking stock again, and its event is published again
//! with the same id (consumers dedupe). The database's `stock >= 0` constraint and guarded updates make
//! overselling impossible however many instances run. Outputs are published before the offsets are
//! committed.

use chrono::{SubsecRound, Utc};
use orderflow_consumer::{Delivery, Handler, HandlerError, Output, Record};
use orderflow_domain::OrderStatus;
use orderflow_events::{
    AllocatedLine, Event, InventoryAllocated, InventoryRejected, Lifecycle, LifecycleEvent, LifecycleTopic,
    LifecycleTopics, headers, topics,
};
use orderflow_store::{InventoryOp, InventoryOutcome};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::runner::ConsumerRole;
use crate::telemetry::RoleEvent;
use crate::{Backends, RoleError, decode_error, event_output, store_error};

/// Settings of the inventory role.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventorySettings {
    /// Kafka consumer group.
    pub group: String,
    /// Partitions processed at once.
    pub concurrency: usize,
}

impl Default for InventorySettings {
    fn default() -> Self {
        Self {
            group: "orderflow-inventory".into(),
            concurrency: 8,
        }
    }
}

/// The topics inventory reads: paid orders to reserve, cancellations to release.
pub const INPUTS: [LifecycleTopic; 2] = [LifecycleTopic::OrderEnriched, LifecycleTopic::OrderCancelled];

struct Inventory {
    backends: Backends,
    /// [`INPUTS`] under their full names (with the deployment prefix).
    inputs: LifecycleTopics,
    allocated_topic: String,
    rejected_topic: String,
}

impl Handler for Inventory {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let at = Utc::now().trunc_subsecs(6);
        let codec = &self.backends.codec;
        let mut ops = Vec::with_capacity(batch.len());
        let mut traceparents = Vec::with_capacity(batch.len());
        for record in batch {
            let source = record.source_topic();
            let not_read = || HandlerError::permanent(format!("inventory does not read {source}"));
            let topic = self.inputs.get(source).ok_or_else(not_read)?;
            let payload = record.payload.as_deref().unwrap_or_default();
            let Lifecycle { envelope, event } = Lifecycle::decode(codec, topic, payload)
                .await
                .map_err(decode_error)?;
            ops.push(match event {
                LifecycleEvent::OrderEnriched(order) => InventoryOp::Reserve {
                    order_id: envelope.order_id,
                    lines: order
                        .items
                        .into_iter()
                        .map(|item| (item.sku, item.quantity))
                        .collect(),
                    event_id: uuid::Uuid::now_v7(),
                    at,
                },
                LifecycleEvent::OrderCancelled(_) => InventoryOp::Release {
                    order_id: envelope.order_id,
                    marker_id: uuid::Uuid::now_v7(),
                    at,
                },
                LifecycleEvent::OrderCreated(_)
                | LifecycleEvent::PaymentReceived(_)
                | LifecycleEvent::PaymentFailed(_)
                | LifecycleEvent::PaymentRefunded(_)
                | LifecycleEvent::OrderUnpaid(_)
                | LifecycleEvent::InventoryAllocated(_)
                | LifecycleEvent::InventoryRejected(_) => return Err(not_read()),
            });
            traceparents.push(record.header_str(headers::TRACEPARENT));
        }
        let outcomes = self
            .backends
            .store
            .apply_inventory(&ops)
            .await
            .map_err(inventory_error)?;
        let version = OrderStatus::Allocated
            .step_version()
            .unwrap_or(OrderStatus::LAST_STEP_VERSION);
        let mut outputs = Vec::new();
        for (outcome, traceparent) in outcomes.into_iter().zip(traceparents) {
            let (topic, encoded) = match outcome {
                InventoryOutcome::Allocated {
                    order_id,
                    event_id,
                    lines,
                } => {
                    RoleEvent::StockAllocated.emit();
                    let encoded = codec.encode(
                        &InventoryAllocated {
                            event_id: event_id.to_string(),
                            event_type: InventoryAllocated::TYPE.into(),
                            order_id: order_id.to_string(),
                            order_version: version,
                            occurred_at: at.timestamp_micros(),
                            items: lines
                                .into_iter()
                                .map(|(sku, quantity)| AllocatedLine { sku, quantity })
                                .collect(),
                        },
                        traceparent,
                    );
                    (&self.allocated_topic, encoded)
                }
                InventoryOutcome::Rejected {
                    order_id,
                    event_id,
                    reason,
                    sku,
                } => {
                    RoleEvent::StockRejected.emit();
                    let encoded = codec.encode(
                        &InventoryRejected {
                            event_id: event_id.to_string(),
                            event_type: InventoryRejected::TYPE.into(),
                            order_id: order_id.to_string(),
                            order_version: version,
                            occurred_at: at.timestamp_micros(),
                            reason,
                            sku,
                        },
                        traceparent,
                    );
                    (&self.rejected_topic, encoded)
                }
                InventoryOutcome::Released { .. } => {
                    RoleEvent::StockReleased.emit();
                    continue;
                }
                InventoryOutcome::Cancelled { .. } | InventoryOutcome::Unchanged { .. } => continue,
            };
            outputs.push(event_output(topic, encoded.map_err(HandlerError::permanent)?));
        }
        Ok(outputs)
    }
}

/// Maps a store error: a reservation and a cancel of the same order, handled at once by two workers, can
/// race to create the order's reservation row, and the loser fails on its primary key. Trying again is
/// right: the retry sees the winner's row (an allocation to release, or a cancel marker that forbids
/// allocating). Everything else is classified as for any store error.
fn inventory_error(error: orderflow_store::StoreError) -> HandlerError {
    if let orderflow_store::StoreError::Database(sqlx::Error::Database(e)) = &error
        && e.is_unique_violation()
    {
        return HandlerError::transient(error);
    }
    store_error(error)
}

/// Reserves and releases until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: InventorySettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let role = ConsumerRole {
        role: crate::Role::Inventory,
        group: &settings.group,
        inputs: &INPUTS,
        delivery: Delivery::AtLeastOnce,
        concurrency: settings.concurrency,
    };
    let handler = Inventory {
        inputs: role.topics(&backends),
        allocated_topic: backends.bus.topic(topics::INVENTORY_ALLOCATED),
        rejected_topic: backends.bus.topic(topics::INVENTORY_REJECTED),
        backends: backends.clone(),
    };
    role.run(&backends, handler, shutdown).await
}
