//! The outbox relay: publishes committed outbox rows to Kafka and marks them published.
//!
//! Guarantees: rows are sent in outbox order through an idempotent producer (acks=all), so records of one
//! key reach their partition in commit order; a row is marked only after the broker acknowledged it and every
//! row before it. A crash between publishing and marking republishes those rows (consumers dedupe by event
//! id); no row is ever marked without being published, so nothing is lost. On PostgreSQL, a lease keeps a
//! single relay active across instances.
//!
//! Metrics: see the `telemetry` module.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use orderflow_bus::Bus;
use orderflow_bus::EventProducer;
use orderflow_store::{OutboxRecord, Store, StoreError};
use orderflow_telemetry::TRACEPARENT;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

use telemetry::RelayEvent;

mod telemetry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often an active relay checks that it still holds its lease (and prunes old published rows).
const LEASE_CHECK_EVERY: Duration = Duration::from_secs(10);

/// How often the active relay samples the backlog gauge.
const BACKLOG_EVERY: Duration = Duration::from_secs(2);

/// Relay tuning, as read from configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Most rows published per round trip to the database.
    pub batch_size: i64,
    /// How long to sleep when the outbox is empty and no wake-up arrives (milliseconds).
    pub idle_poll_ms: u64,
    /// Published rows older than this are deleted (hours).
    pub retain_published_hours: i64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_poll_ms: 100,
            retain_published_hours: 24,
        }
    }
}

/// What stops a relay round.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or marking outbox rows failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Setting up the producer failed.
    #[error(transparent)]
    Bus(#[from] orderflow_bus::BusError),
    /// The broker did not acknowledge a record (it stays pending and is retried).
    #[error("publishing outbox row {id} to {topic}")]
    Publish {
        /// Outbox row id.
        id: i64,
        /// Destination topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
}

/// Publishes outbox rows; one per process, cheap to share.
pub struct OutboxRelay {
    store: Store,
    bus: Bus,
    /// Replaced when librdkafka declares it fatally failed (see [`OutboxRelay::heal_producer`]).
    producer: std::sync::RwLock<EventProducer>,
    settings: RelaySettings,
    wakeup: Arc<Notify>,
}

/// Rows the broker has acknowledged but that are not yet marked published.
///
/// Dropping it without [`PublishedBatch::mark`] is what a crash at that point looks like: the rows stay
/// pending and are published again.
#[must_use = "a batch that is not marked is published again"]
pub struct PublishedBatch<'a> {
    store: &'a Store,
    acknowledged: Vec<i64>,
    failure: Option<RelayError>,
}

impl PublishedBatch<'_> {
    /// How many rows were acknowledged.
    pub fn len(&self) -> usize {
        self.acknowledged.len()
    }

    /// True when there was nothing to publish (or the first row failed).
    pub fn is_empty(&self) -> bool {
        self.acknowledged.is_empty()
    }

    /// Marks the acknowledged rows published; returns how many, or the publish failure that cut the batch
    /// short (after marking what preceded it).
    pub async fn mark(self) -> Result<usize, RelayError> {
        self.store
            .outbox_mark_published(&self.acknowledged, Utc::now())
            .await?;
        match self.failure {
            Some(e) => Err(e),
            None => Ok(self.acknowledged.len()),
        }
    }
}

impl OutboxRelay {
    /// Builds a relay with its own idempotent producer.
    pub fn new(store: Store, bus: Bus, settings: RelaySettings) -> Result<Self, RelayError> {
        let producer = std::sync::RwLock::new(bus.producer("orderflow-relay")?);
        Ok(Self {
            store,
            bus,
            producer,
            settings,
            wakeup: Arc::new(Notify::new()),
        })
    }

    /// A handle the write path pokes after committing, so new rows go out without waiting for the poll.
    pub fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }

    /// Sends the oldest pending rows in order and waits for the broker's acknowledgements.
    ///
    /// Only the unbroken run of acknowledged rows from the start of the batch is kept for marking: if row
    /// `n` fails, rows after it are published again later, after `n`, never before it.
    pub async fn publish_batch(&self) -> Result<PublishedBatch<'_>, RelayError> {
        let rows = self.store.outbox_pending(self.settings.batch_size).await?;
        let producer = self.producer();
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let topic = self.bus.topic(&row.topic);
            // A child of the write that produced the event; consumers continue from this span.
            let span = orderflow_telemetry::publish_span(
                &topic,
                &row.event_id.to_string(),
                header(row, TRACEPARENT),
            );
            let own = orderflow_telemetry::traceparent(&span);
            let mut record = FutureRecord::to(&topic)
                .key(&row.key)
                .payload(&row.payload)
                .headers(headers(row, own.as_deref()));
            if let Some(at) = occurred_at(row) {
                record = record.timestamp(at);
            }
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break Ok(delivery),
                    // The local queue is full: let librdkafka drain it, then enqueue again.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again)) => {
                        record = again;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => break Err(e),
                }
            };
            deliveries.push((row.id, row.created_at, topic.clone(), delivery, span));
        }
        let mut acknowledged = Vec::with_capacity(rows.len());
        let mut failure = None;
        for (id, created_at, topic, delivery, _span) in deliveries {
            let outcome = match delivery {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    // The producer was dropped before it answered.
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(e) => Err(e),
            };
            match outcome {
                // After a failure, rows are published again later (in order): they count then.
                Ok(()) if failure.is_none() => {
                    let waited = (Utc::now() - created_at).to_std().unwrap_or_default();
                    RelayEvent::Acknowledged { waited }.emit();
                    acknowledged.push(id);
                }
                Ok(()) => {}
                Err(source) => {
                    RelayEvent::PublishFailed.emit();
                    failure.get_or_insert(RelayError::Publish { id, topic, source });
                }
            }
        }
        RelayEvent::Published {
            rows: acknowledged.len(),
        }
        .emit();
        Ok(PublishedBatch {
            store: &self.store,
            acknowledged,
            failure,
        })
    }

    fn producer(&self) -> EventProducer {
        match self.producer.read() {
            Ok(producer) => producer.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// An idempotent producer that hit a fatal error (its producer id refused, say, because its ACLs
    /// arrived after it started) never sends again: build a new one. Unacknowledged rows are still
    /// pending, so they go out again, in order.
    fn heal_producer(&self) {
        let Some((code, reason)) = self.producer().client().fatal_error() else {
            return;
        };
        tracing::warn!(?code, %reason, "outbox relay: the producer failed fatally; building a new one");
        match self.bus.producer("orderflow-relay") {
            Ok(fresh) => match self.producer.write() {
                Ok(mut producer) => *producer = fresh,
                Err(poisoned) => *poisoned.into_inner() = fresh,
            },
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "outbox relay: cannot build a new producer"
            ),
        }
    }

    /// Publishes and marks one batch; returns how many rows went out.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        self.publish_batch().await?.mark().await
    }

    /// Relays until `shutdown` fires: takes the relay lease, then publishes whenever woken or every idle
    /// poll; errors are logged and retried with backoff (rows stay pending, nothing is lost). Meanwhile
    /// samples the backlog gauge, whether or not this instance holds the lease (every instance reports the
    /// same database).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let (relayed, (), ()) = tokio::join!(
            self.relay(&shutdown),
            self.sample_backlog(&shutdown),
            self.listen(&shutdown)
        );
        relayed
    }

    /// Pokes the relay whenever any process commits outbox rows (PostgreSQL `LISTEN`), so rows written by
    /// another instance's API go out at once rather than at the next idle poll. Losing the listening
    /// connection only costs latency: the idle poll still finds every row.
    async fn listen(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut watch = match self.store.watch_outbox().await {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        "outbox: cannot listen for commits; retrying"
                    );
                    sleep_or_cancel(Duration::from_secs(1), shutdown).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = watch.changed() => match changed {
                        Ok(()) => self.wakeup.notify_one(),
                        Err(e) => {
                            tracing::debug!(error = &e as &dyn std::error::Error, "outbox: lost the commit listener; reconnecting");
                            self.wakeup.notify_one();
                            sleep_or_cancel(Duration::from_secs(1), shutdown).await;
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn sample_backlog(&self, shutdown: &CancellationToken) {
        let mut tick = tokio::time::interval(BACKLOG_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.store.outbox_backlog().await {
                Ok(backlog) => RelayEvent::Backlog { rows: backlog as u64 }.emit(),
                Err(e) => tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "outbox: sampling the backlog failed"
                ),
            }
        }
    }

    async fn relay(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let idle = Duration::from_millis(self.settings.idle_poll_ms.max(1));
        'lease: loop {
            let mut lease = tokio::select! {
                () = shutdown.cancelled() => break 'lease,
                lease = self.store.acquire_relay_lease() => match lease {
                    Ok(lease) => lease,
                    Err(e) => {
                        tracing::warn!(error = &e as &dyn std::error::Error, "outbox relay: cannot take the relay lease; retrying");
                        sleep_or_cancel(Duration::from_secs(1), shutdown).await;
                        continue 'lease;
                    }
                },
            };
            tracing::info!("outbox relay active");
            let mut backoff = Duration::from_millis(50);
            let mut last_check = std::time::Instant::now();
            while !shutdown.is_cancelled() {
                if last_check.elapsed() >= LEASE_CHECK_EVERY {
                    last_check = std::time::Instant::now();
                    if let Err(e) = lease.check().await {
                        tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "outbox relay: lost the relay lease"
                        );
                        continue 'lease;
                    }
                    self.prune().await;
                }
                match self.run_once().await {
                    Ok(n) => {
                        backoff = Duration::from_millis(50);
                        if n == 0 {
                            tokio::select! {
                                () = shutdown.cancelled() => {}
                                () = self.wakeup.notified() => {}
                                () = tokio::time::sleep(idle) => {}
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = &e as &dyn std::error::Error, retry_in = ?backoff, "outbox relay: round failed");
                        self.heal_producer();
                        sleep_or_cancel(backoff, shutdown).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            break;
        }
        // Hand over whatever is still queued before leaving (bounded).
        let producer = self.producer();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        Ok(())
    }

    async fn prune(&self) {
        let before = Utc::now() - chrono::Duration::hours(self.settings.retain_published_hours);
        match self.store.outbox_prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "outbox relay: pruned published rows"),
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "outbox relay: pruning failed"
            ),
        }
    }
}

/// The record timestamp of `row` (milliseconds): when its write committed, so consumers measure latency
/// from the event, not from its publication. Rows older than [`MAX_STAMP_AGE`] (a backlog after an outage)
/// get the broker's time instead, so the topic's retention counts from their publication.
fn occurred_at(row: &OutboxRecord) -> Option<i64> {
    let age = Utc::now() - row.created_at;
    (age < MAX_STAMP_AGE).then(|| row.created_at.timestamp_millis())
}

/// The oldest commit time a record is stamped with (see [`occurred_at`]).
const MAX_STAMP_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The value of `row`'s header `name`, when it is text.
fn header<'r>(row: &'r OutboxRecord, name: &str) -> Option<&'r str> {
    row.headers
        .iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// `row`'s headers, with `traceparent` (the relay's span, when traces are exported) replacing the one the
/// row was written with.
fn headers(row: &OutboxRecord, traceparent: Option<&str>) -> OwnedHeaders {
    let kept = row
        .headers
        .iter()
        .filter(|(key, _)| traceparent.is_none() || key != TRACEPARENT);
    let headers = kept.fold(
        OwnedHeaders::new_with_capacity(row.headers.len() + 1),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        },
    );
    match traceparent {
        Some(value) => headers.insert(Header {
            key: TRACEPARENT,
            value: Some(value),
        }),
        None => headers,
    }
}

async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}
