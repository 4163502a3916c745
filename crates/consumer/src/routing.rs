//! Where failed records go: the consumer group's own retry topics `<topic>.<group>.retry.<n>` and its
//! dead-letter topic `<topic>.<group>.dlq` (their names and headers live in the leaf module `naming`, which
//! records use too).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::handler::HandlerError;
use crate::record::{Output, Record};
use crate::settings::RetryPolicy;

pub use crate::naming::{dlq_topic, headers, is_dlq, replay_topic, retry_level, retry_topic};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// How long until a retried record is due (zero for fresh records and records already due).
pub(crate) fn wait_for(record: &Record) -> Duration {
    record
        .header_str(headers::RETRY_DUE_AT)
        .and_then(|v| v.parse::<i64>().ok())
        .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64))
        .unwrap_or_default()
}

/// Where a record that failed `attempts` times in total goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Retry { topic: String, delay: Duration },
    DeadLetter { topic: String },
}

pub(crate) fn route(record: &Record, error: &HandlerError, policy: &RetryPolicy, group: &str) -> Route {
    let source = record.source_topic();
    let next_level = retry_level(&record.topic) + 1;
    match (error.kind, policy.topic_delays.get(next_level - 1)) {
        (crate::ErrorKind::Transient, Some(delay)) => Route::Retry {
            topic: retry_topic(source, group, next_level),
            delay: *delay,
        },
        _ => Route::DeadLetter {
            topic: dlq_topic(source, group),
        },
    }
}

/// The record to publish for `record` on `route`: same key, value and headers, plus where it came from and why.
pub(crate) fn routed_output(
    record: &Record,
    route: &Route,
    error: &HandlerError,
    attempts: u32,
    group: &str,
) -> Output {
    let (topic, partition, offset) = record.source_position();
    let timestamp = record
        .header_str(headers::ORIGINAL_TIMESTAMP)
        .map(str::to_owned)
        .or_else(|| record.timestamp_ms.map(|t| t.to_string()))
        .unwrap_or_default();
    let mut out_headers: Vec<(String, Vec<u8>)> = record
        .headers
        .iter()
        .filter(|(name, _)| !headers::ROUTING.contains(&name.as_str()))
        .cloned()
        .collect();
    let mut add = |name: &str, value: String| out_headers.push((name.to_owned(), value.into_bytes()));
    add(headers::ORIGINAL_TOPIC, topic);
    add(headers::ORIGINAL_PARTITION, partition.to_string());
    add(headers::ORIGINAL_OFFSET, offset.to_string());
    add(headers::ORIGINAL_TIMESTAMP, timestamp);
    add(headers::CONSUMER_GROUP, group.to_owned());
    add(headers::ERROR_KIND, error.kind.as_str().to_owned());
    add(headers::ERROR_MESSAGE, error.message());
    add(headers::ATTEMPTS, attempts.to_string());
    let target = match route {
        Route::Retry { topic, delay } => {
            add(
                headers::RETRY_DUE_AT,
                (now_ms() + delay.as_millis() as i64).to_string(),
            );
            topic.clone()
        }
        Route::DeadLetter { topic } => topic.clone(),
    };
    Output {
        topic: target,
        key: record.key.clone(),
        payload: record.payload.clone().unwrap_or_default(),
        headers: out_headers,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn record(topic: &str) -> Record {
        Record {
            topic: Arc::from(topic),
            partition: 3,
            offset: 42,
            timestamp_ms: Some(1_000),
            key: Some(b"k".to_vec()),
            payload: Some(b"v".to_vec()),
            headers: vec![("event-id".into(), b"e1".to_vec())],
        }
    }

    #[test]
    fn transient_failures_climb_the_retry_topics_then_dead_letter() {
        let policy = RetryPolicy {
            topic_delays: vec![Duration::from_secs(1), Duration::from_secs(5)],
            ..RetryPolicy::default()
        };
        let error = HandlerError::transient("db down");
        let first = record("orders");
        let Route::Retry { topic, .. } = route(&first, &error, &policy, "g") else {
            unreachable!("a fresh transient failure goes to retry level 1");
        };
        assert_eq!(topic, "orders.g.retry.1");
        let out = routed_output(&first, &route(&first, &error, &policy, "g"), &error, 3, "g");
        let mut second = record("orders.g.retry.1");
        second.headers = out.headers.clone();
        second.offset = 7;
        assert_eq!(second.source_position(), ("orders".into(), 3, 42));
        assert_eq!(second.event_id(), "e1");
        assert_eq!(
            route(&second, &error, &policy, "g"),
            Route::Retry {
                topic: "orders.g.retry.2".into(),
                delay: Duration::from_secs(5)
            }
        );
        let third = record("orders.g.retry.2");
        assert_eq!(
            route(&third, &error, &policy, "g"),
            Route::DeadLetter {
                topic: "orders.g.dlq".into()
            }
        );
    }

    #[test]
    fn permanent_failures_dead_letter_at_once_with_their_origin() {
        let error = HandlerError::permanent("bad avro");
        let rec = record("orders");
        let route = route(&rec, &error, &RetryPolicy::default(), "payments");
        let out = routed_output(&rec, &route, &error, 1, "payments");
        assert_eq!(out.topic, "orders.payments.dlq");
        let get = |name: &str| {
            out.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get(headers::ORIGINAL_TOPIC).as_deref(), Some("orders"));
        assert_eq!(get(headers::ORIGINAL_PARTITION).as_deref(), Some("3"));
        assert_eq!(get(headers::ORIGINAL_OFFSET).as_deref(), Some("42"));
        assert_eq!(get(headers::ORIGINAL_TIMESTAMP).as_deref(), Some("1000"));
        assert_eq!(get(headers::CONSUMER_GROUP).as_deref(), Some("payments"));
        assert_eq!(get(headers::ERROR_KIND).as_deref(), Some("permanent"));
        assert_eq!(get(headers::ERROR_MESSAGE).as_deref(), Some("bad avro"));
        assert_eq!(get(headers::ATTEMPTS).as_deref(), Some("1"));
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn backoff_grows_and_stays_under_its_bound() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            assert!(policy.backoff(10) <= Duration::from_millis(300));
        }
    }
}
