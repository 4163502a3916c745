//! What the source of truth says about itself, for `orderflow reconcile`: orders per status, charges that
//! do not fit their orders, the revenue analytics must report, the stock ledger, and the orders' states page
//! by page (to compare with the read model and `order.state`).

/// Charges and orders that do not fit each other (all zero in a consistent database).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChargeDiscrepancies {
    /// Captured charges whose order is missing or whose amount is not the order's total.
    pub wrong_amount: i64,
    /// Orders past payment (`PAID`, `ALLOCATED`, `REJECTED`) without a captured charge.
    pub paid_without_charge: i64,
    /// Orders whose payment failed that have a captured charge.
    pub failed_with_charge: i64,
    /// Rejected or cancelled orders whose captured charge was not refunded.
    pub refund_missing: i64,
    /// Refunds made for orders that are neither rejected nor cancelled, or of another amount than the charge.
    pub refund_wrong: i64,
}

/// One product's stock ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLedgerLine {
    /// Product code.
    pub sku: String,
    /// Units in stock.
    pub stock: i64,
    /// Units held by `ALLOCATED` reservations.
    pub allocated: i64,
    /// Units ever received; `None` for a product written outside Orderflow.
    pub received: Option<i64>,
}

impl StockLedgerLine {
    /// Whether stock plus allocated units equal the units received (untracked products pass).
    pub fn balances(&self) -> bool {
        self.received.is_none_or(|r| self.stock + self.allocated == r)
    }
}

/// The queries of `orderflow reconcile` for one backend.
macro_rules! reconcile_queries {
    ($store:ident, $db:ty) => {
        impl $store {
            /// How many orders have each status.
            pub async fn order_status_counts(&self) -> Result<Vec<(String, i64)>, $crate::StoreError> {
                Ok(
                    sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status")
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            /// When the first order was created, if any was.
            pub async fn first_order_at(
                &self,
            ) -> Result<Option<chrono::DateTime<chrono::Utc>>, $crate::StoreError> {
                let (at,): (Option<chrono::DateTime<chrono::Utc>>,) =
                    sqlx::query_as("SELECT MIN(created_at) FROM orders")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(at)
            }

            /// Charges and orders that do not fit each other.
            pub async fn charge_discrepancies(&self) -> Result<$crate::ChargeDiscrepancies, $crate::StoreError> {
                let count = |sql: &'static str| async move {
                    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&self.pool).await?;
                    Ok::<_, $crate::StoreError>(n)
                };
                Ok($crate::ChargeDiscrepancies {
                    wrong_amount: count(
                        "SELECT COUNT(*) FROM payment_charges c LEFT JOIN orders o ON o.id = c.order_id \
                         WHERE c.outcome = 'CAPTURED' AND (o.id IS NULL OR o.total_minor <> c.amount_minor)",
                    )
                    .await?,
                    paid_without_charge: count(
                        "SELECT COUNT(*) FROM orders o WHERE o.status IN ('PAID', 'ALLOCATED', 'REJECTED') \
                         AND NOT EXISTS (SELECT 1 FROM payment_charges c WHERE c.order_id = o.id \
                         AND c.outcome = 'CAPTURED')",
                    )
                    .await?,
                    failed_with_charge: count(
                        "SELECT COUNT(*) FROM orders o JOIN payment_charges c ON c.order_id = o.id \
                         WHERE o.status = 'PAYMENT_FAILED' AND c.outcome = 'CAPTURED'",
                    )
                    .await?,
                    refund_missing: count(
                        "SELECT COUNT(*) FROM orders o JOIN payment_charges c ON c.order_id = o.id \
                         WHERE o.status IN ('REJECTED', 'CANCELLED') AND c.outcome = 'CAPTURED' \
                         AND NOT EXISTS (SELECT 1 FROM payment_refunds r WHERE r.order_id = o.id \
                         AND r.refunded_at IS NOT NULL)",
                    )
                    .await?,
                    refund_wrong: count(
                        "SELECT COUNT(*) FROM payment_refunds r JOIN payment_charges c ON c.order_id = r.order_id \
                         LEFT JOIN orders o ON o.id = r.order_id WHERE r.refunded_at IS NOT NULL \
                         AND (o.id IS NULL OR o.status NOT IN ('REJECTED', 'CANCELLED') \
                         OR c.outcome <> 'CAPTURED' OR r.amount_minor <> c.amount_minor)",
                    )
                    .await?,
                })
            }

            /// The revenue analytics must report: captured charges less refunds (minor units).
            pub async fn captured_less_refunded_minor(&self) -> Result<i64, $crate::StoreError> {
                let (captured, refunded): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT (SELECT CAST(SUM(amount_minor) AS BIGINT) FROM payment_charges WHERE outcome = 'CAPTURED'), \
                     (SELECT CAST(SUM(amount_minor) AS BIGINT) FROM payment_refunds WHERE refunded_at IS NOT NULL)",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(captured.unwrap_or(0) - refunded.unwrap_or(0))
            }

            /// Every product's stock ledger, by SKU.
            pub async fn stock_ledger(&self) -> Result<Vec<$crate::StockLedgerLine>, $crate::StoreError> {
                let rows: Vec<(String, i32, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT p.sku, p.stock, p.received, CAST(COALESCE((SELECT SUM(l.quantity) \
                     FROM inventory_reservation_lines l JOIN inventory_reservations r ON r.order_id = l.order_id \
                     WHERE r.status = 'ALLOCATED' AND l.sku = p.sku), 0) AS BIGINT) FROM products p ORDER BY p.sku",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(sku, stock, received, allocated)| $crate::StockLedgerLine {
                        sku,
                        stock: i64::from(stock),
                        allocated,
                        received,
                    })
                    .collect())
            }

            /// Up to `limit` orders after `after` in id order: id, status and version.
            pub async fn order_states(
                &self,
                after: Option<orderflow_domain::OrderId>,
                limit: i64,
            ) -> Result<Vec<(orderflow_domain::OrderId, String, i64)>, $crate::StoreError> {
                let rows: Vec<(uuid::Uuid, String, i64)> = match after {
                    Some(after) => {
                        sqlx::query_as("SELECT id, status, version FROM orders WHERE id > $1 ORDER BY id LIMIT $2")
                            .bind(after.as_uuid())
                            .bind(limit)
                            .fetch_all(&self.pool)
                            .await?
                    }
                    None => {
                        sqlx::query_as("SELECT id, status, version FROM orders ORDER BY id LIMIT $1")
                            .bind(limit)
                            .fetch_all(&self.pool)
                            .await?
                    }
                };
                Ok(rows
                    .into_iter()
                    .map(|(id, status, version)| (orderflow_domain::OrderId::from_uuid(id), status, version))
                    .collect())
            }
        }
    };
}

pub(crate) use reconcile_queries;
