//! `orderflow reconcile`: checks a deployment against its source of truth, as an operator's tool and as the
//! fault tests' independent oracle. It reads PostgreSQL, Kafka and Redis and never writes.
//!
//! Each check gives one [`Check`]: orders terminal or within their time, charges that fit their orders,
//! the stock ledger, analytics revenue against the captured charges, the Redis read model and `order.state`
//! against the orders table, the audit chain, and the dead letters. A check whose backend lives only inside
//! a running process (the embedded default) is reported as skipped.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use orderflow_events::{OrderState, topics};
use serde::Serialize;

use crate::{Backends, RoleError};

/// Wraps a read failure with what was being read.
fn reading<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> RoleError {
    move |e| RoleError::Reconcile {
        context,
        source: Box::new(e),
    }
}

/// Orders compared per round trip.
const PAGE: i64 = 1_000;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: &'static str,
    /// `ok`, `mismatch` or `skipped`.
    pub result: &'static str,
    /// What was found.
    pub detail: String,
}

impl Check {
    fn new(check: &'static str, ok: bool, detail: String) -> Self {
        Self {
            check,
            result: if ok { "ok" } else { "mismatch" },
            detail,
        }
    }

    fn skipped(check: &'static str, why: &str) -> Self {
        Self {
            check,
            result: "skipped",
            detail: why.to_owned(),
        }
    }

    /// Whether this check found a mismatch.
    pub fn failed(&self) -> bool {
        self.result == "mismatch"
    }
}

/// Runs every check against the deployment `backends` connect to. `within` is how long an order may still
/// be on its way (`CREATED` or `PAID`) before it counts as stranded.
pub async fn reconcile(backends: &Backends, within: Duration) -> Result<Vec<Check>, RoleError> {
    let store = &backends.store;
    let mut checks = Vec::new();

    // Orders: every one terminal, or still within its time.
    let counts = store.order_status_counts().await?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let before = Utc::now() - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
    let stranded = store.stranded_orders(before, 5).await?;
    let late = stranded.created + stranded.paid;
    let by_status: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut detail = format!("{total} orders ({})", by_status.join(", "));
    if late > 0 {
        let named: Vec<String> = stranded
            .oldest
            .iter()
            .map(|(id, s, _)| format!("{id} {s}"))
            .collect();
        detail.push_str(&format!(
            "; {late} not terminal after {} s, e.g. {}",
            within.as_secs(),
            named.join(", ")
        ));
    }
    checks.push(Check::new("orders terminal", late == 0, detail));

    // Charges: one per order by construction (the order id is the ledger's key); here, that they fit.
    let charges = store.charge_discrepancies().await?;
    let refunds_ok = charges.refund_missing == 0 && charges.refund_wrong == 0;
    checks.push(Check::new(
        "charges",
        orderflow_store::ChargeDiscrepancies {
            refund_missing: 0,
            refund_wrong: 0,
            ..charges
        } == orderflow_store::ChargeDiscrepancies::default(),
        format!(
            "{} captured charges not matching their order's total, {} paid orders without a captured charge, {} failed orders with one",
            charges.wrong_amount, charges.paid_without_charge, charges.failed_with_charge
        ),
    ));
    // Refunds: every rejected or cancelled order's captured charge refunded once, in full, and nothing else.
    checks.push(Check::new(
        "refunds",
        refunds_ok,
        format!(
            "{} rejected or cancelled orders with a captured charge not refunded, {} refunds of live orders or of another amount",
            charges.refund_missing, charges.refund_wrong
        ),
    ));

    // Stock: stock plus allocated units equals the units received, per product.
    let ledger = store.stock_ledger().await?;
    let off: Vec<String> = ledger
        .iter()
        .filter(|l| !l.balances())
        .map(|l| {
            format!(
                "{}: {} in stock + {} allocated != {} received",
                l.sku,
                l.stock,
                l.allocated,
                l.received.unwrap_or_default()
            )
        })
        .collect();
    let untracked = ledger.iter().filter(|l| l.received.is_none()).count();
    checks.push(Check::new(
        "stock ledger",
        off.is_empty(),
        if off.is_empty() {
            format!("{} products balance ({untracked} untracked)", ledger.len())
        } else {
            off.join("; ")
        },
    ));

    // Analytics revenue against the captured charges less the refunds.
    let expected = store.captured_less_refunded_minor().await?;
    checks.push(match &backends.analytics {
        orderflow_analytics::Analytics::Redis(_) => {
            let from = store
                .first_order_at()
                .await?
                .map_or_else(|| Utc::now().timestamp(), |at| at.timestamp());
            let hours = backends
                .analytics
                .revenue(from, Utc::now().timestamp())
                .await
                .map_err(reading("analytics revenue"))?;
            let reported: i64 = hours.iter().flat_map(|h| h.by_currency.values()).sum();
            Check::new(
                "analytics revenue",
                reported == expected,
                format!("analytics {reported}, captured charges less refunds {expected} (minor units)"),
            )
        }
        orderflow_analytics::Analytics::Memory(_) => Check::skipped(
            "analytics revenue",
            "analytics live inside the running process (no Redis)",
        ),
    });

    // The Redis read model and order.state against the orders table.
    checks.push(match &backends.redis {
        Some(redis) => read_model(store, redis, &backends.key_prefix).await?,
        None => Check::skipped(
            "read model",
            "the read model lives inside the running process (no Redis)",
        ),
    });
    checks.push(if backends.bus.is_embedded() {
        Check::skipped(
            "order.state",
            "the embedded cluster lives inside the running process",
        )
    } else {
        order_state(backends).await?
    });

    // The audit chain.
    checks.push(match store.verify_audit().await? {
        orderflow_store::AuditVerdict::Intact(rows) => {
            Check::new("audit chain", true, format!("{rows} rows intact"))
        }
        orderflow_store::AuditVerdict::Broken { seq, reason } => {
            Check::new("audit chain", false, format!("broken at row {seq}: {reason}"))
        }
    });

    // Dead letters: each one is a record some group gave up on, to be looked at and replayed.
    checks.push(if backends.bus.is_embedded() {
        Check::skipped(
            "dead letters",
            "the embedded cluster lives inside the running process",
        )
    } else {
        let found: Vec<String> = orderflow_consumer::dlq::counts(&backends.bus)
            .await
            .map_err(reading("the dead-letter topics"))?
            .into_iter()
            .map(|(topic, letters)| format!("{letters} in {topic}"))
            .collect();
        Check::new(
            "dead letters",
            found.is_empty(),
            if found.is_empty() {
                "none".to_owned()
            } else {
                format!("{} (see `orderflow dlq list`)", found.join(", "))
            },
        )
    });
    Ok(checks)
}

/// The check of a copy of the orders' states: `compared` orders, `missing` from the copy, `differ` named.
fn comparison(check: &'static str, compared: usize, missing: usize, differ: &[String]) -> Check {
    let mut detail = format!(
        "{compared} orders compared, {missing} missing, {} differ",
        differ.len()
    );
    if let Some(first) = differ.first() {
        detail.push_str(&format!(", e.g. {first}"));
    }
    Check::new(check, missing == 0 && differ.is_empty(), detail)
}

/// Status and version of each read model hash in `keys`: pipelined on one server; on a Cluster, where a
/// pipeline must keep to one slot and each order has its own, as concurrent calls.
async fn read_models(
    redis: &orderflow_redis::RedisConnection,
    keys: &[String],
) -> redis::RedisResult<Vec<(Option<String>, Option<i64>)>> {
    let hmget = |key: &String| {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key).arg("s").arg("v");
        cmd
    };
    match redis {
        orderflow_redis::RedisConnection::Single(_) => {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.add_command(hmget(key));
            }
            pipe.query_async(&mut redis.clone()).await
        }
        orderflow_redis::RedisConnection::Cluster(_) => {
            futures::future::try_join_all(keys.iter().map(|key| {
                let (cmd, mut conn) = (hmget(key), redis.clone());
                async move { cmd.query_async(&mut conn).await }
            }))
            .await
        }
    }
}

/// Pages through the orders and compares each with its read model hash in Redis.
async fn read_model(
    store: &orderflow_store::Store,
    redis: &orderflow_redis::RedisConnection,
    prefix: &str,
) -> Result<Check, RoleError> {
    let (mut compared, mut missing, mut differ) = (0usize, 0usize, Vec::new());
    let mut after = None;
    loop {
        let page = store.order_states(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        let keys: Vec<String> = page
            .iter()
            .map(|(id, _, _)| crate::projector::read_model_key(prefix, &id.to_string()))
            .collect();
        let models = read_models(redis, &keys)
            .await
            .map_err(reading("the read model in Redis"))?;
        for ((id, status, version), model) in page.iter().zip(models) {
            compared += 1;
            match model {
                (Some(s), Some(v)) if s == *status && v == *version => {}
                (None, _) | (_, None) => missing += 1,
                (Some(s), Some(v)) => differ.push(format!("{id}: {s} v{v}, database {status} v{version}")),
            }
        }
    }
    Ok(comparison("read model", compared, missing, &differ))
}

/// Reads `order.state` to its end and compares each order's latest state with the orders table.
async fn order_state(backends: &Backends) -> Result<Check, RoleError> {
    let topic = backends.bus.topic(topics::ORDER_STATE);
    let records = orderflow_consumer::dlq::list(&backends.bus, &topic)
        .await
        .map_err(reading("order.state"))?;
    // Records of one order share a partition; the latest offset is its state. Each order's records are
    // kept too (status, version and offset), so that a mismatch shows how the order's states came in.
    let mut latest: HashMap<String, (i64, OrderState)> = HashMap::new();
    let mut seen: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for record in records {
        let state: OrderState = backends
            .codec
            .decode(&record.payload)
            .await
            .map_err(reading("an order.state record"))?;
        seen.entry(state.order_id.clone()).or_default().push((
            record.offset,
            format!("{} v{}@{}", state.status, state.order_version, record.offset),
        ));
        match latest.get(&state.order_id) {
            Some((offset, _)) if *offset > record.offset => {}
            _ => {
                latest.insert(state.order_id.clone(), (record.offset, state));
            }
        }
    }
    let (mut compared, mut missing, mut differ) = (0usize, 0usize, Vec::new());
    let mut after = None;
    loop {
        let page = backends.store.order_states(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, status, version) in &page {
            compared += 1;
            match latest.get(&id.to_string()) {
                None => missing += 1,
                Some((_, s)) if s.status == *status && s.order_version == *version => {}
                Some((_, s)) => {
                    let mut history = seen.remove(&id.to_string()).unwrap_or_default();
                    history.sort_unstable();
                    let history: Vec<String> = history.into_iter().map(|(_, h)| h).collect();
                    differ.push(format!(
                        "{id}: {} v{}, database {status} v{version} (its records: {})",
                        s.status,
                        s.order_version,
                        history.join(", ")
                    ))
                }
            }
        }
    }
    Ok(comparison("order.state", compared, missing, &differ))
}
