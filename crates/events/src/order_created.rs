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

impl OrderCreated {
    /// The order as this event describes it (version 1, status CREATED); fails on values no valid order has.
    pub fn to_order(&self) -> Result<Order, crate::DecodeError> {
        use orderflow_domain::{
            Currency, CustomerId, MinorUnits, OrderId, OrderItem, OrderStatus, Quantity, Sku,
        };
        let invalid = |reason: String| crate::DecodeError::Invalid {
            event_type: Self::TYPE,
            reason,
        };
        let items = self
            .items
            .iter()
            .map(|i| {
                Ok(OrderItem {
                    sku: Sku::parse(&i.sku).map_err(&invalid)?,
                    quantity: Quantity::parse(i64::from(i.quantity)).map_err(&invalid)?,
                    unit_price_minor: MinorUnits::unit_price(i.unit_price_minor).map_err(&invalid)?,
                })
            })
            .collect::<Result<_, crate::DecodeError>>()?;
        Ok(Order {
            id: OrderId::from_uuid(self.order_id),
            customer_id: CustomerId::parse(&self.customer_id).map_err(&invalid)?,
            currency: Currency::parse(&self.currency).map_err(&invalid)?,
            status: OrderStatus::Created,
            version: self.order_version,
            items,
            total_minor: MinorUnits::try_from(self.total_minor).map_err(&invalid)?,
            created_at: self.occurred_at,
            updated_at: self.occurred_at,
        })
    }
}
