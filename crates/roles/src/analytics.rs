//! The analytics role: folds the order lifecycle into the aggregates of `orderflow_analytics` (revenue per
//! hour, orders per hopping window, unique customers, top products, the funnel), which the API serves under
//! `/v1/analytics/...`.
//!
//! Kafka to Redis (or to this process's memory when no Redis is configured). Effects are idempotent per order
//! and kind, so at-least-once delivery counts every order once: offsets are committed after the aggregates
//! are updated, and a re-delivered event changes nothing.

use std::time::Duration;

use orderflow_analytics::{
    Analytics, AnalyticsError, Fact, FactKind, Hopping, MemoryAnalytics, RedisAnalytics,
};
use orderflow_consumer::effects::redis_error;
use orderflow_consumer::{ConsumerRuntime, Delivery, Handler, HandlerError, Output, Record};
use orderflow_events::{
    AvroCodec, Event, InventoryAllocated, InventoryRejected, OrderCancelled, OrderCreated, PaymentFailed,
    PaymentReceived, topics,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{Backends, RoleError, consumer_settings, decode_error};

/// The topics analytics counts.
pub const COUNTED: [&str; 6] = [
    topics::ORDER_CREATED,
    topics::PAYMENT_RECEIVED,
    topics::PAYMENT_FAILED,
    topics::INVENTORY_ALLOCATED,
    topics::INVENTORY_REJECTED,
    topics::ORDER_CANCELLED,
];

/// Settings of the analytics role and of the aggregates it keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// Kafka consumer group.
    pub group: String,
    /// Partitions worked on at once.
    pub concurrency: usize,
    /// Length of the orders-count window, in seconds.
    pub window_secs: i64,
    /// How far consecutive orders-count windows start apart, in seconds.
    pub hop_secs: i64,
    /// How long an order's idempotence marks are kept: longer than any of its events can be re-delivered,
    /// and as long as the hourly aggregates, so a late cancel still takes back the revenue it counted.
    pub order_marks_secs: u64,
    /// How long hourly aggregates are kept after their last update.
    pub retention_secs: u64,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            group: "orderflow-analytics".into(),
            concurrency: 4,
            window_secs: 60,
            hop_secs: 10,
            order_marks_secs: 30 * 24 * 3600,
            retention_secs: 30 * 24 * 3600,
        }
    }
}

impl AnalyticsSettings {
    /// The aggregates these settings describe: in Redis when the deployment has one, else in this process.
    pub fn open(
        &self,
        redis: Option<&orderflow_cache::RedisConnection>,
        key_prefix: &str,
    ) -> Result<Analytics, RoleError> {
        let hopping = Hopping {
            size_secs: self.window_secs,
            hop_secs: self.hop_secs,
        };
        let settings =
            |e: orderflow_analytics::AnalyticsError| RoleError::Settings(format!("analytics: {e}"));
        Ok(match redis {
            Some(connection) => Analytics::Redis(
                RedisAnalytics::new(
                    connection.clone(),
                    key_prefix,
                    hopping,
                    Duration::from_secs(self.order_marks_secs),
                    Duration::from_secs(self.retention_secs),
                )
                .map_err(settings)?,
            ),
            None => Analytics::Memory(std::sync::Arc::new(
                MemoryAnalytics::new(hopping).map_err(settings)?,
            )),
        })
    }
}

/// Turns records into facts and applies them.
struct Counter {
    codec: std::sync::Arc<AvroCodec>,
    analytics: Analytics,
    /// Full topic names (with the deployment prefix), in the order of [`COUNTED`].
    topics: Vec<String>,
}

fn secs(micros: i64) -> i64 {
    micros.div_euclid(1_000_000)
}

/// A fact with only the envelope filled in.
fn bare<E: Event>(kind: FactKind, event: &E) -> Fact {
    Fact {
        kind,
        order_id: event.order_id().to_owned(),
        at: secs(event.occurred_at()),
        customer: String::new(),
        currency: String::new(),
        amount_minor: 0,
        items: Vec::new(),
    }
}

impl Counter {
    async fn fact(&self, record: &Record) -> Result<Fact, HandlerError> {
        let source = record.source_topic();
        let index = self
            .topics
            .iter()
            .position(|t| t == source)
            .ok_or_else(|| HandlerError::permanent(format!("analytics does not count topic {source}")))?;
        let payload = record.payload.as_deref().unwrap_or_default();
        let codec = &self.codec;
        Ok(match COUNTED[index] {
            topics::ORDER_CREATED => {
                let e = codec
                    .decode::<OrderCreated>(payload)
                    .await
                    .map_err(decode_error)?;
                Fact {
                    customer: e.customer_id.clone(),
                    items: e
                        .items
                        .iter()
                        .map(|i| (i.sku.clone(), i64::from(i.quantity)))
                        .collect(),
                    ..bare(FactKind::Created, &e)
                }
            }
            topics::PAYMENT_RECEIVED => {
                let e = codec
                    .decode::<PaymentReceived>(payload)
                    .await
                    .map_err(decode_error)?;
                Fact {
                    currency: e.currency.clone(),
                    amount_minor: e.amount_minor,
                    ..bare(FactKind::Paid, &e)
                }
            }
            topics::PAYMENT_FAILED => {
                let e = codec
                    .decode::<PaymentFailed>(payload)
                    .await
                    .map_err(decode_error)?;
                bare(FactKind::PaymentFailed, &e)
            }
            topics::INVENTORY_ALLOCATED => {
                let e = codec
                    .decode::<InventoryAllocated>(payload)
                    .await
                    .map_err(decode_error)?;
                bare(FactKind::Allocated, &e)
            }
            topics::INVENTORY_REJECTED => {
                let e = codec
                    .decode::<InventoryRejected>(payload)
                    .await
                    .map_err(decode_error)?;
                bare(FactKind::Rejected, &e)
            }
            _ => {
                let e = codec
                    .decode::<OrderCancelled>(payload)
                    .await
                    .map_err(decode_error)?;
                bare(FactKind::Cancelled, &e)
            }
        })
    }
}

impl Handler for Counter {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let mut facts = Vec::with_capacity(batch.len());
        for record in batch {
            facts.push(self.fact(record).await?);
        }
        let applied = self.analytics.apply(&facts).await.map_err(|e| match e {
            AnalyticsError::Redis(e) => redis_error(e),
            other => HandlerError::permanent(other),
        })?;
        metrics::counter!("orderflow_analytics_facts_total", "outcome" => "applied")
            .increment(applied as u64);
        metrics::counter!("orderflow_analytics_facts_total", "outcome" => "seen_before")
            .increment((facts.len() - applied) as u64);
        Ok(Vec::new())
    }
}

/// Counts until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: AnalyticsSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let bus = backends.bus.clone();
    let inputs: Vec<String> = COUNTED.iter().map(|t| bus.topic(t)).collect();
    let group = bus.group(&settings.group);
    let mut consumer = consumer_settings(&bus, group.clone(), inputs.clone(), Delivery::AtLeastOnce);
    consumer.concurrency = settings.concurrency.max(1);
    tracing::info!(?inputs, group, "analytics counting");
    let counter = Counter {
        codec: backends.codec.clone(),
        analytics: backends.analytics.clone(),
        topics: inputs,
    };
    backends
        .consumers
        .watch(
            crate::Role::Analytics,
            ConsumerRuntime::new(bus, consumer, counter),
        )
        .run(shutdown)
        .await?;
    Ok(())
}
