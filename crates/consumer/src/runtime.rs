//! The public entry point: build a [`ConsumerRuntime`] and `run` it until shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use orderflow_bus::Bus;
use orderflow_bus::EventProducer;
use orderflow_bus::telemetry::{STATISTICS_INTERVAL_MS, StatsContext};
use orderflow_bus::topics::Cleanup;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::ConsumerError;
use crate::handler::Handler;
use crate::poller::{self, RuntimeContext};
use crate::routing;
use crate::settings::{ConsumerSettings, Delivery};
use crate::stall::FetchBoard;
use crate::stats::ConsumerStats;
use crate::telemetry::{ConsumerEvent, Telemetry};
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
    hold: Arc<watch::Sender<bool>>,
    /// This instance's name in the group: the configured one, or one drawn when the runtime is made and
    /// kept across restarts, so a restart's producer (same transactional id) fences its predecessor and
    /// aborts the transaction it left open at once, rather than letting it block readers until it times out.
    instance: String,
}

/// How often a running consumer measures its lag (committed offset to the end of each assigned partition).
pub(crate) const LAG_EVERY: Duration = Duration::from_secs(5);

/// A running consumer as operators see it: its group, live counters and a hold switch. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsumerHandle {
    group: String,
    stats: Arc<ConsumerStats>,
    hold: Arc<watch::Sender<bool>>,
}

impl ConsumerHandle {
    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<ConsumerStats> {
        &self.stats
    }

    /// Holds (`true`) or releases (`false`) the consumer. A held consumer keeps its partitions and commits
    /// what it finished, but starts no new batch: its lag grows until it is released.
    pub fn set_held(&self, held: bool) {
        self.hold.send_replace(held);
    }

    /// Whether an operator holds the consumer.
    pub fn is_held(&self) -> bool {
        *self.hold.borrow()
    }
}

impl<H: Handler> ConsumerRuntime<H> {
    /// A runtime for `handler` on `bus` with `settings`.
    pub fn new(bus: Bus, settings: ConsumerSettings, handler: H) -> Self {
        let instance = settings
            .instance_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
        Self {
            instance,
            bus,
            settings: Arc::new(settings),
            handler: Arc::new(handler),
            stats: Arc::new(ConsumerStats::default()),
            hold: Arc::new(watch::channel(false).0),
        }
    }

    /// A handle to watch this runtime and hold or release it.
    pub fn handle(&self) -> ConsumerHandle {
        ConsumerHandle {
            group: self.settings.group.clone(),
            stats: self.stats.clone(),
            hold: self.hold.clone(),
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
        let group = self.settings.routing_name.as_str();
        self.settings
            .topics
            .iter()
            .flat_map(|topic| {
                std::iter::once(topic.clone())
                    .chain((1..=levels).map(move |level| routing::retry_topic(topic, group, level)))
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
        let group = self.settings.routing_name.as_str();
        let cleanup = Cleanup::Delete {
            days: ROUTING_RETENTION_DAYS,
        };
        let wanted: Vec<(String, Cleanup)> = self
            .settings
            .topics
            .iter()
            .flat_map(|topic| {
                (1..=levels)
                    .map(move |level| routing::retry_topic(topic, group, level))
                    .chain(std::iter::once(routing::dlq_topic(topic, group)))
            })
            .map(|name| (name, cleanup))
            .collect();
        self.bus.ensure_routing_topics(&wanted).await?;
        Ok(())
    }

    /// Consumes until `shutdown` fires, then drains, commits and leaves the group. An aborted transaction, a
    /// lost poller or a starved partition rebuilds the clients and resumes from the committed offsets; other
    /// errors end the run. So does fencing when the instance was named in the settings: then another process
    /// with that name took over, and this one is the zombie. With a drawn name nobody else shares the
    /// transactional id, so a fence can only mean the coordinator aborted a transaction that outlived the
    /// transaction timeout (bumping the epoch): the next run starts a fresh one.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        self.ensure_topics().await?;
        let mut restarted = false;
        loop {
            match self.run_once(&shutdown, restarted).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if (e.is_restartable()
                        || (matches!(e, ConsumerError::Fenced(_))
                            && self.settings.instance_id.is_none()))
                        && !shutdown.is_cancelled() =>
                {
                    tracing::warn!(
                        group = self.settings.group,
                        error = &e as &dyn std::error::Error,
                        "consumer restarting from committed offsets"
                    );
                    restarted = true;
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One run with fresh clients. A `restarted` run joins as a dynamic member even when the settings ask
    /// for static membership: its predecessor in this process closed without leaving the group (static
    /// members do not), and rejoining under the same static id hands back the predecessor's assignment
    /// without a rebalance, which was seen to leave partitions that were moving between members with no
    /// owner at all. As a new member it makes the group rebalance once the predecessor's session expires.
    async fn run_once(&self, shutdown: &CancellationToken, restarted: bool) -> Result<(), ConsumerError> {
        let settings = &self.settings;
        let instance = self.instance.clone();
        let client_id = format!("{}-{instance}", settings.group);
        let transactional = settings.delivery == Delivery::Transactional;

        let telemetry = Arc::new(Telemetry::new(&settings.group, self.stats.clone()));
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let board = Arc::new(FetchBoard::default());
        let context = RuntimeContext {
            board: board.clone(),
            events: events_tx.clone(),
            group: settings.group.clone(),
            revoke_timeout: settings.drain_timeout + settings.transaction_timeout,
            telemetry: telemetry.clone(),
            kafka_stats: Default::default(),
        };
        let mut config = self.bus.consumer_config(&client_id, &settings.group);
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
            .set("queued.max.messages.kbytes", "16384");
        if settings.static_membership && !restarted {
            config.set("group.instance.id", &instance);
        }
        // The poller polls all the time (back-pressure pauses partitions instead of stopping it), blocking
        // at most for a revocation (drain and transaction timeouts). A member that stopped polling for longer
        // is wedged, or a predecessor a restart left behind: it leaves the group after this, instead of
        // holding its partitions for librdkafka's default five minutes.
        if config.get("max.poll.interval.ms").is_none() {
            let bound = (settings.drain_timeout + settings.transaction_timeout + Duration::from_secs(20))
                .max(Duration::from_secs(60));
            config.set("max.poll.interval.ms", bound.as_millis().to_string());
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
        producer_config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        let producer: EventProducer = producer_config
            .create_with_context(StatsContext::new(&format!("{}-producer", settings.group)))
            .map_err(ConsumerError::kafka("creating the producer"))?;
        let producer = Arc::new(producer);
        if transactional {
            let p = producer.clone();
            let timeout = settings.transaction_timeout;
            let checked = producer.clone();
            crate::engine::bounded_blocking("starting transactions", timeout, move || {
                p.init_transactions(timeout / 2)
                    .and_then(|()| p.begin_transaction())
                    .map_err(|e| transaction_error(&checked, e))
            })
            .await?;
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
            .map_err(|e| ConsumerError::Poller(e.into()))?;

        let worker = Arc::new(Worker {
            handler: self.handler.clone(),
            producer: producer.clone(),
            settings: settings.clone(),
            transactional,
            telemetry: telemetry.clone(),
        });
        let lag_stop = CancellationToken::new();
        let lag = tokio::spawn(sample_lag(
            Arc::downgrade(&consumer),
            telemetry.clone(),
            board.clone(),
            lag_stop.clone(),
        ));
        let mut engine = Engine::new(
            worker,
            consumer,
            producer,
            settings.clone(),
            telemetry.clone(),
            self.hold.subscribe(),
            board,
        );
        let result = engine.run(&mut events, shutdown).await;
        lag_stop.cancel();
        // A measurement in progress ends within its request timeouts; then the poller holds the last
        // reference again.
        let _ = tokio::time::timeout(settings.close_timeout, lag).await;
        telemetry.emit(ConsumerEvent::Assignment {
            partitions: 0,
            revoked: 0,
        });
        telemetry.emit(ConsumerEvent::Joined(false));

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

/// Every [`LAG_EVERY`], sets `orderflow_consumer_lag` of each assigned partition: its end (the last stable
/// offset, as this read-committed consumer sees it) minus the group's committed offset, both asked of the
/// broker. Measured here rather than taken from librdkafka's statistics, which neither see offsets committed
/// through a producer's transaction nor move while a partition is paused. Partitions this member no longer
/// holds are set to 0 (their new owner reports them), and so is every partition when the run ends.
///
/// It holds the consumer weakly, and strongly only while measuring, so the poller thread keeps dropping
/// (and closing) the consumer; the run waits for this task before stopping the poller.
async fn sample_lag(
    consumer: Weak<BaseConsumer<RuntimeContext>>,
    telemetry: Arc<Telemetry>,
    board: Arc<FetchBoard>,
    stop: CancellationToken,
) {
    let lag = |topic: &str, partition: i32, lag: i64| {
        telemetry.emit(ConsumerEvent::Lag {
            topic,
            partition,
            lag,
        })
    };
    let mut tick = tokio::time::interval(LAG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: std::collections::HashSet<(String, i32)> = std::collections::HashSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let weak = consumer.clone();
        // Not raced against `stop`: a measurement ends within its request timeouts, and the run waits.
        let measured = tokio::task::spawn_blocking(move || weak.upgrade().map(|c| measure_lag(&c))).await;
        match measured {
            Ok(Some(Ok(lags))) => {
                let now: std::collections::HashSet<(String, i32)> =
                    lags.iter().map(|(t, p, _, _)| (t.clone(), *p)).collect();
                for (topic, partition) in reported.difference(&now) {
                    lag(topic, *partition, 0);
                }
                board.record_ends(
                    lags.iter()
                        .map(|(topic, partition, end, _)| ((Arc::from(topic.as_str()), *partition), *end))
                        .collect(),
                );
                for (topic, partition, _, behind) in lags {
                    lag(&topic, partition, behind);
                }
                reported = now;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(
                    group = telemetry.group(),
                    error = &e as &dyn std::error::Error,
                    "measuring consumer lag failed"
                )
            }
            Ok(None) => break, // the consumer is gone
            Err(e) => tracing::warn!(
                group = telemetry.group(),
                error = &e as &dyn std::error::Error,
                "measuring consumer lag failed"
            ),
        }
    }
    for (topic, partition) in reported {
        lag(&topic, partition, 0);
    }
}

/// End and lag of every assigned partition as `(topic, partition, end, lag)`, asked of the broker
/// (blocking): one offset fetch for the group's committed offsets and one list-offsets request per broker
/// for the partitions' ends, however many partitions.
fn measure_lag(
    consumer: &BaseConsumer<RuntimeContext>,
) -> Result<Vec<(String, i32, i64, i64)>, rdkafka::error::KafkaError> {
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(1);
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(assignment.clone(), timeout)?;
    let ask =
        |at: Offset| -> Result<std::collections::HashMap<(String, i32), i64>, rdkafka::error::KafkaError> {
            let mut wanted = TopicPartitionList::new();
            for element in assignment.elements() {
                wanted.add_partition_offset(element.topic(), element.partition(), at)?;
            }
            let answered = consumer.offsets_for_times(wanted, timeout)?;
            Ok(answered
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(offset) => Some(((e.topic().to_owned(), e.partition()), offset)),
                    _ => None,
                })
                .collect())
        };
    let ends = ask(Offset::End)?;
    let uncommitted = committed
        .elements()
        .iter()
        .any(|e| !matches!(e.offset(), Offset::Offset(_)));
    let starts = if uncommitted {
        ask(Offset::Beginning)?
    } else {
        Default::default()
    };
    let mut lags = Vec::with_capacity(committed.count());
    for element in committed.elements() {
        let key = (element.topic().to_owned(), element.partition());
        let Some(end) = ends.get(&key) else {
            continue;
        };
        let from = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => starts.get(&key).copied().unwrap_or(0),
        };
        lags.push((key.0, key.1, *end, (end - from).max(0)));
    }
    Ok(lags)
}
