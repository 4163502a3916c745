//! librdkafka's in-process mock cluster, kept on a thread of its own.
//!
//! The mock cluster handle is not `Send`, so one thread creates it, serves topic-creation requests, and drops
//! it when the [`EmbeddedCluster`] is dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;

use crate::BusError;

enum Request {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::Sender<Result<(), KafkaError>>,
    },
}

/// A running embedded (mock) Kafka cluster with one broker.
pub struct EmbeddedCluster {
    bootstrap: String,
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedCluster {
    /// Starts the mock cluster and returns once it listens.
    pub fn start() -> Result<Self, BusError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, KafkaError>>();
        let (requests, inbox) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serve until every sender is gone, then drop the cluster on this thread.
                for request in inbox {
                    match request {
                        Request::CreateTopic {
                            name,
                            partitions,
                            reply,
                        } => {
                            // Roles start side by side and each makes sure of its topics: a topic another
                            // role created a moment ago is there, which is all that was asked.
                            let created = match cluster.create_topic(&name, partitions, 1) {
                                Err(e)
                                    if e.rdkafka_error_code()
                                        == Some(rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists) =>
                                {
                                    Ok(())
                                }
                                other => other,
                            };
                            let _ = reply.send(created);
                        }
                    }
                }
            })
            .map_err(|e| BusError::embedded("starting its thread", Some(e.into())))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| BusError::embedded("its thread stopped while starting", None))?
            .map_err(|e| BusError::embedded("starting the mock cluster", Some(e.into())))?;
        Ok(Self {
            bootstrap,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (replication is always 1 here).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BusError> {
        let (reply, answer) = mpsc::channel();
        let sender = self
            .requests
            .as_ref()
            .ok_or_else(|| BusError::embedded("already stopped", None))?;
        sender
            .send(Request::CreateTopic {
                name: name.to_owned(),
                partitions,
                reply,
            })
            .map_err(|_| BusError::embedded("its thread has stopped", None))?;
        answer
            .recv()
            .map_err(|_| BusError::embedded("its thread has stopped", None))?
            .map_err(|e| BusError::embedded(format!("creating topic {name}"), Some(e.into())))
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
