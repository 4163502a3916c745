//! The in-process read model (embedded default): a bounded moka cache with per-entry version checks.

use std::sync::Arc;

use moka::future::Cache;
use moka::ops::compute::Op;
use orderflow_domain::{Order, OrderId};

use crate::CacheSettings;

/// In-process read model; clones share the same entries.
#[derive(Clone)]
pub struct MemoryReadModel {
    entries: Cache<OrderId, Arc<Order>>,
}

impl MemoryReadModel {
    /// An empty read model bounded by `settings.memory_capacity` entries living `settings.ttl_secs`.
    pub fn new(settings: CacheSettings) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.memory_capacity)
            .time_to_live(std::time::Duration::from_secs(settings.ttl_secs.max(1)))
            .build();
        Self { entries }
    }

    /// The cached order, if any.
    pub async fn get(&self, id: OrderId) -> Option<Order> {
        self.entries.get(&id).await.map(|o| (*o).clone())
    }

    /// Stores `order` unless a version at least as new is cached; returns whether it was stored.
    pub async fn put(&self, order: &Order) -> bool {
        let candidate = Arc::new(order.clone());
        let result = self
            .entries
            .entry(order.id)
            .and_compute_with(|current| {
                let newer = current.is_none_or(|c| c.value().version < candidate.version);
                let op = if newer {
                    Op::Put(candidate.clone())
                } else {
                    Op::Nop
                };
                std::future::ready(op)
            })
            .await;
        matches!(
            result,
            moka::ops::compute::CompResult::Inserted(_) | moka::ops::compute::CompResult::ReplacedWith(_)
        )
    }

    /// Drops the entry of `id`.
    pub async fn invalidate(&self, id: OrderId) {
        self.entries.invalidate(&id).await;
    }
}
