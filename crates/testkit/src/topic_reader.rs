//! An independent consumer for assertions: reads a topic from the beginning, outside any consumer group.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::HarnessError;

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition it was in.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Key as text.
    pub key: String,
    /// Body bytes.
    pub payload: Vec<u8>,
    /// Headers as text.
    pub headers: HashMap<String, String>,
}

/// Reads every committed record of `topic` until at least `expected` arrived or `timeout` passed.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<Record>, HarnessError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::unique("testkit-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "50")
        .create()
        .map_err(|e| HarnessError::Failed(format!("reader: {e}")))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| HarnessError::Failed(format!("reader metadata: {e}")))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| HarnessError::Failed(format!("reader assignment: {e}")))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|e| HarnessError::Failed(format!("reader assign: {e}")))?;
    let start = Instant::now();
    let mut records = Vec::new();
    while records.len() < expected && start.elapsed() < timeout {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.map_err(|e| HarnessError::Failed(format!("reader poll: {e}")))?;
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    Ok(records)
}
