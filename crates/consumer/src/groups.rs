//! Consumer groups as the cluster sees them: a group's state and members, and per topic partition the
//! offset it committed, the partition's end and the lag between them. What `orderflow consumers` shows.

use std::time::Duration;

use orderflow_bus::Bus;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// What can go wrong describing a group.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    /// A Kafka call failed.
    #[error("{context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The blocking reader's task failed (it panicked or was cancelled).
    #[error("the group reader's task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// How long each cluster call may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// The member id the coordinator gave it.
    pub id: String,
    /// Its client id (Orderflow names clients after the role and instance).
    pub client_id: String,
    /// Where it connects from.
    pub host: String,
}

/// A group's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset the group committed; `None` when it committed none.
    pub committed: Option<i64>,
    /// The partition's end (the next offset to be written).
    pub end: i64,
    /// Records between the committed offset (or the partition's start) and the end.
    pub lag: i64,
}

/// A group as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupView {
    /// The group.
    pub group: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty` or `Dead` (no such group).
    pub state: String,
    /// Its members now.
    pub members: Vec<Member>,
    /// Its position in every partition of the topics asked about that exist.
    pub partitions: Vec<PartitionLag>,
}

impl GroupView {
    /// The group's lag over every partition.
    pub fn lag(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// `group`'s state, members and lag on `topics` (full names; those that do not exist are left out).
pub async fn describe(bus: &Bus, group: &str, topics: &[String]) -> Result<GroupView, GroupsError> {
    let mut config = bus.client_config("orderflow-consumers");
    config.set("group.id", group).set("enable.auto.commit", "false");
    let (group, topics) = (group.to_owned(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create().map_err(kafka("creating a client"))?;
        let listed = client
            .fetch_group_list(Some(&group), TIMEOUT)
            .map_err(kafka(format!("describing group {group}")))?;
        let (state, members) = listed
            .groups()
            .iter()
            .find(|g| g.name() == group)
            .map(|g| {
                let members = g
                    .members()
                    .iter()
                    .map(|m| Member {
                        id: m.id().to_owned(),
                        client_id: m.client_id().to_owned(),
                        host: m.client_host().to_owned(),
                    })
                    .collect();
                (g.state().to_owned(), members)
            })
            .unwrap_or_else(|| ("Dead".to_owned(), Vec::new()));
        let mut wanted = TopicPartitionList::new();
        for topic in &topics {
            let metadata = client
                .fetch_metadata(Some(topic), TIMEOUT)
                .map_err(kafka(format!("fetching metadata of {topic}")))?;
            for found in metadata.topics().iter().filter(|t| t.error().is_none()) {
                for partition in found.partitions() {
                    wanted.add_partition(found.name(), partition.id());
                }
            }
        }
        let committed = client
            .committed_offsets(wanted, TIMEOUT)
            .map_err(kafka(format!("reading the offsets group {group} committed")))?;
        let mut partitions = Vec::new();
        for element in committed.elements() {
            let (start, end) =
                crate::watermarks::fetch(&client, element.topic(), element.partition(), TIMEOUT)
                    .map_err(kafka(format!("reading the end of {}", element.topic())))?;
            let committed = match element.offset() {
                Offset::Offset(n) => Some(n),
                _ => None,
            };
            partitions.push(PartitionLag {
                topic: element.topic().to_owned(),
                partition: element.partition(),
                committed,
                end,
                lag: (end - committed.unwrap_or(start).max(start)).max(0),
            });
        }
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(GroupView {
            group,
            state,
            members,
            partitions,
        })
    })
    .await
    .map_err(GroupsError::Task)?
}

fn kafka(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> GroupsError {
    let context = context.into();
    move |source| GroupsError::Kafka { context, source }
}
