//! Rust types of every event, field for field as in `schemas/<topic>/v<latest>.avsc`.
//!
//! Every event starts with the same envelope: `event_id` (UUIDv7), `event_type`, `order_id`,
//! `order_version` and `occurred_at` (microseconds since the Unix epoch). Money is integer minor units.

use orderflow_domain::{Currency, CustomerId, MinorUnits, Order, OrderItem, OrderStatus};
use serde::{Deserialize, Serialize};

use crate::{DecodeError, Envelope, Event};

macro_rules! event {
    ($(#[$doc:meta])* $name:ident = $topic:literal { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            /// Unique id of this event (UUIDv7).
            pub event_id: String,
            /// The event type.
            pub event_type: String,
            /// The order this event is about.
            pub order_id: String,
            /// Version of the order this event moves it to.
            pub order_version: i64,
            /// When it happened, microseconds since the Unix epoch (UTC).
            pub occurred_at: i64,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl Event for $name {
            const TOPIC: &'static str = $topic;
            const TYPE: &'static str = $topic;
            fn event_id(&self) -> &str {
                &self.event_id
            }
            fn order_id(&self) -> &str {
                &self.order_id
            }
            fn order_version(&self) -> i64 {
                self.order_version
            }
            fn occurred_at(&self) -> i64 {
                self.occurred_at
            }
        }
    };
}

/// One line of an order in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventItem {
    /// Product.
    pub sku: String,
    /// Units.
    pub quantity: i32,
    /// Price of one unit, in minor units.
    pub unit_price_minor: i64,
}

/// One allocated line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedLine {
    /// Product.
    pub sku: String,
    /// Units reserved.
    pub quantity: i32,
}

/// One status change in the read model's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The status entered.
    pub status: String,
    /// When, microseconds since the epoch.
    pub at: i64,
}

event! {
    /// `order.created`: an order was accepted and committed.
    OrderCreated = "order.created" {
        /// Who placed it.
        customer_id: String,
        /// ISO 4217 code.
        currency: String,
        /// The lines.
        items: Vec<EventItem>,
        /// Sum over the lines, in minor units.
        total_minor: i64,
    }
}

event! {
    /// `order.cancelled`: an order was cancelled by its customer.
    OrderCancelled = "order.cancelled" {
        /// Status before the cancellation.
        previous_status: String,
        /// Why, when given.
        reason: Option<String>,
    }
}

event! {
    /// `payment.received`: a payment was captured.
    PaymentReceived = "payment.received" {
        /// The provider's payment id.
        payment_id: String,
        /// Amount captured, in minor units.
        amount_minor: i64,
        /// ISO 4217 code.
        currency: String,
    }
}

event! {
    /// `payment.failed`: a payment was declined or failed.
    PaymentFailed = "payment.failed" {
        /// The provider's payment id.
        payment_id: String,
        /// Amount attempted, in minor units.
        amount_minor: i64,
        /// ISO 4217 code.
        currency: String,
        /// Why it failed.
        reason: String,
    }
}

event! {
    /// `payment.refunded`: a captured payment was refunded in full, its order rejected or cancelled.
    PaymentRefunded = "payment.refunded" {
        /// The provider's id of the payment refunded.
        payment_id: String,
        /// The provider's id of the refund.
        refund_id: String,
        /// Amount refunded, in minor units.
        amount_minor: i64,
        /// ISO 4217 code.
        currency: String,
        /// Why: `rejected` or `cancelled`.
        reason: String,
    }
}

event! {
    /// `order.enriched`: a paid order joined with its payment and reference data.
    OrderEnriched = "order.enriched" {
        /// Who placed it.
        customer_id: String,
        /// The customer's tier from reference data.
        customer_tier: String,
        /// ISO 4217 code.
        currency: String,
        /// The lines.
        items: Vec<EventItem>,
        /// Sum over the lines, in minor units.
        total_minor: i64,
        /// The payment joined.
        payment_id: String,
        /// Amount paid, in minor units.
        paid_minor: i64,
    }
}

event! {
    /// `order.unpaid`: no payment arrived for an order within the enrichment join window and its grace.
    OrderUnpaid = "order.unpaid" {
        /// Who placed it.
        customer_id: String,
        /// ISO 4217 code.
        currency: String,
        /// Order total, in minor units.
        total_minor: i64,
        /// How long the join waited (window plus grace), in milliseconds.
        waited_ms: i64,
    }
}

event! {
    /// `inventory.allocated`: stock was reserved for every line.
    InventoryAllocated = "inventory.allocated" {
        /// What was reserved.
        items: Vec<AllocatedLine>,
    }
}

event! {
    /// `inventory.rejected`: stock could not be reserved.
    InventoryRejected = "inventory.rejected" {
        /// Why.
        reason: String,
        /// The line that could not be served, when one.
        sku: Option<String>,
    }
}

event! {
    /// `order.state`: the latest state of an order (compacted topic).
    OrderState = "order.state" {
        /// Who placed it.
        customer_id: String,
        /// Current status.
        status: String,
        /// ISO 4217 code.
        currency: String,
        /// Order total, in minor units.
        total_minor: i64,
    }
}

event! {
    /// `order.read-model`: the read model of an order as the API serves it.
    OrderReadModel = "order.read-model" {
        /// Who placed it.
        customer_id: String,
        /// Current status.
        status: String,
        /// ISO 4217 code.
        currency: String,
        /// The lines.
        items: Vec<EventItem>,
        /// Order total, in minor units.
        total_minor: i64,
        /// When the order was created, microseconds since the epoch.
        created_at: i64,
        /// Every status the order went through.
        history: Vec<StatusChange>,
    }
}

impl OrderCancelled {
    /// Describes the cancellation that made `cancelled` (its new version) out of an order in `previous`.
    pub fn from_order(cancelled: &Order, previous: OrderStatus, reason: Option<String>) -> Self {
        let envelope = Envelope::new(cancelled.id, cancelled.version, cancelled.updated_at);
        Self {
            event_id: envelope.event_id_text(),
            event_type: Self::TYPE.into(),
            order_id: envelope.order_id_text(),
            order_version: envelope.version,
            occurred_at: envelope.occurred_at_micros(),
            previous_status: previous.as_str().to_owned(),
            reason,
        }
    }
}

impl OrderCreated {
    /// Describes the creation of `order`.
    pub fn from_order(order: &Order) -> Self {
        let envelope = Envelope::new(order.id, order.version, order.created_at);
        Self {
            event_id: envelope.event_id_text(),
            event_type: Self::TYPE.into(),
            order_id: envelope.order_id_text(),
            order_version: envelope.version,
            occurred_at: envelope.occurred_at_micros(),
            customer_id: order.customer_id.to_string(),
            currency: order.currency.code().to_owned(),
            items: order
                .items
                .iter()
                .map(|i| EventItem {
                    sku: i.sku.to_string(),
                    quantity: i.quantity.get() as i32,
                    unit_price_minor: i.unit_price_minor.get(),
                })
                .collect(),
            total_minor: order.total_minor.get(),
        }
    }

    /// The order as this event describes it (status CREATED); fails on values no valid order has.
    pub fn to_order(&self) -> Result<Order, DecodeError> {
        let invalid = |reason: String| DecodeError::Invalid {
            event_type: Self::TYPE,
            reason,
            source: None,
        };
        let items = self
            .items
            .iter()
            .map(|i| {
                OrderItem::from_parts(&i.sku, i64::from(i.quantity), i.unit_price_minor).map_err(&invalid)
            })
            .collect::<Result<_, DecodeError>>()?;
        let envelope = Envelope::parse(self)?;
        Ok(Order {
            id: envelope.order_id,
            customer_id: CustomerId::parse(&self.customer_id).map_err(&invalid)?,
            currency: Currency::parse(&self.currency).map_err(&invalid)?,
            status: OrderStatus::Created,
            version: envelope.version,
            items,
            total_minor: MinorUnits::try_from(self.total_minor).map_err(&invalid)?,
            created_at: envelope.at,
            updated_at: envelope.at,
        })
    }
}
