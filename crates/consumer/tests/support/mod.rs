//! Shared helpers of the consumer runtime tests: a bus on the harness broker, producing and reading back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orderflow_bus::topics::Cleanup;
use orderflow_bus::{Bus, KafkaSettings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

/// A bus with a prefix of its own on the shared broker.
pub struct Bench {
    pub bus: Bus,
    pub prefix: String,
}

impl Bench {
    pub async fn new(partitions: i32) -> Self {
        Self::with_consumer(partitions, &[]).await
    }

    /// A bench whose consumers get `consumer` librdkafka properties.
    pub async fn with_consumer(partitions: i32, consumer: &[(&str, &str)]) -> Self {
        let prefix = orderflow_testkit::unique("rt");
        let settings = KafkaSettings {
            bootstrap_servers: Some(orderflow_testkit::kafka().bootstrap_servers()),
            topic_prefix: format!("{prefix}."),
            partitions: Some(partitions),
            consumer: consumer
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..KafkaSettings::default()
        };
        Self {
            bus: Bus::connect(settings).expect("bus"),
            prefix,
        }
    }

    pub fn name(&self, base: &str) -> String {
        format!("{}.{base}", self.prefix)
    }

    /// Creates a topic and returns its full name.
    pub async fn topic(&self, base: &str) -> String {
        let name = self.bus.topic(base);
        self.bus
            .ensure_topics(&[(name.clone(), Cleanup::Delete { days: 1 })])
            .await
            .expect("create topic");
        name
    }

    pub async fn produce(&self, topic: &str, records: &[(&str, &str)]) {
        let producer = self.bus.producer("test-producer").expect("producer");
        for (key, payload) in records {
            producer
                .send(
                    FutureRecord::to(topic).key(*key).payload(*payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    }

    /// Produces `n` records numbered 0.. over `keys` keys; returns the payloads.
    pub async fn produce_numbered(&self, topic: &str, n: usize, keys: usize) -> Vec<String> {
        let producer = self.bus.producer("test-producer").expect("producer");
        let mut deliveries = Vec::new();
        let mut payloads = Vec::new();
        for i in 0..n {
            let key = format!("key-{}", i % keys);
            let payload = i.to_string();
            deliveries.push(
                producer
                    .send_result(FutureRecord::to(topic).key(&key).payload(&payload))
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
            payloads.push(payload);
        }
        for delivery in deliveries {
            delivery
                .await
                .expect("delivered")
                .map_err(|(e, _)| e)
                .expect("acked");
        }
        payloads
    }

    /// Reads `topic` from the start (read_committed) until `expected` records arrived.
    pub async fn read(&self, topic: &str, expected: usize) -> Vec<orderflow_testkit::Record> {
        self.read_for(topic, expected, Duration::from_secs(30)).await
    }

    /// Reads `topic` from the start for at most `timeout`, or until `expected` records arrived.
    pub async fn read_for(
        &self,
        topic: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<orderflow_testkit::Record> {
        let bootstrap = self.bus.bootstrap_servers().to_owned();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            orderflow_testkit::read_topic(&bootstrap, &topic, expected, timeout)
        })
        .await
        .unwrap()
        .expect("read topic")
    }

    /// Committed offset per partition of `topic` for `group`.
    pub async fn committed(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        let partitions = self.partitions(topic).await;
        let consumer: BaseConsumer = self
            .bus
            .consumer_config("test-committed", group)
            .create()
            .expect("consumer");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .expect("committed");
            committed
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => -1,
                    };
                    (e.partition(), offset)
                })
                .collect()
        })
        .await
        .unwrap()
    }

    /// High watermark per partition of `topic`.
    pub async fn ends(&self, topic: &str) -> BTreeMap<i32, i64> {
        let partitions = self.partitions(topic).await;
        let consumer: BaseConsumer = self
            .bus
            .client_config("test-watermarks")
            .create()
            .expect("consumer");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|p| {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .expect("watermarks");
                    (p, high)
                })
                .collect()
        })
        .await
        .unwrap()
    }

    async fn partitions(&self, topic: &str) -> i32 {
        if orderflow_consumer::routing::retry_level(topic) > 0 || topic.ends_with(".dlq") {
            self.bus.settings().retry_partitions()
        } else {
            self.bus.settings().partitions()
        }
    }
}

/// Polls `done` every 20 ms until it holds, failing the test after `timeout`.
pub async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "condition not met within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
