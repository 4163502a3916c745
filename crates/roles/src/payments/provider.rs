//! A simulated payment provider: latency, failures and decline rules, deterministic under a seed.
//!
//! Every decision about an order is drawn from a random stream seeded by the configured seed and the order
//! id, so the same order gets the same answer (and the same simulated latency) in every run, on every
//! instance, and however often it is asked. What was charged is kept in the provider's ledger (see
//! `orderflow_store::Charge`), keyed by order id like a real provider's idempotency key.

use std::time::Duration;

use orderflow_events::OrderCreated;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// How the simulated provider behaves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderSettings {
    /// Seed of every random decision.
    pub seed: u64,
    /// Time every charge takes, in milliseconds.
    pub latency_ms: u64,
    /// Extra time drawn uniformly from 0 to this, in milliseconds.
    pub latency_jitter_ms: u64,
    /// Share of charges the provider fails to process (0 to 1), reported as payment.failed.
    pub failure_rate: f64,
    /// Charges above this amount (minor units) are declined.
    pub decline_above_minor: Option<i64>,
    /// Customers whose charges are declined.
    pub decline_customers: Vec<String>,
    /// Currencies accepted (ISO 4217 codes); empty accepts every currency.
    pub currencies: Vec<String>,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            seed: 1,
            latency_ms: 0,
            latency_jitter_ms: 0,
            failure_rate: 0.0,
            decline_above_minor: None,
            decline_customers: Vec::new(),
            currencies: Vec::new(),
        }
    }
}

impl ProviderSettings {
    /// Checks the values no provider can have.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!(
                "payments.provider.failure_rate must be between 0 and 1, not {}",
                self.failure_rate
            ));
        }
        if self.decline_above_minor.is_some_and(|limit| limit < 0) {
            return Err("payments.provider.decline_above_minor must not be negative".into());
        }
        Ok(())
    }
}

/// The provider's answer to one charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The money was taken.
    Captured,
    /// A rule refused it.
    Declined(String),
    /// The provider failed to process it.
    Failed(String),
}

/// The simulated provider.
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    settings: ProviderSettings,
}

impl SimulatedProvider {
    /// A provider behaving as `settings` say.
    pub fn new(settings: ProviderSettings) -> Self {
        Self { settings }
    }

    /// The random stream of one order: the seed mixed with the order id (the same id, the same stream).
    fn stream(&self, order_id: &str) -> StdRng {
        // FNV-1a over the id's text: stable across builds and platforms, unlike the std hasher.
        let hash = order_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        StdRng::seed_from_u64(self.settings.seed ^ hash)
    }

    /// How the provider answers `order`, and how long it takes to.
    pub fn decide(&self, order: &OrderCreated) -> (Decision, Duration) {
        let s = &self.settings;
        let mut rng = self.stream(&order.order_id);
        let jitter = match s.latency_jitter_ms {
            0 => 0,
            max => rng.random_range(0..=max),
        };
        let failure_draw: f64 = rng.random();
        let latency = Duration::from_millis(s.latency_ms.saturating_add(jitter));
        let decision = if !s.currencies.is_empty() && !s.currencies.iter().any(|c| c == &order.currency) {
            Decision::Declined(format!("declined: currency {} not accepted", order.currency))
        } else if s.decline_customers.iter().any(|c| c == &order.customer_id) {
            Decision::Declined("declined: customer blocked".into())
        } else if let Some(limit) = s.decline_above_minor.filter(|limit| order.total_minor > *limit) {
            Decision::Declined(format!(
                "declined: amount {} over the limit {limit}",
                order.total_minor
            ))
        } else if failure_draw < s.failure_rate {
            Decision::Failed("failed: provider error".into())
        } else {
            Decision::Captured
        };
        (decision, latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, customer: &str, total: i64) -> OrderCreated {
        OrderCreated {
            event_id: "0190b3e0-0000-7000-8000-000000000000".into(),
            event_type: "order.created".into(),
            order_id: id.into(),
            order_version: 1,
            occurred_at: 0,
            customer_id: customer.into(),
            currency: "EUR".into(),
            items: Vec::new(),
            total_minor: total,
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("0190b3e0-0000-7000-8000-{i:012}"))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_answers_and_latencies() {
        let settings = ProviderSettings {
            seed: 7,
            failure_rate: 0.3,
            latency_ms: 2,
            latency_jitter_ms: 10,
            ..ProviderSettings::default()
        };
        let a = SimulatedProvider::new(settings.clone());
        let b = SimulatedProvider::new(settings.clone());
        let other = SimulatedProvider::new(ProviderSettings { seed: 8, ..settings });
        let answers = |p: &SimulatedProvider| {
            ids(500)
                .iter()
                .map(|id| p.decide(&order(id, "c-1", 100)))
                .collect::<Vec<_>>()
        };
        assert_eq!(answers(&a), answers(&b));
        assert_ne!(answers(&a), answers(&other));
        let failed = answers(&a)
            .iter()
            .filter(|(d, _)| matches!(d, Decision::Failed(_)))
            .count();
        assert!(
            (100..200).contains(&failed),
            "about 30 % of 500 fail, got {failed}"
        );
        assert!(answers(&a).iter().all(|(_, l)| (2..=12).contains(&l.as_millis())));
    }

    #[test]
    fn decline_rules_refuse_amount_customer_and_currency() {
        let p = SimulatedProvider::new(ProviderSettings {
            decline_above_minor: Some(10_000),
            decline_customers: vec!["blocked".into()],
            currencies: vec!["EUR".into(), "USD".into()],
            ..ProviderSettings::default()
        });
        let id = &ids(1)[0];
        assert_eq!(p.decide(&order(id, "c-1", 10_000)).0, Decision::Captured);
        assert!(
            matches!(p.decide(&order(id, "c-1", 10_001)).0, Decision::Declined(r) if r.contains("over the limit"))
        );
        assert!(
            matches!(p.decide(&order(id, "blocked", 1)).0, Decision::Declined(r) if r.contains("customer"))
        );
        let mut yen = order(id, "c-1", 1);
        yen.currency = "JPY".into();
        assert!(matches!(p.decide(&yen).0, Decision::Declined(r) if r.contains("JPY")));
    }

    #[test]
    fn impossible_settings_are_refused() {
        let bad = ProviderSettings {
            failure_rate: 1.5,
            ..ProviderSettings::default()
        };
        assert!(bad.validate().unwrap_err().contains("failure_rate"));
        assert!(ProviderSettings::default().validate().is_ok());
    }
}
