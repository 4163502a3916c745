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

/// Name of retry topic `level` (from 1) of `topic` for consumer group `group`: `<topic>.<group>.retry.<level>`.
/// Each group has its own, so a record one group retries is never seen again by another.
pub fn retry_topic(topic: &str, group: &str, level: usize) -> String {
    format!("{topic}.{group}.retry.{level}")
}

/// Name of the dead-letter topic of `topic` for consumer group `group`: `<topic>.<group>.dlq`.
pub fn dlq_topic(topic: &str, group: &str) -> String {
    format!("{topic}.{group}.dlq")
}

/// Whether `topic` is a dead-letter topic (its name ends in `.dlq`).
pub fn is_dlq(topic: &str) -> bool {
    topic.ends_with(".dlq")
}

/// Splits a retry topic's name into its source topic and level (`orders.payments.retry.2` gives `orders`
/// and 2). The group is taken to be the last dot-separated part before `.retry.`.
fn split_retry(topic: &str) -> Option<(&str, usize)> {
    let (base, level) = topic.rsplit_once(".retry.")?;
    let level = level.parse().ok()?;
    let (source, _group) = base.rsplit_once('.')?;
    Some((source, level))
}

/// The retry level of a retry topic's name (`orders.payments.retry.2` gives 2), or 0 for any other topic.
pub fn retry_level(topic: &str) -> usize {
    topic
        .rsplit_once(".retry.")
        .and_then(|(_, level)| level.parse().ok())
        .unwrap_or(0)
}

/// The topic a retry topic retries (`orders.payments.retry.2` gives `orders`); any other topic is its own
/// source. Records the runtime routes carry their source in the `original-topic` header, which is what
/// [`Record::source_topic`](crate::Record::source_topic) reads first; this name-based fallback takes the
/// group to be the last dot-separated part, so it is only right for group names without dots.
pub fn source_of(topic: &str) -> &str {
    split_retry(topic).map_or(topic, |(base, _)| base)
}

/// The retry topic a dead letter of dead-letter topic `dlq`, first published to `original`, is replayed into:
/// its group's first retry topic (`orders.payments.dlq` of `orders` gives `orders.payments.retry.1`), or
/// `None` when `dlq` is not `<original>.<group>.dlq` (a dead-letter topic of the older shared naming,
/// `<original>.dlq`, whose retry topics no consumer reads any more).
pub fn replay_topic(dlq: &str, original: &str) -> Option<String> {
    let group = dlq
        .strip_prefix(original)?
        .strip_prefix('.')?
        .strip_suffix(".dlq")?;
    (!group.is_empty()).then(|| retry_topic(original, group, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_names_carry_the_group_and_parse_back() {
        let retry = retry_topic("p.order.created", "orderflow-payments", 2);
        assert_eq!(retry, "p.order.created.orderflow-payments.retry.2");
        assert_eq!(retry_level(&retry), 2);
        assert_eq!(source_of(&retry), "p.order.created");
        assert_eq!(retry_level("p.order.created"), 0);
        assert_eq!(source_of("p.order.created"), "p.order.created");
        let dlq = dlq_topic("p.order.created", "orderflow-payments");
        assert!(is_dlq(&dlq));
        assert_eq!(
            replay_topic(&dlq, "p.order.created").as_deref(),
            Some("p.order.created.orderflow-payments.retry.1")
        );
        // The older shared naming has no group: its letters go back to their original topic.
        assert_eq!(replay_topic("p.order.created.dlq", "p.order.created"), None);
        assert_eq!(replay_topic("p.order.created", "p.order.created"), None);
    }
}
