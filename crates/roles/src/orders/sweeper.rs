//! The stranded-order sweeper: finds orders that stopped moving (still `CREATED` or `PAID` long after their
//! last change, when every step answers within seconds) and reports them, as the gauge
//! `orderflow_orders_stranded{status}` (alert `OrderflowOrdersStranded`) and a log line naming each of the
//! longest waiting. An operator then looks at the step that owes them an answer (its lag, its dead
//! letters), or at state that was lost under it.

use std::time::Duration;

use chrono::Utc;
use orderflow_store::{Store, Stranded};
use tokio_util::sync::CancellationToken;

use crate::settings::OrdersSettings;
use crate::telemetry::RoleEvent;

/// Orders named in the log per sweep: enough to start from, few enough not to flood it.
const NAMED_PER_SWEEP: i64 = 20;

/// Sweeps once: orders still `CREATED` or `PAID` whose last change is older than `after`.
pub(crate) async fn sweep(store: &Store, after: Duration) -> Result<Stranded, orderflow_store::StoreError> {
    let before = Utc::now() - chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let stranded = store.stranded_orders(before, NAMED_PER_SWEEP).await?;
    RoleEvent::Stranded {
        created: stranded.created,
        paid: stranded.paid,
    }
    .emit();
    for (order, status, since) in &stranded.oldest {
        tracing::warn!(
            order = %order,
            status,
            since = %since.to_rfc3339(),
            "order stranded: no step has moved it for longer than orders.stranded_after_secs"
        );
    }
    Ok(stranded)
}

/// Sweeps every `sweep_interval_secs` until `shutdown`; a failed sweep is logged and tried at the next tick.
pub(crate) async fn run(store: Store, settings: OrdersSettings, shutdown: CancellationToken) {
    let after = Duration::from_secs(settings.stranded_after_secs);
    let mut tick = tokio::time::interval(Duration::from_secs(settings.sweep_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep(&store, after).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "sweeping for stranded orders failed"
            );
        }
    }
}
