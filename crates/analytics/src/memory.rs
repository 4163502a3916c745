//! Analytics in process: the same aggregates as on Redis, exact, for the embedded default (one process, no
//! Redis). Unique customers are counted exactly here rather than estimated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::{AnalyticsError, Customers, Fact, FactKind, Funnel, Hopping, RevenueHour, hour_of, hours, top};

/// What is known of one order.
#[derive(Default)]
struct Marks {
    seen: HashSet<FactKind>,
    /// Hour, currency and amount counted as revenue when paid.
    paid: Option<(i64, String, i64)>,
}

#[derive(Default)]
struct State {
    orders: HashMap<String, Marks>,
    revenue: BTreeMap<i64, BTreeMap<String, i64>>,
    slots: HashMap<i64, u64>,
    customers: BTreeMap<i64, HashSet<String>>,
    products: BTreeMap<i64, HashMap<String, i64>>,
    all_products: HashMap<String, i64>,
    funnel: Funnel,
    /// Whether the aggregates hold everything (false until a process that starts empty has rebuilt).
    intact: bool,
    /// The token of the rebuild under way.
    rebuilding: Option<String>,
}

/// Analytics held in this process.
pub struct MemoryAnalytics {
    hopping: Hopping,
    state: Mutex<State>,
}

impl MemoryAnalytics {
    /// Empty aggregates counting orders in `hopping` windows, intact: nothing happened before them.
    pub fn new(hopping: Hopping) -> Result<Self, AnalyticsError> {
        let analytics = Self::unloaded(hopping)?;
        analytics.state().intact = true;
        Ok(analytics)
    }

    /// Empty aggregates that still miss what happened before this process started: updates are refused
    /// until [`crate::Analytics::rebuild_if_lost`] has loaded it.
    pub fn unloaded(hopping: Hopping) -> Result<Self, AnalyticsError> {
        Ok(Self {
            hopping: hopping.validated()?,
            state: Mutex::new(State::default()),
        })
    }

    pub(crate) fn intact(&self) -> bool {
        self.state().intact
    }

    pub(crate) fn begin_rebuild(&self) -> Option<String> {
        let mut state = self.state();
        if state.rebuilding.is_some() {
            return None;
        }
        let token = orderflow_redis::rebuild_token();
        state.rebuilding = Some(token.clone());
        Some(token)
    }

    pub(crate) fn finish_rebuild(&self, token: &str) -> bool {
        let mut state = self.state();
        if state.rebuilding.as_deref() != Some(token) {
            return false;
        }
        state.rebuilding = None;
        state.intact = true;
        true
    }

    pub(crate) fn abandon_rebuild(&self, token: &str) {
        let mut state = self.state();
        if state.rebuilding.as_deref() == Some(token) {
            state.rebuilding = None;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way later reads misuse.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn hopping(&self) -> Hopping {
        self.hopping
    }

    pub(crate) fn apply(&self, facts: &[Fact], rebuild: Option<&str>) -> Result<usize, AnalyticsError> {
        let mut state = self.state();
        let allowed = match rebuild {
            None => state.intact,
            Some(token) => state.rebuilding.as_deref() == Some(token),
        };
        if !allowed {
            return Err(AnalyticsError::Lost);
        }
        let mut applied = 0;
        for fact in facts {
            let marks = state.orders.entry(fact.order_id.clone()).or_default();
            if !marks.seen.insert(fact.kind) {
                continue;
            }
            applied += 1;
            let hour = hour_of(fact.at);
            let refunded = marks.seen.contains(&FactKind::Refunded);
            let paid = marks.paid.clone();
            if fact.kind == FactKind::Paid {
                marks.paid = Some((hour, fact.currency.clone(), fact.amount_minor));
            }
            match fact.kind {
                FactKind::Created => {
                    state.funnel.created += 1;
                    let slot = fact.at - fact.at.rem_euclid(self.hopping.hop_secs);
                    *state.slots.entry(slot).or_default() += 1;
                    state
                        .customers
                        .entry(hour)
                        .or_default()
                        .insert(fact.customer.clone());
                    for (sku, units) in &fact.items {
                        *state
                            .products
                            .entry(hour)
                            .or_default()
                            .entry(sku.clone())
                            .or_default() += units;
                        *state.all_products.entry(sku.clone()).or_default() += units;
                    }
                }
                FactKind::Paid => {
                    state.funnel.paid += 1;
                    if !refunded {
                        *state
                            .revenue
                            .entry(hour)
                            .or_default()
                            .entry(fact.currency.clone())
                            .or_default() += fact.amount_minor;
                    }
                }
                FactKind::Cancelled => state.funnel.cancelled += 1,
                FactKind::Refunded => {
                    state.funnel.refunded += 1;
                    if let Some((paid_hour, currency, amount)) = paid {
                        *state
                            .revenue
                            .entry(paid_hour)
                            .or_default()
                            .entry(currency)
                            .or_default() -= amount;
                    }
                }
                FactKind::Allocated => state.funnel.allocated += 1,
                FactKind::PaymentFailed => state.funnel.payment_failed += 1,
                FactKind::Rejected => state.funnel.rejected += 1,
            }
        }
        Ok(applied)
    }

    pub(crate) fn revenue(&self, from: i64, to: i64) -> Vec<RevenueHour> {
        let state = self.state();
        state
            .revenue
            .range(hour_of(from)..=hour_of(to))
            .map(|(&hour, by_currency)| RevenueHour {
                hour,
                by_currency: by_currency.clone(),
            })
            .collect()
    }

    pub(crate) fn slot_counts(&self, slots: &[i64]) -> Vec<u64> {
        let state = self.state();
        slots
            .iter()
            .map(|slot| state.slots.get(slot).copied().unwrap_or_default())
            .collect()
    }

    pub(crate) fn unique_customers(&self, from: i64, to: i64) -> Customers {
        let state = self.state();
        let mut all = HashSet::new();
        let mut per_hour = Vec::new();
        for (&hour, customers) in state.customers.range(hour_of(from)..=hour_of(to)) {
            per_hour.push((hour, customers.len() as u64));
            all.extend(customers.iter());
        }
        Customers {
            per_hour,
            total: all.len() as u64,
        }
    }

    pub(crate) fn top_products(&self, range: Option<(i64, i64)>, limit: usize) -> Vec<(String, i64)> {
        let state = self.state();
        let totals: HashMap<String, i64> = match range {
            None => state.all_products.clone(),
            Some((from, to)) => {
                let mut totals = HashMap::new();
                for hour in hours(from, to) {
                    for (sku, units) in state.products.get(&hour).into_iter().flatten() {
                        *totals.entry(sku.clone()).or_default() += units;
                    }
                }
                totals
            }
        };
        top(totals.into_iter().collect(), limit)
    }

    pub(crate) fn funnel(&self) -> Funnel {
        self.state().funnel.clone()
    }
}
