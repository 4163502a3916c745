//! The simulated payment provider's charge ledger: one charge per order, whatever the number of requests.
//!
//! The order id is the idempotency key, as with a real provider: the first request for an order records the
//! charge, every later one only counts an attempt and gets the recorded charge back, so a re-delivered
//! `order.created` can never charge twice and always yields the same payment event (same ids).

use chrono::{DateTime, Utc};
use orderflow_domain::OrderId;
use uuid::Uuid;

use crate::StoreError;

/// What the provider did with a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChargeOutcome {
    /// The money was taken.
    Captured,
    /// A rule refused the charge (amount, customer, currency).
    Declined,
    /// The provider failed to process it.
    Failed,
}

impl ChargeOutcome {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Captured => "CAPTURED",
            Self::Declined => "DECLINED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "CAPTURED" => Ok(Self::Captured),
            "DECLINED" => Ok(Self::Declined),
            "FAILED" => Ok(Self::Failed),
            other => Err(StoreError::Corrupt {
                table: "payment_charges",
                reason: format!("unknown outcome '{other}'"),
                source: None,
            }),
        }
    }
}

/// One charge in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The order charged (the idempotency key).
    pub order_id: OrderId,
    /// The provider's id of the payment.
    pub payment_id: Uuid,
    /// Id of the payment event that reports this charge (stable across re-deliveries).
    pub event_id: Uuid,
    /// Version of the order that was charged.
    pub order_version: i64,
    /// Amount asked for, in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// What happened.
    pub outcome: ChargeOutcome,
    /// Why it was declined or failed.
    pub reason: Option<String>,
    /// How many requests were made for this order (1 unless it was re-delivered).
    pub attempts: i32,
    /// When it was first processed.
    pub charged_at: DateTime<Utc>,
}

/// Totals over the whole ledger, for reconciliation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChargeTotals {
    /// Orders charged (one row each).
    pub charges: i64,
    /// Requests made, re-deliveries included.
    pub attempts: i64,
    /// Charges captured.
    pub captured: i64,
    /// Sum of captured amounts, in minor units (all currencies together).
    pub captured_minor: i64,
}

/// A `payment_charges` row.
#[derive(sqlx::FromRow)]
pub(crate) struct ChargeRow {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub event_id: Uuid,
    pub order_version: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub attempts: i32,
    pub charged_at: DateTime<Utc>,
}

impl ChargeRow {
    pub(crate) fn into_charge(self) -> Result<Charge, StoreError> {
        Ok(Charge {
            order_id: OrderId::from_uuid(self.order_id),
            payment_id: self.payment_id,
            event_id: self.event_id,
            order_version: self.order_version,
            amount_minor: self.amount_minor,
            currency: self.currency,
            outcome: ChargeOutcome::parse(&self.outcome)?,
            reason: self.reason,
            attempts: self.attempts,
            charged_at: self.charged_at,
        })
    }
}

/// A refund owed for an order that was rejected or cancelled; settled once its charge is captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundClaim {
    /// The order (the idempotency key: one refund per order).
    pub order_id: OrderId,
    /// Id of the `payment.refunded` event that will report it (stable across re-deliveries).
    pub event_id: Uuid,
    /// The provider's id of the refund.
    pub refund_id: Uuid,
    /// Version of the order when the refund became owed.
    pub order_version: i64,
    /// `rejected` or `cancelled`.
    pub reason: &'static str,
    /// When it became owed.
    pub at: DateTime<Utc>,
}

/// A refund made: the whole captured amount of an order's charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The order.
    pub order_id: OrderId,
    /// Id of the `payment.refunded` event that reports it.
    pub event_id: Uuid,
    /// The provider's id of the refund.
    pub refund_id: Uuid,
    /// The provider's id of the payment refunded.
    pub payment_id: Uuid,
    /// Version of the order when the refund became owed.
    pub order_version: i64,
    /// `rejected` or `cancelled`.
    pub reason: String,
    /// Amount refunded, in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When it was made.
    pub refunded_at: DateTime<Utc>,
}

/// A settled `payment_refunds` row joined with its charge's payment id.
pub(crate) type RefundRow = (
    Uuid,
    Uuid,
    Uuid,
    Uuid,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<DateTime<Utc>>,
);

/// Reads a settled refund row.
pub(crate) fn refund(row: RefundRow) -> Option<Refund> {
    let (order_id, event_id, refund_id, payment_id, order_version, reason, amount, currency, at) = row;
    Some(Refund {
        order_id: OrderId::from_uuid(order_id),
        event_id,
        refund_id,
        payment_id,
        order_version,
        reason,
        amount_minor: amount?,
        currency: currency?.trim_end().to_owned(),
        refunded_at: at?,
    })
}

/// Most rows in one statement (SQLite allows 32,766 bound values; a row binds ten).
pub(crate) const CHARGES_PER_STATEMENT: usize = 1_000;

/// The ledger's queries, the same SQL on both backends.
macro_rules! charge_queries {
    ($store:ident, $db:ty) => {
        impl $store {
            /// Records each charge whose order has none yet and counts an attempt on the others; returns the
            /// ledger's charge for every order asked about (the first one recorded), in no particular order.
            pub async fn record_charges(
                &self,
                charges: &[$crate::Charge],
            ) -> Result<Vec<$crate::Charge>, $crate::StoreError> {
                // One row per order per statement: PostgreSQL refuses to upsert a row twice in one command.
                let mut seen = std::collections::HashSet::new();
                let unique: Vec<&$crate::Charge> =
                    charges.iter().filter(|c| seen.insert(c.order_id)).collect();
                let mut recorded = Vec::with_capacity(unique.len());
                let mut tx = self.pool.begin().await?;
                for chunk in unique.chunks($crate::charges::CHARGES_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO payment_charges (order_id, payment_id, event_id, order_version, amount_minor, \
                         currency, outcome, reason, attempts, charged_at) ",
                    );
                    insert.push_values(chunk, |mut row, c| {
                        row.push_bind(c.order_id.as_uuid())
                            .push_bind(c.payment_id)
                            .push_bind(c.event_id)
                            .push_bind(c.order_version)
                            .push_bind(c.amount_minor)
                            .push_bind(c.currency.as_str())
                            .push_bind(c.outcome.as_str())
                            .push_bind(c.reason.as_deref())
                            .push_bind(1_i32)
                            .push_bind(c.charged_at);
                    });
                    insert.push(
                        " ON CONFLICT (order_id) DO UPDATE SET attempts = payment_charges.attempts + 1 \
                         RETURNING order_id, payment_id, event_id, order_version, amount_minor, currency, outcome, \
                         reason, attempts, charged_at",
                    );
                    let rows: Vec<$crate::charges::ChargeRow> =
                        insert.build_query_as().fetch_all(&mut *tx).await?;
                    for row in rows {
                        recorded.push(row.into_charge()?);
                    }
                }
                tx.commit().await?;
                Ok(recorded)
            }

            /// The ledger's charge for `order`, if any.
            pub async fn get_charge(
                &self,
                order: orderflow_domain::OrderId,
            ) -> Result<Option<$crate::Charge>, $crate::StoreError> {
                let row: Option<$crate::charges::ChargeRow> = sqlx::query_as(
                    "SELECT order_id, payment_id, event_id, order_version, amount_minor, currency, outcome, reason, \
                     attempts, charged_at FROM payment_charges WHERE order_id = $1",
                )
                .bind(order.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
                row.map($crate::charges::ChargeRow::into_charge).transpose()
            }

            /// Records the refunds `claims` owe (an order already claimed keeps its first claim). Committed on
            /// its own, before [`Self::settle_refunds`] looks for them: of a claim and a capture recorded at the
            /// same time, the settle that runs after both is sure to see both.
            pub async fn claim_refunds(&self, claims: &[$crate::RefundClaim]) -> Result<(), $crate::StoreError> {
                let mut seen = std::collections::HashSet::new();
                let unique: Vec<&$crate::RefundClaim> =
                    claims.iter().filter(|c| seen.insert(c.order_id)).collect();
                for chunk in unique.chunks($crate::charges::CHARGES_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO payment_refunds (order_id, event_id, refund_id, order_version, reason, claimed_at) ",
                    );
                    insert.push_values(chunk, |mut row, c| {
                        row.push_bind(c.order_id.as_uuid())
                            .push_bind(c.event_id)
                            .push_bind(c.refund_id)
                            .push_bind(c.order_version)
                            .push_bind(c.reason)
                            .push_bind(c.at);
                    });
                    insert.push(" ON CONFLICT (order_id) DO NOTHING");
                    insert.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            /// Refunds, in full, the captured charge of every order among `orders` with an unsettled claim
            /// (once: a settled claim is never settled again), and returns every refund made for `orders`, now
            /// or before.
            pub async fn settle_refunds(
                &self,
                orders: &[orderflow_domain::OrderId],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::Refund>, $crate::StoreError> {
                // `<sql> (<ids>)`: the statements below each end on a list of the chunk's order ids.
                fn with_ids<'q>(
                    sql: &'q str,
                    ids: &'q [orderflow_domain::OrderId],
                ) -> sqlx::QueryBuilder<'q, $db> {
                    let mut query = sqlx::QueryBuilder::<$db>::new(sql);
                    let mut list = query.separated(", ");
                    for id in ids {
                        list.push_bind(id.as_uuid());
                    }
                    list.push_unseparated(")");
                    query
                }
                let mut refunds = Vec::new();
                for chunk in orders.chunks($crate::charges::CHARGES_PER_STATEMENT) {
                    // Most orders are never claimed: a read first, so that a batch without claims takes no
                    // write lock (SQLite has one writer at a time).
                    let (claims,): (i64,) =
                        with_ids("SELECT COUNT(*) FROM payment_refunds WHERE order_id IN (", chunk)
                            .build_query_as()
                            .fetch_one(&self.pool)
                            .await?;
                    if claims == 0 {
                        continue;
                    }
                    let mut tx = self.pool.begin().await?;
                    let mut settle = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE payment_refunds SET \
                         amount_minor = (SELECT c.amount_minor FROM payment_charges c WHERE c.order_id = payment_refunds.order_id), \
                         currency = (SELECT c.currency FROM payment_charges c WHERE c.order_id = payment_refunds.order_id), \
                         refunded_at = ",
                    );
                    settle.push_bind(now).push(
                        " WHERE refunded_at IS NULL AND EXISTS (SELECT 1 FROM payment_charges c \
                         WHERE c.order_id = payment_refunds.order_id AND c.outcome = 'CAPTURED') AND order_id IN (",
                    );
                    let mut list = settle.separated(", ");
                    for id in chunk {
                        list.push_bind(id.as_uuid());
                    }
                    list.push_unseparated(")");
                    settle.build().execute(&mut *tx).await?;
                    let rows: Vec<$crate::charges::RefundRow> = with_ids(
                        "SELECT r.order_id, r.event_id, r.refund_id, c.payment_id, r.order_version, r.reason, \
                         r.amount_minor, r.currency, r.refunded_at FROM payment_refunds r \
                         JOIN payment_charges c ON c.order_id = r.order_id \
                         WHERE r.refunded_at IS NOT NULL AND r.order_id IN (",
                        chunk,
                    )
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    refunds.extend(rows.into_iter().filter_map($crate::charges::refund));
                }
                Ok(refunds)
            }

            /// Totals over the ledger.
            pub async fn charge_totals(&self) -> Result<$crate::ChargeTotals, $crate::StoreError> {
                let (charges, attempts, captured, captured_minor): (i64, Option<i64>, Option<i64>, Option<i64>) =
                    sqlx::query_as(
                        "SELECT COUNT(*), CAST(SUM(attempts) AS BIGINT), \
                         CAST(SUM(CASE WHEN outcome = 'CAPTURED' THEN 1 ELSE 0 END) AS BIGINT), \
                         CAST(SUM(CASE WHEN outcome = 'CAPTURED' THEN amount_minor ELSE 0 END) AS BIGINT) \
                         FROM payment_charges",
                    )
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::ChargeTotals {
                    charges,
                    attempts: attempts.unwrap_or(0),
                    captured: captured.unwrap_or(0),
                    captured_minor: captured_minor.unwrap_or(0),
                })
            }
        }
    };
}

pub(crate) use charge_queries;
