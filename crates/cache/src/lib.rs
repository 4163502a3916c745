//! The order read model: derived, replaceable state served to readers before the database.
//!
//! In production it lives in Redis as one hash per order under `<prefix>order:{<order id>}` (the braces are
//! a Redis Cluster hash tag, so every key of one order lands on one slot); in the embedded default it lives
//! in process. Writes are version-checked atomically, so an older version never replaces a newer one,
//! whichever of the projector and the read path gets there first.

mod breaker;
mod memory;
mod redis_store;
mod tiered;

use std::time::Duration;

use orderflow_domain::{Order, OrderId};
use rand::Rng;
use serde::Deserialize;

pub use breaker::{Breaker, BreakerState};
pub use memory::MemoryReadModel;
pub use redis_store::RedisReadModel;
pub use tiered::{CacheStats, LoadError, TieredCache, TieredSettings, Versioned};

/// Read-model settings, as read from configuration.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// `redis://...` / `rediss://...`; empty or absent keeps the read model in process. May hold a password.
    pub redis_url: Option<String>,
    /// Prepended to every key (e.g. `orderflow:`), so Redis ACLs can confine the service to its keys.
    pub key_prefix: String,
    /// Lifetime of an entry in seconds, before jitter.
    pub ttl_secs: u64,
    /// Entries live `ttl * (1 ± jitter)` so that entries written together do not expire together.
    pub ttl_jitter: f64,
    /// Most entries kept by the in-process read model.
    pub memory_capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            key_prefix: String::new(),
            ttl_secs: 3600,
            ttl_jitter: 0.1,
            memory_capacity: 100_000,
        }
    }
}

impl std::fmt::Debug for CacheSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSettings")
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("key_prefix", &self.key_prefix)
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl CacheSettings {
    /// A TTL drawn uniformly from `ttl * (1 ± jitter)`.
    pub fn jittered_ttl(&self) -> Duration {
        let jitter = self.ttl_jitter.clamp(0.0, 0.9);
        let factor = rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter));
        Duration::from_secs_f64((self.ttl_secs.max(1) as f64) * factor)
    }
}

/// What can go wrong reading or writing the read model.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis could not be reached or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// An entry in Redis does not describe an order (written by something else?).
    #[error("corrupt read-model entry {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The read model, in Redis or in process.
#[derive(Clone)]
pub enum ReadModel {
    /// Redis (standalone).
    Redis(RedisReadModel),
    /// In-process map.
    Memory(MemoryReadModel),
}

impl ReadModel {
    /// Connects to Redis when a URL is configured, or builds the in-process read model.
    pub async fn connect(settings: CacheSettings) -> Result<Self, CacheError> {
        match settings.redis_url.clone().filter(|u| !u.trim().is_empty()) {
            Some(url) => Ok(Self::Redis(RedisReadModel::connect(&url, settings).await?)),
            None => Ok(Self::Memory(MemoryReadModel::new(settings))),
        }
    }

    /// Name for logs and start-up banners.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Memory(_) => "in-process",
        }
    }

    /// The cached order, if any.
    pub async fn get(&self, id: OrderId) -> Result<Option<Order>, CacheError> {
        match self {
            Self::Redis(r) => r.get(id).await,
            Self::Memory(m) => Ok(m.get(id).await),
        }
    }

    /// Stores `order` unless a version at least as new is cached; returns whether it was stored.
    pub async fn put(&self, order: &Order) -> Result<bool, CacheError> {
        match self {
            Self::Redis(r) => r.put(order).await,
            Self::Memory(m) => Ok(m.put(order).await),
        }
    }

    /// Drops the cached entry of `id`.
    pub async fn invalidate(&self, id: OrderId) -> Result<(), CacheError> {
        match self {
            Self::Redis(r) => r.invalidate(id).await,
            Self::Memory(m) => {
                m.invalidate(id).await;
                Ok(())
            }
        }
    }
}
