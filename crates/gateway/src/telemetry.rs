//! What the gateway counts, as typed events: a layer emits a [`GatewayEvent`], and this module alone knows
//! the metric it updates (through the `metrics` facade).
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `orderflow_gateway_rejections_total` | counter | reason (the problem type: `unauthenticated`, `forbidden`, `rate-limited`, ...) |

use metrics::counter;

/// Something the gateway did that operators count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GatewayEvent {
    /// A request was refused before reaching an upstream, for `reason`.
    Rejected {
        /// The problem type's last segment.
        reason: &'static str,
    },
}

impl GatewayEvent {
    /// Records the event in its metrics.
    pub(crate) fn emit(self) {
        match self {
            Self::Rejected { reason } => {
                counter!("orderflow_gateway_rejections_total", "reason" => reason).increment(1)
            }
        }
    }
}
