//! The engine: one task that owns the partition queues, hands batches to workers, applies back-pressure,
//! answers revocations, and commits offsets (or transactions) for completed work only.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use orderflow_bus::EventProducer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::ConsumerError;
use crate::handler::Handler;
use crate::poller::{self, Event, Offsets, RuntimeContext, Tp};
use crate::record::Record;
use crate::routing;
use crate::settings::ConsumerSettings;
use crate::stall::{FetchBoard, StarvationClock};
use crate::telemetry::{ConsumerEvent, Telemetry};
use crate::worker::{Worker, transaction_error};

/// No offset stored yet.
const NONE: i64 = -1;

struct Part {
    epoch: u64,
    queue: VecDeque<Record>,
    busy: bool,
    ready: bool,
    paused: bool,
    /// A retry topic's partition: its records wait until due.
    delayed: bool,
    progress: Arc<AtomicI64>,
    committed: i64,
    cancel: CancellationToken,
    /// How long the broker has held records of this partition while none were queued or running here.
    starved: StarvationClock,
}

struct BatchDone {
    tp: Tp,
    epoch: u64,
    result: Result<(), ConsumerError>,
}

pub(crate) struct Engine<H> {
    pub(crate) worker: Arc<Worker<H>>,
    pub(crate) consumer: Arc<BaseConsumer<RuntimeContext>>,
    pub(crate) producer: Arc<EventProducer>,
    pub(crate) settings: Arc<ConsumerSettings>,
    telemetry: Arc<Telemetry>,
    parts: HashMap<Tp, Part>,
    ready: VecDeque<Tp>,
    tasks: JoinSet<BatchDone>,
    epochs: u64,
    paused: usize,
    wakeup: Option<tokio::time::Instant>,
    /// True while an operator holds the consumer: nothing new is dispatched (queues fill, then partitions
    /// pause by back-pressure, and the lag grows) until released.
    held: tokio::sync::watch::Receiver<bool>,
    /// Partition ends and fetch positions: the stall watchdog's evidence.
    board: Arc<FetchBoard>,
    /// Transactional: when the first batch of the open transaction started (the coordinator aborts a
    /// transaction older than the transaction timeout, fencing this producer).
    txn_started: Option<Instant>,
}

impl<H: Handler> Engine<H> {
    pub(crate) fn new(
        worker: Arc<Worker<H>>,
        consumer: Arc<BaseConsumer<RuntimeContext>>,
        producer: Arc<EventProducer>,
        settings: Arc<ConsumerSettings>,
        telemetry: Arc<Telemetry>,
        held: tokio::sync::watch::Receiver<bool>,
        board: Arc<FetchBoard>,
    ) -> Self {
        Self {
            worker,
            consumer,
            producer,
            settings,
            telemetry,
            parts: HashMap::new(),
            ready: VecDeque::new(),
            tasks: JoinSet::new(),
            epochs: 0,
            paused: 0,
            wakeup: None,
            held,
            board,
            txn_started: None,
        }
    }

    fn transactional(&self) -> bool {
        self.worker.transactional
    }

    /// Runs until `shutdown`, then drains and commits; an error stops the run (see
    /// [`ConsumerError::is_restartable`]).
    pub(crate) async fn run(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<Event>,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumerError> {
        let mut tick = tokio::time::interval(self.settings.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog = tokio::time::interval(crate::runtime::LAG_EVERY);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut hold, mut hold_open) = (self.held.clone(), true);
        loop {
            self.dispatch();
            let wakeup = self.wakeup;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.on_done(done)?;
                    // A transactional stage's outputs are invisible to read-committed readers until its
                    // transaction commits: once nothing runs, commit at once rather than at the next tick
                    // (under load batches keep running and the tick commits, waiting for them).
                    if self.transactional() && self.tasks.is_empty() {
                        self.commit().await?;
                    }
                }
                event = events.recv() => match event {
                    Some(event) => self.on_event(event).await?,
                    None => return Err(ConsumerError::Poller("stopped unexpectedly".into())),
                },
                () = sleep_until(wakeup), if wakeup.is_some() => {
                    self.wakeup = None;
                    let idle: Vec<Tp> = self.parts.iter()
                        .filter(|(_, p)| !p.busy && !p.ready && !p.queue.is_empty())
                        .map(|(tp, _)| tp.clone())
                        .collect();
                    for tp in idle {
                        self.mark_ready(&tp);
                    }
                }
                _ = tick.tick() => self.commit().await?,
                _ = watchdog.tick() => {
                    self.check_starved()?;
                    self.check_transaction_age()?;
                }
                changed = hold.changed(), if hold_open => {
                    if changed.is_err() {
                        hold_open = false; // the runtime is gone; nobody can hold or release any more
                    } else {
                        let held = *hold.borrow_and_update();
                        self.telemetry.emit(ConsumerEvent::Held(held));
                        tracing::info!(group = self.settings.group, held, "consumer hold changed");
                        let waiting: Vec<Tp> = self.parts.iter()
                            .filter(|(_, p)| !p.queue.is_empty())
                            .map(|(tp, _)| tp.clone())
                            .collect();
                        for tp in waiting {
                            self.mark_ready(&tp);
                        }
                    }
                }
            }
        }
        self.drain().await
    }

    async fn on_event(&mut self, event: Event) -> Result<(), ConsumerError> {
        match event {
            Event::Records(records) => {
                self.enqueue(records);
                Ok(())
            }
            Event::Assigned(partitions) => {
                for tp in partitions {
                    self.epochs += 1;
                    tracing::debug!(topic = %tp.0, partition = tp.1, "assigned");
                    let delayed = routing::retry_level(&tp.0) > 0;
                    self.parts.insert(
                        tp,
                        Part {
                            epoch: self.epochs,
                            queue: VecDeque::new(),
                            busy: false,
                            ready: false,
                            paused: false,
                            delayed,
                            progress: Arc::new(AtomicI64::new(NONE)),
                            committed: NONE,
                            cancel: CancellationToken::new(),
                            starved: StarvationClock::default(),
                        },
                    );
                }
                self.telemetry.emit(ConsumerEvent::Assignment {
                    partitions: self.parts.len(),
                    revoked: 0,
                });
                Ok(())
            }
            Event::Revoke {
                partitions,
                lost,
                reply,
            } => self.on_revoke(partitions, lost, reply).await,
            Event::Error { during, error } => {
                tracing::warn!(
                    group = self.settings.group,
                    during,
                    error = &error as &dyn std::error::Error,
                    "consumer error"
                );
                Ok(())
            }
        }
    }

    fn enqueue(&mut self, records: Vec<Record>) {
        for record in records {
            let tp: Tp = (record.topic.clone(), record.partition);
            let Some(part) = self.parts.get_mut(&tp) else {
                continue; // no longer ours: the new owner reads it from the committed offset
            };
            part.queue.push_back(record);
            part.starved.reset();
            let len = part.queue.len();
            let ready = !part.busy && !part.ready;
            if len >= self.settings.high_water && !part.paused {
                part.paused = true;
                self.paused += 1;
                if let Err(e) = pause_or_resume(&self.consumer, &tp, true) {
                    tracing::warn!(error = &e as &dyn std::error::Error, "pausing a partition failed");
                }
                self.telemetry.emit(ConsumerEvent::Paused { paused: self.paused });
            }
            if ready {
                self.mark_ready(&tp);
            }
        }
    }

    fn mark_ready(&mut self, tp: &Tp) {
        if let Some(part) = self.parts.get_mut(tp)
            && !part.ready
        {
            part.ready = true;
            self.ready.push_back(tp.clone());
        }
    }

    fn maybe_resume(&mut self, tp: &Tp) {
        let Some(part) = self.parts.get_mut(tp) else {
            return;
        };
        if part.paused && part.queue.len() <= self.settings.low_water {
            part.paused = false;
            self.paused -= 1;
            if let Err(e) = pause_or_resume(&self.consumer, tp, false) {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "resuming a partition failed"
                );
            }
            self.telemetry
                .emit(ConsumerEvent::Resumed { paused: self.paused });
        }
    }

    /// Hands batches of due records to workers, one batch per partition at a time, up to the concurrency.
    fn dispatch(&mut self) {
        while self.tasks.len() < self.settings.concurrency && !*self.held.borrow() {
            let Some(tp) = self.ready.pop_front() else {
                break;
            };
            let max_batch = self.settings.max_batch;
            let Some(part) = self.parts.get_mut(&tp) else {
                continue;
            };
            part.ready = false;
            if part.busy || part.queue.is_empty() {
                continue;
            }
            // Records of retry topics wait until due; they are in due order within a partition.
            let due = if part.delayed {
                part.queue
                    .iter()
                    .take(max_batch)
                    .take_while(|r| routing::wait_for(r).is_zero())
                    .count()
            } else {
                part.queue.len().min(max_batch)
            };
            if due == 0 {
                if let Some(head) = part.queue.front() {
                    let at = tokio::time::Instant::now() + routing::wait_for(head);
                    self.wakeup = Some(self.wakeup.map_or(at, |w| w.min(at)));
                }
                continue;
            }
            let batch: Vec<Record> = part.queue.drain(..due).collect();
            part.busy = true;
            let (epoch, progress, cancel) = (part.epoch, part.progress.clone(), part.cancel.clone());
            let worker = self.worker.clone();
            let key = tp.clone();
            if self.worker.transactional && self.txn_started.is_none() {
                self.txn_started = Some(Instant::now());
            }
            self.tasks.spawn(async move {
                let result = worker.process(batch, progress, cancel).await;
                BatchDone {
                    tp: key,
                    epoch,
                    result,
                }
            });
            self.maybe_resume(&tp);
        }
        self.telemetry.emit(ConsumerEvent::InFlight(self.tasks.len()));
    }

    fn on_done(&mut self, done: Result<BatchDone, tokio::task::JoinError>) -> Result<(), ConsumerError> {
        let done = done.map_err(ConsumerError::HandlerPanicked)?;
        let Some(part) = self.parts.get_mut(&done.tp) else {
            return done.result;
        };
        if part.epoch != done.epoch {
            return done.result;
        }
        part.busy = false;
        done.result?;
        if !part.queue.is_empty() {
            self.mark_ready(&done.tp);
        }
        Ok(())
    }

    /// The stall watchdog: fails the run (which then rebuilds the clients) when a partition has had records
    /// at the broker beyond what its fetcher fetched, while nothing of it was queued, running or arriving
    /// here, for the stall timeout. Retry topics (their records wait on purpose) and a held consumer are
    /// exempt; without fresh measurements nothing is concluded.
    fn check_starved(&mut self) -> Result<(), ConsumerError> {
        let held = *self.held.borrow();
        let unfetched = self.board.unfetched(crate::runtime::LAG_EVERY * 3);
        let now = Instant::now();
        for (tp, part) in &mut self.parts {
            let behind = unfetched.get(tp).copied().unwrap_or(0);
            let starving = !held && !part.delayed && !part.busy && part.queue.is_empty() && behind > 0;
            let waited = part.starved.look(starving, now);
            if starving && waited >= self.settings.stall_timeout {
                self.telemetry.emit(ConsumerEvent::Stalled { topic: &tp.0 });
                return Err(ConsumerError::Stalled {
                    topic: tp.0.to_string(),
                    partition: tp.1,
                    unfetched: behind,
                    waited,
                });
            }
        }
        Ok(())
    }

    /// Transactional: fails the run when a batch of the open transaction is still running three quarters
    /// into the transaction timeout (nothing completed, so no commit waited for it meanwhile).
    fn check_transaction_age(&self) -> Result<(), ConsumerError> {
        let limit = self.settings.transaction_timeout * 3 / 4;
        match self.txn_started {
            Some(started) if !self.tasks.is_empty() && started.elapsed() >= limit => {
                Err(ConsumerError::TransactionAborted(
                    format!(
                        "batches still running {limit:?} into the transaction, near its {:?} timeout",
                        self.settings.transaction_timeout
                    )
                    .into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Offsets of completed work not yet committed, for `filter`ed partitions.
    fn pending_offsets(&self, filter: impl Fn(&Tp) -> bool) -> Offsets {
        self.parts
            .iter()
            .filter(|(tp, _)| filter(tp))
            .filter_map(|(tp, part)| {
                let progress = part.progress.load(Ordering::Acquire);
                (progress > part.committed).then(|| (tp.0.clone(), tp.1, progress))
            })
            .collect()
    }

    fn mark_committed(&mut self, offsets: &Offsets, elapsed: std::time::Duration) {
        self.telemetry.emit(ConsumerEvent::Committed { elapsed });
        for (topic, partition, offset) in offsets {
            if let Some(part) = self.parts.get_mut(&(topic.clone(), *partition)) {
                part.committed = part.committed.max(*offset);
            }
        }
    }

    /// Commits completed work: group offsets, or (transactional) the open transaction with its offsets.
    async fn commit(&mut self) -> Result<(), ConsumerError> {
        let offsets = self.pending_offsets(|_| true);
        if offsets.is_empty() {
            return Ok(());
        }
        if self.transactional() {
            // A transaction may only carry offsets whose outputs it holds: let running batches finish first.
            self.finish_transaction_batches().await?;
            return self.commit_transaction().await;
        }
        let started = Instant::now();
        poller::commit(&self.consumer, &offsets, CommitMode::Async)
            .map_err(ConsumerError::kafka("committing offsets"))?;
        self.mark_committed(&offsets, started.elapsed());
        Ok(())
    }

    /// Waits for running batches to finish (all of them, or those of the partitions in `only`), up to
    /// `deadline` when given. Returns false if the deadline passed first.
    async fn wait_in_flight(
        &mut self,
        deadline: Option<tokio::time::Instant>,
        only: Option<&[Tp]>,
    ) -> Result<bool, ConsumerError> {
        let pending = |engine: &Self| match only {
            Some(partitions) => engine
                .parts
                .iter()
                .any(|(tp, part)| part.busy && partitions.contains(tp)),
            None => !engine.tasks.is_empty(),
        };
        while pending(self) {
            let next = match deadline {
                Some(at) => match tokio::time::timeout_at(at, self.tasks.join_next()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(false),
                },
                None => self.tasks.join_next().await,
            };
            match next {
                Some(done) => self.on_done(done)?,
                None => break,
            }
        }
        Ok(true)
    }

    /// Waits for every running batch of the open transaction, but not past the point where the coordinator
    /// would abort it: a batch still running then (its outputs stuck on a broker that went away, say) dooms
    /// the transaction, and the run restarts from the committed offsets with fresh clients.
    async fn finish_transaction_batches(&mut self) -> Result<(), ConsumerError> {
        let limit = self.settings.transaction_timeout * 3 / 4;
        let deadline = self.txn_started.unwrap_or_else(Instant::now) + limit;
        if self
            .wait_in_flight(Some(tokio::time::Instant::from_std(deadline)), None)
            .await?
        {
            return Ok(());
        }
        Err(ConsumerError::TransactionAborted(
            format!(
                "batches still running {limit:?} into the transaction, near its {:?} timeout",
                self.settings.transaction_timeout
            )
            .into(),
        ))
    }

    async fn commit_transaction(&mut self) -> Result<(), ConsumerError> {
        let offsets = self.pending_offsets(|_| true);
        if offsets.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let producer = self.producer.clone();
        // Taken here rather than in the call: should the call be abandoned, it must not keep the consumer
        // (and with it this member's place in the group) alive.
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or_else(|| ConsumerError::TransactionAborted("no group metadata".into()))?;
        let limit = self.settings.transaction_timeout;
        // Each call gets a share of the transaction timeout, so that all of them fit in it.
        let timeout = limit / 3;
        let sent = offsets.clone();
        let result = bounded_blocking("committing the transaction", limit, move || {
            let tpl = poller::to_tpl(&sent).map_err(|e| transaction_error(&producer, e))?;
            // Every output has been acknowledged already; make sure before committing, since
            // commit_transaction's own flush waits in 100 ms steps.
            let until = Instant::now() + Duration::from_secs(5);
            while producer.in_flight_count() > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            let outcome = producer
                .send_offsets_to_transaction(&tpl, &metadata, timeout)
                .and_then(|()| producer.commit_transaction(timeout))
                .map_err(|e| transaction_error(&producer, e));
            match outcome {
                Ok(()) => producer
                    .begin_transaction()
                    .map_err(|e| transaction_error(&producer, e)),
                Err(ConsumerError::Fenced(e)) => Err(ConsumerError::Fenced(e)),
                Err(e) => {
                    if let Err(abort) = producer.abort_transaction(timeout) {
                        tracing::warn!(
                            error = &abort as &dyn std::error::Error,
                            "aborting the transaction failed"
                        );
                    }
                    Err(e)
                }
            }
        })
        .await;
        result?;
        self.txn_started = None;
        self.mark_committed(&offsets, started.elapsed());
        Ok(())
    }

    async fn abort_transaction(&self) {
        let producer = self.producer.clone();
        let timeout = self.settings.transaction_timeout;
        let aborted = bounded_blocking("aborting the transaction", timeout, move || {
            producer
                .abort_transaction(timeout / 2)
                .map_err(|e| ConsumerError::TransactionAborted(e.into()))
        })
        .await;
        if let Err(e) = aborted {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "aborting the transaction failed"
            );
        }
    }

    /// Partitions are being taken away: finish (or give up on) their work and commit it while still ours.
    async fn on_revoke(
        &mut self,
        partitions: Vec<Tp>,
        lost: bool,
        reply: std::sync::mpsc::SyncSender<Offsets>,
    ) -> Result<(), ConsumerError> {
        tracing::info!(
            group = self.settings.group,
            partitions = partitions.len(),
            lost,
            "partitions revoked"
        );
        for tp in &partitions {
            if let Some(part) = self.parts.get_mut(tp) {
                part.queue.clear();
                if part.paused {
                    part.paused = false;
                    self.paused -= 1;
                    // librdkafka keeps a partition paused by the application through its revocation: were
                    // it given back to this member later, it would never be fetched again. Resume it while
                    // it is still assigned; a new assignment starts unpaused, as the engine's state does.
                    if let Err(e) = pause_or_resume(&self.consumer, tp, false) {
                        tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "resuming a revoked partition failed"
                        );
                    }
                }
            }
        }
        self.telemetry
            .emit(ConsumerEvent::PausesDropped { paused: self.paused });
        let mut offsets = Vec::new();
        let mut outcome = Ok(());
        if lost {
            // Another member may own them already: committing is not allowed any more.
            if self.transactional() {
                outcome = Err(ConsumerError::TransactionAborted("assignment lost".into()));
            }
        } else if self.transactional() {
            outcome = match self.finish_transaction_batches().await {
                Ok(()) => self.commit_transaction().await,
                Err(e) => Err(e),
            };
        } else {
            let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
            if !self.wait_in_flight(Some(deadline), Some(&partitions)).await? {
                tracing::warn!("revoked partitions still busy after the drain timeout");
            }
            offsets = self.pending_offsets(|tp| partitions.contains(tp));
        }
        for tp in &partitions {
            if let Some(part) = self.parts.remove(tp) {
                part.cancel.cancel();
            }
        }
        self.telemetry.emit(ConsumerEvent::Assignment {
            partitions: self.parts.len(),
            revoked: partitions.len(),
        });
        let _ = reply.send(offsets);
        if outcome.is_err() && self.transactional() {
            self.abort_transaction().await;
        }
        outcome
    }

    /// Stops handing out work, waits for running batches up to the drain timeout, and commits what is done.
    async fn drain(&mut self) -> Result<(), ConsumerError> {
        for part in self.parts.values_mut() {
            part.queue.clear();
        }
        let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
        let finished = self.wait_in_flight(Some(deadline), None).await;
        if !matches!(finished, Ok(true)) {
            tracing::warn!(
                group = self.settings.group,
                "in-flight batches did not finish within the drain timeout"
            );
            for part in self.parts.values() {
                part.cancel.cancel();
            }
            self.tasks.abort_all();
        }
        if self.transactional() {
            return match finished {
                Ok(true) => self.commit_transaction().await,
                Ok(false) => {
                    self.abort_transaction().await;
                    Ok(())
                }
                Err(e) => {
                    self.abort_transaction().await;
                    Err(e)
                }
            };
        }
        let offsets = self.pending_offsets(|_| true);
        if !offsets.is_empty() {
            let consumer = self.consumer.clone();
            let committed =
                tokio::task::spawn_blocking(move || poller::commit(&consumer, &offsets, CommitMode::Sync))
                    .await;
            match committed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = &e as &dyn std::error::Error, "final commit failed"),
                Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "final commit task failed"),
            }
        }
        finished.map(|_| ())
    }
}

/// Runs a blocking librdkafka transaction call on the blocking pool, giving up after `limit`.
///
/// librdkafka has been seen to wait for ever inside `rd_kafka_send_offsets_to_transaction` once a broker
/// was killed, whatever timeout it was given (its internal wait has none). Giving up dooms the open
/// transaction: the run restarts with fresh clients, whose producer (same transactional id) fences this one
/// and has the coordinator abort what it left open. The abandoned call keeps its thread until librdkafka
/// returns.
pub(crate) async fn bounded_blocking<T: Send + 'static>(
    what: &'static str,
    limit: Duration,
    call: impl FnOnce() -> Result<T, ConsumerError> + Send + 'static,
) -> Result<T, ConsumerError> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(result)) => result,
        Ok(Err(panicked)) => Err(ConsumerError::TransactionAborted(panicked.into())),
        Err(_) => {
            tracing::warn!(
                what,
                ?limit,
                "librdkafka did not return: abandoning the call and the open transaction"
            );
            Err(ConsumerError::TransactionAborted(
                format!("{what} did not return within {limit:?}").into(),
            ))
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn pause_or_resume(
    consumer: &BaseConsumer<RuntimeContext>,
    tp: &Tp,
    pause: bool,
) -> rdkafka::error::KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&tp.0, tp.1, Offset::Invalid)?;
    if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    }
}
