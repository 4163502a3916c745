//! The names the runtime gives: the headers it writes on retried and dead-lettered records, and the names of
//! retry and dead-letter topics. A leaf module: records, routing and the dead-letter tools depend on it, and
//! it on nothing of this crate.

/// Header names written on retried and dead-lettered records.
pub mod headers {
    /// Event identity set by Orderflow producers; used for deduplication.
    pub const EVENT_ID: &str = "event-id";
    /// Topic the record was first published to.
    pub const ORIGINAL_TOPIC: &str = "original-topic";
    /// Its partition there.
    pub const ORIGINAL_PARTITION: &str = "original-partition";
    /// Its offset there.
    pub const ORIGINAL_OFFSET: &str = "original-offset";
    /// Its timestamp there (milliseconds since the epoch).
    pub const ORIGINAL_TIMESTAMP: &str = "original-timestamp";
    /// The consumer group that gave up on it.
    pub const CONSUMER_GROUP: &str = "consumer-group";
    /// `transient` or `permanent`.
    pub const ERROR_KIND: &str = "error-kind";
    /// The last error message.
    pub const ERROR_MESSAGE: &str = "error-message";
    /// Attempts so far.
    pub const ATTEMPTS: &str = "attempts";
    /// When a retried record becomes due (milliseconds since the epoch).
    pub const RETRY_DUE_AT: &str = "retry-due-at";

    /// Every header the runtime adds; replay strips them.
    pub const ROUTING: &[&str] = &[
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        CONSUMER_GROUP,
        ERROR_KIND,
        ERROR_MESSAGE,
        ATTEMPTS,
        RETRY_DUE_AT,
    ];
}

/// Name of retry topic `level` (from 1) of `topic`.
pub fn retry_topic(topic: &str, level: usize) -> String {
    format!("{topic}.retry.{level}")
}

/// Name of the dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Splits a retry topic's name into its source topic and level (`orders.retry.2` gives `orders` and 2).
fn split_retry(topic: &str) -> Option<(&str, usize)> {
    let (base, level) = topic.rsplit_once(".retry.")?;
    Some((base, level.parse().ok()?))
}

/// The retry level of a retry topic's name (`orders.retry.2` gives 2), or 0 for any other topic.
pub fn retry_level(topic: &str) -> usize {
    split_retry(topic).map_or(0, |(_, level)| level)
}

/// The topic a retry topic retries (`orders.retry.2` gives `orders`); any other topic is its own source.
pub fn source_of(topic: &str) -> &str {
    split_retry(topic).map_or(topic, |(base, _)| base)
}
