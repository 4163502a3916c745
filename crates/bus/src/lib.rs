//! The Kafka event bus: client settings every role shares, the embedded mock cluster for a first run, and
//! the blueprint's topic table with `topics apply`.
//!
//! Production talks to any Kafka-protocol cluster through librdkafka. With no bootstrap servers configured,
//! [`Bus::connect`] starts librdkafka's in-process mock cluster instead: memory only, no transactional
//! isolation, gone when the process exits.

mod embedded;
mod settings;
pub mod topics;

use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

pub use embedded::EmbeddedCluster;
pub use settings::KafkaSettings;
pub use topics::{TopicReport, TopicSpec};

/// What can go wrong setting up Kafka clients or topics.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// librdkafka refused a configuration or an operation.
    #[error("{context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The embedded mock cluster could not be started or used.
    #[error("embedded Kafka: {0}")]
    Embedded(String),
    /// Topics exist with settings that differ from the topic table.
    #[error("topics differ from the topic table: {}", .0.join("; "))]
    TopicMismatch(Vec<String>),
}

impl BusError {
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let context = context.into();
        move |source| Self::Kafka { context, source }
    }
}

/// Connection to the event log, real or embedded; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    settings: KafkaSettings,
    bootstrap: String,
    embedded: Option<Arc<EmbeddedCluster>>,
}

impl std::fmt::Debug for Bus {
    // Client properties may hold credentials: show only where the bus points.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("bootstrap", &self.bootstrap)
            .field("embedded", &self.is_embedded())
            .finish()
    }
}

impl Bus {
    /// Uses the configured cluster, or starts the embedded mock cluster when none is configured.
    pub fn connect(settings: KafkaSettings) -> Result<Self, BusError> {
        match settings.cluster().map(str::to_owned) {
            Some(bootstrap) => Ok(Self {
                settings,
                bootstrap,
                embedded: None,
            }),
            None => {
                let cluster = EmbeddedCluster::start()?;
                let bootstrap = cluster.bootstrap_servers().to_owned();
                Ok(Self {
                    settings,
                    bootstrap,
                    embedded: Some(Arc::new(cluster)),
                })
            }
        }
    }

    /// True when running on the in-process mock cluster.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The bootstrap servers clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The settings this bus was built from.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Full topic name for a base name from the topic table (adds the configured prefix).
    pub fn topic(&self, base: &str) -> String {
        format!("{}{base}", self.settings.topic_prefix)
    }

    /// Full consumer group id for a role's group name: the topic prefix namespaces groups too, so deployments
    /// sharing a cluster under different prefixes never share a group.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.settings.topic_prefix)
    }

    /// Client settings shared by every client, with the user's librdkafka properties applied last.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        // Small requests go out at once: with Nagle's algorithm a lone produce or fetch can wait for the
        // peer's delayed ACK (40 ms on Linux).
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", client_id)
            .set("socket.nagle.disable", "true");
        for (key, value) in &self.settings.client {
            config.set(key, value);
        }
        config
    }

    /// An idempotent producer (acks=all, ordered retries) for publishing events.
    pub fn producer(&self, client_id: &str) -> Result<FutureProducer, BusError> {
        self.producer_config(client_id)
            .create()
            .map_err(BusError::kafka("creating a Kafka producer"))
    }

    /// The settings of [`Bus::producer`], for callers that add their own (a transactional id, a context).
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.client_config(client_id);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "30000");
        for (key, value) in &self.settings.producer {
            config.set(key, value);
        }
        config
    }

    /// Settings for a consumer in `group` that reads only committed records, commits only offsets stored
    /// explicitly once their effects are done, and fetches with low latency; callers add their own (static
    /// membership, a context).
    pub fn consumer_config(&self, client_id: &str, group: &str) -> ClientConfig {
        let mut config = self.client_config(client_id);
        config
            .set("group.id", group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("partition.assignment.strategy", "cooperative-sticky");
        for (key, value) in &self.settings.consumer {
            config.set(key, value);
        }
        config
    }

    /// Creates missing topics of the topic table and checks existing ones; see [`topics::apply`].
    pub async fn apply_topics(&self) -> Result<Vec<TopicReport>, BusError> {
        topics::apply(self).await
    }

    /// Creates the missing topics of `wanted` (full names) and checks existing ones; see [`topics::ensure`].
    pub async fn ensure_topics(
        &self,
        wanted: &[(String, topics::Cleanup)],
    ) -> Result<Vec<TopicReport>, BusError> {
        topics::ensure(self, wanted).await
    }

    pub(crate) fn embedded(&self) -> Option<&EmbeddedCluster> {
        self.embedded.as_deref()
    }
}
