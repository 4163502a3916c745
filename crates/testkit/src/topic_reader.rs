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
        .map_err(|e| HarnessError::step("creating the reader")(e.into()))?;
    let start = Instant::now();
    // A topic just created may not have its partitions (or their leaders) in metadata yet: wait for them,
    // or the reader would be assigned nothing and read nothing.
    let mut assignment = TopicPartitionList::new();
    while start.elapsed() < timeout {
        let partitions: Vec<(i32, i32)> = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map(|m| {
                m.topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
                    .collect()
            })
            .unwrap_or_default();
        if !partitions.is_empty() && partitions.iter().all(|&(_, leader)| leader >= 0) {
            for (id, _) in partitions {
                assignment
                    .add_partition_offset(topic, id, Offset::Beginning)
                    .map_err(|e| HarnessError::step("reader assignment")(e.into()))?;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if assignment.count() == 0 {
        return Err(HarnessError::Timeout(format!(
            "topic {topic} to have partition leaders"
        )));
    }
    consumer
        .assign(&assignment)
        .map_err(|e| HarnessError::step("assigning the reader")(e.into()))?;
    let mut records = Vec::new();
    while records.len() < expected && start.elapsed() < timeout {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        // Transient errors (a leader moving, a broker restarting) are retried until the timeout.
        let Ok(message) = message else { continue };
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
