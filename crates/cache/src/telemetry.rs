//! Metrics the cache emits, through the `metrics` facade (install any recorder to export them). Handles
//! are registered once per cache, so counting on the hot path is one atomic add.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `orderflow_cache_hits_total` | counter | cache, tier (`l1`, `l2`) |
//! | `orderflow_cache_misses_total` | counter | cache |
//! | `orderflow_cache_loads_total` | counter | cache |
//! | `orderflow_cache_coalesced_total` | counter | cache, scope (`process`, `redis_lock`) |
//! | `orderflow_cache_stale_served_total` | counter | cache |
//! | `orderflow_cache_early_refreshes_total` | counter | cache |
//! | `orderflow_cache_redis_errors_total` | counter | cache |
//! | `orderflow_cache_breaker_open` | gauge | cache (1 while Redis is bypassed) |

use metrics::{Counter, Gauge, counter, gauge};

/// The registered handles of one cache's metrics.
pub(crate) struct CacheMetrics {
    pub(crate) l1_hits: Counter,
    pub(crate) l2_hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) loads: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) lock_waits: Counter,
    pub(crate) stale_served: Counter,
    pub(crate) early_refreshes: Counter,
    pub(crate) redis_errors: Counter,
    pub(crate) breaker_open: Gauge,
}

impl CacheMetrics {
    /// Registers the metrics of the cache named `cache` (its namespace).
    pub(crate) fn new(cache: &str) -> Self {
        let name = cache.to_owned();
        Self {
            l1_hits: counter!("orderflow_cache_hits_total", "cache" => name.clone(), "tier" => "l1"),
            l2_hits: counter!("orderflow_cache_hits_total", "cache" => name.clone(), "tier" => "l2"),
            misses: counter!("orderflow_cache_misses_total", "cache" => name.clone()),
            loads: counter!("orderflow_cache_loads_total", "cache" => name.clone()),
            coalesced: counter!("orderflow_cache_coalesced_total", "cache" => name.clone(), "scope" => "process"),
            lock_waits: counter!("orderflow_cache_coalesced_total", "cache" => name.clone(), "scope" => "redis_lock"),
            stale_served: counter!("orderflow_cache_stale_served_total", "cache" => name.clone()),
            early_refreshes: counter!("orderflow_cache_early_refreshes_total", "cache" => name.clone()),
            redis_errors: counter!("orderflow_cache_redis_errors_total", "cache" => name.clone()),
            breaker_open: gauge!("orderflow_cache_breaker_open", "cache" => name),
        }
    }
}
