//! One way to run a consumer role: a role says which it is, which lifecycle topics it reads, how its
//! effects are delivered and how many partitions it works at once, and hands over its handler; the runner
//! does the rest (group and topic names under the deployment prefix, consumer settings, registration for
//! readiness and holds, running until shutdown).
//!
//! Roles whose effects land in the database wrap their handler in [`StoreEffects`], which opens the
//! `(consumer, event id)` dedup transaction on whichever backend the deployment runs, so a database handler
//! is written once (over [`orderflow_store::TxStatements`]) for PostgreSQL and SQLite.

use std::time::Duration;

use orderflow_consumer::effects::{DEDUP_RETENTION, DbEffects, DbHandler, DedupPruner};
use orderflow_consumer::{ConsumerRuntime, Delivery, Handler, HandlerError, Output, Record};
use orderflow_events::{LifecycleTopic, LifecycleTopics};
use orderflow_store::{Store, StoreError};
use sqlx::{Postgres, Sqlite};
use tokio_util::sync::CancellationToken;

use crate::{Backends, Role, RoleError};

/// What a consumer role is: everything the runner needs besides its handler.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsumerRole<'a> {
    /// The role.
    pub role: Role,
    /// Its consumer group's name, before the deployment prefix.
    pub group: &'a str,
    /// The lifecycle topics it reads.
    pub inputs: &'a [LifecycleTopic],
    /// How its effects and offsets commit. [`Delivery::Transactional`] falls back to at-least-once on the
    /// embedded mock cluster, which has no transactions.
    pub delivery: Delivery,
    /// Partitions worked on at once.
    pub concurrency: usize,
}

impl ConsumerRole<'_> {
    /// The full consumer group id in this deployment.
    pub fn group(&self, backends: &Backends) -> String {
        backends.bus.group(self.group)
    }

    /// The inputs under this deployment's full topic names.
    pub fn topics(&self, backends: &Backends) -> LifecycleTopics {
        LifecycleTopics::new(self.inputs, |t| backends.bus.topic(t))
    }

    /// The delivery the deployment's bus supports.
    fn delivery(&self, backends: &Backends) -> Delivery {
        match self.delivery {
            Delivery::Transactional if backends.bus.is_embedded() => Delivery::AtLeastOnce,
            delivery => delivery,
        }
    }

    /// Consumes with `handler` until `shutdown` fires, then drains, commits and leaves the group (bounded).
    pub async fn run<H: Handler>(
        self,
        backends: &Backends,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<(), RoleError> {
        let group = self.group(backends);
        let inputs = self.topics(backends).names();
        let delivery = self.delivery(backends);
        let mut consumer = crate::consumer_settings(&backends.bus, group.clone(), inputs.clone(), delivery);
        consumer.concurrency = self.concurrency.max(1);
        tracing::info!(role = self.role.name(), ?inputs, group, ?delivery, "consuming");
        backends
            .consumers
            .watch(
                self.role,
                ConsumerRuntime::new(backends.bus.clone(), consumer, handler),
            )
            .run(shutdown)
            .await?;
        Ok(())
    }
}

/// A database handler's effects on the deployment's store, exactly once per `(consumer, event id)`.
pub(crate) enum StoreEffects<H> {
    /// On PostgreSQL.
    Postgres(DbEffects<Postgres, H>),
    /// On the embedded SQLite file.
    Sqlite(DbEffects<Sqlite, H>),
}

impl<H> StoreEffects<H>
where
    H: DbHandler<Postgres> + DbHandler<Sqlite>,
{
    /// `handler`'s effects for the consumer named `consumer` (its group id), with the dedup table in place.
    /// Until `shutdown`, the consumer's dedup rows older than [`DEDUP_RETENTION`] are deleted every
    /// [`PRUNE_EVERY`], so the table holds a bounded window of events.
    pub async fn open(
        store: &Store,
        consumer: String,
        handler: H,
        shutdown: &CancellationToken,
    ) -> Result<Self, RoleError> {
        let (effects, pruner) = match store {
            Store::Postgres(pg) => {
                let effects = DbEffects::new(pg.pool().clone(), consumer, handler);
                effects.ensure_schema().await.map_err(StoreError::from)?;
                let pruner = Pruner::Postgres(effects.pruner());
                (Self::Postgres(effects), pruner)
            }
            Store::Sqlite(sqlite) => {
                let effects = DbEffects::new(sqlite.pool().clone(), consumer, handler);
                effects.ensure_schema().await.map_err(StoreError::from)?;
                let pruner = Pruner::Sqlite(effects.pruner());
                (Self::Sqlite(effects), pruner)
            }
        };
        tokio::spawn(pruner.run(shutdown.clone()));
        Ok(effects)
    }
}

/// How often a database role forgets its expired dedup rows.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Forgets one consumer's expired dedup rows, on whichever backend runs.
enum Pruner {
    Postgres(DedupPruner<Postgres>),
    Sqlite(DedupPruner<Sqlite>),
}

impl Pruner {
    /// Prunes every [`PRUNE_EVERY`] until `shutdown`, the first time one period after start, so a start-up
    /// spends nothing on it. A failure is logged and tried again
    /// at the next tick: the rows only wait longer.
    async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pruned = match &self {
                Self::Postgres(pruner) => pruner.prune(DEDUP_RETENTION).await,
                Self::Sqlite(pruner) => pruner.prune(DEDUP_RETENTION).await,
            };
            match pruned {
                Ok(rows) => tracing::debug!(rows, "pruned expired dedup rows"),
                Err(e) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "pruning expired dedup rows failed"
                ),
            }
        }
    }
}

impl<H> Handler for StoreEffects<H>
where
    H: DbHandler<Postgres> + DbHandler<Sqlite>,
{
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        match self {
            Self::Postgres(effects) => effects.handle(batch).await,
            Self::Sqlite(effects) => effects.handle(batch).await,
        }
    }
}
