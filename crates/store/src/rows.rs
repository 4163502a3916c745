//! Row shapes shared by both backends and their conversion to domain values.

use chrono::{DateTime, Utc};
use orderflow_domain::{Currency, CustomerId, MinorUnits, Order, OrderId, OrderItem};
use uuid::Uuid;

use crate::{OutboxRecord, StoreError};

/// An `orders` row.
#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow {
    pub id: Uuid,
    pub customer_id: String,
    pub currency: String,
    pub status: String,
    pub version: i64,
    pub total_minor: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    /// The row as a summary (no lines, no decoding that can fail).
    pub(crate) fn into_summary(self) -> crate::OrderSummary {
        crate::OrderSummary {
            id: self.id,
            customer_id: self.customer_id,
            currency: self.currency,
            status: self.status,
            total_minor: self.total_minor,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// An `order_items` row.
#[derive(sqlx::FromRow)]
pub(crate) struct ItemRow {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

/// An `outbox` row.
#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub msg_key: String,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub headers: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

fn corrupt(table: &'static str) -> impl Fn(String) -> StoreError {
    move |reason| StoreError::Corrupt {
        table,
        reason,
        source: None,
    }
}

impl OrderRow {
    pub(crate) fn into_order(self, items: Vec<ItemRow>) -> Result<Order, StoreError> {
        let bad = corrupt("orders");
        let bad_item = corrupt("order_items");
        Ok(Order {
            id: OrderId::from_uuid(self.id),
            customer_id: CustomerId::parse(&self.customer_id).map_err(&bad)?,
            currency: Currency::parse(&self.currency).map_err(&bad)?,
            status: self
                .status
                .parse()
                .map_err(|e: orderflow_domain::UnknownStatus| StoreError::Corrupt {
                    table: "orders",
                    reason: "status".into(),
                    source: Some(e.into()),
                })?,
            version: self.version,
            items: items
                .into_iter()
                .map(|i| {
                    OrderItem::from_parts(&i.sku, i64::from(i.quantity), i.unit_price_minor)
                        .map_err(&bad_item)
                })
                .collect::<Result<_, StoreError>>()?,
            total_minor: MinorUnits::try_from(self.total_minor).map_err(&bad)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Headers are stored as a JSON list of `[name, value]` text pairs (every header Orderflow sets is text).
pub(crate) fn headers_to_json(headers: &[(&str, Vec<u8>)]) -> String {
    let pairs: Vec<(&str, std::borrow::Cow<'_, str>)> = headers
        .iter()
        .map(|(k, v)| (*k, String::from_utf8_lossy(v)))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
}

impl OutboxRow {
    pub(crate) fn into_record(self) -> Result<OutboxRecord, StoreError> {
        let pairs: Vec<(String, String)> =
            serde_json::from_str(&self.headers).map_err(|e| StoreError::Corrupt {
                table: "outbox",
                reason: "headers".into(),
                source: Some(e.into()),
            })?;
        Ok(OutboxRecord {
            id: self.id,
            event_id: self.event_id,
            topic: self.topic,
            key: self.msg_key,
            event_type: self.event_type,
            payload: self.payload,
            headers: pairs.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
            created_at: self.created_at,
        })
    }
}
