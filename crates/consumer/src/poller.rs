//! The polling thread: the only caller of `poll`, so rebalance callbacks may block it while the engine
//! finishes and commits revoked work, without stalling any async runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::sync::mpsc;

use crate::record::Record;

/// A (topic, partition) pair.
pub(crate) type Tp = (Arc<str>, i32);

/// Offsets to commit: (topic, partition, next offset to read).
pub(crate) type Offsets = Vec<(Arc<str>, i32, i64)>;

/// What the polling thread tells the engine.
pub(crate) enum Event {
    Records(Vec<Record>),
    Assigned(Vec<Tp>),
    /// Partitions are being taken away; the engine replies with the offsets the callback should commit.
    Revoke {
        partitions: Vec<Tp>,
        lost: bool,
        reply: std_mpsc::SyncSender<Offsets>,
    },
    /// librdkafka reported an error while `during` (the run goes on).
    Error {
        during: &'static str,
        error: KafkaError,
    },
}

/// Client context: forwards rebalances to the engine and turns statistics into metrics.
pub(crate) struct RuntimeContext {
    /// Where the fetcher stands in each partition, for the stall watchdog.
    pub(crate) board: Arc<crate::stall::FetchBoard>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) group: String,
    pub(crate) revoke_timeout: Duration,
    pub(crate) telemetry: Arc<crate::telemetry::Telemetry>,
    pub(crate) kafka_stats: orderflow_bus::telemetry::StatisticsRecorder,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

impl ClientContext for RuntimeContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(group) = &statistics.cgrp {
            self.telemetry.emit(crate::telemetry::ConsumerEvent::Joined(
                group.state == "up" && group.join_state == "steady",
            ));
        }
        let fetched = statistics
            .topics
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .iter()
                    .filter(|(partition, _)| **partition >= 0)
                    .map(move |(partition, p)| ((Arc::from(topic.as_str()), *partition), p.next_offset))
            })
            .collect();
        self.board.record_fetched(fetched);
        self.kafka_stats.record(&self.group, &statistics);
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let _ = self.events.send(Event::Assigned(partitions(tpl)));
            }
            Rebalance::Revoke(tpl) => {
                let lost = consumer.assignment_lost();
                let (reply, answer) = std_mpsc::sync_channel(1);
                let request = Event::Revoke {
                    partitions: partitions(tpl),
                    lost,
                    reply,
                };
                if self.events.send(request).is_err() {
                    return; // the engine has stopped: nothing in flight any more
                }
                match answer.recv_timeout(self.revoke_timeout) {
                    Ok(offsets) if !lost && !offsets.is_empty() => {
                        if let Err(e) = commit(consumer, &offsets, CommitMode::Sync) {
                            tracing::warn!(
                                error = &e as &dyn std::error::Error,
                                "commit on revocation failed"
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tracing::warn!("revocation went ahead before in-flight work finished"),
                }
            }
            Rebalance::Error(e) => {
                let _ = self.events.send(Event::Error {
                    during: "rebalance",
                    error: e.clone(),
                });
            }
        }
    }

    /// Newly assigned partitions start unpaused, whatever librdkafka remembers of them: a partition paused
    /// when its assignment was lost (no revocation was answered) would otherwise never be fetched again
    /// once it comes back, while the engine, which starts each assignment afresh, waits for its records.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && tpl.count() > 0
            && let Err(e) = consumer.resume(tpl)
        {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "resuming newly assigned partitions failed"
            );
        }
    }
}

/// Commits `offsets` for the group.
pub(crate) fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &Offsets,
    mode: CommitMode,
) -> KafkaResult<()> {
    consumer.commit(&to_tpl(offsets)?, mode)
}

pub(crate) fn to_tpl(offsets: &Offsets) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

/// Records polled per message to the engine, at most.
const POLL_BATCH: usize = 1024;

/// Polls until `stop`, then drops the consumer on this thread (which leaves the group); `done` fires after.
pub(crate) fn spawn(
    consumer: Arc<BaseConsumer<RuntimeContext>>,
    stop: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<Event>,
    done: tokio::sync::oneshot::Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("consumer-poll".into())
        .spawn(move || {
            let mut topics: HashMap<String, Arc<str>> = HashMap::new();
            'polling: while !stop.load(Ordering::Acquire) {
                let mut batch = Vec::new();
                let mut timeout = Duration::from_millis(20);
                while batch.len() < POLL_BATCH {
                    match consumer.poll(timeout) {
                        None => break,
                        Some(Ok(message)) => {
                            use rdkafka::Message;
                            let topic = match topics.get(message.topic()) {
                                Some(t) => t.clone(),
                                None => {
                                    let t: Arc<str> = Arc::from(message.topic());
                                    topics.insert(message.topic().to_owned(), t.clone());
                                    t
                                }
                            };
                            batch.push(Record::from_message(&message, topic));
                        }
                        Some(Err(e)) => {
                            let event = Event::Error {
                                during: "polling",
                                error: e,
                            };
                            if events.send(event).is_err() {
                                break 'polling;
                            }
                            break;
                        }
                    }
                    timeout = Duration::ZERO;
                }
                if !batch.is_empty() && events.send(Event::Records(batch)).is_err() {
                    break;
                }
            }
            drop(events);
            drop(consumer); // leaves the group; the last reference is this one
            let _ = done.send(());
        })
        .map(|_| ())
}
