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
use orderflow_consumer::{Delivery, Handler, HandlerError, Output, Record};
use orderflow_events::{AvroCodec, Lifecycle, LifecycleEvent, LifecycleTopic, LifecycleTopics};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::runner::ConsumerRole;
use crate::telemetry::RoleEvent;
use crate::{Backends, RoleError, decode_error};

/// The topics analytics counts: every event that moves an order's status.
pub const COUNTED: [LifecycleTopic; 6] = LifecycleTopic::STATUS_CHANGES;

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
        redis: Option<&orderflow_redis::RedisConnection>,
        key_prefix: &str,
    ) -> Result<Analytics, RoleError> {
        let hopping = Hopping {
            size_secs: self.window_secs,
            hop_secs: self.hop_secs,
        };
        let settings = RoleError::Analytics;
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
    /// [`COUNTED`] under their full names (with the deployment prefix).
    topics: LifecycleTopics,
}

impl Counter {
    async fn fact(&self, record: &Record) -> Result<Fact, HandlerError> {
        let source = record.source_topic();
        let not_counted = || HandlerError::permanent(format!("analytics does not count topic {source}"));
        let topic = self.topics.get(source).ok_or_else(not_counted)?;
        let payload = record.payload.as_deref().unwrap_or_default();
        let Lifecycle { envelope, event } = Lifecycle::decode(&self.codec, topic, payload)
            .await
            .map_err(decode_error)?;
        let bare = |kind| Fact {
            kind,
            order_id: envelope.order_id.to_string(),
            at: envelope.at.timestamp(),
            customer: String::new(),
            currency: String::new(),
            amount_minor: 0,
            items: Vec::new(),
        };
        Ok(match event {
            LifecycleEvent::OrderCreated(e) => Fact {
                customer: e.customer_id,
                items: e
                    .items
                    .into_iter()
                    .map(|i| (i.sku, i64::from(i.quantity)))
                    .collect(),
                ..bare(FactKind::Created)
            },
            LifecycleEvent::PaymentReceived(e) => Fact {
                currency: e.currency,
                amount_minor: e.amount_minor,
                ..bare(FactKind::Paid)
            },
            LifecycleEvent::PaymentFailed(_) => bare(FactKind::PaymentFailed),
            LifecycleEvent::InventoryAllocated(_) => bare(FactKind::Allocated),
            LifecycleEvent::InventoryRejected(_) => bare(FactKind::Rejected),
            LifecycleEvent::OrderCancelled(_) => bare(FactKind::Cancelled),
            LifecycleEvent::OrderEnriched(_) | LifecycleEvent::OrderUnpaid(_) => return Err(not_counted()),
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
        RoleEvent::AnalyticsApplied {
            applied,
            seen_before: facts.len() - applied,
        }
        .emit();
        Ok(Vec::new())
    }
}

/// Counts until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: AnalyticsSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let role = ConsumerRole {
        role: crate::Role::Analytics,
        group: &settings.group,
        inputs: &COUNTED,
        delivery: Delivery::AtLeastOnce,
        concurrency: settings.concurrency,
    };
    let counter = Counter {
        codec: backends.codec.clone(),
        analytics: backends.analytics.clone(),
        topics: role.topics(&backends),
    };
    role.run(&backends, counter, shutdown).await
}
