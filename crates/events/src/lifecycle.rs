//! The order lifecycle as one type: every topic that carries an event about an order, and the decoding of
//! its records into typed events with a parsed envelope.
//!
//! Roles read records by topic. [`LifecycleTopic`] names each lifecycle topic once; [`Lifecycle::decode`]
//! turns a record of one of them into the matching event, and every `match` over these types is exhaustive,
//! so a topic added here fails to compile until every role that reads the lifecycle says what it does with
//! it. The envelope's strings are parsed at this edge ([`Envelope`]): past it, roles hold an [`OrderId`], an
//! [`EventId`] and a UTC time, never text to parse again.

use chrono::{DateTime, Utc};
use orderflow_domain::{EventId, OrderId, OrderStatus};

use crate::{
    AvroCodec, DecodeError, Event, InventoryAllocated, InventoryRejected, OrderCancelled, OrderCreated,
    OrderEnriched, OrderUnpaid, PaymentFailed, PaymentReceived, PaymentRefunded, topics,
};

/// A topic of the order lifecycle: one event type each, keyed by order id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleTopic {
    /// `order.created`.
    OrderCreated,
    /// `order.cancelled`.
    OrderCancelled,
    /// `payment.received`.
    PaymentReceived,
    /// `payment.failed`.
    PaymentFailed,
    /// `payment.refunded`.
    PaymentRefunded,
    /// `order.enriched`.
    OrderEnriched,
    /// `order.unpaid`.
    OrderUnpaid,
    /// `inventory.allocated`.
    InventoryAllocated,
    /// `inventory.rejected`.
    InventoryRejected,
}

impl LifecycleTopic {
    /// Every lifecycle topic.
    pub const ALL: [LifecycleTopic; 9] = [
        Self::OrderCreated,
        Self::OrderCancelled,
        Self::PaymentReceived,
        Self::PaymentFailed,
        Self::PaymentRefunded,
        Self::OrderEnriched,
        Self::OrderUnpaid,
        Self::InventoryAllocated,
        Self::InventoryRejected,
    ];

    /// The topics whose events move an order's status (see [`LifecycleTopic::status`]).
    pub const STATUS_CHANGES: [LifecycleTopic; 6] = [
        Self::OrderCreated,
        Self::PaymentReceived,
        Self::PaymentFailed,
        Self::InventoryAllocated,
        Self::InventoryRejected,
        Self::OrderCancelled,
    ];

    /// The base topic name (without a deployment prefix).
    pub fn name(self) -> &'static str {
        match self {
            Self::OrderCreated => topics::ORDER_CREATED,
            Self::OrderCancelled => topics::ORDER_CANCELLED,
            Self::PaymentReceived => topics::PAYMENT_RECEIVED,
            Self::PaymentFailed => topics::PAYMENT_FAILED,
            Self::PaymentRefunded => topics::PAYMENT_REFUNDED,
            Self::OrderEnriched => topics::ORDER_ENRICHED,
            Self::OrderUnpaid => topics::ORDER_UNPAID,
            Self::InventoryAllocated => topics::INVENTORY_ALLOCATED,
            Self::InventoryRejected => topics::INVENTORY_REJECTED,
        }
    }

    /// The status an event on this topic moves its order to; `None` for the steps that report without
    /// moving the order (enrichment's join and its unpaid report, refunds).
    pub fn status(self) -> Option<OrderStatus> {
        match self {
            Self::OrderCreated => Some(OrderStatus::Created),
            Self::OrderCancelled => Some(OrderStatus::Cancelled),
            Self::PaymentReceived => Some(OrderStatus::Paid),
            Self::PaymentFailed => Some(OrderStatus::PaymentFailed),
            Self::InventoryAllocated => Some(OrderStatus::Allocated),
            Self::InventoryRejected => Some(OrderStatus::Rejected),
            Self::OrderEnriched | Self::OrderUnpaid | Self::PaymentRefunded => None,
        }
    }
}

/// The lifecycle topics one consumer reads, under a deployment's full topic names: maps a record's topic back
/// to its [`LifecycleTopic`].
#[derive(Debug, Clone)]
pub struct LifecycleTopics {
    names: Vec<(String, LifecycleTopic)>,
}

impl LifecycleTopics {
    /// `topics`, each named `full_name(base name)` (the deployment's prefix applied).
    pub fn new(topics: &[LifecycleTopic], full_name: impl Fn(&str) -> String) -> Self {
        Self {
            names: topics.iter().map(|t| (full_name(t.name()), *t)).collect(),
        }
    }

    /// The full topic names, for a subscription.
    pub fn names(&self) -> Vec<String> {
        self.names.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The lifecycle topic with this full name, when it is one of these.
    pub fn get(&self, full_name: &str) -> Option<LifecycleTopic> {
        self.names
            .iter()
            .find(|(name, _)| name == full_name)
            .map(|(_, topic)| *topic)
    }

    /// The full name of `topic`, when it is one of these.
    pub fn name(&self, topic: LifecycleTopic) -> Option<&str> {
        self.names
            .iter()
            .find(|(_, t)| *t == topic)
            .map(|(name, _)| name.as_str())
    }
}

/// The envelope every lifecycle event carries, parsed: which event, about which order, at which version, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// The event's id.
    pub event_id: EventId,
    /// The order it is about.
    pub order_id: OrderId,
    /// The order version the event moves the order to.
    pub version: i64,
    /// When it happened (microsecond precision).
    pub at: DateTime<Utc>,
}

impl Envelope {
    /// The envelope of a new event (a fresh event id) about `order_id` at `version`, happening at `at`.
    pub fn new(order_id: OrderId, version: i64, at: DateTime<Utc>) -> Self {
        Self {
            event_id: EventId::new(),
            order_id,
            version,
            at,
        }
    }

    /// Parses the envelope fields of `event`; fails on an id that is not a UUID or a time out of range.
    pub fn parse<E: Event>(event: &E) -> Result<Self, DecodeError> {
        let invalid =
            |reason: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| DecodeError::Invalid {
                event_type: E::TYPE,
                reason,
                source,
            };
        let event_id = uuid::Uuid::try_parse(event.event_id())
            .map(EventId::from_uuid)
            .map_err(|e| invalid(format!("event id {:?}", event.event_id()), Some(e.into())))?;
        let order_id = event
            .order_id()
            .parse::<OrderId>()
            .map_err(|e| invalid(format!("order id {:?}", event.order_id()), Some(e.into())))?;
        let at = DateTime::from_timestamp_micros(event.occurred_at()).ok_or_else(|| {
            invalid(
                format!("occurred_at {} is out of range", event.occurred_at()),
                None,
            )
        })?;
        Ok(Self {
            event_id,
            order_id,
            version: event.order_version(),
            at,
        })
    }

    /// The event id as the events' `event_id` field holds it.
    pub fn event_id_text(&self) -> String {
        self.event_id.as_uuid().to_string()
    }

    /// The order id as the events' `order_id` field holds it.
    pub fn order_id_text(&self) -> String {
        self.order_id.to_string()
    }

    /// The time as the events' `occurred_at` field holds it (microseconds since the epoch).
    pub fn occurred_at_micros(&self) -> i64 {
        self.at.timestamp_micros()
    }
}

/// A decoded lifecycle event, one variant per [`LifecycleTopic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// An order was accepted.
    OrderCreated(OrderCreated),
    /// An order was cancelled.
    OrderCancelled(OrderCancelled),
    /// A payment was captured.
    PaymentReceived(PaymentReceived),
    /// A payment failed or was declined.
    PaymentFailed(PaymentFailed),
    /// A captured payment was refunded.
    PaymentRefunded(PaymentRefunded),
    /// An order was joined with its payment.
    OrderEnriched(OrderEnriched),
    /// No payment came within the join window.
    OrderUnpaid(OrderUnpaid),
    /// Stock was reserved.
    InventoryAllocated(InventoryAllocated),
    /// Stock could not be reserved.
    InventoryRejected(InventoryRejected),
}

/// A lifecycle record decoded: its parsed envelope and its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// The parsed envelope.
    pub envelope: Envelope,
    /// The event.
    pub event: LifecycleEvent,
}

/// A record of one known event type decoded: its parsed envelope and its event (for a consumer of a single
/// topic; [`Lifecycle`] reads several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<E> {
    /// The parsed envelope.
    pub envelope: Envelope,
    /// The event.
    pub event: E,
}

impl<E: Event> Decoded<E> {
    /// Decodes `payload` (wire format) as `E` and parses its envelope.
    pub async fn decode(codec: &AvroCodec, payload: &[u8]) -> Result<Self, DecodeError> {
        let event = codec.decode::<E>(payload).await?;
        Ok(Self {
            envelope: Envelope::parse(&event)?,
            event,
        })
    }
}

/// A decoded event as its [`LifecycleEvent`] variant.
fn wrap<E>(decoded: Decoded<E>, variant: fn(E) -> LifecycleEvent) -> (Envelope, LifecycleEvent) {
    (decoded.envelope, variant(decoded.event))
}

impl Lifecycle {
    /// Decodes a record of `topic` (wire-format `payload`) into its event, with the envelope parsed.
    pub async fn decode(
        codec: &AvroCodec,
        topic: LifecycleTopic,
        payload: &[u8],
    ) -> Result<Self, DecodeError> {
        use LifecycleEvent as L;
        let (envelope, event) = match topic {
            LifecycleTopic::OrderCreated => wrap(Decoded::decode(codec, payload).await?, L::OrderCreated),
            LifecycleTopic::OrderCancelled => wrap(Decoded::decode(codec, payload).await?, L::OrderCancelled),
            LifecycleTopic::PaymentReceived => {
                wrap(Decoded::decode(codec, payload).await?, L::PaymentReceived)
            }
            LifecycleTopic::PaymentFailed => wrap(Decoded::decode(codec, payload).await?, L::PaymentFailed),
            LifecycleTopic::PaymentRefunded => {
                wrap(Decoded::decode(codec, payload).await?, L::PaymentRefunded)
            }
            LifecycleTopic::OrderEnriched => wrap(Decoded::decode(codec, payload).await?, L::OrderEnriched),
            LifecycleTopic::OrderUnpaid => wrap(Decoded::decode(codec, payload).await?, L::OrderUnpaid),
            LifecycleTopic::InventoryAllocated => {
                wrap(Decoded::decode(codec, payload).await?, L::InventoryAllocated)
            }
            LifecycleTopic::InventoryRejected => {
                wrap(Decoded::decode(codec, payload).await?, L::InventoryRejected)
            }
        };
        Ok(Self { envelope, event })
    }

    /// The topic the event belongs on.
    pub fn topic(&self) -> LifecycleTopic {
        match &self.event {
            LifecycleEvent::OrderCreated(_) => LifecycleTopic::OrderCreated,
            LifecycleEvent::OrderCancelled(_) => LifecycleTopic::OrderCancelled,
            LifecycleEvent::PaymentReceived(_) => LifecycleTopic::PaymentReceived,
            LifecycleEvent::PaymentFailed(_) => LifecycleTopic::PaymentFailed,
            LifecycleEvent::PaymentRefunded(_) => LifecycleTopic::PaymentRefunded,
            LifecycleEvent::OrderEnriched(_) => LifecycleTopic::OrderEnriched,
            LifecycleEvent::OrderUnpaid(_) => LifecycleTopic::OrderUnpaid,
            LifecycleEvent::InventoryAllocated(_) => LifecycleTopic::InventoryAllocated,
            LifecycleEvent::InventoryRejected(_) => LifecycleTopic::InventoryRejected,
        }
    }

    /// The status the event moves its order to, when it moves it (see [`LifecycleTopic::status`]).
    pub fn status(&self) -> Option<OrderStatus> {
        self.topic().status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_a_distinct_name_and_the_status_changes_are_exactly_the_topics_with_a_status() {
        let mut names: Vec<&str> = LifecycleTopic::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), LifecycleTopic::ALL.len());
        for topic in LifecycleTopic::ALL {
            assert_eq!(
                LifecycleTopic::STATUS_CHANGES.contains(&topic),
                topic.status().is_some(),
                "{topic:?}"
            );
        }
    }

    #[test]
    fn full_names_map_back_to_their_topics_and_nothing_else() {
        let topics = LifecycleTopics::new(&LifecycleTopic::STATUS_CHANGES, |t| format!("prod.{t}"));
        assert_eq!(
            topics.get("prod.payment.failed"),
            Some(LifecycleTopic::PaymentFailed)
        );
        assert_eq!(topics.get("payment.failed"), None);
        assert_eq!(topics.get("prod.order.enriched"), None);
        assert_eq!(
            topics.name(LifecycleTopic::OrderCreated),
            Some("prod.order.created")
        );
        assert_eq!(topics.names().len(), 6);
    }

    #[test]
    fn an_envelope_with_a_bad_order_id_is_refused_at_the_edge() {
        let good = Envelope::new(OrderId::new(), 2, Utc::now());
        let mut event = PaymentFailed {
            event_id: good.event_id_text(),
            event_type: PaymentFailed::TYPE.into(),
            order_id: good.order_id_text(),
            order_version: good.version,
            occurred_at: good.occurred_at_micros(),
            payment_id: "p".into(),
            amount_minor: 1,
            currency: "EUR".into(),
            reason: "declined".into(),
        };
        let parsed = Envelope::parse(&event).map_err(|e| e.to_string());
        assert_eq!(parsed.map(|e| (e.order_id, e.version)), Ok((good.order_id, 2)));
        event.order_id = "not-a-uuid".into();
        let refused = Envelope::parse(&event).map(|_| ()).map_err(|e| e.to_string());
        assert!(
            matches!(&refused, Err(m) if m.contains("order id")),
            "{refused:?}"
        );
    }
}
