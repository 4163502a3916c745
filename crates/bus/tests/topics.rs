//! `topics apply` on a real Kafka broker from the harness, and the embedded mock cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::time::Duration;

use orderflow_bus::topics::{TOPICS, TopicAction};
use orderflow_bus::{Bus, BusError, KafkaSettings};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn real_bus(prefix: &str) -> Bus {
    Bus::connect(KafkaSettings {
        bootstrap_servers: Some(orderflow_testkit::kafka().bootstrap_servers()),
        topic_prefix: prefix.to_owned(),
        partitions: Some(4),
        ..KafkaSettings::default()
    })
    .expect("bus")
}

#[tokio::test]
async fn apply_creates_the_topic_table_then_finds_it_unchanged() {
    let prefix = format!("{}.", orderflow_testkit::unique("topics"));
    let bus = real_bus(&prefix);
    let first = bus.apply_topics().await.expect("first apply");
    assert_eq!(first.len(), TOPICS.len());
    assert!(
        first.iter().all(|r| r.action == TopicAction::Created),
        "{first:?}"
    );

    let second = bus.apply_topics().await.expect("second apply");
    assert!(
        second.iter().all(|r| r.action == TopicAction::Unchanged),
        "{second:?}"
    );

    let client: BaseConsumer = bus.client_config("test").create().expect("client");
    let metadata = client
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    for spec in TOPICS {
        let name = format!("{prefix}{}", spec.name);
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .expect("topic exists");
        assert_eq!(topic.partitions().len(), 4, "{name}");
    }
}

#[tokio::test]
async fn apply_reports_a_topic_whose_settings_differ() {
    let prefix = format!("{}.", orderflow_testkit::unique("drift"));
    let bus = real_bus(&prefix);
    // Someone created order.state by hand, with delete instead of compact and too few partitions.
    let admin: AdminClient<DefaultClientContext> = bus.client_config("test").create().expect("admin");
    let name = format!("{prefix}order.state");
    let topic = NewTopic::new(&name, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "delete");
    admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create");

    match bus.apply_topics().await {
        Err(BusError::TopicMismatch(problems)) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains("order.state"), "{problems:?}");
            assert!(
                problems[0].contains("cleanup.policy=delete, expected compact"),
                "{problems:?}"
            );
            assert!(
                problems[0].contains("1 partitions, expected at least 4"),
                "{problems:?}"
            );
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn apply_reports_topics_replicated_less_than_the_settings_ask() {
    let prefix = format!("{}.", orderflow_testkit::unique("replicas"));
    // The topics exist with one replica (all the harness's single broker can hold)...
    real_bus(&prefix).apply_topics().await.expect("first apply");
    // ...and the deployment now asks for three, with two in sync.
    let bus = Bus::connect(KafkaSettings {
        bootstrap_servers: Some(orderflow_testkit::kafka().bootstrap_servers()),
        topic_prefix: prefix.clone(),
        partitions: Some(4),
        replication_factor: 3,
        min_insync_replicas: 2,
        ..KafkaSettings::default()
    })
    .expect("bus");
    match bus.apply_topics().await {
        Err(BusError::TopicMismatch(problems)) => {
            assert_eq!(problems.len(), TOPICS.len(), "every topic drifted: {problems:?}");
            for problem in &problems {
                assert!(problem.contains("replication factor 1, expected 3"), "{problem}");
                assert!(problem.contains("min.insync.replicas=1, expected 2"), "{problem}");
            }
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn unconfigured_partitions_follow_the_cluster_size() {
    let prefix = format!("{}.", orderflow_testkit::unique("sized"));
    let settings = KafkaSettings {
        bootstrap_servers: Some(orderflow_testkit::kafka().bootstrap_servers()),
        topic_prefix: prefix.clone(),
        ..KafkaSettings::default()
    };
    assert_eq!(settings.partitions_for(Some(3)), 6, "two per broker");
    assert_eq!(settings.retry_partitions_for(Some(3)), 3);
    let bus = Bus::connect(settings).expect("bus");
    bus.apply_topics().await.expect("apply");
    let retry = format!("{prefix}order.created.retry.1");
    bus.ensure_routing_topics(&[(retry.clone(), orderflow_bus::topics::Cleanup::Delete { days: 1 })])
        .await
        .expect("routing topics");
    let client: BaseConsumer = bus.client_config("test").create().expect("client");
    let metadata = client
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let partitions = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len())
    };
    // The harness runs one broker: two partitions per live topic, and retry topics no wider than that.
    assert_eq!(partitions(&format!("{prefix}order.created")), Some(2));
    assert_eq!(partitions(&retry), Some(2));
}

#[tokio::test]
async fn the_embedded_cluster_serves_the_topic_table() {
    let bus = Bus::connect(KafkaSettings::default()).expect("embedded bus");
    assert!(bus.is_embedded());
    let reports = bus.apply_topics().await.expect("apply");
    assert_eq!(reports.len(), TOPICS.len());
    let client: BaseConsumer = bus.client_config("test").create().expect("client");
    let bootstrap = bus.bootstrap_servers().to_owned();
    let metadata = tokio::task::spawn_blocking(move || client.fetch_metadata(None, Duration::from_secs(10)))
        .await
        .expect("task")
        .expect("metadata");
    assert!(
        metadata.topics().iter().any(|t| t.name() == "order.created"),
        "topics on {bootstrap}"
    );
}
