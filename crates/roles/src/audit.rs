//! The audit role: appends every event of the order lifecycle to the hash-chained audit trail in the
//! database (see `orderflow_store::audit`); `orderflow audit verify` checks the chain.
//!
//! Kafka to the database, exactly once: the appended rows and a `(consumer, event id)` dedup row commit in
//! one transaction, then the offsets are committed, so a re-delivered or re-published event (same event id)
//! is appended once.

use chrono::Utc;
use orderflow_consumer::effects::DbHandler;
use orderflow_consumer::{Delivery, HandlerError, Record};
use orderflow_events::LifecycleTopic;
use orderflow_store::{AuditEntry, TxStatements};
use serde::Deserialize;
use sqlx::Transaction;
use tokio_util::sync::CancellationToken;

use crate::runner::{ConsumerRole, StoreEffects};
use crate::{Backends, RoleError, store_error};

/// Every topic the audit trail records.
pub const AUDITED: [LifecycleTopic; 9] = LifecycleTopic::ALL;

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

impl<DB: TxStatements> DbHandler<DB> for Auditor {
    async fn apply(
        &self,
        tx: &mut Transaction<'static, DB>,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        DB::append_audit(tx, &entries(records), Utc::now())
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
    let role = ConsumerRole {
        role: crate::Role::Audit,
        group: &settings.group,
        inputs: &AUDITED,
        delivery: Delivery::AtLeastOnce,
        // One chain: appends are serial anyway, so a few partitions at once are enough.
        concurrency: 2,
    };
    let effects = StoreEffects::open(&backends.store, role.group(&backends), Auditor, &shutdown).await?;
    role.run(&backends, effects, shutdown).await
}
