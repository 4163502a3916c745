//! `order.created`: an order was accepted and committed.

use chrono::{DateTime, Utc};
use orderflow_domain::{EventId, Order};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One line of the created order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreatedItem {
    /// Product.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// Unit price in minor units.
    pub unit_price_minor: i64,
}

/// The `order.created` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// Unique id of this event (UUIDv7).
    pub event_id: Uuid,
    /// Always `order.created`.
    pub event_type: String,
    /// The order.
    pub order_id: Uuid,
    /// Version of the order this event moves it to (1).
    pub order_version: i64,
    /// When the order was accepted.
    pub occurred_at: DateTime<Utc>,
    /// Who placed it.
    pub customer_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The lines.
    pub items: Vec<OrderCreatedItem>,
    /// Sum over the lines in minor units.
    pub total_minor: i64,
}

impl OrderCreated {
    /// The event type name.
    pub const TYPE: &'static str = "order.created";

    /// Describes the creation of `order`.
    pub fn from_order(order: &Order) -> Self {
        Self {
            event_id: EventId::new().as_uuid(),
            event_type: Self::TYPE.to_owned(),
            order_id: order.id.as_uuid(),
            order_version: order.version,
            occurred_at: order.created_at,
            customer_id: order.customer_id.to_string(),
            currency: order.currency.code().to_owned(),
            items: order
                .items
                .iter()
                .map(|i| OrderCreatedItem {
                    sku: i.sku.to_string(),
                    quantity: i.quantity.get(),
                    unit_price_minor: i.unit_price_minor.get(),
                })
                .collect(),
            total_minor: order.total_minor.get(),
        }
    }
}
