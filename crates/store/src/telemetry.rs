//! What the store counts, as typed events: the write path emits a [`StoreEvent`], and this module alone
//! knows the metric it updates (through the `metrics` facade).
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `orderflow_group_commit_orders` | histogram | (orders committed together in one group commit) |

use metrics::histogram;

/// Something the store did that operators count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreEvent {
    /// A group commit made `orders` orders durable in one transaction.
    GroupCommitted {
        /// Orders in the transaction.
        orders: usize,
    },
}

impl StoreEvent {
    /// Records the event in its metrics.
    pub(crate) fn emit(self) {
        match self {
            Self::GroupCommitted { orders } => {
                histogram!("orderflow_group_commit_orders").record(orders as f64)
            }
        }
    }
}
