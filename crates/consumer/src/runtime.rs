//! The public entry point: build a [`ConsumerRuntime`] and `run` it until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orderflow_bus::Bus;
use orderflow_bus::topics::Cleanup;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::ConsumerError;
use crate::handler::Handler;
use crate::poller::{self, RuntimeContext};
use crate::routing;
use crate::settings::{ConsumerSettings, Delivery};
use crate::stats::ConsumerStats;
use crate::worker::{Worker, transaction_error};

/// Days retry and dead-letter records are kept.
/// Retention of retry and dead-letter topics, in days.
pub const ROUTING_RETENTION_DAYS: i64 = 14;

/// A consumer group member that feeds a [`Handler`] and commits what it finished.
pub struct ConsumerRuntime<H> {
    bus: Bus,
    settings: Arc<ConsumerSettings>,
    handler: Arc<H>,
    stats: Arc<ConsumerStats>,
}

impl<H: Handler> ConsumerRuntime<H> {
    /// A runtime for `handler` on `bus` with `settings`.
    pub fn new(bus: Bus, settings: ConsumerSettings, handler: H) -> Self {
        Self {
            bus,
            settings: Arc::new(settings),
            handler: Arc::new(handler),
            stats: Arc::new(ConsumerStats::default()),
        }
    }

    /// Live counters of this runtime.
    pub fn stats(&self) -> &Arc<ConsumerStats> {
        &self.stats
    }

    /// The handler, shared with running batches.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// The settings.
    pub fn settings(&self) -> &ConsumerSettings {
        &self.settings
    }

    /// Every topic the runtime reads: the configured ones and their retry topics.
    pub fn subscriptions(&self) -> Vec<String> {
        let levels = self.settings.retry.topic_delays.len();
        self.settings
            .topics
            .iter()
            .flat_map(|topic| {
                std::iter::once(topic.clone())
                    .chain((1..=levels).map(move |level| routing::retry_topic(topic, level)))
            })
            .collect()
    }

    /// Creates the retry and dead-letter topics of the consumed topics when missing (unless the bus does
    /// not manage topics: then an administrator created them, and this process may lack the rights).
    pub async fn ensure_topics(&self) -> Result<(), ConsumerError> {
        if !self.bus.settings().manage_topics {
            return Ok(());
        }
        let levels = self.settings.retry.topic_delays.len();
        let cleanup = Cleanup::Delete {
            days: ROUTING_RETENTION_DAYS,
        };
        let wanted: Vec<(String, Cleanup)> = self
            .settings
            .topics
            .iter()
            .flat_map(|topic| {
                (1..=levels)
                    .map(move |level| routing::retry_topic(topic, level))
                    .chain(std::iter::once(routing::dlq_topic(topic)))
            })
            .map(|name| (name, cleanup))
            .collect();
        self.bus.ensure_topics(&wanted).await?;
        Ok(())
    }

    /// Consumes until `shutdown` fires, then drains, commits and leaves the group. An aborted transaction or
    /// a lost poller rebuilds the clients and resumes from the committed offsets; fencing and other errors
    /// end the run.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        self.ensure_topics().await?;
        loop {
            match self.run_once(&shutdown).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_restartable() && !shutdown.is_cancelled() => {
                    tracing::warn!(group = self.settings.group, error = %e, "consumer restarting from committed offsets");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn run_once(&self, shutdown: &CancellationToken) -> Result<(), ConsumerError> {
        let settings = &self.settings;
        let instance = settings
            .instance_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
        let client_id = format!("{}-{instance}", settings.group);
        let transactional = settings.delivery == Delivery::Transactional;

        let (events_tx, mut events) = mpsc::unbounded_channel();
        let context = RuntimeContext {
            events: events_tx.clone(),
            group: settings.group.clone(),
            revoke_timeout: settings.drain_timeout + settings.transaction_timeout,
        };
        let mut config = self.bus.consumer_config(&client_id, &settings.group);
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("statistics.interval.ms", "5000")
            .set("queued.max.messages.kbytes", "16384");
        if settings.static_membership {
            config.set("group.instance.id", &instance);
        }
        let consumer: BaseConsumer<RuntimeContext> = config
            .create_with_context(context)
            .map_err(ConsumerError::kafka("creating the consumer"))?;
        let consumer = Arc::new(consumer);

        let mut producer_config = self.bus.producer_config(&client_id);
        if transactional {
            producer_config.set("transactional.id", &client_id).set(
                "transaction.timeout.ms",
                settings.transaction_timeout.as_millis().to_string(),
            );
        }
        let producer: FutureProducer = producer_config
            .create()
            .map_err(ConsumerError::kafka("creating the producer"))?;
        let producer = Arc::new(producer);
        if transactional {
            let p = producer.clone();
            let timeout = settings.transaction_timeout;
            tokio::task::spawn_blocking(move || {
                p.init_transactions(timeout)?;
                p.begin_transaction()
            })
            .await
            .map_err(|e| ConsumerError::TransactionAborted(e.to_string()))?
            .map_err(|e| transaction_error(&producer, e))?;
        }

        let subscriptions = self.subscriptions();
        let topics: Vec<&str> = subscriptions.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(ConsumerError::kafka("subscribing"))?;
        tracing::info!(
            group = settings.group,
            instance,
            ?subscriptions,
            transactional,
            "consumer started"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let (closed_tx, closed) = oneshot::channel();
        poller::spawn(consumer.clone(), stop.clone(), events_tx, closed_tx)
            .map_err(|e| ConsumerError::Poller(e.to_string()))?;

        let worker = Arc::new(Worker {
            handler: self.handler.clone(),
            producer: producer.clone(),
            settings: settings.clone(),
            transactional,
            stats: self.stats.clone(),
        });
        let mut engine = Engine::new(worker, consumer, producer, settings.clone(), self.stats.clone());
        let result = engine.run(&mut events, shutdown).await;

        // Teardown: the poller thread holds the last consumer reference and leaves the group when it stops.
        // Closing has been seen to hang, so it is bounded.
        drop(engine);
        drop(events);
        stop.store(true, Ordering::Release);
        if tokio::time::timeout(settings.close_timeout, closed)
            .await
            .is_err()
        {
            tracing::warn!(
                group = settings.group,
                "consumer did not close within the close timeout"
            );
        }
        result
    }
}
