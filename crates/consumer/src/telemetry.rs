//! What a consumer runtime counts, as typed events. The engine, the workers, the poller and the lag sampler
//! emit a [`ConsumerEvent`] through their runtime's [`Telemetry`], which updates the live
//! [`ConsumerStats`] (for probes, consoles and tests) and the metrics (through the `metrics` facade)
//! together, so the two can never disagree.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `orderflow_consumer_records_total` | counter | group, topic, outcome (`processed`, `failed`) |
//! | `orderflow_consumer_retries_total` | counter | group, topic, stage (`in_place`, `topic`) |
//! | `orderflow_consumer_dead_lettered_total` | counter | group, topic |
//! | `orderflow_consumer_in_flight_batches` | gauge | group |
//! | `orderflow_consumer_paused_partitions` | gauge | group |
//! | `orderflow_consumer_lag` | gauge | group, topic, partition |
//! | `orderflow_consumer_batch_seconds` | histogram | group |
//! | `orderflow_consumer_commit_seconds` | histogram | group |
//! | `orderflow_consumer_end_to_end_seconds` | histogram | group (from when the event occurred to its effects done) |
//! | `orderflow_consumer_assigned_partitions` | gauge | group |
//! | `orderflow_consumer_held` | gauge | group (1 while an operator holds the consumer) |
//! | `orderflow_consumer_stalls_total` | counter | group, topic (a starved partition rebuilt the clients) |

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{Gauge, Histogram, counter, gauge, histogram};

use crate::record::Record;
use crate::stats::ConsumerStats;

/// Where a failing record is retried.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RetryStage {
    /// Again in the same batch, after a backoff.
    InPlace,
    /// Moved to its next retry topic.
    Topic,
}

impl RetryStage {
    fn label(self) -> &'static str {
        match self {
            Self::InPlace => "in_place",
            Self::Topic => "topic",
        }
    }
}

/// Something a consumer runtime did that operators watch.
#[derive(Debug)]
pub(crate) enum ConsumerEvent<'a> {
    /// The member's assignment changed: it now holds `partitions`, after `revoked` were taken away.
    Assignment {
        /// Partitions held now.
        partitions: usize,
        /// Partitions just revoked (0 on an assignment).
        revoked: usize,
    },
    /// The member is (or is no longer) a steady member of its group, as librdkafka reports.
    Joined(bool),
    /// Back-pressure paused one partition; `paused` are paused now.
    Paused {
        /// Partitions paused now.
        paused: usize,
    },
    /// Back-pressure resumed one partition; `paused` are still paused.
    Resumed {
        /// Partitions paused now.
        paused: usize,
    },
    /// Revoked partitions took their pauses with them; `paused` are paused now.
    PausesDropped {
        /// Partitions paused now.
        paused: usize,
    },
    /// Batches being handled now.
    InFlight(usize),
    /// An operator held (`true`) or released the consumer.
    Held(bool),
    /// Offsets (or a transaction with its offsets) committed, taking `elapsed`.
    Committed {
        /// Time the commit took.
        elapsed: Duration,
    },
    /// `records`, read from `topic` (the source topic of retried records), were handled successfully.
    Processed {
        /// The source topic.
        topic: &'a str,
        /// The records.
        records: &'a [Record],
    },
    /// A handler attempt on a record of `topic` failed.
    Failed {
        /// The source topic.
        topic: &'a str,
    },
    /// A record of `topic` is retried at `stage`.
    Retried {
        /// The source topic.
        topic: &'a str,
        /// Where it is retried.
        stage: RetryStage,
    },
    /// A record of `topic` went to its dead-letter topic.
    DeadLettered {
        /// The source topic.
        topic: &'a str,
    },
    /// `records` are done: handled, or moved to a retry or dead-letter topic (their offsets may be committed).
    Done {
        /// Records done.
        records: usize,
    },
    /// A batch was handled, retries included, in `elapsed`.
    BatchHandled {
        /// Time the batch took.
        elapsed: Duration,
    },
    /// A partition of `topic` was starved by its client for the stall timeout; the clients are rebuilt.
    Stalled {
        /// The topic.
        topic: &'a str,
    },
    /// Lag of one partition: its end minus the group's committed offset.
    Lag {
        /// The topic.
        topic: &'a str,
        /// The partition.
        partition: i32,
        /// Records behind.
        lag: i64,
    },
}

/// One runtime's live stats and metric handles (registered once, so counting is an atomic add).
#[derive(Debug)]
pub(crate) struct Telemetry {
    group: String,
    stats: Arc<ConsumerStats>,
    assigned: Gauge,
    paused: Gauge,
    in_flight: Gauge,
    held: Gauge,
    batch_seconds: Histogram,
    commit_seconds: Histogram,
    end_to_end_seconds: Histogram,
}

impl Telemetry {
    /// The telemetry of the runtime of `group`, updating `stats`.
    pub(crate) fn new(group: &str, stats: Arc<ConsumerStats>) -> Self {
        let label = group.to_owned();
        Self {
            group: label.clone(),
            stats,
            assigned: gauge!("orderflow_consumer_assigned_partitions", "group" => label.clone()),
            paused: gauge!("orderflow_consumer_paused_partitions", "group" => label.clone()),
            in_flight: gauge!("orderflow_consumer_in_flight_batches", "group" => label.clone()),
            held: gauge!("orderflow_consumer_held", "group" => label.clone()),
            batch_seconds: histogram!("orderflow_consumer_batch_seconds", "group" => label.clone()),
            commit_seconds: histogram!("orderflow_consumer_commit_seconds", "group" => label.clone()),
            end_to_end_seconds: histogram!("orderflow_consumer_end_to_end_seconds", "group" => label),
        }
    }

    /// The consumer group.
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// Records `event` in the live stats and the metrics.
    pub(crate) fn emit(&self, event: ConsumerEvent<'_>) {
        let stats = &self.stats;
        let group = || self.group.clone();
        match event {
            ConsumerEvent::Assignment { partitions, revoked } => {
                stats.assigned.store(partitions as u64, Ordering::Relaxed);
                stats.revocations.fetch_add(revoked as u64, Ordering::Relaxed);
                self.assigned.set(partitions as f64);
            }
            ConsumerEvent::Joined(joined) => stats.joined.store(joined, Ordering::Relaxed),
            ConsumerEvent::Paused { paused } => {
                stats.pauses.fetch_add(1, Ordering::Relaxed);
                self.set_paused(paused);
            }
            ConsumerEvent::Resumed { paused } => {
                stats.resumes.fetch_add(1, Ordering::Relaxed);
                self.set_paused(paused);
            }
            ConsumerEvent::PausesDropped { paused } => self.set_paused(paused),
            ConsumerEvent::InFlight(batches) => {
                stats.in_flight.store(batches as u64, Ordering::Relaxed);
                self.in_flight.set(batches as f64);
            }
            ConsumerEvent::Held(held) => self.held.set(if held { 1.0 } else { 0.0 }),
            ConsumerEvent::Committed { elapsed } => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                self.commit_seconds.record(elapsed.as_secs_f64());
            }
            ConsumerEvent::Processed { topic, records } => {
                counter!("orderflow_consumer_records_total", "group" => group(), "topic" => topic.to_owned(), "outcome" => "processed")
                    .increment(records.len() as u64);
                self.end_to_end(records);
            }
            ConsumerEvent::Failed { topic } => {
                counter!("orderflow_consumer_records_total", "group" => group(), "topic" => topic.to_owned(), "outcome" => "failed")
                    .increment(1);
            }
            ConsumerEvent::Retried { topic, stage } => {
                counter!("orderflow_consumer_retries_total", "group" => group(), "topic" => topic.to_owned(), "stage" => stage.label())
                    .increment(1);
            }
            ConsumerEvent::DeadLettered { topic } => {
                counter!("orderflow_consumer_dead_lettered_total", "group" => group(), "topic" => topic.to_owned())
                    .increment(1);
            }
            ConsumerEvent::Done { records } => {
                stats.processed.fetch_add(records as u64, Ordering::Relaxed);
            }
            ConsumerEvent::BatchHandled { elapsed } => self.batch_seconds.record(elapsed.as_secs_f64()),
            ConsumerEvent::Stalled { topic } => {
                stats.stalls.fetch_add(1, Ordering::Relaxed);
                counter!("orderflow_consumer_stalls_total", "group" => group(), "topic" => topic.to_owned())
                    .increment(1);
            }
            ConsumerEvent::Lag {
                topic,
                partition,
                lag,
            } => {
                gauge!("orderflow_consumer_lag", "group" => group(), "topic" => topic.to_owned(), "partition" => partition.to_string())
                    .set(lag as f64);
            }
        }
    }

    fn set_paused(&self, paused: usize) {
        self.stats.paused.store(paused as u64, Ordering::Relaxed);
        self.paused.set(paused as f64);
    }

    /// Time from when each record's event occurred to its effects being done. The record's timestamp is when
    /// its event occurred (the write's commit for outbox events, the production for derived ones); a record
    /// moved to a retry topic counts from its original's timestamp, so retries show their delay.
    fn end_to_end(&self, records: &[Record]) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for record in records {
            let original = record
                .header_str(crate::naming::headers::ORIGINAL_TIMESTAMP)
                .and_then(|v| v.parse::<i64>().ok());
            if let Some(at) = original.or(record.timestamp_ms).filter(|at| *at > 0) {
                self.end_to_end_seconds
                    .record((now_ms - at).max(0) as f64 / 1000.0);
            }
        }
    }
}
