//! What happened to each order, read page by page from the tables that record it: for rebuilding state
//! derived from the orders (the analytics aggregates) after that state was lost.

use chrono::{DateTime, Utc};
use orderflow_domain::OrderId;

/// The payment outcome recorded for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeFact {
    /// `CAPTURED`, `DECLINED` or `FAILED`.
    pub outcome: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When the provider answered (the payment event's time).
    pub at: DateTime<Utc>,
}

/// One order and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    /// The order.
    pub id: OrderId,
    /// Who placed it.
    pub customer_id: String,
    /// Its status now.
    pub status: String,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
    /// Products and units ordered, in line order.
    pub items: Vec<(String, i64)>,
    /// Its payment outcome, once there is one.
    pub charge: Option<ChargeFact>,
    /// Its refund, once made: amount in minor units and when.
    pub refund: Option<(i64, DateTime<Utc>)>,
    /// Its stock reservation's status (`ALLOCATED`, `REJECTED`, `RELEASED`, `CANCELLED`) and when it was
    /// last changed, once there is one.
    pub reservation: Option<(String, DateTime<Utc>)>,
}

/// A page row: the order, its charge and its reservation.
pub(crate) type FactRow = (
    uuid::Uuid,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<DateTime<Utc>>,
);

/// Assembles a page from its rows and the lines of its orders (both in order id order).
pub(crate) fn assemble(rows: Vec<FactRow>, lines: Vec<(uuid::Uuid, String, i64)>) -> Vec<OrderFacts> {
    let mut lines = lines.into_iter().peekable();
    rows.into_iter()
        .map(
            |(
                id,
                customer_id,
                status,
                created_at,
                updated_at,
                outcome,
                amount,
                currency,
                charged,
                res,
                res_at,
                refunded,
                refunded_at,
            )| {
                let mut items = Vec::new();
                while let Some((_, sku, units)) = lines.next_if(|(order, _, _)| *order <= id) {
                    items.push((sku, units));
                }
                let charge = match (outcome, amount, currency, charged) {
                    (Some(outcome), Some(amount_minor), Some(currency), Some(at)) => Some(ChargeFact {
                        outcome,
                        amount_minor,
                        currency: currency.trim_end().to_owned(),
                        at,
                    }),
                    _ => None,
                };
                OrderFacts {
                    id: OrderId::from_uuid(id),
                    customer_id,
                    status,
                    created_at,
                    updated_at,
                    items,
                    charge,
                    refund: refunded.zip(refunded_at),
                    reservation: res.zip(res_at),
                }
            },
        )
        .collect()
}

/// The history queries for one backend.
macro_rules! history_queries {
    ($store:ident, $db:ty) => {
        impl $store {
            /// Up to `limit` orders after `after` in id order, each with what became of it.
            pub async fn order_facts(
                &self,
                after: Option<orderflow_domain::OrderId>,
                limit: i64,
            ) -> Result<Vec<$crate::OrderFacts>, $crate::StoreError> {
                let after = after.map(|id| id.as_uuid()).unwrap_or(uuid::Uuid::nil());
                let rows = sqlx::query_as(
                    "SELECT o.id, o.customer_id, o.status, o.created_at, o.updated_at, \
                     c.outcome, c.amount_minor, c.currency, c.charged_at, r.status, r.updated_at, \
                     f.amount_minor, f.refunded_at \
                     FROM orders o LEFT JOIN payment_charges c ON c.order_id = o.id \
                     LEFT JOIN inventory_reservations r ON r.order_id = o.id \
                     LEFT JOIN payment_refunds f ON f.order_id = o.id AND f.refunded_at IS NOT NULL \
                     WHERE o.id > $1 ORDER BY o.id LIMIT $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let last = match <[$crate::history::FactRow]>::last(&rows) {
                    Some(row) => row.0,
                    None => return Ok(Vec::new()),
                };
                let lines: Vec<(uuid::Uuid, String, i64)> = sqlx::query_as(
                    "SELECT order_id, sku, CAST(quantity AS BIGINT) FROM order_items \
                     WHERE order_id > $1 AND order_id <= $2 ORDER BY order_id, line_no",
                )
                .bind(after)
                .bind(last)
                .fetch_all(&self.pool)
                .await?;
                Ok($crate::history::assemble(rows, lines))
            }
        }
    };
}

pub(crate) use history_queries;
