//! The projector role: keeps the read model current from the order lifecycle topics, on the consumer runtime.
//!
//! Each record's effect is a version-checked write, so re-delivered or out-of-order records never move an
//! order backwards; offsets are committed only after the effects are done. An undecodable record goes to the
//! dead-letter topic; a registry outage is retried.

use std::time::Duration;

use orderflow_consumer::{
    ConsumerRuntime, ConsumerSettings, Delivery, Handler, HandlerError, Output, Record,
};
use orderflow_events::{OrderCreated, topics};
use tokio_util::sync::CancellationToken;

use crate::{Backends, ProjectorSettings, RoleError, decode_error};

/// Writes each created order into the read model.
struct Projection {
    backends: Backends,
}

impl Handler for Projection {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        for record in batch {
            let payload = record.payload.as_deref().unwrap_or_default();
            let event = self
                .backends
                .codec
                .decode::<OrderCreated>(payload)
                .await
                .map_err(decode_error)?;
            let order = event.to_order().map_err(decode_error)?;
            // Version-checked: a re-delivered or late event never moves the cached order backwards. A Redis
            // outage is absorbed by the cache (reads fall back to the database), so it does not stall here.
            self.backends.cache.refresh(&order.id.to_string(), &order).await;
        }
        Ok(Vec::new())
    }
}

/// Consumes until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: ProjectorSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let topic = backends.bus.topic(topics::ORDER_CREATED);
    let group = backends.bus.group(&settings.group);
    let mut consumer = ConsumerSettings::new(group.clone(), vec![topic.clone()], Delivery::AtLeastOnce);
    consumer.drain_timeout = Duration::from_secs(5);
    consumer.close_timeout = Duration::from_secs(5);
    let runtime = ConsumerRuntime::new(backends.bus.clone(), consumer, Projection { backends });
    tracing::info!(topic, group, "projector consuming");
    runtime.run(shutdown).await?;
    Ok(())
}
