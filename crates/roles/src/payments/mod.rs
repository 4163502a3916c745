//! The payments role: charges every created order once with the (simulated) payment provider and reports the
//! outcome as `payment.received` or `payment.failed`; refunds the captured payment of every order that is
//! rejected for want of stock or cancelled, once, and reports it as `payment.refunded`.
//!
//! A refund is claimed when the rejection or cancellation arrives and settled once the charge is captured,
//! whichever of the two comes first (a cancel can overtake its order's payment): each side commits its own
//! write, then settles, so the later of the two settles it ([`orderflow_store::Store::settle_refunds`]).
//!
//! Consume-transform-produce inside Kafka transactions: the payment events and the consumed offsets commit
//! together, so each `order.created` record yields its payment event exactly once. The provider call is the
//! one effect outside Kafka; it is made idempotent the way real providers are, with the order id as the
//! idempotency key of the charge ledger, so a re-delivered order (a crash before the commit, or the same
//! event published twice) is never charged twice and reports the recorded charge again, under the same event
//! id. On the embedded mock cluster, which has no transactions, delivery is at-least-once with the same
//! ledger behind it.

mod provider;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use orderflow_consumer::{Delivery, Handler, HandlerError, Output, Record};
use orderflow_domain::{EventId, OrderId};
use orderflow_events::{
    Envelope, Event, Lifecycle, LifecycleEvent, LifecycleTopic, LifecycleTopics, PaymentFailed,
    PaymentReceived, PaymentRefunded, headers, topics,
};
use orderflow_store::{Charge, ChargeOutcome, Refund, RefundClaim};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use provider::{Decision, ProviderSettings, SimulatedProvider};

use crate::runner::ConsumerRole;
use crate::{Backends, RoleError, decode_error, event_output, store_error};

/// What payments reads: created orders (to charge), rejected and cancelled ones (to refund).
pub const INPUTS: [LifecycleTopic; 3] = [
    LifecycleTopic::OrderCreated,
    LifecycleTopic::InventoryRejected,
    LifecycleTopic::OrderCancelled,
];

/// Settings of the payments role.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsSettings {
    /// Kafka consumer group.
    pub group: String,
    /// Partitions charged at once.
    pub concurrency: usize,
    /// The simulated provider.
    pub provider: ProviderSettings,
}

impl Default for PaymentsSettings {
    fn default() -> Self {
        Self {
            group: "orderflow-payments".into(),
            concurrency: 8,
            provider: ProviderSettings::default(),
        }
    }
}

/// Charges each batch of created orders and turns the ledger's answers into payment events.
struct Payments {
    backends: Backends,
    provider: SimulatedProvider,
    /// [`INPUTS`] under their full names.
    inputs: LifecycleTopics,
    received_topic: String,
    failed_topic: String,
    refunded_topic: String,
}

impl Payments {
    /// The event reporting `charge`, as a record for the transaction; `traceparent` links it to the request.
    fn output(&self, charge: &Charge, traceparent: Option<&str>) -> Result<Output, HandlerError> {
        let envelope = Envelope {
            event_id: EventId::from_uuid(charge.event_id),
            order_id: charge.order_id,
            // The payment moves the order one step past the version that was charged.
            version: charge.order_version + 1,
            at: charge.charged_at,
        };
        let encoded = match charge.outcome {
            ChargeOutcome::Captured => self.backends.codec.encode(
                &PaymentReceived {
                    event_id: envelope.event_id_text(),
                    event_type: PaymentReceived::TYPE.into(),
                    order_id: envelope.order_id_text(),
                    order_version: envelope.version,
                    occurred_at: envelope.occurred_at_micros(),
                    payment_id: charge.payment_id.to_string(),
                    amount_minor: charge.amount_minor,
                    currency: charge.currency.clone(),
                },
                traceparent,
            ),
            ChargeOutcome::Declined | ChargeOutcome::Failed => self.backends.codec.encode(
                &PaymentFailed {
                    event_id: envelope.event_id_text(),
                    event_type: PaymentFailed::TYPE.into(),
                    order_id: envelope.order_id_text(),
                    order_version: envelope.version,
                    occurred_at: envelope.occurred_at_micros(),
                    payment_id: charge.payment_id.to_string(),
                    amount_minor: charge.amount_minor,
                    currency: charge.currency.clone(),
                    reason: charge
                        .reason
                        .clone()
                        .unwrap_or_else(|| charge.outcome.as_str().to_lowercase()),
                },
                traceparent,
            ),
        }
        .map_err(HandlerError::permanent)?;
        let topic = match charge.outcome {
            ChargeOutcome::Captured => &self.received_topic,
            _ => &self.failed_topic,
        };
        Ok(event_output(topic, encoded))
    }
}

impl Payments {
    /// The `payment.refunded` record reporting `refund`.
    fn refund_output(&self, refund: &Refund, traceparent: Option<&str>) -> Result<Output, HandlerError> {
        let envelope = Envelope {
            event_id: EventId::from_uuid(refund.event_id),
            order_id: refund.order_id,
            version: refund.order_version,
            at: refund.refunded_at,
        };
        let encoded = self
            .backends
            .codec
            .encode(
                &PaymentRefunded {
                    event_id: envelope.event_id_text(),
                    event_type: PaymentRefunded::TYPE.into(),
                    order_id: envelope.order_id_text(),
                    order_version: envelope.version,
                    occurred_at: envelope.occurred_at_micros(),
                    payment_id: refund.payment_id.to_string(),
                    refund_id: refund.refund_id.to_string(),
                    amount_minor: refund.amount_minor,
                    currency: refund.currency.clone(),
                    reason: refund.reason.clone(),
                },
                traceparent,
            )
            .map_err(HandlerError::permanent)?;
        Ok(event_output(&self.refunded_topic, encoded))
    }

    /// Settles the refunds owed for `orders` (each with the `traceparent` of its record) and reports every
    /// refund made for them, now or before (a re-delivery reports it again, under the same event id).
    async fn refunds(
        &self,
        orders: &[(OrderId, Option<&str>)],
        now: chrono::DateTime<Utc>,
    ) -> Result<Vec<Output>, HandlerError> {
        let ids: Vec<OrderId> = orders.iter().map(|(id, _)| *id).collect();
        let refunds = self
            .backends
            .store
            .settle_refunds(&ids, now)
            .await
            .map_err(store_error)?;
        refunds
            .iter()
            .map(|refund| {
                let traceparent = orders
                    .iter()
                    .find(|(id, _)| *id == refund.order_id)
                    .and_then(|(_, t)| *t);
                self.refund_output(refund, traceparent)
            })
            .collect()
    }
}

impl Handler for Payments {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let now = Utc::now().trunc_subsecs(6);
        let mut orders = Vec::with_capacity(batch.len());
        let mut charges = Vec::with_capacity(batch.len());
        let mut claims = Vec::new();
        let mut claimed = Vec::new();
        let mut slowest = Duration::ZERO;
        for record in batch {
            let payload = record.payload.as_deref().unwrap_or_default();
            let source = record.source_topic();
            let not_read = || HandlerError::permanent(format!("payments does not read {source}"));
            let topic = self.inputs.get(source).ok_or_else(not_read)?;
            let Lifecycle { envelope, event } = Lifecycle::decode(&self.backends.codec, topic, payload)
                .await
                .map_err(decode_error)?;
            // A rejected or cancelled order is owed a refund; a created one is charged.
            let refund = match &event {
                LifecycleEvent::InventoryRejected(_) => Some("rejected"),
                LifecycleEvent::OrderCancelled(_) => Some("cancelled"),
                _ => None,
            };
            if let Some(reason) = refund {
                // The provider accepts every refund of a captured payment; its id is fixed here, once.
                claims.push(RefundClaim {
                    order_id: envelope.order_id,
                    event_id: uuid::Uuid::now_v7(),
                    refund_id: uuid::Uuid::now_v7(),
                    order_version: envelope.version,
                    reason,
                    at: now,
                });
                claimed.push((envelope.order_id, record.header_str(headers::TRACEPARENT)));
                continue;
            }
            let LifecycleEvent::OrderCreated(order) = event else {
                return Err(not_read());
            };
            let order_id = envelope.order_id;
            let (decision, latency) = self.provider.decide(&order);
            slowest = slowest.max(latency);
            let (outcome, reason) = match decision {
                Decision::Captured => (ChargeOutcome::Captured, None),
                Decision::Declined(reason) => (ChargeOutcome::Declined, Some(reason)),
                Decision::Failed(reason) => (ChargeOutcome::Failed, Some(reason)),
            };
            charges.push(Charge {
                order_id,
                payment_id: uuid::Uuid::now_v7(),
                event_id: uuid::Uuid::now_v7(),
                order_version: envelope.version,
                amount_minor: order.total_minor,
                currency: order.currency.clone(),
                outcome,
                reason,
                attempts: 1,
                charged_at: now,
            });
            orders.push((order_id, record.header_str(headers::TRACEPARENT)));
        }
        if !claims.is_empty() {
            self.backends
                .store
                .claim_refunds(&claims)
                .await
                .map_err(store_error)?;
        }
        let mut outputs = self.refunds(&claimed, now).await?;
        if charges.is_empty() {
            return Ok(outputs);
        }
        // The batch's charges are sent to the provider together, so the batch waits for the slowest one.
        if !slowest.is_zero() {
            tokio::time::sleep(slowest).await;
        }
        let recorded: HashMap<OrderId, Charge> = self
            .backends
            .store
            .record_charges(&charges)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|c| (c.order_id, c))
            .collect();
        let mut reported = std::collections::HashSet::new();
        for &(order_id, traceparent) in &orders {
            // The same order twice in one batch (a duplicate publication) is reported once.
            if !reported.insert(order_id) {
                continue;
            }
            let charge = recorded.get(&order_id).ok_or_else(|| {
                HandlerError::transient(format!("the ledger did not answer for order {order_id}"))
            })?;
            outputs.push(self.output(charge, traceparent)?);
        }
        // Orders whose cancel came before their charge: refunded now that it is captured.
        outputs.extend(self.refunds(&orders, now).await?);
        Ok(outputs)
    }
}

/// Consumes [`INPUTS`] until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: PaymentsSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    settings.provider.validate().map_err(RoleError::Settings)?;
    let role = ConsumerRole {
        role: crate::Role::Payments,
        group: &settings.group,
        inputs: &INPUTS,
        // On the mock cluster of the embedded default, which has no transactions, the ledger still keeps one
        // charge per order and one event id per charge.
        delivery: Delivery::Transactional,
        concurrency: settings.concurrency,
    };
    let handler = Payments {
        inputs: role.topics(&backends),
        received_topic: backends.bus.topic(topics::PAYMENT_RECEIVED),
        failed_topic: backends.bus.topic(topics::PAYMENT_FAILED),
        refunded_topic: backends.bus.topic(topics::PAYMENT_REFUNDED),
        provider: SimulatedProvider::new(settings.provider.clone()),
        backends: backends.clone(),
    };
    role.run(&backends, handler, shutdown).await
}
