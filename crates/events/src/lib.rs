//! Event contracts: the Avro schemas of every event (`schemas/<topic>/v<N>.avsc`), their Rust types, and
//! the codec that writes and reads them in the Confluent wire format (magic byte 0, 4-byte big-endian schema
//! id, Avro body) against a schema registry.

pub mod check;
mod codec;
mod lifecycle;
mod schemas;
mod types;

pub use codec::{AvroCodec, CONTENT_TYPE, CodecError, DecodeError};
pub use lifecycle::{Decoded, Envelope, Lifecycle, LifecycleEvent, LifecycleTopic, LifecycleTopics};
pub use schemas::{SchemaSet, committed_schemas, schema_versions};
pub use types::*;

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
    /// A captured payment was refunded (its order rejected or cancelled).
    pub const PAYMENT_REFUNDED: &str = "payment.refunded";
    /// An order joined with its payment and reference data.
    pub const ORDER_ENRICHED: &str = "order.enriched";
    /// No payment arrived for an order within the join window (reported by enrichment).
    pub const ORDER_UNPAID: &str = "order.unpaid";
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
    /// The registry id of the writer schema (also in the body's first five bytes).
    pub const SCHEMA_ID: &str = "schema-id";
    /// W3C trace context of the request that caused the event.
    pub const TRACEPARENT: &str = "traceparent";
}

/// An event: a record with the common envelope fields, published on one topic.
pub trait Event: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// Base topic (without deployment prefix); also names the schema folder.
    const TOPIC: &'static str;
    /// The event type (the topic's name for every Orderflow event).
    const TYPE: &'static str;
    /// Unique id of this event (UUIDv7 text).
    fn event_id(&self) -> &str;
    /// The order it is about (UUID text); the record key.
    fn order_id(&self) -> &str;
    /// The order version it moves the order to.
    fn order_version(&self) -> i64;
    /// When it happened, microseconds since the Unix epoch (UTC).
    fn occurred_at(&self) -> i64;
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
    /// Encoded body (Confluent wire format).
    pub payload: Vec<u8>,
    /// Headers to send with the record (names are the constants of [`headers`]).
    pub headers: Vec<(&'static str, Vec<u8>)>,
}
