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

/// The revenue analytics must report: the sum of captured charges of orders that were not cancelled, read
/// from the source of truth.
pub async fn paid_not_cancelled_minor(pool: &sqlx::PgPool) -> Result<i64, sqlx::Error> {
    let (sum,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(c.amount_minor), 0)::BIGINT FROM payment_charges c JOIN orders o ON o.id = c.order_id
         WHERE c.outcome = 'CAPTURED' AND o.status <> 'CANCELLED'",
    )
    .fetch_one(pool)
    .await?;
    Ok(sum)
}
