//! The outbox relay against a real Kafka broker and a real PostgreSQL server from the harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use orderflow_bus::{Bus, KafkaSettings};
use orderflow_domain::{NewOrder, Order};
use orderflow_events::{AvroCodec, OrderCreated};
use orderflow_outbox::{OutboxRelay, RelaySettings};
use orderflow_registry::{MemoryStorage, RegistryService};
use orderflow_store::Store;
use orderflow_testkit::{KafkaServer, read_topic, unique};

async fn store() -> Store {
    let url = orderflow_testkit::postgres().fresh_database().expect("database");
    let store = Store::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn bus(bootstrap: String, producer: BTreeMap<String, String>) -> Bus {
    let settings = KafkaSettings {
        bootstrap_servers: Some(bootstrap),
        topic_prefix: format!("{}.", unique("relay")),
        partitions: Some(3),
        producer,
        ..KafkaSettings::default()
    };
    let bus = Bus::connect(settings).expect("bus");
    bus.apply_topics().await.expect("topics");
    bus
}

async fn codec() -> AvroCodec {
    let registry = std::sync::Arc::new(RegistryService::new(
        std::sync::Arc::new(MemoryStorage::default()),
    ));
    AvroCodec::connect(registry, "").await.expect("codec")
}

async fn place_orders(store: &Store, n: usize) -> Vec<Order> {
    let codec = codec().await;
    let mut orders = Vec::new();
    for i in 0..n {
        let doc = serde_json::json!({"customer_id": format!("c{i}"), "currency": "EUR",
            "items": [{"sku": "SKU", "quantity": 1, "unit_price_minor": 100 + i}]});
        let order = Order::create(NewOrder::parse(&doc).expect("valid"), Utc::now());
        store
            .insert_order(
                &order,
                &codec
                    .encode(&OrderCreated::from_order(&order), None)
                    .expect("encode"),
            )
            .await
            .expect("insert");
        orders.push(order);
    }
    orders
}

async fn drain(relay: &OutboxRelay, store: &Store) {
    while store.outbox_backlog().await.expect("backlog") > 0 {
        relay.run_once().await.expect("relay round");
    }
}

#[tokio::test]
async fn publishes_every_row_keyed_by_order_id_in_commit_order() {
    let store = store().await;
    let bus = bus(orderflow_testkit::kafka().bootstrap_servers(), BTreeMap::new()).await;
    let relay = OutboxRelay::new(
        store.clone(),
        bus.clone(),
        RelaySettings {
            batch_size: 7,
            ..Default::default()
        },
    )
    .expect("relay");
    let orders = place_orders(&store, 40).await;
    drain(&relay, &store).await;

    let records = read_topic(
        bus.bootstrap_servers(),
        &bus.topic("order.created"),
        40,
        Duration::from_secs(20),
    )
    .expect("read");
    assert_eq!(
        records.len(),
        40,
        "every committed order is published exactly once here"
    );
    let position: HashMap<String, usize> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| (o.id.to_string(), i))
        .collect();
    let mut per_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    let codec = codec().await;
    for record in &records {
        let event: OrderCreated = codec.decode(&record.payload).await.expect("decodes");
        assert_eq!(record.key, event.order_id.to_string(), "keyed by order id");
        assert_eq!(record.headers.get("event-id"), Some(&event.event_id.to_string()));
        assert_eq!(
            record.headers.get("event-type").map(String::as_str),
            Some("order.created")
        );
        per_partition
            .entry(record.partition)
            .or_default()
            .push(position[&record.key]);
    }
    for (partition, seen) in per_partition {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "partition {partition} out of commit order: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_crash_between_publish_and_mark_publishes_twice_but_loses_nothing() {
    let store = store().await;
    let bus = bus(orderflow_testkit::kafka().bootstrap_servers(), BTreeMap::new()).await;
    let orders = place_orders(&store, 5).await;
    {
        let crashing = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default()).expect("relay");
        let batch = crashing.publish_batch().await.expect("published");
        assert_eq!(batch.len(), 5);
        // The process dies here: the broker has the records, the outbox does not know.
        drop(batch);
    }
    assert_eq!(
        store.outbox_backlog().await.expect("backlog"),
        5,
        "nothing was marked"
    );
    let restarted = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default()).expect("relay");
    drain(&restarted, &store).await;

    let records = read_topic(
        bus.bootstrap_servers(),
        &bus.topic("order.created"),
        10,
        Duration::from_secs(20),
    )
    .expect("read");
    let mut copies: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *copies.entry(r.headers["event-id"].clone()).or_default() += 1;
    }
    assert_eq!(copies.len(), 5, "no event lost");
    assert!(
        copies.values().all(|&n| n == 2),
        "each event published once per attempt: {copies:?}"
    );
    let keys: std::collections::HashSet<_> = records.iter().map(|r| r.key.clone()).collect();
    assert!(orders.iter().all(|o| keys.contains(&o.id.to_string())));
}

#[tokio::test]
async fn rows_stay_pending_while_kafka_is_down_and_go_out_when_it_is_back() {
    let kafka = KafkaServer::start().expect("dedicated broker");
    let store = store().await;
    let fast_failure = BTreeMap::from([("message.timeout.ms".to_owned(), "3000".to_owned())]);
    let bus = bus(kafka.bootstrap_servers(), fast_failure).await;
    let relay = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default()).expect("relay");
    place_orders(&store, 3).await;

    kafka.kill();
    let failed = relay.run_once().await;
    assert!(
        failed.is_err(),
        "publishing must fail with the broker down, got {failed:?}"
    );
    assert_eq!(
        store.outbox_backlog().await.expect("backlog"),
        3,
        "failed rows stay pending"
    );

    kafka.restart().expect("broker restarts");
    let mut published = 0;
    for _ in 0..20 {
        match relay.run_once().await {
            Ok(n) => published += n,
            Err(e) => eprintln!("retrying after: {e}"),
        }
        if store.outbox_backlog().await.expect("backlog") == 0 {
            break;
        }
    }
    assert_eq!(published, 3);
    let records = read_topic(
        bus.bootstrap_servers(),
        &bus.topic("order.created"),
        3,
        Duration::from_secs(20),
    )
    .expect("read");
    assert_eq!(records.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_another_process_wakes_the_idle_relay_at_once() {
    let url = orderflow_testkit::postgres().fresh_database().expect("database");
    let relay_store = Store::connect(&url, 4).await.expect("connect");
    relay_store.migrate().await.expect("migrate");
    // Another API instance: its own pool, so no in-process wake-up reaches the relay.
    let writer = Store::connect(&url, 2).await.expect("connect");
    let bus = bus(orderflow_testkit::kafka().bootstrap_servers(), BTreeMap::new()).await;
    let relay = std::sync::Arc::new(
        OutboxRelay::new(
            relay_store.clone(),
            bus.clone(),
            RelaySettings {
                // Polling alone would find the rows only after a minute.
                idle_poll_ms: 60_000,
                ..Default::default()
            },
        )
        .expect("relay"),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let relay = relay.clone();
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });
    // Let it take the lease, find nothing and go idle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = std::time::Instant::now();
    place_orders(&writer, 3).await;
    let (bootstrap, topic) = (bus.bootstrap_servers().to_owned(), bus.topic("order.created"));
    let records =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic, 3, Duration::from_secs(15)))
            .await
            .expect("reader")
            .expect("read");
    assert_eq!(records.len(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "published {:?} after the commit",
        started.elapsed()
    );
    shutdown.cancel();
    running.await.expect("task").expect("relay");
}
