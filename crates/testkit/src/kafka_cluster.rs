//! A throw-away three-node Apache Kafka cluster in KRaft mode: every node is a broker and a controller,
//! topics are replicated three times with `min.insync.replicas=2`, so any one node can be killed (the
//! partitions it led elect new leaders, the controller quorum keeps two of three) and restarted.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::HarnessError;
use crate::kafka::{cluster_id, format_log_dir, java, kafka_jars};
use crate::process::{ServerProcess, free_port, log_tail, temp_dir, wait_until};

/// Nodes in the cluster.
const NODES: usize = 3;

/// A running three-node KRaft cluster owned by the test process.
pub struct KafkaCluster {
    ports: Vec<u16>,
    nodes: Vec<ServerProcess>,
    /// How long formatting plus start-up took (jar download excluded).
    pub startup: Duration,
}

impl KafkaCluster {
    /// Formats three log dirs with one cluster id and starts the nodes; returns when every broker is in the
    /// cluster's metadata.
    pub fn start() -> Result<Self, HarnessError> {
        let libs = kafka_jars()?;
        let started = Instant::now();
        let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect::<Result<_, _>>()?;
        let controllers: Vec<u16> = (0..NODES).map(|_| free_port()).collect::<Result<_, _>>()?;
        let voters: Vec<String> = controllers
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
            .collect();
        let id = cluster_id();
        let mut nodes = Vec::with_capacity(NODES);
        for (i, (port, controller)) in ports.iter().zip(&controllers).enumerate() {
            let dir = temp_dir("kafka-cluster")?;
            let props = [
                ("process.roles", "broker,controller".to_owned()),
                ("node.id", (i + 1).to_string()),
                ("controller.quorum.voters", voters.join(",")),
                (
                    "listeners",
                    format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
                ),
                ("advertised.listeners", format!("PLAINTEXT://127.0.0.1:{port}")),
                ("controller.listener.names", "CONTROLLER".into()),
                ("inter.broker.listener.name", "PLAINTEXT".into()),
                (
                    "listener.security.protocol.map",
                    "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
                ),
                ("log.dirs", dir.join("logs").display().to_string()),
                ("auto.create.topics.enable", "false".into()),
                ("default.replication.factor", "3".into()),
                ("min.insync.replicas", "2".into()),
                ("offsets.topic.replication.factor", "3".into()),
                ("offsets.topic.num.partitions", "4".into()),
                ("transaction.state.log.replication.factor", "3".into()),
                ("transaction.state.log.min.isr", "2".into()),
                ("transaction.state.log.num.partitions", "4".into()),
                ("share.coordinator.state.topic.replication.factor", "3".into()),
                ("share.coordinator.state.topic.min.isr", "2".into()),
                ("group.initial.rebalance.delay.ms", "0".into()),
                // A killed node's partitions move within seconds rather than the default 18 s.
                ("broker.session.timeout.ms", "4000".into()),
                ("broker.heartbeat.interval.ms", "1000".into()),
                ("unclean.leader.election.enable", "false".into()),
            ];
            let config = dir.join("server.properties");
            let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            std::fs::write(&config, text).map_err(|e| HarnessError::io("write server.properties", e))?;
            format_log_dir(&libs, &config, &id, &[])?;
            let libs = libs.clone();
            let process = ServerProcess::new("kafka", dir, move || {
                let mut cmd = java(&libs);
                cmd.arg("kafka.Kafka").arg(&config);
                cmd
            });
            process.spawn()?;
            nodes.push(process);
        }
        let cluster = Self {
            ports,
            nodes,
            startup: Duration::ZERO,
        };
        cluster.wait_brokers(NODES, Duration::from_secs(120))?;
        Ok(Self {
            startup: started.elapsed(),
            ..cluster
        })
    }

    /// Every node's `127.0.0.1:<port>`, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `index` (SIGKILL, like a crash).
    pub fn kill(&self, index: usize) {
        if let Some(node) = self.nodes.get(index) {
            node.kill();
        }
    }

    /// Starts node `index` again on its ports and log dir; returns when every broker is back.
    pub fn restart(&self, index: usize) -> Result<(), HarnessError> {
        let node = self
            .nodes
            .get(index)
            .ok_or_else(|| HarnessError::Failed(format!("no Kafka node {index}")))?;
        node.spawn()?;
        self.wait_brokers(NODES, Duration::from_secs(120))
    }

    /// The index of the node leading partition `partition` of `topic`, as the cluster's metadata says.
    pub fn leader(&self, topic: &str, partition: i32) -> Result<Option<usize>, HarnessError> {
        let consumer = self.client()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| HarnessError::step("fetching metadata")(e.into()))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions())
            .find(|p| p.id() == partition)
            .and_then(|p| usize::try_from(p.leader() - 1).ok()))
    }

    fn client(&self) -> Result<BaseConsumer, HarnessError> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .set("socket.timeout.ms", "5000")
            .create()
            .map_err(|e| HarnessError::step("a metadata client")(e.into()))
    }

    /// Waits until `brokers` brokers are in the metadata.
    fn wait_brokers(&self, brokers: usize, timeout: Duration) -> Result<(), HarnessError> {
        let consumer = self.client()?;
        wait_until("the Kafka cluster's brokers", timeout, || {
            consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| m.brokers().len() >= brokers)
        })
        .map(|_| ())
        .map_err(|e| {
            let logs = self
                .nodes
                .iter()
                .map(|n| log_tail(&n.log_path(), 10))
                .collect::<Vec<_>>()
                .join("\n---\n");
            HarnessError::not_ready(logs)(e)
        })
    }
}
