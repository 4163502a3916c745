//! The audit role: appends every event of the order lifecycle to the hash-chained audit trail in the
//! database (see `orderflow_store::audit`); `orderflow audit verify` checks the chain.
//!
//! Kafka to the database, exactly once: the appended rows and a `(consumer, event id)` dedup row commit in
//! one transaction, then the offsets are committed, so a re-delivered or re-published event (same event id)
//! is appended once.

use chrono::Utc;
use orderflow_consumer::effects::{DbEffects, DbHandler};
use orderflow_consumer::{ConsumerRuntime, Delivery, HandlerError, Record};
use orderflow_events::topics;
use orderflow_store::{AuditEntry, PgStore, SqliteStore, Store, StoreError};
use serde::Deserialize;
use sqlx::{Postgres, Sqlite, Transaction};
use tokio_util::sync::CancellationToken;

use crate::{Backends, RoleError, store_error};

/// Every topic the audit trail records.
pub const AUDITED: [&str; 8] = [
    topics::ORDER_CREATED,
    topics::ORDER_CANCELLED,
    topics::PAYMENT_RECEIVED,
    topics::PAYMENT_FAILED,
    topics::ORDER_ENRICHED,
    topics::ORDER_UNPAID,
    topics::INVENTORY_ALLOCATED,
    topics::INVENTORY_REJECTED,
];

/// Settings of the audit role.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Kafka consumer group.
    pub group: String,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            group: "orderflow-audit".into(),
        }
    }
}

/// Turns records into chain entries.
struct Auditor;

fn entries(records: &[&Record]) -> Vec<AuditEntry> {
    records
        .iter()
        .map(|record| AuditEntry {
            event_id: record.event_id(),
            topic: record.source_topic().to_owned(),
            key: record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: record.payload.clone().unwrap_or_default(),
        })
        .collect()
}

impl DbHandler<Postgres> for Auditor {
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        PgStore::append_audit(tx, &entries(records), Utc::now())
            .await
            .map_err(store_error)
    }
}

impl DbHandler<Sqlite> for Auditor {
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        SqliteStore::append_audit(tx, &entries(records), Utc::now())
            .await
            .map_err(store_error)
    }
}

/// Records until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: AuditSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let bus = backends.bus.clone();
    let group = bus.group(&settings.group);
    let inputs: Vec<String> = AUDITED.iter().map(|t| bus.topic(t)).collect();
    let mut consumer = crate::consumer_settings(&bus, group.clone(), inputs.clone(), Delivery::AtLeastOnce);
    // One chain: appends are serial anyway, so a few partitions at once are enough.
    consumer.concurrency = 2;
    tracing::info!(?inputs, group, "audit recording");
    match &backends.store {
        Store::Postgres(pg) => {
            let effects = DbEffects::new(pg.pool().clone(), group, Auditor);
            effects.ensure_schema().await.map_err(StoreError::from)?;
            backends
                .consumers
                .watch(crate::Role::Audit, ConsumerRuntime::new(bus, consumer, effects))
                .run(shutdown)
                .await?;
        }
        Store::Sqlite(sqlite) => {
            let effects = DbEffects::new(sqlite.pool().clone(), group, Auditor);
            effects.ensure_schema().await.map_err(StoreError::from)?;
            backends
                .consumers
                .watch(crate::Role::Audit, ConsumerRuntime::new(bus, consumer, effects))
                .run(shutdown)
                .await?;
        }
    }
    Ok(())
}
