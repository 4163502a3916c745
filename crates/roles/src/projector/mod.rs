//! The projector role: keeps the read model current from the order lifecycle topics, on the consumer runtime.
//!
//! Every lifecycle event is a status change of its order. The projector applies it to its read model
//! ([`model`]: header, lines, current status, status history; versions only move forward), refreshes the
//! order cache with the result (version-checked, so an older version never replaces a newer one), and
//! publishes the result as `order.read-model` and as `order.state` (the compacted latest state per order).
//! Offsets are committed after; a re-delivered event changes nothing and publishes the same state again.
//! An undecodable record goes to the dead-letter topic; a registry or Redis outage is retried.

mod model;

use std::time::Duration;

use orderflow_consumer::{ConsumerRuntime, Delivery, Handler, HandlerError, Output, Record};
use orderflow_domain::OrderStatus;
use orderflow_events::{
    AvroCodec, Event, InventoryAllocated, InventoryRejected, OrderCancelled, OrderCreated, OrderReadModel,
    OrderState, PaymentFailed, PaymentReceived, StatusChange, envelope, headers, topics,
};
use tokio_util::sync::CancellationToken;

use crate::{Backends, ProjectorSettings, RoleError, decode_error, event_output};
use model::{Change, ReadModel, View};

/// The topics the read model follows.
pub const FOLLOWED: [&str; 6] = [
    topics::ORDER_CREATED,
    topics::PAYMENT_RECEIVED,
    topics::PAYMENT_FAILED,
    topics::INVENTORY_ALLOCATED,
    topics::INVENTORY_REJECTED,
    topics::ORDER_CANCELLED,
];

/// Applies status changes to the read model and reports the results.
struct Projection {
    backends: Backends,
    model: ReadModel,
    /// Full names (with the deployment prefix) of [`FOLLOWED`], in its order.
    inputs: Vec<String>,
    state_topic: String,
    read_model_topic: String,
}

/// The change an event of type `E` makes: its order enters `status` at the event's version.
async fn change<E: Event>(
    codec: &AvroCodec,
    payload: &[u8],
    status: OrderStatus,
) -> Result<Change, HandlerError> {
    let event = codec.decode::<E>(payload).await.map_err(decode_error)?;
    Ok(Change {
        order_id: event.order_id().to_owned(),
        status,
        version: event.order_version(),
        at: event.occurred_at(),
        created: None,
    })
}

impl Projection {
    async fn change(&self, record: &Record) -> Result<Change, HandlerError> {
        let source = record.source_topic();
        let index = self.inputs.iter().position(|t| t == source).ok_or_else(|| {
            HandlerError::permanent(format!("the projector does not follow topic {source}"))
        })?;
        let payload = record.payload.as_deref().unwrap_or_default();
        let codec = &self.backends.codec;
        match FOLLOWED[index] {
            topics::ORDER_CREATED => {
                let event = codec
                    .decode::<OrderCreated>(payload)
                    .await
                    .map_err(decode_error)?;
                let order = event.to_order().map_err(decode_error)?;
                Ok(Change {
                    order_id: event.order_id.clone(),
                    status: OrderStatus::Created,
                    version: event.order_version,
                    at: event.occurred_at,
                    created: Some(order),
                })
            }
            topics::PAYMENT_RECEIVED => change::<PaymentReceived>(codec, payload, OrderStatus::Paid).await,
            topics::PAYMENT_FAILED => {
                change::<PaymentFailed>(codec, payload, OrderStatus::PaymentFailed).await
            }
            topics::INVENTORY_ALLOCATED => {
                change::<InventoryAllocated>(codec, payload, OrderStatus::Allocated).await
            }
            topics::INVENTORY_REJECTED => {
                change::<InventoryRejected>(codec, payload, OrderStatus::Rejected).await
            }
            _ => change::<OrderCancelled>(codec, payload, OrderStatus::Cancelled).await,
        }
    }

    /// `order.state` and `order.read-model` records describing `view`.
    fn outputs(&self, view: &View, traceparent: Option<&str>) -> Result<[Output; 2], HandlerError> {
        let order = &view.order;
        let at = order.updated_at;
        let (event_id, _, order_id, order_version, occurred_at) =
            envelope(OrderState::TYPE, order.id, order.version, at);
        let state = OrderState {
            event_id,
            event_type: OrderState::TYPE.into(),
            order_id,
            order_version,
            occurred_at,
            customer_id: order.customer_id.to_string(),
            status: order.status.as_str().to_owned(),
            currency: order.currency.code().to_owned(),
            total_minor: order.total_minor.get(),
        };
        let (event_id, _, order_id, order_version, occurred_at) =
            envelope(OrderReadModel::TYPE, order.id, order.version, at);
        let read_model = OrderReadModel {
            event_id,
            event_type: OrderReadModel::TYPE.into(),
            order_id,
            order_version,
            occurred_at,
            customer_id: state.customer_id.clone(),
            status: state.status.clone(),
            currency: state.currency.clone(),
            items: orderflow_events::OrderCreated::from_order(order).items,
            total_minor: state.total_minor,
            created_at: order.created_at.timestamp_micros(),
            history: view
                .history
                .iter()
                .map(|(status, at)| StatusChange {
                    status: status.clone(),
                    at: *at,
                })
                .collect(),
        };
        let codec = &self.backends.codec;
        Ok([
            event_output(
                &self.state_topic,
                codec
                    .encode(&state, traceparent)
                    .map_err(HandlerError::permanent)?,
            ),
            event_output(
                &self.read_model_topic,
                codec
                    .encode(&read_model, traceparent)
                    .map_err(HandlerError::permanent)?,
            ),
        ])
    }
}

impl Handler for Projection {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let mut changes = Vec::with_capacity(batch.len());
        for record in batch {
            changes.push(self.change(record).await?);
        }
        let views = self.model.apply(&changes).await?;
        // Version-checked: a re-delivered or late event never moves the cached order backwards. A Redis
        // outage is absorbed by the cache (reads fall back to the database), so it does not stall here.
        let keys: Vec<(String, &View)> = views
            .iter()
            .flatten()
            .map(|v| (v.order.id.to_string(), v))
            .collect();
        futures::future::join_all(
            keys.iter()
                .map(|(key, view)| self.backends.cache.refresh(key, &view.order)),
        )
        .await;
        let mut outputs = Vec::with_capacity(2 * batch.len());
        for (record, view) in batch.iter().zip(&views) {
            if let Some(view) = view {
                outputs.extend(self.outputs(view, record.header_str(headers::TRACEPARENT))?);
            }
        }
        Ok(outputs)
    }
}

/// Consumes until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: ProjectorSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let bus = backends.bus.clone();
    let inputs: Vec<String> = FOLLOWED.iter().map(|t| bus.topic(t)).collect();
    let group = bus.group(&settings.group);
    let mut consumer = crate::consumer_settings(&bus, group.clone(), inputs.clone(), Delivery::AtLeastOnce);
    consumer.concurrency = settings.concurrency.max(1);
    let model = match &backends.redis {
        Some(connection) => ReadModel::redis(
            connection.clone(),
            &backends.key_prefix,
            Duration::from_secs(settings.ttl_secs),
        ),
        None => ReadModel::memory(),
    };
    tracing::info!(?inputs, group, "projector following the order lifecycle");
    let projection = Projection {
        state_topic: bus.topic(topics::ORDER_STATE),
        read_model_topic: bus.topic(topics::ORDER_READ_MODEL),
        backends: backends.clone(),
        model,
        inputs,
    };
    backends
        .consumers
        .watch(
            crate::Role::Projector,
            ConsumerRuntime::new(bus, consumer, projection),
        )
        .run(shutdown)
        .await?;
    Ok(())
}
