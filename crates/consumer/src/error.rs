//! What stops a consumer runtime.

use rdkafka::error::KafkaError;

/// Any error, as the source of another.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a consumer runtime stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// A Kafka client call failed.
    #[error("{context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// Setting up the bus or its topics failed.
    #[error(transparent)]
    Bus(#[from] orderflow_bus::BusError),
    /// Another instance took over this instance's transactional id; this one must stop and never commit.
    #[error("fenced by another instance")]
    Fenced(#[source] BoxError),
    /// The open transaction was aborted; the runtime restarts from the committed offsets.
    #[error("transaction aborted")]
    TransactionAborted(#[source] BoxError),
    /// A handler panicked.
    #[error("handler panicked")]
    HandlerPanicked(#[source] tokio::task::JoinError),
    /// The polling thread could not be started or stopped unexpectedly.
    #[error("polling thread")]
    Poller(#[source] BoxError),
    /// The broker holds records of a partition beyond what the fetcher fetched, yet none arrived for `waited`.
    #[error("{topic}[{partition}] has {unfetched} records at the broker, yet none arrived for {waited:?}")]
    Stalled {
        /// The starved partition's topic.
        topic: String,
        /// The starved partition.
        partition: i32,
        /// Records at the broker beyond the fetch position, at the last measurement.
        unfetched: i64,
        /// How long nothing arrived.
        waited: std::time::Duration,
    },
}

impl ConsumerError {
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let context = context.into();
        move |source| Self::Kafka { context, source }
    }

    /// True when rebuilding the clients and resuming from the committed offsets may succeed.
    pub fn is_restartable(&self) -> bool {
        matches!(
            self,
            Self::TransactionAborted(_) | Self::Poller(_) | Self::Stalled { .. }
        )
    }
}
