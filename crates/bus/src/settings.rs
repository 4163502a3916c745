//! Kafka settings as read from configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// How to reach Kafka and how topics are laid out.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// `host:port,...`; empty or absent starts the embedded mock cluster.
    pub bootstrap_servers: Option<String>,
    /// Prepended to every topic name (e.g. `staging.`), so several deployments can share a cluster.
    pub topic_prefix: String,
    /// Partitions per topic created by `topics apply`; when absent, 2 per broker on a real cluster and 2 on
    /// the embedded mock cluster. Each partition costs the broker work on every produce, fetch and
    /// transaction whether or not it carries records: set it to the most instances one role will run.
    pub partitions: Option<i32>,
    /// Partitions of each retry and dead-letter topic; when absent, 3 on a real cluster (at most the live
    /// topics' partitions) and 1 embedded.
    /// They carry only failures, and every member of a group polls them beside its live topics.
    pub retry_partitions: Option<i32>,
    /// Replication factor of created topics (3 in production).
    pub replication_factor: i32,
    /// `min.insync.replicas` of created topics (2 in production; ignored when replication is 1).
    pub min_insync_replicas: i32,
    /// A stable name for this process (a pod name, say). Consumers then join with static membership and
    /// transactional ids stay the same across restarts, so a restarted instance takes over its partitions at
    /// once and fences its killed predecessor, aborting its open transaction. Random when absent.
    pub instance_id: Option<String>,
    /// How clients authenticate and encrypt: TLS, SASL/SCRAM or PLAIN.
    pub security: KafkaSecurity,
    /// Create missing topics and check existing ones when a role starts. Turn off where roles run with
    /// least-privilege credentials and `orderflow topics apply` runs with an administrator's.
    pub manage_topics: bool,
    /// Extra librdkafka properties for every client: may hold secrets (prefer [`KafkaSecurity`]).
    #[serde(deserialize_with = "properties")]
    pub client: BTreeMap<String, String>,
    /// Extra librdkafka properties for producers only.
    #[serde(deserialize_with = "properties")]
    pub producer: BTreeMap<String, String>,
    /// Extra librdkafka properties for consumers only.
    #[serde(deserialize_with = "properties")]
    pub consumer: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: None,
            topic_prefix: String::new(),
            partitions: None,
            retry_partitions: None,
            replication_factor: 1,
            min_insync_replicas: 1,
            instance_id: None,
            security: KafkaSecurity::default(),
            manage_topics: true,
            client: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

/// librdkafka properties: values may be written as strings, numbers or booleans (`linger.ms = 5`, or
/// `ORDERFLOW_KAFKA__PRODUCER__ACKS=1`, which the environment layer reads as a number); librdkafka takes
/// them all as text.
fn properties<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Flag(bool),
    }
    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Scalar::Text(text) => text,
                Scalar::Integer(n) => n.to_string(),
                Scalar::Float(x) => x.to_string(),
                Scalar::Flag(flag) => flag.to_string(),
            };
            (key, text)
        })
        .collect())
}

/// A producer property in the settings that would weaken what a published event is promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "kafka.producer.{property} = {value} would weaken durability: producers always use acks=all and idempotence"
)]
pub struct WeakDurability {
    /// The librdkafka property.
    pub property: String,
    /// The value given.
    pub value: String,
}

impl KafkaSettings {
    /// Refuses producer properties that would let a broker acknowledge an event before every in-sync
    /// replica has it (`acks` other than `all`), or let retries duplicate or reorder it (idempotence off,
    /// more than 5 requests in flight per connection). The properties that ask for what Orderflow sets
    /// anyway are accepted.
    pub fn check_durability(&self) -> Result<(), WeakDurability> {
        for (property, value) in &self.producer {
            let normalized = value.trim().to_ascii_lowercase();
            let weak = match property.as_str() {
                "acks" | "request.required.acks" => !matches!(normalized.as_str(), "all" | "-1"),
                "enable.idempotence" => normalized != "true",
                "max.in.flight.requests.per.connection" | "max.in.flight" => {
                    normalized.parse::<u32>().map_or(true, |n| n == 0 || n > 5)
                }
                _ => false,
            };
            if weak {
                return Err(WeakDurability {
                    property: property.clone(),
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }

    /// Partitions of a topic per broker of a real cluster unless configured.
    pub const PARTITIONS_PER_BROKER: i32 = 2;
    /// Partitions of a topic on the embedded mock cluster unless configured.
    pub const EMBEDDED_PARTITIONS: i32 = 2;
    /// Partitions of a retry or dead-letter topic on a real cluster unless configured.
    pub const CLUSTER_RETRY_PARTITIONS: i32 = 3;

    /// Partitions per created topic: as configured, else 2 per broker of a cluster of `brokers` brokers
    /// (`None`: the embedded mock cluster).
    pub fn partitions_for(&self, brokers: Option<usize>) -> i32 {
        self.partitions.unwrap_or(match brokers {
            Some(n) => (Self::PARTITIONS_PER_BROKER * n.max(1) as i32).max(Self::EMBEDDED_PARTITIONS),
            None => Self::EMBEDDED_PARTITIONS,
        })
    }

    /// Partitions per created retry or dead-letter topic: as configured, else 3 on a cluster (at most the
    /// live topics' partitions) and 1 embedded.
    pub fn retry_partitions_for(&self, brokers: Option<usize>) -> i32 {
        self.retry_partitions.unwrap_or(match brokers {
            Some(_) => Self::CLUSTER_RETRY_PARTITIONS.min(self.partitions_for(brokers)),
            None => 1,
        })
    }

    /// Partitions per created topic on a one-broker cluster (or the embedded one): see
    /// [`KafkaSettings::partitions_for`].
    pub fn partitions(&self) -> i32 {
        self.partitions_for(self.cluster().map(|_| 1))
    }

    /// Partitions per created retry or dead-letter topic on a one-broker cluster (or the embedded one): see
    /// [`KafkaSettings::retry_partitions_for`].
    pub fn retry_partitions(&self) -> i32 {
        self.retry_partitions_for(self.cluster().map(|_| 1))
    }

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
            .field("retry_partitions", &self.retry_partitions)
            .field("replication_factor", &self.replication_factor)
            .field("instance_id", &self.instance_id)
            .field("security", &self.security)
            .field("manage_topics", &self.manage_topics)
            .field("client", &self.client.keys().collect::<Vec<_>>())
            .field("producer", &self.producer.keys().collect::<Vec<_>>())
            .field("consumer", &self.consumer.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Kafka client security: the protocol, SASL credentials and TLS files. Passwords are [`SecretString`]s
/// (never printed) and may come from files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`; absent leaves librdkafka's default (plaintext).
    pub protocol: Option<String>,
    /// `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.
    pub sasl_mechanism: Option<String>,
    /// The SASL user.
    pub username: Option<String>,
    /// The SASL password (better given as `ORDERFLOW_KAFKA__SECURITY__PASSWORD` or a file).
    pub password: Option<SecretString>,
    /// A file holding the SASL password.
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA that signed the brokers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by TLS.
    pub certificate_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
}

impl KafkaSecurity {
    /// The librdkafka properties these settings stand for (the password read from its file when given).
    pub fn properties(&self) -> Result<Vec<(&'static str, String)>, crate::BusError> {
        let mut props = Vec::new();
        if let Some(protocol) = &self.protocol {
            props.push(("security.protocol", protocol.clone()));
        }
        if let Some(mechanism) = &self.sasl_mechanism {
            props.push(("sasl.mechanisms", mechanism.clone()));
        }
        if let Some(user) = &self.username {
            props.push(("sasl.username", user.clone()));
        }
        match (&self.password, &self.password_file) {
            (Some(password), _) => props.push(("sasl.password", password.expose_secret().to_owned())),
            (None, Some(path)) => {
                let password = std::fs::read_to_string(path).map_err(|source| crate::BusError::Security {
                    path: path.clone(),
                    source,
                })?;
                props.push(("sasl.password", password.trim().to_owned()));
            }
            (None, None) => {}
        }
        let path = |p: &PathBuf| p.display().to_string();
        if let Some(ca) = &self.ca_file {
            props.push(("ssl.ca.location", path(ca)));
        }
        if let Some(cert) = &self.certificate_file {
            props.push(("ssl.certificate.location", path(cert)));
        }
        if let Some(key) = &self.key_file {
            props.push(("ssl.key.location", path(key)));
        }
        Ok(props)
    }
}
