//! What stops a consumer runtime.

use rdkafka::error::KafkaError;

/// Why a consumer runtime stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// A Kafka client call failed.
    #[error("{context}: {source}")]
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
    #[error("fenced by another instance: {0}")]
    Fenced(String),
    /// The open transaction was aborted; the runtime restarts from the committed offsets.
    #[error("transaction aborted: {0}")]
    TransactionAborted(String),
    /// A handler panicked.
    #[error("handler panicked: {0}")]
    HandlerPanicked(String),
    /// The polling thread could not be started or stopped unexpectedly.
    #[error("polling thread: {0}")]
    Poller(String),
}

impl ConsumerError {
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let context = context.into();
        move |source| Self::Kafka { context, source }
    }

    /// True when rebuilding the clients and resuming from the committed offsets may succeed.
    pub fn is_restartable(&self) -> bool {
        matches!(self, Self::TransactionAborted(_) | Self::Poller(_))
    }
}
