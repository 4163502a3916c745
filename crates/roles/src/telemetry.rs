//! What the business roles count, as typed events: a role emits a [`RoleEvent`] where something happens,
//! and this module alone knows the metric each one updates (through the `metrics` facade).
//!
//! | name | kind | labels | emitted by |
//! | --- | --- | --- | --- |
//! | `orderflow_inventory_allocated_total` | counter | | inventory: a paid order's stock reserved |
//! | `orderflow_inventory_rejected_total` | counter | | inventory: a paid order that could not be served |
//! | `orderflow_inventory_released_total` | counter | | inventory: a cancelled order's stock released |
//! | `orderflow_enrichment_joined_total` | counter | | enrichment: an order joined with its payment |
//! | `orderflow_enrichment_late_payments_total` | counter | | enrichment: a payment outside the join window |
//! | `orderflow_enrichment_unpaid_total` | counter | | enrichment: an order reported unpaid at its deadline |
//! | `orderflow_analytics_facts_total` | counter | outcome (`applied`, `seen_before`) | analytics |
//! | `orderflow_analytics_rebuilds_total` | counter | | analytics: aggregates found lost and refolded from the database |
//! | `orderflow_orders_stranded` | gauge | status (`CREATED`, `PAID`) | orders: orders that stopped moving |
//! | `orderflow_db_pool_connections` | gauge | state (`idle`, `busy`) | every role with a database |
//! | `orderflow_db_pool_max_connections` | gauge | | every role with a database |

use metrics::{counter, gauge};

/// Something a role did that operators count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RoleEvent {
    /// Inventory reserved a paid order's stock.
    StockAllocated,
    /// Inventory could not serve a paid order (unknown product or not enough stock).
    StockRejected,
    /// Inventory released a cancelled order's stock.
    StockReleased,
    /// Enrichment joined an order with its payment and published the enriched order.
    PaymentJoined,
    /// Enrichment saw a payment after its order's deadline, or outside the join window.
    LatePayment,
    /// Enrichment reported an order unpaid at its deadline.
    Unpaid,
    /// Analytics folded a batch: `applied` facts changed the aggregates, `seen_before` were already in.
    AnalyticsApplied {
        /// Facts applied for the first time.
        applied: usize,
        /// Facts that had been applied before (re-deliveries).
        seen_before: usize,
    },
    /// Analytics found its aggregates lost and refolded every order from the database.
    AnalyticsRebuilt {
        /// Facts the rebuild applied.
        applied: usize,
    },
    /// The stranded-order sweep found `created` orders waiting for a payment outcome and `paid` waiting for
    /// stock, each longer than the configured time.
    Stranded {
        /// Orders still `CREATED`.
        created: i64,
        /// Orders still `PAID`.
        paid: i64,
    },
    /// The sweep handed `orders` stranded orders back to the steps that owe them an answer.
    DrivenOn {
        /// Orders republished.
        orders: u64,
    },
    /// The database pool's connections, sampled.
    DbPool {
        /// Open connections.
        open: u32,
        /// Open connections not in use.
        idle: usize,
        /// The pool's limit.
        max: u32,
    },
}

impl RoleEvent {
    /// Records the event in its metrics.
    pub(crate) fn emit(self) {
        match self {
            Self::StockAllocated => counter!("orderflow_inventory_allocated_total").increment(1),
            Self::StockRejected => counter!("orderflow_inventory_rejected_total").increment(1),
            Self::StockReleased => counter!("orderflow_inventory_released_total").increment(1),
            Self::PaymentJoined => counter!("orderflow_enrichment_joined_total").increment(1),
            Self::LatePayment => counter!("orderflow_enrichment_late_payments_total").increment(1),
            Self::Unpaid => counter!("orderflow_enrichment_unpaid_total").increment(1),
            Self::AnalyticsApplied { applied, seen_before } => {
                counter!("orderflow_analytics_facts_total", "outcome" => "applied").increment(applied as u64);
                counter!("orderflow_analytics_facts_total", "outcome" => "seen_before")
                    .increment(seen_before as u64);
            }
            Self::AnalyticsRebuilt { applied } => {
                tracing::warn!(
                    applied,
                    "analytics aggregates missing (Redis lost them, or a new deployment): rebuilt from the database"
                );
                counter!("orderflow_analytics_rebuilds_total").increment(1);
            }
            Self::Stranded { created, paid } => {
                gauge!("orderflow_orders_stranded", "status" => "CREATED").set(created as f64);
                gauge!("orderflow_orders_stranded", "status" => "PAID").set(paid as f64);
            }
            Self::DrivenOn { orders } => counter!("orderflow_orders_driven_on_total").increment(orders),
            Self::DbPool { open, idle, max } => {
                let idle = idle as f64;
                gauge!("orderflow_db_pool_connections", "state" => "idle").set(idle);
                gauge!("orderflow_db_pool_connections", "state" => "busy")
                    .set((f64::from(open) - idle).max(0.0));
                gauge!("orderflow_db_pool_max_connections").set(f64::from(max));
            }
        }
    }
}
