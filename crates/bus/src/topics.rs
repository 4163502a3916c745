//! The blueprint's topic table and `topics apply`: create what is missing, check what exists.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::{Bus, BusError};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// How a topic gets rid of old records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Delete records older than this many days.
    Delete {
        /// Retention in days.
        days: i64,
    },
    /// Keep the latest record per key.
    Compact,
}

impl Cleanup {
    /// The topic configs this cleanup translates to.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Delete { days } => vec![
                ("cleanup.policy", "delete".into()),
                ("retention.ms", (days * DAY_MS).to_string()),
            ],
            Self::Compact => vec![("cleanup.policy", "compact".into())],
        }
    }
}

/// One row of the topic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    /// Base name (without deployment prefix).
    pub name: &'static str,
    /// Cleanup policy.
    pub cleanup: Cleanup,
}

/// Every topic Orderflow owns, as the blueprint lists them.
pub const TOPICS: &[TopicSpec] = &[
    TopicSpec {
        name: "order.created",
        cleanup: Cleanup::Delete { days: 7 },
    },
    TopicSpec {
        name: "order.cancelled",
        cleanup: Cleanup::Delete { days: 7 },
    },
    TopicSpec {
        name: "payment.received",
        cleanup: Cleanup::Delete { days: 7 },
    },
    TopicSpec {
        name: "payment.failed",
        cleanup: Cleanup::Delete { days: 7 },
    },
    TopicSpec {
        name: "payment.refunded",
        cleanup: Cleanup::Delete { days: 7 },
    },
    TopicSpec {
        name: "order.enriched",
        cleanup: Cleanup::Delete { days: 30 },
    },
    TopicSpec {
        name: "order.unpaid",
        cleanup: Cleanup::Delete { days: 30 },
    },
    TopicSpec {
        name: "inventory.allocated",
        cleanup: Cleanup::Delete { days: 7 },
    },
    TopicSpec {
        name: "inventory.rejected",
        cleanup: Cleanup::Delete { days: 7 },
    },
    TopicSpec {
        name: "order.read-model",
        cleanup: Cleanup::Delete { days: 14 },
    },
    TopicSpec {
        name: "order.state",
        cleanup: Cleanup::Compact,
    },
];

/// What `topics apply` did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicAction {
    /// It was missing and has been created.
    Created,
    /// It exists with the expected settings.
    Unchanged,
    /// It exists but differs (the reason says how); nothing was changed.
    Differs(String),
}

/// One line of the `topics apply` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    /// Full topic name.
    pub topic: String,
    /// What happened.
    pub action: TopicAction,
}

/// Creates the missing topics of [`TOPICS`] and checks that existing ones have at least the configured
/// partitions and the table's cleanup settings. Existing topics are never altered: a difference is an error
/// listing every mismatch, for an operator to resolve.
pub async fn apply(bus: &Bus) -> Result<Vec<TopicReport>, BusError> {
    let wanted: Vec<(String, Cleanup)> = TOPICS
        .iter()
        .map(|spec| (bus.topic(spec.name), spec.cleanup))
        .collect();
    ensure(bus, &wanted).await
}

/// Waits until the brokers' metadata lists every topic of `created`. The controller has committed them when
/// `create_topics` returns, but brokers learn of them a moment later; until then a producer, a consumer or
/// the next `apply` would find them missing.
async fn wait_until_visible<'a>(bus: &Bus, created: impl Iterator<Item = &'a str>) -> Result<(), BusError> {
    let created: Vec<&str> = created.collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = layouts(bus).await?.topics;
        let pending: Vec<&str> = created
            .iter()
            .copied()
            .filter(|t| !seen.contains_key(*t))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BusError::Kafka {
                context: format!(
                    "topics created but not visible in metadata after 15 s: {}",
                    pending.join(", ")
                ),
                source: rdkafka::error::KafkaError::AdminOp(RDKafkaErrorCode::RequestTimedOut),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the missing topics of `wanted` (full names with their cleanup) with the configured partitions and
/// replication, and checks existing ones the same way [`apply`] does.
pub async fn ensure(bus: &Bus, wanted: &[(String, Cleanup)]) -> Result<Vec<TopicReport>, BusError> {
    ensure_with(bus, wanted, Sizing::Live).await
}

/// How [`ensure_with`] sizes the topics it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// Topics that carry the pipeline: [`KafkaSettings::partitions_for`] the cluster.
    ///
    /// [`KafkaSettings::partitions_for`]: crate::KafkaSettings::partitions_for
    Live,
    /// Retry and dead-letter topics: [`KafkaSettings::retry_partitions_for`] the cluster.
    ///
    /// [`KafkaSettings::retry_partitions_for`]: crate::KafkaSettings::retry_partitions_for
    Routing,
}

/// Like [`ensure`], sizing the topics as `sizing` says (retry and dead-letter topics have fewer partitions).
pub async fn ensure_with(
    bus: &Bus,
    wanted: &[(String, Cleanup)],
    sizing: Sizing,
) -> Result<Vec<TopicReport>, BusError> {
    let settings = bus.settings();
    let size = |brokers: Option<usize>| match sizing {
        Sizing::Live => settings.partitions_for(brokers),
        Sizing::Routing => settings.retry_partitions_for(brokers),
    };
    if let Some(cluster) = bus.embedded() {
        let partitions = size(None);
        return wanted
            .iter()
            .map(|(topic, _)| {
                let topic = topic.clone();
                cluster.create_topic(&topic, partitions)?;
                Ok(TopicReport {
                    topic,
                    action: TopicAction::Created,
                })
            })
            .collect();
    }

    let admin: AdminClient<DefaultClientContext> = bus
        .client_config("orderflow-admin")
        .create()
        .map_err(BusError::kafka("creating a Kafka admin client"))?;
    let cluster = layouts(bus).await?;
    let partitions = size(Some(cluster.brokers));
    let existing = cluster.topics;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));

    let missing: Vec<(String, Vec<(&str, String)>)> = wanted
        .iter()
        .filter(|(topic, _)| !existing.contains_key(topic))
        .map(|(topic, cleanup)| {
            let mut configs = cleanup.configs();
            if settings.replication_factor > 1 {
                configs.push(("min.insync.replicas", settings.min_insync_replicas.to_string()));
            }
            (topic.clone(), configs)
        })
        .collect();
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(topic, configs)| {
            configs.iter().fold(
                NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(settings.replication_factor),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let mut reports = Vec::new();
    if !new_topics.is_empty() {
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(BusError::kafka("creating topics"))?;
        for result in results {
            match result {
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => reports.push(TopicReport {
                    topic,
                    action: TopicAction::Created,
                }),
                Err((topic, code)) => {
                    return Err(BusError::Kafka {
                        context: format!("creating topic {topic}"),
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        wait_until_visible(bus, missing.iter().map(|(topic, _)| topic.as_str())).await?;
    }

    let mut differences = Vec::new();
    for (topic, cleanup) in wanted {
        let topic = topic.clone();
        let Some(&found) = existing.get(&topic) else {
            continue;
        };
        let mut problems = Vec::new();
        if found.partitions < partitions {
            problems.push(format!(
                "{} partitions, expected at least {partitions}",
                found.partitions
            ));
        }
        if found.replicas < settings.replication_factor {
            problems.push(format!(
                "replication factor {}, expected {}",
                found.replicas, settings.replication_factor
            ));
        }
        let actual = topic_configs(&admin, &topic, &options).await?;
        let mut expected = cleanup.configs();
        if settings.replication_factor > 1 {
            expected.push(("min.insync.replicas", settings.min_insync_replicas.to_string()));
        }
        for (key, expected) in expected {
            let value = actual.get(key).cloned().flatten().unwrap_or_default();
            if value != expected {
                problems.push(format!("{key}={value}, expected {expected}"));
            }
        }
        let action = if problems.is_empty() {
            TopicAction::Unchanged
        } else {
            differences.push(format!("{topic}: {}", problems.join(", ")));
            TopicAction::Differs(problems.join(", "))
        };
        reports.push(TopicReport { topic, action });
    }
    if differences.is_empty() {
        Ok(reports)
    } else {
        Err(BusError::TopicMismatch(differences))
    }
}

/// The configuration of `topic` as its broker describes it. A topic another process has just created may be
/// unknown to the broker answering (its metadata arrives a moment later), which shows as an error or an
/// empty description: asked again for up to 15 s before that counts, so that two instances starting at once
/// do not take each other's new topics for drifted ones.
async fn topic_configs(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    options: &AdminOptions,
) -> Result<HashMap<String, Option<String>>, BusError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let described = admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], options)
            .await
            .map_err(BusError::kafka(format!("describing topic {topic}")))?;
        let outcome = described
            .into_iter()
            .next()
            .map(|r| r.map(|resource| resource.entries));
        match outcome {
            Some(Ok(entries)) if !entries.is_empty() => {
                return Ok(entries.into_iter().map(|e| (e.name, e.value)).collect());
            }
            Some(Err(code)) if tokio::time::Instant::now() >= deadline => {
                return Err(BusError::Kafka {
                    context: format!("describing topic {topic}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                });
            }
            _ if tokio::time::Instant::now() >= deadline => return Ok(HashMap::new()),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// How an existing topic is laid out.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Its partitions.
    partitions: i32,
    /// The fewest replicas any of its partitions has (its replication factor).
    replicas: i32,
}

/// What the cluster's metadata says: its brokers and the layout of every topic.
struct ClusterLayout {
    /// Brokers in the cluster.
    brokers: usize,
    /// Every topic's layout, by name.
    topics: HashMap<String, Layout>,
}

/// The cluster's brokers and the layout of every topic (metadata is a blocking call, so it runs off the
/// runtime).
async fn layouts(bus: &Bus) -> Result<ClusterLayout, BusError> {
    let config = bus.client_config("orderflow-admin");
    let task = tokio::task::spawn_blocking(move || -> Result<ClusterLayout, BusError> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = config
            .create()
            .map_err(BusError::kafka("creating a metadata client"))?;
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(BusError::kafka("fetching cluster metadata"))?;
        let topics = metadata
            .topics()
            .iter()
            .map(|t| {
                let layout = Layout {
                    partitions: t.partitions().len() as i32,
                    replicas: t
                        .partitions()
                        .iter()
                        .map(|p| p.replicas().len() as i32)
                        .min()
                        .unwrap_or(0),
                };
                (t.name().to_owned(), layout)
            })
            .collect();
        Ok(ClusterLayout {
            brokers: metadata.brokers().len(),
            topics,
        })
    });
    task.await.map_err(|source| BusError::Task {
        context: "fetching cluster metadata",
        source,
    })?
}
