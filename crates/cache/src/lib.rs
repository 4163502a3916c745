//! Caching for Orderflow's read path: a stampede-proof two-tier cache ([`TieredCache`]) and the order
//! cache built on it ([`OrderCache`]).
//!
//! Redis holds derived, replaceable state: when it fails, reads go to the source of truth (through the
//! circuit breaker) and nothing errors; when it comes back, the cache heals by itself.

mod breaker;
mod telemetry;
mod tiered;

use std::time::Duration;

use orderflow_domain::Order;
use serde::Deserialize;

pub use breaker::{Breaker, BreakerState};
pub use orderflow_redis::{RedisConnection, RedisTarget, TargetError};
pub use tiered::{CacheStats, LoadError, TieredCache, TieredSettings, Versioned};

/// The order cache: keys are order ids, Redis keys `<prefix>order:{<id>}`.
pub type OrderCache = TieredCache<Order>;

/// Cache settings, as read from configuration.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// `redis://...` / `rediss://...` (TLS); `redis://user:password@host:port` logs in as an ACL user. For a
    /// Redis Cluster, one or more seed nodes separated by commas. Empty or absent keeps the cache in process
    /// only.
    pub redis_url: Option<String>,
    /// Whether `redis_url` names Redis Cluster nodes.
    pub redis_cluster: bool,
    /// A PEM file with the CA to trust for `rediss://` when it is not in the system's store.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// A file holding the password of the Redis (ACL) user, put into every `redis_url` at start.
    pub redis_password_file: Option<std::path::PathBuf>,
    /// Prepended to every key (e.g. `orderflow:`), so Redis ACLs can confine the service to its keys.
    pub key_prefix: String,
    /// Logical lifetime of an entry in seconds, before jitter.
    pub ttl_secs: u64,
    /// Entries live `ttl * (1 ± jitter)` so that entries written together do not expire together.
    pub ttl_jitter: f64,
    /// Seconds an expired entry may still be served while one refresh runs.
    pub stale_secs: u64,
    /// XFetch beta (0 disables early refresh).
    pub beta: f64,
    /// Milliseconds a "not found" is cached.
    pub negative_ttl_ms: u64,
    /// Entries kept in process.
    pub memory_capacity: u64,
    /// Milliseconds an in-process entry lives when Redis is used (in-process only: the full TTL).
    pub l1_ttl_ms: u64,
    /// Coalesce misses (single-flight and the Redis lock). Turn off only to demonstrate a stampede.
    pub stampede_protection: bool,
    /// Milliseconds each Redis call may take before it counts as a failure (and the read goes to the source).
    pub redis_timeout_ms: u64,
    /// Milliseconds an instance waits for another instance's load of the same key before loading itself.
    pub lock_wait_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster: false,
            redis_ca_file: None,
            redis_password_file: None,
            key_prefix: String::new(),
            ttl_secs: 3600,
            ttl_jitter: 0.1,
            stale_secs: 30,
            beta: 1.0,
            negative_ttl_ms: 2000,
            memory_capacity: 100_000,
            l1_ttl_ms: 2000,
            stampede_protection: true,
            redis_timeout_ms: 250,
            lock_wait_ms: 500,
        }
    }
}

impl std::fmt::Debug for CacheSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSettings")
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("redis_cluster", &self.redis_cluster)
            .field("redis_ca_file", &self.redis_ca_file)
            .field("redis_password_file", &self.redis_password_file)
            .field("key_prefix", &self.key_prefix)
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

/// What can go wrong setting up the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis could not be reached or refused the connection.
    #[error("connecting to Redis")]
    Redis(#[from] redis::RedisError),
    /// The Redis settings name a file that could not be read.
    #[error("resolving the Redis settings")]
    Target(#[from] TargetError),
}

impl CacheSettings {
    fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.trim().is_empty())
    }

    /// The tiered-cache settings for orders.
    pub fn tiered(&self) -> TieredSettings {
        let in_process_only = self.redis_url().is_none();
        TieredSettings {
            namespace: "order".into(),
            key_prefix: self.key_prefix.clone(),
            ttl: Duration::from_secs(self.ttl_secs.max(1)),
            ttl_jitter: self.ttl_jitter,
            stale_for: Duration::from_secs(self.stale_secs),
            beta: self.beta,
            negative_ttl: Duration::from_millis(self.negative_ttl_ms),
            l1_capacity: Some(self.memory_capacity),
            l1_ttl: if in_process_only {
                Duration::from_secs(self.ttl_secs.max(1))
            } else {
                Duration::from_millis(self.l1_ttl_ms.max(1))
            },
            stampede_protection: self.stampede_protection,
            redis_timeout: Duration::from_millis(self.redis_timeout_ms.max(1)),
            lock_wait: Duration::from_millis(self.lock_wait_ms),
            ..TieredSettings::default()
        }
    }

    /// Name for logs and start-up banners.
    pub fn backend_name(&self) -> &'static str {
        if self.redis_url().is_some() {
            if self.redis_cluster {
                "redis cluster + in-process"
            } else {
                "redis + in-process"
            }
        } else {
            "in-process"
        }
    }

    /// Connects to Redis when configured and builds the order cache.
    pub async fn connect(&self) -> Result<OrderCache, CacheError> {
        let Some(target) = self.redis_target()? else {
            return Ok(TieredCache::new(None, self.tiered()));
        };
        let cache = TieredCache::new(Some(RedisConnection::connect(&target).await?), self.tiered());
        cache.listen_for_invalidations(target);
        Ok(cache)
    }

    /// Where Redis is, when configured: the URL(s), Cluster or not, the CA to trust and the password.
    pub fn redis_target(&self) -> Result<Option<RedisTarget>, TargetError> {
        RedisTarget::resolve(
            self.redis_url.as_deref().unwrap_or_default(),
            self.redis_cluster,
            self.redis_ca_file.as_deref(),
            self.redis_password_file.as_deref(),
        )
    }
}
