//! The stranded-order sweeper: finds orders that stopped moving (still `CREATED` or `PAID` long after their
//! last change, when every step answers within seconds), reports them, as the gauge
//! `orderflow_orders_stranded{status}` (alert `OrderflowOrdersStranded`) and a log line naming each of the
//! longest waiting, and drives them on: it hands the order's `order.created` again to the steps that owe it
//! an answer, through their own retry topics (`<topic>.<group>.retry.1`), so no other group sees it again.
//! Every step is idempotent per order (the charge ledger, the durable join with its fixed ids, the
//! reservation), so a step that had answered only repeats its answer with the same event id, and one that
//! had lost the order takes it up. An order still stranded after that points an operator at the step (its
//! lag, its dead letters).

use std::time::Duration;

use chrono::Utc;
use orderflow_bus::{Bus, EventProducer};
use orderflow_consumer::routing::{headers as routing_headers, retry_topic};
use orderflow_events::{AvroCodec, OrderCreated, topics};
use orderflow_store::{Store, Stranded};
use rdkafka::message::Header;
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

use crate::settings::OrdersSettings;
use crate::telemetry::RoleEvent;

/// Orders named in the log per sweep: enough to start from, few enough not to flood it.
const NAMED_PER_SWEEP: usize = 20;

/// Orders driven on per sweep: a backlog is worked off over several sweeps without a burst.
const DRIVEN_PER_SWEEP: i64 = 500;

/// Hands stranded orders back to the steps that owe them an answer.
pub(crate) struct DriveOn {
    store: Store,
    codec: std::sync::Arc<AvroCodec>,
    producer: EventProducer,
    /// `order.created` under its full name: what the retried records say they come from.
    created_topic: String,
    /// The payments group's first retry topic of `order.created`.
    payments: String,
    /// The enrichment group's first retry topic of `order.created`.
    enrichment: String,
}

impl DriveOn {
    /// Drives on with a producer of its own, towards the groups named in `settings`.
    pub(crate) fn new(
        store: Store,
        bus: &Bus,
        codec: std::sync::Arc<AvroCodec>,
        settings: &crate::Settings,
    ) -> Result<Self, crate::RoleError> {
        let created_topic = bus.topic(topics::ORDER_CREATED);
        Ok(Self {
            payments: retry_topic(&created_topic, &settings.payments.group, 1),
            enrichment: retry_topic(&created_topic, &settings.enrichment.group, 1),
            created_topic,
            producer: bus.producer("orderflow-orders-sweeper")?,
            codec,
            store,
        })
    }

    /// Creates the retry topics it publishes to when missing (unless the bus does not manage topics: then
    /// `orderflow topics apply` created them), so a drive-on never waits on a topic no consumer made yet.
    async fn ensure_topics(&self, bus: &Bus) {
        if !bus.settings().manage_topics {
            return;
        }
        let cleanup = orderflow_bus::topics::Cleanup::Delete {
            days: orderflow_consumer::ROUTING_RETENTION_DAYS,
        };
        let wanted = [
            (self.payments.clone(), cleanup),
            (self.enrichment.clone(), cleanup),
        ];
        if let Err(e) = bus.ensure_routing_topics(&wanted).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cannot create the retry topics stranded orders are driven on to"
            );
        }
    }

    /// Republishes the `order.created` of each of `orders` to the steps its status says are owed: payments
    /// for a `CREATED` order; payments (whose answer the join needs again) and enrichment for a `PAID` one.
    /// Returns how many orders went out; the rest are tried at the next sweep.
    pub(crate) async fn drive(&self, orders: &[(orderflow_domain::OrderId, String)]) -> usize {
        let ids: Vec<orderflow_domain::OrderId> = orders.iter().map(|(id, _)| *id).collect();
        let loaded = match self.store.get_orders(&ids).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "cannot load stranded orders to drive them on"
                );
                return 0;
            }
        };
        let mut driven = 0;
        for order in loaded {
            let targets: &[&str] = match order.status.as_str() {
                "CREATED" => &[&self.payments],
                "PAID" => &[&self.payments, &self.enrichment],
                _ => continue, // it moved since the sweep read it
            };
            let encoded = match self.codec.encode(&OrderCreated::from_order(&order), None) {
                Ok(encoded) => encoded,
                Err(e) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, order = %order.id, "cannot encode a stranded order");
                    continue;
                }
            };
            let record_headers = crate::kafka_headers(&encoded).insert(Header {
                key: routing_headers::ORIGINAL_TOPIC,
                value: Some(self.created_topic.as_bytes()),
            });
            let sends = targets.iter().map(|topic| {
                let record = FutureRecord::to(topic)
                    .key(&encoded.key)
                    .payload(&encoded.payload)
                    .headers(record_headers.clone());
                self.producer.send(record, Duration::from_secs(10))
            });
            let sent = futures::future::join_all(sends).await;
            if let Some(Err((e, _))) = sent.iter().find(|r| r.is_err()) {
                tracing::warn!(error = e as &dyn std::error::Error, order = %order.id, "cannot drive a stranded order on; trying at the next sweep");
                continue;
            }
            tracing::info!(order = %order.id, status = order.status.as_str(), "drove a stranded order on");
            driven += 1;
        }
        RoleEvent::DrivenOn {
            orders: driven as u64,
        }
        .emit();
        driven
    }
}

/// Sweeps once: reports the orders still `CREATED` or `PAID` whose last change is older than `after`, and
/// returns their counts and the longest waiting of them (up to the number driven on per sweep).
pub(crate) async fn sweep(store: &Store, after: Duration) -> Result<Stranded, orderflow_store::StoreError> {
    let before = Utc::now() - chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let stranded = store.stranded_orders(before, DRIVEN_PER_SWEEP).await?;
    RoleEvent::Stranded {
        created: stranded.created,
        paid: stranded.paid,
    }
    .emit();
    for (order, status, since) in stranded.oldest.iter().take(NAMED_PER_SWEEP) {
        tracing::warn!(
            order = %order,
            status,
            since = %since.to_rfc3339(),
            "order stranded: no step has moved it for longer than orders.stranded_after_secs"
        );
    }
    Ok(stranded)
}

/// Sweeps every `sweep_interval_secs` until `shutdown`, driving stranded orders on with `drive` when given; a
/// failed sweep is logged and tried at the next tick.
pub(crate) async fn run(
    store: Store,
    bus: Bus,
    settings: OrdersSettings,
    drive: Option<DriveOn>,
    shutdown: CancellationToken,
) {
    if let Some(drive) = &drive {
        drive.ensure_topics(&bus).await;
    }
    let after = Duration::from_secs(settings.stranded_after_secs);
    let mut tick = tokio::time::interval(Duration::from_secs(settings.sweep_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired = i64::try_from(settings.idempotency_ttl_secs)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|ttl| chrono::Utc::now().checked_sub_signed(ttl))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        if let Err(e) = store.idempotency_prune(expired).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "pruning expired idempotency keys failed"
            );
        }
        let stranded = match sweep(&store, after).await {
            Ok(stranded) => stranded,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "sweeping for stranded orders failed"
                );
                continue;
            }
        };
        if let Some(drive) = &drive {
            let orders: Vec<_> = stranded
                .oldest
                .iter()
                .map(|(id, status, _)| (*id, status.clone()))
                .collect();
            if !orders.is_empty() {
                drive.drive(&orders).await;
            }
        }
    }
}
