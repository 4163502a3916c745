//! Metrics the runtime emits, through the `metrics` facade (install any recorder to export them).
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

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::record::Record;

/// Records whose effects are done.
pub(crate) fn processed(group: &str, topic: &str, count: usize) {
    counter!("orderflow_consumer_records_total", "group" => group.to_owned(), "topic" => topic.to_owned(), "outcome" => "processed")
        .increment(count as u64);
}

/// Records that failed a handler attempt.
pub(crate) fn failed(group: &str, topic: &str) {
    counter!("orderflow_consumer_records_total", "group" => group.to_owned(), "topic" => topic.to_owned(), "outcome" => "failed")
        .increment(1);
}

/// A retry in place or a move to a retry topic.
pub(crate) fn retried(group: &str, topic: &str, stage: &'static str) {
    counter!("orderflow_consumer_retries_total", "group" => group.to_owned(), "topic" => topic.to_owned(), "stage" => stage)
        .increment(1);
}

/// A record sent to its dead-letter topic.
pub(crate) fn dead_lettered(group: &str, topic: &str) {
    counter!("orderflow_consumer_dead_lettered_total", "group" => group.to_owned(), "topic" => topic.to_owned())
        .increment(1);
}

/// Batches being handled now.
pub(crate) fn in_flight(group: &str, batches: usize) {
    gauge!("orderflow_consumer_in_flight_batches", "group" => group.to_owned()).set(batches as f64);
}

/// Partitions paused by back-pressure now.
pub(crate) fn paused(group: &str, partitions: usize) {
    gauge!("orderflow_consumer_paused_partitions", "group" => group.to_owned()).set(partitions as f64);
}

/// Lag of one partition: high watermark (last stable offset) minus committed offset.
pub(crate) fn lag(group: &str, topic: &str, partition: i32, lag: i64) {
    gauge!("orderflow_consumer_lag", "group" => group.to_owned(), "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(lag as f64);
}

/// Time to handle one batch, retries included.
pub(crate) fn batch_time(group: &str, elapsed: Duration) {
    histogram!("orderflow_consumer_batch_seconds", "group" => group.to_owned()).record(elapsed.as_secs_f64());
}

/// Time to commit offsets (or a transaction).
pub(crate) fn commit_time(group: &str, elapsed: Duration) {
    histogram!("orderflow_consumer_commit_seconds", "group" => group.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Time from when each record's event occurred to its effects being done. The record's timestamp is when its
/// event occurred (the write's commit for outbox events, the production for derived ones); a record moved to
/// a retry topic counts from its original's timestamp, so retries show their delay.
pub(crate) fn end_to_end(group: &str, records: &[Record]) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let histogram = histogram!("orderflow_consumer_end_to_end_seconds", "group" => group.to_owned());
    for record in records {
        let original = record
            .header_str(crate::naming::headers::ORIGINAL_TIMESTAMP)
            .and_then(|v| v.parse::<i64>().ok());
        if let Some(at) = original.or(record.timestamp_ms).filter(|at| *at > 0) {
            histogram.record((now_ms - at).max(0) as f64 / 1000.0);
        }
    }
}

/// Partitions assigned to this member now.
pub(crate) fn assigned(group: &str, partitions: usize) {
    gauge!("orderflow_consumer_assigned_partitions", "group" => group.to_owned()).set(partitions as f64);
}

/// Whether an operator holds the consumer (1) or it runs (0).
pub(crate) fn held(group: &str, held: bool) {
    gauge!("orderflow_consumer_held", "group" => group.to_owned()).set(if held { 1.0 } else { 0.0 });
}
