//! The consumer runtime on the real Kafka broker from the harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use orderflow_consumer::routing::headers;
use orderflow_consumer::{
    ConsumerRuntime, ConsumerSettings, Delivery, Handler, HandlerError, Output, Record, RetryPolicy,
};
use support::*;
use tokio_util::sync::CancellationToken;

/// Remembers every record it saw, in order, and fails the ones its rule says.
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<Record>>,
    calls: AtomicU32,
    fail: Option<fn(&Record, u32) -> Option<HandlerError>>,
    output_topic: Option<String>,
    delay: Duration,
}

impl Handler for Recorder {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(rule) = self.fail {
            for record in batch {
                if let Some(error) = rule(record, call) {
                    return Err(error);
                }
            }
        }
        self.seen.lock().unwrap().extend(batch.iter().cloned());
        Ok(match &self.output_topic {
            Some(topic) => batch
                .iter()
                .map(|r| {
                    Output::new(
                        topic.clone(),
                        r.key.clone().unwrap_or_default(),
                        r.payload.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            None => Vec::new(),
        })
    }
}

impl Recorder {
    fn payloads(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
            .collect()
    }
}

fn settings(bus: &Bench, topic: &str, delivery: Delivery) -> ConsumerSettings {
    let mut settings = ConsumerSettings::new(bus.name("group"), vec![topic.to_owned()], delivery);
    settings.retry = RetryPolicy {
        in_place_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        topic_delays: vec![Duration::from_millis(200), Duration::from_millis(400)],
    };
    settings.drain_timeout = Duration::from_secs(5);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_handled_in_partition_order_and_its_offset_committed() {
    let bench = Bench::new(3).await;
    let topic = bench.topic("in").await;
    let sent = bench.produce_numbered(&topic, 3_000, 30).await;

    let runtime = Arc::new(ConsumerRuntime::new(
        bench.bus.clone(),
        settings(&bench, &topic, Delivery::AtLeastOnce),
        Recorder::default(),
    ));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        async move { runtime.run(shutdown).await }
    });
    let handler = runtime.handler().clone();
    wait_for(Duration::from_secs(60), || handler.payloads().len() >= sent.len()).await;
    shutdown.cancel();
    running.await.unwrap().expect("clean stop");

    // Per key, records arrive in the order they were produced.
    let mut per_key: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
    for record in handler.seen.lock().unwrap().iter() {
        let n: u64 = String::from_utf8_lossy(record.payload.as_deref().unwrap())
            .parse()
            .unwrap();
        per_key.entry(record.key.clone().unwrap()).or_default().push(n);
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), sent.len());
    for numbers in per_key.values() {
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "order kept per key");
    }
    // Committed offsets reach the end of every partition.
    let committed = bench.committed(&runtime.settings().group, &topic).await;
    let ends = bench.ends(&topic).await;
    assert_eq!(committed, ends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_with_its_origin_while_the_partition_proceeds() {
    let bench = Bench::new(1).await;
    let topic = bench.topic("poison").await;
    bench
        .produce(&topic, &[("k", "1"), ("k", "poison"), ("k", "3")])
        .await;
    let recorder = Recorder {
        fail: Some(|r, _| {
            (r.payload.as_deref() == Some(b"poison")).then(|| HandlerError::permanent("cannot decode"))
        }),
        ..Recorder::default()
    };
    let runtime = Arc::new(ConsumerRuntime::new(
        bench.bus.clone(),
        settings(&bench, &topic, Delivery::AtLeastOnce),
        recorder,
    ));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        async move { runtime.run(shutdown).await }
    });
    let handler = runtime.handler().clone();
    wait_for(Duration::from_secs(60), || handler.payloads().len() >= 2).await;
    let dead = bench.read(&format!("{topic}.dlq"), 1).await;
    shutdown.cancel();
    running.await.unwrap().expect("clean stop");

    assert_eq!(handler.payloads(), vec!["1", "3"]);
    assert_eq!(dead.len(), 1);
    let h = &dead[0].headers;
    assert_eq!(dead[0].payload, b"poison");
    assert_eq!(dead[0].key, "k");
    assert_eq!(h[headers::ORIGINAL_TOPIC], topic);
    assert_eq!(h[headers::ORIGINAL_PARTITION], "0");
    assert_eq!(h[headers::ORIGINAL_OFFSET], "1");
    assert!(h[headers::ORIGINAL_TIMESTAMP].parse::<i64>().unwrap() > 0);
    assert_eq!(h[headers::CONSUMER_GROUP], runtime.settings().group);
    assert_eq!(h[headers::ERROR_KIND], "permanent");
    assert_eq!(h[headers::ERROR_MESSAGE], "cannot decode");
    assert_eq!(h[headers::ATTEMPTS], "1");
    let committed = bench.committed(&runtime.settings().group, &topic).await;
    assert_eq!(committed, BTreeMap::from([(0, 3)]));
}
