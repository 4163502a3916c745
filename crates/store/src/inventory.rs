//! Stock and reservations: the inventory role's effects, exactly once per order.
//!
//! The order id keys the reservation, so a re-delivered `order.enriched` finds the reservation made before
//! and gets its outcome back (with the same event id, to publish again) instead of taking stock twice. Stock
//! is taken line by line with `stock >= quantity` guards under a savepoint, in SKU order so that concurrent
//! orders cannot deadlock, and the `stock >= 0` constraint makes overselling impossible whatever runs at the
//! same time. A cancel gives allocated stock back once; a cancel that comes before the reservation leaves a
//! marker, so the order is never allocated afterwards.

use chrono::{DateTime, Utc};
use orderflow_domain::OrderId;
use uuid::Uuid;

/// A product and its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Product code.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// List price, in minor units.
    pub price_minor: i64,
    /// Units in stock.
    pub stock: i32,
}

/// One thing the inventory role asks of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOp {
    /// Reserve every line of a paid order, or none.
    Reserve {
        /// The order.
        order_id: OrderId,
        /// (SKU, units); the same SKU may come twice.
        lines: Vec<(String, i32)>,
        /// Id for the event reporting the outcome, used if this is the first reservation of the order.
        event_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Give back what a cancelled order holds.
    Release {
        /// The order.
        order_id: OrderId,
        /// Id of the marker left when nothing was reserved yet.
        marker_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What an [`InventoryOp`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOutcome {
    /// Every line is reserved (now or by an earlier delivery).
    Allocated {
        /// The order.
        order_id: OrderId,
        /// Id of the event reporting it.
        event_id: Uuid,
        /// (SKU, units) reserved, by SKU.
        lines: Vec<(String, i32)>,
    },
    /// Not reserved (now or by an earlier delivery).
    Rejected {
        /// The order.
        order_id: OrderId,
        /// Id of the event reporting it.
        event_id: Uuid,
        /// Why.
        reason: String,
        /// The line that could not be served.
        sku: Option<String>,
    },
    /// The order was cancelled before it could be reserved: nothing is, nothing is reported.
    Cancelled {
        /// The order.
        order_id: OrderId,
    },
    /// A cancel gave the order's stock back.
    Released {
        /// The order.
        order_id: OrderId,
    },
    /// A cancel found nothing to give back (rejected, released before, or marked).
    Unchanged {
        /// The order.
        order_id: OrderId,
    },
}

/// Stock of one product against what live reservations hold, for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLine {
    /// Product code.
    pub sku: String,
    /// Units in stock now.
    pub stock: i32,
    /// Units held by ALLOCATED reservations.
    pub allocated: i64,
}

/// Sums the units per SKU, sorted by SKU (the lock order).
pub(crate) fn merge_lines(lines: &[(String, i32)]) -> Vec<(String, i32)> {
    let mut merged: std::collections::BTreeMap<&str, i32> = std::collections::BTreeMap::new();
    for (sku, quantity) in lines {
        *merged.entry(sku.as_str()).or_default() += *quantity;
    }
    merged.into_iter().map(|(sku, q)| (sku.to_owned(), q)).collect()
}

/// The inventory queries, the same SQL on both backends.
macro_rules! inventory_queries {
    ($store:ident, $db:ty) => {
        impl $store {
            /// Creates or replaces a product.
            pub async fn put_product(&self, product: &$crate::Product) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO products (sku, name, price_minor, stock) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (sku) DO UPDATE SET name = $2, price_minor = $3, stock = $4",
                )
                .bind(&product.sku)
                .bind(&product.name)
                .bind(product.price_minor)
                .bind(product.stock)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            /// One product, if it exists.
            pub async fn get_product(&self, sku: &str) -> Result<Option<$crate::Product>, $crate::StoreError> {
                let row: Option<(String, String, i64, i32)> =
                    sqlx::query_as("SELECT sku, name, price_minor, stock FROM products WHERE sku = $1")
                        .bind(sku)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(sku, name, price_minor, stock)| $crate::Product {
                    sku,
                    name,
                    price_minor,
                    stock,
                }))
            }

            /// Every product's stock against the units its live reservations hold.
            pub async fn stock_lines(&self) -> Result<Vec<$crate::StockLine>, $crate::StoreError> {
                let rows: Vec<(String, i32, Option<i64>)> = sqlx::query_as(
                    "SELECT p.sku, p.stock, CAST((SELECT SUM(l.quantity) FROM inventory_reservation_lines l \
                     JOIN inventory_reservations r ON r.order_id = l.order_id \
                     WHERE l.sku = p.sku AND r.status = 'ALLOCATED') AS BIGINT) \
                     FROM products p ORDER BY p.sku",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(sku, stock, allocated)| $crate::StockLine {
                        sku,
                        stock,
                        allocated: allocated.unwrap_or(0),
                    })
                    .collect())
            }

            /// Applies `ops` in order in one transaction and says what each came to.
            pub async fn apply_inventory(
                &self,
                ops: &[$crate::InventoryOp],
            ) -> Result<Vec<$crate::InventoryOutcome>, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let mut outcomes = Vec::with_capacity(ops.len());
                for op in ops {
                    outcomes.push(match op {
                        $crate::InventoryOp::Reserve {
                            order_id,
                            lines,
                            event_id,
                            at,
                        } => Self::reserve(&mut tx, *order_id, lines, *event_id, *at).await?,
                        $crate::InventoryOp::Release {
                            order_id,
                            marker_id,
                            at,
                        } => Self::release(&mut tx, *order_id, *marker_id, *at).await?,
                    });
                }
                tx.commit().await?;
                Ok(outcomes)
            }

            /// The reservation of `order`: status, event id, reason, SKU and lines.
            async fn reservation(
                tx: &mut sqlx::Transaction<'static, $db>,
                order: orderflow_domain::OrderId,
            ) -> Result<
                Option<(String, uuid::Uuid, Option<String>, Option<String>, Vec<(String, i32)>)>,
                $crate::StoreError,
            > {
                let row: Option<(String, uuid::Uuid, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT status, event_id, reason, sku FROM inventory_reservations WHERE order_id = $1",
                )
                .bind(order.as_uuid())
                .fetch_optional(&mut **tx)
                .await?;
                let Some((status, event_id, reason, sku)) = row else {
                    return Ok(None);
                };
                let lines: Vec<(String, i32)> = sqlx::query_as(
                    "SELECT sku, quantity FROM inventory_reservation_lines WHERE order_id = $1 ORDER BY sku",
                )
                .bind(order.as_uuid())
                .fetch_all(&mut **tx)
                .await?;
                Ok(Some((status, event_id, reason, sku, lines)))
            }

            async fn record_reservation(
                tx: &mut sqlx::Transaction<'static, $db>,
                order: orderflow_domain::OrderId,
                status: &str,
                event_id: uuid::Uuid,
                reason: Option<&str>,
                sku: Option<&str>,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO inventory_reservations (order_id, status, event_id, reason, sku, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(order.as_uuid())
                .bind(status)
                .bind(event_id)
                .bind(reason)
                .bind(sku)
                .bind(at)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn reserve(
                tx: &mut sqlx::Transaction<'static, $db>,
                order_id: orderflow_domain::OrderId,
                lines: &[(String, i32)],
                event_id: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::InventoryOutcome, $crate::StoreError> {
                use $crate::InventoryOutcome as O;
                if let Some((status, event_id, reason, sku, lines)) = Self::reservation(tx, order_id).await? {
                    return Ok(match status.as_str() {
                        "ALLOCATED" | "RELEASED" => O::Allocated {
                            order_id,
                            event_id,
                            lines,
                        },
                        "REJECTED" => O::Rejected {
                            order_id,
                            event_id,
                            reason: reason.unwrap_or_default(),
                            sku,
                        },
                        _ => O::Cancelled { order_id },
                    });
                }
                let lines = $crate::inventory::merge_lines(lines);
                let mut short = None;
                {
                    // Every line or none: the stock taken so far is given back if a line cannot be served.
                    let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
                    for (sku, quantity) in &lines {
                        let taken = sqlx::query(
                            "UPDATE products SET stock = stock - $1 WHERE sku = $2 AND stock >= $1",
                        )
                        .bind(*quantity)
                        .bind(sku)
                        .execute(&mut *savepoint)
                        .await?
                        .rows_affected();
                        if taken != 1 {
                            short = Some(sku.clone());
                            break;
                        }
                    }
                    if short.is_some() {
                        savepoint.rollback().await?;
                    } else {
                        savepoint.commit().await?;
                    }
                }
                if let Some(sku) = short {
                    let known: Option<(i32,)> = sqlx::query_as("SELECT stock FROM products WHERE sku = $1")
                        .bind(&sku)
                        .fetch_optional(&mut **tx)
                        .await?;
                    let reason = if known.is_some() { "out of stock" } else { "unknown product" };
                    Self::record_reservation(tx, order_id, "REJECTED", event_id, Some(reason), Some(&sku), at)
                        .await?;
                    return Ok(O::Rejected {
                        order_id,
                        event_id,
                        reason: reason.to_owned(),
                        sku: Some(sku),
                    });
                }
                Self::record_reservation(tx, order_id, "ALLOCATED", event_id, None, None, at).await?;
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO inventory_reservation_lines (order_id, sku, quantity) ",
                );
                insert.push_values(&lines, |mut row, (sku, quantity)| {
                    row.push_bind(order_id.as_uuid()).push_bind(sku.as_str()).push_bind(*quantity);
                });
                insert.build().execute(&mut **tx).await?;
                Ok(O::Allocated {
                    order_id,
                    event_id,
                    lines,
                })
            }

            async fn release(
                tx: &mut sqlx::Transaction<'static, $db>,
                order_id: orderflow_domain::OrderId,
                marker_id: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::InventoryOutcome, $crate::StoreError> {
                use $crate::InventoryOutcome as O;
                match Self::reservation(tx, order_id).await? {
                    None => {
                        Self::record_reservation(tx, order_id, "CANCELLED", marker_id, None, None, at).await?;
                        Ok(O::Unchanged { order_id })
                    }
                    Some((status, _, _, _, lines)) if status == "ALLOCATED" => {
                        for (sku, quantity) in &lines {
                            sqlx::query("UPDATE products SET stock = stock + $1 WHERE sku = $2")
                                .bind(*quantity)
                                .bind(sku)
                                .execute(&mut **tx)
                                .await?;
                        }
                        sqlx::query(
                            "UPDATE inventory_reservations SET status = 'RELEASED', updated_at = $1 WHERE order_id = $2",
                        )
                        .bind(at)
                        .bind(order_id.as_uuid())
                        .execute(&mut **tx)
                        .await?;
                        Ok(O::Released { order_id })
                    }
                    Some(_) => Ok(O::Unchanged { order_id }),
                }
            }
        }
    };
}

pub(crate) use inventory_queries;
