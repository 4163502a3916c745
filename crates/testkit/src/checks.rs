//! Checks the end-to-end tests of several crates share: waiting for an eventually consistent outcome, and
//! the business invariants that must hold after any run (stock reconciles, revenue is what was paid).
//!
//! These are assertions: they fail the calling test by panicking, with a message naming what did not hold.

#![allow(clippy::panic)] // a failed check fails the test that called it

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns a value, and returns it; fails the test naming `what` when
/// `timeout` passes first.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One product's stock as the store reports it: what is left, and what allocated reservations hold.
#[derive(Debug, Clone)]
pub struct StockLine<'a> {
    /// The product.
    pub sku: &'a str,
    /// Units on hand.
    pub stock: i64,
    /// Units held by allocated reservations.
    pub allocated: i64,
}

/// Stock never went negative, and for every product what is left plus what is allocated is what it
/// started with (`initial(sku)`): no unit was reserved twice or released without a reservation.
pub fn assert_stock_reconciles<'a>(
    lines: impl IntoIterator<Item = StockLine<'a>>,
    initial: impl Fn(&str) -> i64,
) {
    for line in lines {
        assert!(line.stock >= 0, "{} went negative: {}", line.sku, line.stock);
        assert_eq!(
            line.stock + line.allocated,
            initial(line.sku),
            "{} reconciles: {} left + {} allocated",
            line.sku,
            line.stock,
            line.allocated
        );
    }
}

/// What analytics revenue must come to, read from the source of truth, once every refund owed is made:
/// `Some(captured less refunded)` when each rejected or cancelled order's captured charge was refunded once and
/// in full (and nothing else was), `None` while a refund is still owed.
pub async fn revenue_once_refunded(pool: &sqlx::PgPool) -> Result<Option<i64>, sqlx::Error> {
    let (captured, refunded, owed, wrong): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT
           (SELECT COALESCE(SUM(amount_minor), 0)::BIGINT FROM payment_charges WHERE outcome = 'CAPTURED'),
           (SELECT COALESCE(SUM(amount_minor), 0)::BIGINT FROM payment_refunds WHERE refunded_at IS NOT NULL),
           (SELECT COUNT(*) FROM orders o JOIN payment_charges c ON c.order_id = o.id
             WHERE o.status IN ('REJECTED', 'CANCELLED') AND c.outcome = 'CAPTURED'
             AND NOT EXISTS (SELECT 1 FROM payment_refunds r WHERE r.order_id = o.id AND r.refunded_at IS NOT NULL)),
           (SELECT COUNT(*) FROM payment_refunds r JOIN payment_charges c ON c.order_id = r.order_id
             JOIN orders o ON o.id = r.order_id WHERE r.refunded_at IS NOT NULL
             AND (o.status NOT IN ('REJECTED', 'CANCELLED') OR r.amount_minor <> c.amount_minor))",
    )
    .fetch_one(pool)
    .await?;
    assert_eq!(
        wrong, 0,
        "refunds of live orders, or of another amount than the charge"
    );
    Ok((owed == 0).then_some(captured - refunded))
}
