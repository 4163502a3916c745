//! Event contracts: what Orderflow publishes, on which topic, with which headers.
//!
//! Encoding is provisional JSON for now; the Avro + schema-registry contracts replace [`EventCodec`]'s
//! body format without changing the types or the headers.

mod codec;
mod order_created;

pub use codec::{DecodeError, EventCodec, JsonCodec};
pub use order_created::{OrderCreated, OrderCreatedItem};

/// Base topic names from the blueprint's topic table (a deployment may add a prefix).
pub mod topics {
    /// An order was accepted.
    pub const ORDER_CREATED: &str = "order.created";
    /// An order was cancelled.
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    /// A payment was captured.
    pub const PAYMENT_RECEIVED: &str = "payment.received";
    /// A payment failed or was declined.
    pub const PAYMENT_FAILED: &str = "payment.failed";
    /// An order joined with its payment and reference data.
    pub const ORDER_ENRICHED: &str = "order.enriched";
    /// Stock was reserved for an order.
    pub const INVENTORY_ALLOCATED: &str = "inventory.allocated";
    /// Stock could not be reserved.
    pub const INVENTORY_REJECTED: &str = "inventory.rejected";
    /// Read-model snapshots for external consumers.
    pub const ORDER_READ_MODEL: &str = "order.read-model";
    /// Latest state per order (compacted).
    pub const ORDER_STATE: &str = "order.state";
}

/// Kafka header names carried by every record.
pub mod headers {
    /// The event's UUIDv7.
    pub const EVENT_ID: &str = "event-id";
    /// The event type, e.g. `order.created`.
    pub const EVENT_TYPE: &str = "event-type";
    /// How the body is encoded.
    pub const CONTENT_TYPE: &str = "content-type";
    /// W3C trace context of the request that caused the event.
    pub const TRACEPARENT: &str = "traceparent";
}

/// An encoded event ready to be stored in the outbox and published unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The event's id.
    pub event_id: uuid::Uuid,
    /// Base topic name (without deployment prefix).
    pub topic: &'static str,
    /// Record key: the order id, so all events of one order share a partition.
    pub key: String,
    /// Event type, e.g. `order.created`.
    pub event_type: &'static str,
    /// Encoded body.
    pub payload: Vec<u8>,
    /// Headers to send with the record.
    pub headers: Vec<(String, Vec<u8>)>,
}
