//! Stage latencies per hop, from the timestamps the producers put on the records of each order: when its
//! 201 arrived, when the relay published `order.created`, when payments published its outcome, when
//! enrichment joined it, when inventory decided, and when the projector published its terminal state.

use std::collections::HashMap;

use hdrhistogram::Histogram;

/// A step of an order through the pipeline, named by the record that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `order.created` published by the outbox relay.
    Created,
    /// `payment.received` or `payment.failed` published by payments.
    Payment,
    /// `order.enriched` published by enrichment.
    Enriched,
    /// `inventory.allocated` or `inventory.rejected` published by inventory.
    Inventory,
}

/// The hops the report shows, in pipeline order: from the record before to the record that ends the hop.
pub const HOPS: [&str; 5] = [
    "201 -> order.created (outbox relay)",
    "order.created -> payment.* (payments)",
    "payment.received -> order.enriched (enrichment)",
    "order.enriched -> inventory.* (inventory)",
    "last outcome -> terminal order.state (projector)",
];

#[derive(Debug, Default, Clone, Copy)]
struct Stamps {
    accepted: Option<i64>,
    created: Option<i64>,
    payment: Option<i64>,
    enriched: Option<i64>,
    inventory: Option<i64>,
}

/// Record timestamps of the orders under way, and the hop latencies of the finished ones.
pub struct Hops {
    stamps: HashMap<String, Stamps>,
    histograms: Vec<Histogram<u64>>,
}

impl Hops {
    /// Empty, with a histogram per hop (milliseconds).
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            stamps: HashMap::new(),
            histograms: (0..HOPS.len())
                .map(|_| Histogram::new_with_bounds(1, 3_600_000, 3))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The order's 201 arrived at `wall_ms` (milliseconds since the epoch).
    pub fn accepted(&mut self, order: &str, wall_ms: i64) {
        self.stamps.entry(order.to_owned()).or_default().accepted = Some(wall_ms);
    }

    /// A record of `step` about `order` carries timestamp `ms`.
    pub fn seen(&mut self, step: Step, order: &str, ms: i64) {
        let stamps = self.stamps.entry(order.to_owned()).or_default();
        let slot = match step {
            Step::Created => &mut stamps.created,
            Step::Payment => &mut stamps.payment,
            Step::Enriched => &mut stamps.enriched,
            Step::Inventory => &mut stamps.inventory,
        };
        slot.get_or_insert(ms);
    }

    /// The order's terminal state was published at `ms`: records its hops and forgets it.
    pub fn terminal(&mut self, order: &str, ms: i64) {
        let Some(s) = self.stamps.remove(order) else {
            return;
        };
        let last = s.inventory.or(s.payment).or(s.created);
        let hops = [
            (s.accepted, s.created),
            (s.created, s.payment),
            (s.payment.filter(|_| s.enriched.is_some()), s.enriched),
            (s.enriched, s.inventory),
            (last, Some(ms)),
        ];
        for (histogram, hop) in self.histograms.iter_mut().zip(hops) {
            if let (Some(from), Some(to)) = hop {
                // Millisecond timestamps: a hop under 1 ms counts as 1 ms.
                let _ = histogram.record((to - from).max(1) as u64);
            }
        }
    }

    /// Per hop: (name, p50 ms, p99 ms, orders measured).
    pub fn summary(&self) -> Vec<(&'static str, u64, u64, u64)> {
        HOPS.iter()
            .zip(&self.histograms)
            .map(|(name, h)| {
                (
                    *name,
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99),
                    h.len(),
                )
            })
            .collect()
    }
}
