//! Group commit of new orders: concurrent writers share one transaction and one durable commit.
//!
//! Each order still gets its own answer only after the transaction holding it committed, so a `201` is as
//! durable as before; what changes is that a hundred concurrent POSTs cost one commit (one WAL flush on
//! PostgreSQL, one journal sync on SQLite) instead of a hundred. Batches form by themselves: while one
//! commit is in flight, the orders that arrive queue up and go together in the next. Nothing waits on a
//! timer, so a lone order commits at once.
//!
//! When a batch fails on something one order caused (a duplicate id, a constraint), the batch is retried one
//! order at a time, so only that order gets the error. Written here rather than taken from a crate: the
//! batching is a few lines around [`Store::insert_orders`], and no crate batches sqlx transactions.

use std::sync::Arc;

use orderflow_domain::Order;
use orderflow_events::EncodedEvent;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::telemetry::StoreEvent;
use crate::{Store, StoreError};

/// One order waiting for its batch to commit.
struct Pending {
    order: Order,
    event: EncodedEvent,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitSettings {
    /// Most orders in one transaction.
    pub max_batch: usize,
    /// Transactions committing at once (more overlap the statements of one with the flush of another).
    pub max_in_flight: usize,
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_in_flight: 2,
        }
    }
}

/// Writes new orders with their outbox events through group commits; cheap to clone and share.
#[derive(Clone)]
pub struct OrderWriter {
    sender: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for OrderWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderWriter").finish_non_exhaustive()
    }
}

impl OrderWriter {
    /// Starts the writer's task on the current tokio runtime; it ends when every clone is dropped.
    pub fn spawn(store: Store, settings: GroupCommitSettings) -> Self {
        let max_batch = settings.max_batch.max(1);
        let (sender, receiver) = mpsc::channel(max_batch * settings.max_in_flight.max(1) * 4);
        tokio::spawn(run(store, receiver, max_batch, settings.max_in_flight.max(1)));
        Self { sender }
    }

    /// Writes `order` and `event` (its outbox row); returns once the transaction holding them committed.
    pub async fn insert(&self, order: Order, event: EncodedEvent) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.sender
            .send(Pending { order, event, done })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

async fn run(store: Store, mut receiver: mpsc::Receiver<Pending>, max_batch: usize, max_in_flight: usize) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    loop {
        // Wait for a commit slot first: orders keep queueing meanwhile and form the next batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max_batch);
        if receiver.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let store = store.clone();
        tokio::spawn(async move {
            commit(&store, batch).await;
            drop(permit);
        });
    }
}

/// Commits `batch` in one transaction, or one order at a time when the batch as a whole is refused.
async fn commit(store: &Store, batch: Vec<Pending>) {
    let rows: Vec<(&Order, &EncodedEvent)> = batch.iter().map(|p| (&p.order, &p.event)).collect();
    let result = store.insert_orders(&rows).await;
    drop(rows);
    match result {
        Ok(()) => {
            StoreEvent::GroupCommitted { orders: batch.len() }.emit();
            for pending in batch {
                let _ = pending.done.send(Ok(()));
            }
        }
        Err(error) if batch.len() > 1 && refused_by_content(&error) => {
            for pending in batch {
                let result = store.insert_order(&pending.order, &pending.event).await;
                let _ = pending.done.send(result);
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for pending in batch {
                let _ = pending.done.send(Err(StoreError::Batch(error.clone())));
            }
        }
    }
}

/// True when the database refused the statements themselves (a constraint), which one order of the batch may
/// have caused; false for trouble that would fail any batch (the connection, the server).
fn refused_by_content(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(sqlx::Error::Database(_)))
}
