//! The analytics role: folds the order lifecycle into the aggregates of `orderflow_analytics` (revenue per
//! hour, orders per hopping window, unique customers, top products, the funnel), which the API serves under
//! `/v1/analytics/...`.
//!
//! Kafka to Redis (or to this process's memory when no Redis is configured). Effects are idempotent per order
//! and kind, so at-least-once delivery counts every order once: offsets are committed after the aggregates
//! are updated, and a re-delivered event changes nothing.
//!
//! The aggregates are derived state: when they are lost (Redis flushed or restarted empty; this process
//! started, for the in-process store), the role notices (their epoch marker is gone: at the next batch, or
//! within [`WATCH_INTERVAL`] when idle) and refolds every order of the last `order_marks_secs` from the
//! database ([`StoreFacts`]) before it applies anything more.

use std::time::Duration;

use orderflow_analytics::{
    Analytics, AnalyticsError, Fact, FactKind, FactPage, FactSource, Hopping, MemoryAnalytics,
    RedisAnalytics, SourceError,
};
use orderflow_consumer::effects::redis_error;
use orderflow_consumer::{Delivery, Handler, HandlerError, Output, Record};
use orderflow_events::{AvroCodec, Lifecycle, LifecycleEvent, LifecycleTopic, LifecycleTopics};
use orderflow_store::{OrderFacts, Store};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::runner::ConsumerRole;
use crate::telemetry::RoleEvent;
use crate::{Backends, RoleError, decode_error};

/// The topics analytics counts: every event that moves an order's status, and refunds (which take revenue
/// back).
pub const COUNTED: [LifecycleTopic; 7] = [
    LifecycleTopic::OrderCreated,
    LifecycleTopic::PaymentReceived,
    LifecycleTopic::PaymentFailed,
    LifecycleTopic::InventoryAllocated,
    LifecycleTopic::InventoryRejected,
    LifecycleTopic::OrderCancelled,
    LifecycleTopic::PaymentRefunded,
];

/// How often an idle analytics role checks that its aggregates are intact.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Orders read per page by a rebuild.
const REBUILD_PAGE: i64 = 1_000;

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
            // This process starts with nothing: the role loads the aggregates from the database first.
            None => Analytics::Memory(std::sync::Arc::new(
                MemoryAnalytics::unloaded(hopping).map_err(settings)?,
            )),
        })
    }
}

/// What the database says happened to each order, as analytics facts: the source of a rebuild.
pub struct StoreFacts {
    /// The source of truth.
    pub store: Store,
    /// Orders created before this (seconds since the epoch) are left out: their marks would have expired.
    pub since: i64,
}

impl StoreFacts {
    /// The facts of every order created in the last `settings.order_marks_secs`.
    pub fn recent(store: Store, settings: &AnalyticsSettings) -> Self {
        let marks = i64::try_from(settings.order_marks_secs).unwrap_or(i64::MAX);
        Self {
            store,
            since: chrono::Utc::now().timestamp().saturating_sub(marks),
        }
    }
}

/// The facts one order's rows stand for, in the order its events happen.
pub fn order_facts(order: OrderFacts) -> Vec<Fact> {
    let order_id = order.id.to_string();
    let bare = |kind, at: chrono::DateTime<chrono::Utc>| Fact {
        kind,
        order_id: order_id.clone(),
        at: at.timestamp(),
        customer: String::new(),
        currency: String::new(),
        amount_minor: 0,
        items: Vec::new(),
    };
    let mut facts = vec![Fact {
        customer: order.customer_id.clone(),
        items: order.items.clone(),
        ..bare(FactKind::Created, order.created_at)
    }];
    if let Some(charge) = &order.charge {
        facts.push(match charge.outcome.as_str() {
            "CAPTURED" => Fact {
                currency: charge.currency.clone(),
                amount_minor: charge.amount_minor,
                ..bare(FactKind::Paid, charge.at)
            },
            _ => bare(FactKind::PaymentFailed, charge.at),
        });
    }
    match &order.reservation {
        Some((status, at)) if status == "ALLOCATED" || status == "RELEASED" => {
            facts.push(bare(FactKind::Allocated, *at));
        }
        Some((status, at)) if status == "REJECTED" => facts.push(bare(FactKind::Rejected, *at)),
        _ => {}
    }
    if order.status == "CANCELLED" {
        facts.push(bare(FactKind::Cancelled, order.updated_at));
    }
    if let (Some((amount_minor, at)), Some(charge)) = (order.refund, &order.charge) {
        facts.push(Fact {
            currency: charge.currency.clone(),
            amount_minor,
            ..bare(FactKind::Refunded, at)
        });
    }
    facts
}

impl FactSource for StoreFacts {
    async fn page(&self, after: Option<String>) -> Result<FactPage, SourceError> {
        let after = after
            .map(|id| id.parse::<orderflow_domain::OrderId>())
            .transpose()
            .map_err(|e| -> SourceError { format!("rebuild cursor: {e}").into() })?;
        let orders = self.store.order_facts(after, REBUILD_PAGE).await?;
        let next = (orders.len() as i64 == REBUILD_PAGE)
            .then(|| orders.last().map(|o| o.id.to_string()))
            .flatten();
        let facts = orders
            .into_iter()
            .filter(|o| o.created_at.timestamp() >= self.since)
            .flat_map(order_facts)
            .collect();
        Ok(FactPage { facts, next })
    }
}

/// Rebuilds the aggregates from the database if they were lost; reports a rebuild.
async fn rebuild_if_lost(
    analytics: &Analytics,
    store: &Store,
    settings: &AnalyticsSettings,
) -> Result<(), AnalyticsError> {
    if let Some(applied) = analytics
        .rebuild_if_lost(&StoreFacts::recent(store.clone(), settings))
        .await?
    {
        RoleEvent::AnalyticsRebuilt { applied }.emit();
    }
    Ok(())
}

fn analytics_error(error: AnalyticsError) -> HandlerError {
    match error {
        AnalyticsError::Redis(e) => redis_error(e),
        e @ (AnalyticsError::Lost | AnalyticsError::Source(_)) => HandlerError::transient(e),
        other => HandlerError::permanent(other),
    }
}

/// Turns records into facts and applies them.
struct Counter {
    codec: std::sync::Arc<AvroCodec>,
    analytics: Analytics,
    store: Store,
    settings: AnalyticsSettings,
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
            LifecycleEvent::PaymentRefunded(e) => Fact {
                currency: e.currency,
                amount_minor: e.amount_minor,
                ..bare(FactKind::Refunded)
            },
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
        let applied = match self.analytics.apply(&facts).await {
            Err(AnalyticsError::Lost) => {
                rebuild_if_lost(&self.analytics, &self.store, &self.settings)
                    .await
                    .map_err(analytics_error)?;
                self.analytics.apply(&facts).await
            }
            other => other,
        }
        .map_err(analytics_error)?;
        RoleEvent::AnalyticsApplied {
            applied,
            seen_before: facts.len() - applied,
        }
        .emit();
        Ok(Vec::new())
    }
}

/// Rebuilds the Redis aggregates from the database (every order of the last `order_marks_secs`), as the
/// role does when it finds them lost, whether or not they are intact; returns the facts newly applied.
/// Safe while the platform runs: facts already counted are not counted again, and one process rebuilds at
/// a time. `progress` sees the running count of facts read.
pub async fn rebuild(
    settings: &AnalyticsSettings,
    backends: &Backends,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<usize, RoleError> {
    if backends.redis.is_none() {
        return Err(RoleError::Rebuild {
            what: "analytics",
            source: "the aggregates live in the analytics role's process without Redis: set cache.redis_url"
                .into(),
        });
    }
    let source = StoreFacts::recent(backends.store.clone(), settings);
    backends
        .analytics
        .rebuild(&source, progress)
        .await
        .map_err(|e| RoleError::Rebuild {
            what: "analytics",
            source: match e {
                AnalyticsError::Lost => {
                    "another process held the rebuild lock for 10 minutes, or took it over from this rebuild: try again".into()
                }
                other => other.into(),
            },
        })
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
        store: backends.store.clone(),
        settings: settings.clone(),
        topics: role.topics(&backends),
    };
    let watch = tokio::spawn(watch(
        backends.analytics.clone(),
        backends.store.clone(),
        settings.clone(),
        shutdown.clone(),
    ));
    let result = role.run(&backends, counter, shutdown).await;
    watch.abort();
    result
}

/// Checks every [`WATCH_INTERVAL`] (and at once) that the aggregates are intact, and rebuilds them when not,
/// so that a loss is repaired while no events arrive too.
async fn watch(analytics: Analytics, store: Store, settings: AnalyticsSettings, shutdown: CancellationToken) {
    loop {
        if let Err(e) = rebuild_if_lost(&analytics, &store, &settings).await
            && !matches!(e, AnalyticsError::Lost)
        {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "checking the analytics aggregates"
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}
