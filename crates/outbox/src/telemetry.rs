//! What the relay counts, as typed events: the relay emits a [`RelayEvent`], and this module alone knows the
//! metric it updates (through the `metrics` facade).
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `orderflow_outbox_backlog` | gauge | rows not yet published (sampled by every instance) |
//! | `orderflow_outbox_relay_seconds` | histogram | from the row's commit to the broker's acknowledgement |
//! | `orderflow_outbox_published_total` | counter | rows acknowledged by the broker |
//! | `orderflow_outbox_publish_failures_total` | counter | rows the broker refused (they stay pending) |

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Something the relay did that operators count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RelayEvent {
    /// The broker acknowledged one row, `waited` after its commit.
    Acknowledged {
        /// From the row's commit to the acknowledgement.
        waited: Duration,
    },
    /// A batch's acknowledged rows, counted once the batch is done.
    Published {
        /// Rows acknowledged.
        rows: usize,
    },
    /// The broker refused a row (it stays pending and goes out again, in order).
    PublishFailed,
    /// Rows not yet published, sampled.
    Backlog {
        /// Pending rows.
        rows: u64,
    },
}

impl RelayEvent {
    /// Records the event in its metrics.
    pub(crate) fn emit(self) {
        match self {
            Self::Acknowledged { waited } => {
                histogram!("orderflow_outbox_relay_seconds").record(waited.as_secs_f64())
            }
            Self::Published { rows } => counter!("orderflow_outbox_published_total").increment(rows as u64),
            Self::PublishFailed => counter!("orderflow_outbox_publish_failures_total").increment(1),
            Self::Backlog { rows } => gauge!("orderflow_outbox_backlog").set(rows as f64),
        }
    }
}
