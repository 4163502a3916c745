//! Kafka settings as read from configuration.

use std::collections::BTreeMap;

use serde::Deserialize;

/// How to reach Kafka and how topics are laid out.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// `host:port,...`; empty or absent starts the embedded mock cluster.
    pub bootstrap_servers: Option<String>,
    /// Prepended to every topic name (e.g. `staging.`), so several deployments can share a cluster.
    pub topic_prefix: String,
    /// Partitions per topic created by `topics apply`.
    pub partitions: i32,
    /// Replication factor of created topics (3 in production).
    pub replication_factor: i32,
    /// `min.insync.replicas` of created topics (2 in production; ignored when replication is 1).
    pub min_insync_replicas: i32,
    /// A stable name for this process (a pod name, say). Consumers then join with static membership and
    /// transactional ids stay the same across restarts, so a restarted instance takes over its partitions at
    /// once and fences its killed predecessor, aborting its open transaction. Random when absent.
    pub instance_id: Option<String>,
    /// Extra librdkafka properties for every client (security.protocol, sasl.*, ssl.*): may hold secrets.
    pub client: BTreeMap<String, String>,
    /// Extra librdkafka properties for producers only.
    pub producer: BTreeMap<String, String>,
    /// Extra librdkafka properties for consumers only.
    pub consumer: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: None,
            topic_prefix: String::new(),
            partitions: 12,
            replication_factor: 1,
            min_insync_replicas: 1,
            instance_id: None,
            client: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    /// The configured cluster's bootstrap servers, or `None` when the embedded mock cluster is meant.
    pub fn cluster(&self) -> Option<&str> {
        self.bootstrap_servers.as_deref().filter(|s| !s.trim().is_empty())
    }
}

impl std::fmt::Debug for KafkaSettings {
    // The property maps may carry passwords: list their keys only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("instance_id", &self.instance_id)
            .field("client", &self.client.keys().collect::<Vec<_>>())
            .field("producer", &self.producer.keys().collect::<Vec<_>>())
            .field("consumer", &self.consumer.keys().collect::<Vec<_>>())
            .finish()
    }
}
