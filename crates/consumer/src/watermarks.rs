//! Reading a partition's watermarks the way operator commands need it: patiently, since a topic created a
//! moment ago, or a partition whose leader just moved, answers `NotLeaderForPartition` or
//! `LeaderNotAvailable` for a few seconds before it settles.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;

/// How long a retriable answer is asked again before it is given up as the answer.
const PATIENCE: Duration = Duration::from_secs(10);

/// The low and high watermarks of `topic`/`partition`, asking again while the broker answers with an
/// error that passes by itself (no leader yet, a leader that moved, metadata not yet propagated).
pub(crate) fn fetch<C, X>(
    client: &C,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)>
where
    C: Consumer<X>,
    X: ConsumerContext,
{
    let give_up = Instant::now() + PATIENCE;
    loop {
        match client.fetch_watermarks(topic, partition, timeout) {
            Err(e) if passes_by_itself(&e) && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(200));
            }
            answer => return answer,
        }
    }
}

/// Whether `error` is one a moment's wait cures.
fn passes_by_itself(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moving_leader_is_waited_for_and_a_refusal_is_answered_at_once() {
        for code in [
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(passes_by_itself(&KafkaError::MetadataFetch(code)), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::InvalidArgument,
        ] {
            assert!(!passes_by_itself(&KafkaError::MetadataFetch(code)), "{code:?}");
        }
    }
}
