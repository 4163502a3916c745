//! The enrichment role: joins each order with its payment within a window and emits `order.enriched` for
//! paid orders, with the customer's tier from reference data; orders whose payment never comes are reported
//! as `order.unpaid`.
//!
//! Both inputs are keyed by order id. The join state lives in the database (`orderflow_join::DbJoin`, table
//! `join_state`), shared by every instance and durable, so it survives restarts, rebalances and the loss of
//! Redis, whatever partitions an instance is given; a batch's puts are one statement. The window is event time: a
//! payment counts when it occurred within `window + grace` of its order. Output and consumed offsets commit
//! in one Kafka transaction (at-least-once on the mock cluster); the join fixes the output's event id when the
//! order is first stored, so reprocessing repeats the same event, which consumers dedupe. A sweep reports orders
//! still waiting after their deadline, once each (again with a fixed event id).

mod reference;

use std::time::Duration;

use chrono::Utc;
use orderflow_consumer::{Delivery, Handler, HandlerError, Output, Record};
use orderflow_events::{
    Event, Lifecycle, LifecycleEvent, LifecycleTopic, LifecycleTopics, OrderCreated, OrderEnriched,
    OrderUnpaid, PaymentReceived, headers, topics,
};
use orderflow_join::{DbJoin, JoinState, Put, PutRequest, Side};
use rdkafka::producer::FutureRecord;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use reference::{CustomerTiers, DEFAULT_TIER};

use crate::runner::ConsumerRole;
use crate::telemetry::RoleEvent;
use crate::{Backends, RoleError, decode_error, event_output};

/// The join's name in the `join_state` table.
const JOIN_NAME: &str = "enrichment";

/// How often join entries past their keep time are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How long state is kept after its deadline, so that late payments are recognised as late.
const KEEP_AFTER_DEADLINE_MS: i64 = 60 * 60 * 1000;

/// Tag of a stored payment: captured.
const RECEIVED: u8 = b'R';
/// Tag of a stored payment: failed.
const FAILED: u8 = b'F';

/// Settings of the enrichment role.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichmentSettings {
    /// Kafka consumer group.
    pub group: String,
    /// Partitions processed at once.
    pub concurrency: usize,
    /// How long after its order a payment may occur (seconds).
    pub window_secs: u64,
    /// Extra time allowed for payments that are slow to arrive (seconds).
    pub grace_secs: u64,
    /// How often orders past their deadline are looked for (milliseconds).
    pub sweep_interval_ms: u64,
    /// How often the reference data is reloaded from the database (seconds).
    pub reference_refresh_secs: u64,
}

impl Default for EnrichmentSettings {
    fn default() -> Self {
        Self {
            group: "orderflow-enrichment".into(),
            concurrency: 8,
            window_secs: 300,
            grace_secs: 30,
            sweep_interval_ms: 1_000,
            reference_refresh_secs: 60,
        }
    }
}

impl EnrichmentSettings {
    fn waited_ms(&self) -> i64 {
        i64::try_from(
            self.window_secs
                .saturating_add(self.grace_secs)
                .saturating_mul(1_000),
        )
        .unwrap_or(i64::MAX)
    }
}

/// A joined order and payment waiting for its reference data.
struct Joined {
    order: OrderCreated,
    payment: PaymentReceived,
    event_id: String,
    traceparent: Option<String>,
}

struct Enrichment {
    backends: Backends,
    state: JoinState,
    tiers: CustomerTiers,
    waited_ms: i64,
    /// [`INPUTS`] under their full names (with the deployment prefix).
    inputs: LifecycleTopics,
    enriched_topic: String,
}

/// The topics enrichment joins: orders with their payment outcomes.
pub const INPUTS: [LifecycleTopic; 3] = [
    LifecycleTopic::OrderCreated,
    LifecycleTopic::PaymentReceived,
    LifecycleTopic::PaymentFailed,
];

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn state_error(error: orderflow_join::StateError) -> HandlerError {
    HandlerError::transient(error)
}

/// One consumed record, decoded and ready to put into the join.
struct Prepared {
    order_id: String,
    side: Side,
    stored: Vec<u8>,
    deadline_ms: i64,
    keep_ms: i64,
    proposed: String,
}

impl Enrichment {
    /// Decodes one record into what the join stores for it.
    async fn prepare(&self, record: &Record) -> Result<Prepared, HandlerError> {
        let source = record.source_topic();
        let payload = record.payload.as_deref().unwrap_or_default();
        let codec = &self.backends.codec;
        let not_read = || HandlerError::permanent(format!("enrichment does not read {source}"));
        let topic = self.inputs.get(source).ok_or_else(not_read)?;
        let Lifecycle { envelope, event } = Lifecycle::decode(codec, topic, payload)
            .await
            .map_err(decode_error)?;
        let payment = |tag: u8| {
            let mut stored = Vec::with_capacity(payload.len() + 1);
            stored.push(tag);
            stored.extend_from_slice(payload);
            (Side::Right, stored, 0)
        };
        let (side, stored, deadline_ms) = match event {
            LifecycleEvent::OrderCreated(_) => {
                let deadline = envelope.at.timestamp_millis() + self.waited_ms;
                (Side::Left, payload.to_vec(), deadline)
            }
            LifecycleEvent::PaymentReceived(_) => payment(RECEIVED),
            LifecycleEvent::PaymentFailed(_) => payment(FAILED),
            LifecycleEvent::OrderCancelled(_)
            | LifecycleEvent::PaymentRefunded(_)
            | LifecycleEvent::OrderEnriched(_)
            | LifecycleEvent::OrderUnpaid(_)
            | LifecycleEvent::InventoryAllocated(_)
            | LifecycleEvent::InventoryRejected(_) => return Err(not_read()),
        };
        // Kept until the deadline (or a full window for a payment waiting for its order), then long enough to
        // recognise late payments.
        let keep_ms = (deadline_ms - now_ms()).max(self.waited_ms) + KEEP_AFTER_DEADLINE_MS;
        Ok(Prepared {
            order_id: envelope.order_id.to_string(),
            side,
            stored,
            deadline_ms,
            keep_ms,
            proposed: uuid::Uuid::now_v7().to_string(),
        })
    }

    /// What a put of `record` (for `order_id`) did: the join when it completed with a captured payment.
    async fn joined(
        &self,
        order_id: &str,
        record: &Record,
        put: Put,
    ) -> Result<Option<Joined>, HandlerError> {
        let codec = &self.backends.codec;
        let (left, right, join_id) = match put {
            Put::Waiting => return Ok(None),
            Put::Late { .. } => {
                RoleEvent::LatePayment.emit();
                tracing::info!(
                    order = order_id,
                    "payment arrived after its order was reported unpaid"
                );
                return Ok(None);
            }
            Put::Joined { left, right, join_id } => (left, right, join_id),
        };
        let order: OrderCreated = codec.decode(&left).await.map_err(decode_error)?;
        let Some((&RECEIVED, payment)) = right.split_first() else {
            // A failed payment completes the join with nothing to enrich.
            return Ok(None);
        };
        let payment: PaymentReceived = codec.decode(payment).await.map_err(decode_error)?;
        if payment.occurred_at - order.occurred_at > self.waited_ms * 1_000 {
            RoleEvent::LatePayment.emit();
            tracing::info!(order = order_id, "payment occurred outside the join window");
            return Ok(None);
        }
        Ok(Some(Joined {
            order,
            payment,
            event_id: join_id,
            traceparent: record.header_str(headers::TRACEPARENT).map(str::to_owned),
        }))
    }
}

impl Handler for Enrichment {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        // The whole batch goes into the join at once (one transaction in the database); a key's second side
        // in the same batch sees its first. Outputs keep the batch's order.
        let prepared = futures::future::join_all(batch.iter().map(|record| self.prepare(record)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let requests: Vec<PutRequest<'_>> = prepared
            .iter()
            .map(|p| PutRequest {
                key: &p.order_id,
                side: p.side,
                record: &p.stored,
                deadline_ms: p.deadline_ms,
                keep_ms: p.keep_ms,
                proposed_id: &p.proposed,
            })
            .collect();
        let puts = self.state.put_batch(&requests).await.map_err(state_error)?;
        let mut joined = Vec::new();
        // A key joined by two records of the batch is emitted once.
        let mut emitted = std::collections::HashSet::new();
        for ((prepared, record), put) in prepared.iter().zip(batch).zip(puts) {
            if let Some(join) = self.joined(&prepared.order_id, record, put).await?
                && emitted.insert(join.event_id.clone())
            {
                joined.push(join);
            }
        }
        let customers: Vec<&str> = joined.iter().map(|j| j.order.customer_id.as_str()).collect();
        let tiers = self
            .tiers
            .lookup(&self.backends.store, &customers)
            .await
            .map_err(HandlerError::transient)?;
        let mut outputs = Vec::with_capacity(joined.len());
        for (join, tier) in joined.into_iter().zip(tiers) {
            let (order, payment) = (join.order, join.payment);
            let enriched = OrderEnriched {
                event_id: join.event_id,
                event_type: OrderEnriched::TYPE.into(),
                order_id: order.order_id,
                // Enrichment adds data, not a status: the order stays at its payment's version.
                order_version: payment.order_version,
                occurred_at: payment.occurred_at.max(order.occurred_at),
                customer_id: order.customer_id,
                customer_tier: tier,
                currency: order.currency,
                items: order.items,
                total_minor: order.total_minor,
                payment_id: payment.payment_id,
                paid_minor: payment.amount_minor,
            };
            let encoded = self
                .backends
                .codec
                .encode(&enriched, join.traceparent.as_deref())
                .map_err(HandlerError::permanent)?;
            RoleEvent::PaymentJoined.emit();
            outputs.push(event_output(&self.enriched_topic, encoded));
        }
        Ok(outputs)
    }
}

/// Reports the orders past their deadline as `order.unpaid`, once each, until `shutdown` fires.
async fn sweep(
    settings: EnrichmentSettings,
    backends: Backends,
    state: JoinState,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let producer = backends.bus.producer("orderflow-enrichment-sweep")?;
    let topic = backends.bus.topic(topics::ORDER_UNPAID);
    let waited_ms = settings.waited_ms();
    let mut tick = tokio::time::interval(Duration::from_millis(settings.sweep_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = tokio::time::Instant::now();
            match state.prune(now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(entries = n, "deleted join entries past their keep time"),
                Err(e) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "could not delete old join entries; trying again later"
                ),
            }
        }
        let expired = match state
            .expired(now_ms(), 500, || uuid::Uuid::now_v7().to_string())
            .await
        {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "could not look for unpaid orders; trying again"
                );
                continue;
            }
        };
        let mut reported = Vec::with_capacity(expired.len());
        for entry in expired {
            let order: OrderCreated = match backends.codec.decode(&entry.left).await {
                Ok(order) => order,
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        key = entry.key,
                        "an unreadable waiting order; dropping it"
                    );
                    reported.push(entry.key);
                    continue;
                }
            };
            let unpaid = OrderUnpaid {
                event_id: entry.report_id,
                event_type: OrderUnpaid::TYPE.into(),
                order_id: order.order_id.clone(),
                order_version: order.order_version,
                occurred_at: Utc::now().timestamp_micros(),
                customer_id: order.customer_id,
                currency: order.currency,
                total_minor: order.total_minor,
                waited_ms,
            };
            let encoded = match backends.codec.encode(&unpaid, None) {
                Ok(encoded) => encoded,
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "could not encode order.unpaid"
                    );
                    continue;
                }
            };
            let record_headers = crate::kafka_headers(&encoded);
            let record = FutureRecord::to(&topic)
                .key(&encoded.key)
                .payload(&encoded.payload)
                .headers(record_headers);
            match producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => {
                    RoleEvent::Unpaid.emit();
                    reported.push(entry.key);
                }
                // Not taken off the index: the next sweep sends it again, with the same event id.
                Err((e, _)) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "could not publish order.unpaid; will retry"
                ),
            }
        }
        if let Err(e) = state.forget_expired(&reported).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "could not clear reported orders; they will be reported again"
            );
        }
    }
}

/// Keeps the reference data fresh until `shutdown` fires.
async fn refresh_reference(
    every: Duration,
    tiers: CustomerTiers,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(e) = tiers.load(&backends.store).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "could not reload the customer tiers; keeping the ones held"
            );
        }
    }
}

/// Joins until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: EnrichmentSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let prefix = format!("{}enrichment:", backends.key_prefix);
    // In the database, not in Redis: a Redis loss (or a restart of the embedded default) must not drop the
    // orders and payments still waiting for each other.
    let state = JoinState::Database(DbJoin::new(backends.store.clone(), JOIN_NAME));
    let tiers = CustomerTiers::new(backends.redis.clone(), &prefix);
    match tiers.load(&backends.store).await {
        Ok(loaded) => tracing::info!(customers = loaded, "enrichment loaded the customer tiers"),
        // Lookups read the database until Redis answers again; the refresh loads them then.
        Err(e) => tracing::warn!(
            error = &e as &dyn std::error::Error,
            "could not load the customer tiers into Redis; reading them from the database meanwhile"
        ),
    }
    let role = ConsumerRole {
        role: crate::Role::Enrichment,
        group: &settings.group,
        inputs: &INPUTS,
        delivery: Delivery::Transactional,
        concurrency: settings.concurrency,
    };
    let handler = Enrichment {
        state: state.clone(),
        tiers: tiers.clone(),
        waited_ms: settings.waited_ms(),
        inputs: role.topics(&backends),
        enriched_topic: backends.bus.topic(topics::ORDER_ENRICHED),
        backends: backends.clone(),
    };
    let every = Duration::from_secs(settings.reference_refresh_secs);
    let (joined, swept, refreshed) = tokio::join!(
        role.run(&backends, handler, shutdown.clone()),
        sweep(settings.clone(), backends.clone(), state, shutdown.clone()),
        refresh_reference(every, tiers, backends.clone(), shutdown),
    );
    joined?;
    swept.and(refreshed)
}
