//! The projector role: keeps the read model current from the order lifecycle topics.
//!
//! Each record's effect is a version-checked write, so re-delivered or out-of-order records never move an
//! order backwards; an offset is stored for commit only after its effect is done.

use std::time::Duration;

use orderflow_events::{OrderCreated, topics};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use crate::{Backends, ProjectorSettings, RoleError};

/// Consumes until `shutdown` fires, then commits what is done and leaves the group (bounded).
pub async fn run(
    settings: ProjectorSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let consumer = backends.bus.consumer("orderflow-projector", &settings.group)?;
    let topic = backends.bus.topic(topics::ORDER_CREATED);
    consumer.subscribe(&[&topic])?;
    tracing::info!(topic, group = settings.group, "projector consuming");
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
        match message {
            Ok(message) => {
                if !apply(&backends, &message, &shutdown).await {
                    break;
                }
                if let Err(e) = consumer.store_offset_from_message(&message) {
                    tracing::warn!(error = %e, "projector: could not store the offset");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "projector: consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    close(consumer).await;
    Ok(())
}

/// Applies one record; retries read-model failures until they clear. Returns false if shut down first.
async fn apply(backends: &Backends, message: &BorrowedMessage<'_>, shutdown: &CancellationToken) -> bool {
    let payload = message.payload().unwrap_or_default();
    let mut backoff = Duration::from_millis(50);
    let order = loop {
        let decoded = backends.codec.decode::<OrderCreated>(payload).await;
        match decoded.and_then(|event| event.to_order()) {
            Ok(order) => break order,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in = ?backoff, "projector: cannot decode yet");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                // Undecodable records cannot become decodable by waiting: skip them, loudly.
                tracing::error!(error = %e, topic = message.topic(), partition = message.partition(),
                    offset = message.offset(), "projector: skipping an undecodable record");
                return true;
            }
        }
    };
    // Version-checked: a re-delivered or late event never moves the cached order backwards. A Redis outage
    // is absorbed by the cache (reads fall back to the database), so it does not stall the projector.
    backends.cache.refresh(&order.id.to_string(), &order).await;
    true
}

/// Commits stored offsets and drops the consumer off the runtime, giving up after a few seconds (dropping a
/// librdkafka consumer has been seen to hang).
async fn close(consumer: StreamConsumer) {
    let closing = tokio::task::spawn_blocking(move || {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "projector: final commit");
        }
        drop(consumer);
    });
    if tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .is_err()
    {
        tracing::warn!("projector: consumer did not close within 5 s");
    }
}
