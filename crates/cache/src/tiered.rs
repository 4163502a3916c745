//! A stampede-proof two-tier cache: `get_or_load(key, loader)` over an optional in-process L1 and an
//! optional Redis L2.
//!
//! - Misses are coalesced: one load per key per process (single-flight), and across processes a short Redis
//!   lock lets one instance load while the others wait for its value (falling back to loading themselves
//!   when the wait times out).
//! - Entries expire logically at a jittered TTL; a read may refresh early with a probability that rises
//!   towards expiry (XFetch: `now - delta * beta * ln(rand) >= expiry`, `delta` = measured load time), and
//!   an expired entry is still served for `stale_for` while one background refresh runs.
//! - "Not found" is cached briefly (negative caching).
//! - Writes are version-checked in one Redis script: an older version never replaces a newer one.
//! - Redis calls have a timeout and sit behind a circuit breaker: when Redis fails, reads go straight to the
//!   loader, and the cache heals by itself when Redis is back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::breaker::{Breaker, BreakerState};
use crate::telemetry::CacheMetrics;
use orderflow_redis::{RedisConnection, RedisTarget, subscribe};

/// Values that carry a version: a cached value is only ever replaced by one at least as new.
pub trait Versioned {
    /// The value's version.
    fn version(&self) -> i64;
}

impl Versioned for orderflow_domain::Order {
    fn version(&self) -> i64 {
        self.version
    }
}

/// How one cache behaves.
#[derive(Debug, Clone)]
pub struct TieredSettings {
    /// Key namespace, e.g. `order`: keys are `<key_prefix><namespace>:{<key>}`.
    pub namespace: String,
    /// Prefix of every Redis key (lets ACLs confine the service to its keys).
    pub key_prefix: String,
    /// Logical lifetime of an entry, before jitter.
    pub ttl: Duration,
    /// Entries live `ttl * (1 ± jitter)`.
    pub ttl_jitter: f64,
    /// How long past its expiry an entry may still be served while it is refreshed.
    pub stale_for: Duration,
    /// XFetch's beta: above 1 refreshes earlier, below 1 later, 0 never early.
    pub beta: f64,
    /// Lifetime of a cached "not found".
    pub negative_ttl: Duration,
    /// In-process tier: `None` disables it, else its capacity.
    pub l1_capacity: Option<u64>,
    /// Lifetime of an in-process entry (keep it short: other instances' writes do not reach it).
    pub l1_ttl: Duration,
    /// How long one instance may hold the cross-process load lock.
    pub lock_ttl: Duration,
    /// How long the other instances wait for the lock holder's value before loading themselves.
    pub lock_wait: Duration,
    /// Timeout of each Redis call.
    pub redis_timeout: Duration,
    /// Consecutive Redis failures that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before probing.
    pub breaker_cooldown: Duration,
    /// Coalesce misses (single-flight and the Redis lock); off only to demonstrate a stampede.
    pub stampede_protection: bool,
}

impl Default for TieredSettings {
    fn default() -> Self {
        Self {
            namespace: "entry".into(),
            key_prefix: String::new(),
            ttl: Duration::from_secs(300),
            ttl_jitter: 0.1,
            stale_for: Duration::from_secs(30),
            beta: 1.0,
            negative_ttl: Duration::from_secs(5),
            l1_capacity: Some(10_000),
            l1_ttl: Duration::from_secs(2),
            lock_ttl: Duration::from_secs(2),
            lock_wait: Duration::from_millis(500),
            redis_timeout: Duration::from_millis(250),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            stampede_protection: true,
        }
    }
}

/// Counters of what the cache did (for metrics and tests).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Answered from the in-process tier.
    pub l1_hits: AtomicU64,
    /// Answered from Redis.
    pub l2_hits: AtomicU64,
    /// Found in neither tier.
    pub misses: AtomicU64,
    /// Calls of the loader.
    pub loads: AtomicU64,
    /// Callers that waited for another caller's load in this process.
    pub coalesced: AtomicU64,
    /// Callers that got another instance's value after waiting on the Redis lock.
    pub lock_waits: AtomicU64,
    /// Expired entries served while a refresh ran.
    pub stale_served: AtomicU64,
    /// Refreshes started early by XFetch.
    pub early_refreshes: AtomicU64,
    /// Redis calls that failed or timed out.
    pub redis_errors: AtomicU64,
}

/// One cached value (or a cached "not found") with what XFetch needs.
#[derive(Debug, Clone)]
struct Entry<V> {
    value: Option<V>,
    version: i64,
    delta_ms: u64,
    expires_at_ms: i64,
    /// The value as a caller renders it (e.g. a response body), made once per in-process entry.
    rendered: OnceLock<Bytes>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl<V> Entry<V> {
    fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at_ms
    }

    /// XFetch: refresh early with a probability that rises as expiry nears and with the cost of a load.
    fn wants_early_refresh(&self, now: i64, beta: f64) -> bool {
        if beta <= 0.0 {
            return false;
        }
        let r: f64 = rand::rng().random_range(f64::MIN_POSITIVE..=1.0);
        (now as f64) - (self.delta_ms as f64) * beta * r.ln() >= self.expires_at_ms as f64
    }
}

/// Writes the entry unless a newer version is cached (same version refreshes it); atomic.
const PUT_IF_NOT_OLDER: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[1], 'ver'))
if current and current > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'ver', ARGV[1], 'delta', ARGV[2], 'exp', ARGV[3])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// Deletes the lock only if we still hold it.
const RELEASE_LOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

type Flight<V> = Shared<BoxFuture<'static, Result<Option<V>, Arc<dyn std::error::Error + Send + Sync>>>>;

struct Inner<V> {
    settings: TieredSettings,
    l1: Option<moka::sync::Cache<String, Arc<Entry<V>>>>,
    redis: Option<RedisConnection>,
    breaker: Breaker,
    flights: Mutex<HashMap<String, Flight<V>>>,
    stats: CacheStats,
    metrics: CacheMetrics,
    put_script: redis::Script,
    release_script: redis::Script,
    /// Tells this instance's invalidation messages from other instances'.
    instance: u64,
}

/// A two-tier cache of `V`s; cheap to clone (clones share tiers, flights and counters).
pub struct TieredCache<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for TieredCache<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// The loader's error, shared by every caller that waited for the same load.
pub type LoadError = Arc<dyn std::error::Error + Send + Sync>;

/// A loader erased to one type, so flights and background refreshes can hold it.
type Loader<V> = Arc<dyn Fn() -> BoxFuture<'static, Result<Option<V>, LoadError>> + Send + Sync>;

impl<V> TieredCache<V>
where
    V: Versioned + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A cache over `redis` (None: in-process only) with `settings`.
    pub fn new(redis: Option<RedisConnection>, settings: TieredSettings) -> Self {
        let l1 = settings.l1_capacity.map(|capacity| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(settings.l1_ttl)
                .build()
        });
        let breaker = Breaker::new(settings.breaker_threshold, settings.breaker_cooldown);
        let metrics = CacheMetrics::new(&settings.namespace);
        Self {
            inner: Arc::new(Inner {
                settings,
                l1,
                redis,
                breaker,
                flights: Mutex::default(),
                stats: CacheStats::default(),
                metrics,
                instance: rand::random(),
                put_script: redis::Script::new(PUT_IF_NOT_OLDER),
                release_script: redis::Script::new(RELEASE_LOCK),
            }),
        }
    }

    /// Counts one event in the stats and in the exported metrics.
    fn count(&self, stat: fn(&CacheStats) -> &AtomicU64, metric: fn(&CacheMetrics) -> &metrics::Counter) {
        stat(&self.inner.stats).fetch_add(1, Ordering::Relaxed);
        metric(&self.inner.metrics).increment(1);
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    /// Whether Redis is currently bypassed.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// The Redis key of `key`: `<prefix><namespace>:{<key>}` (the braces are a Cluster hash tag).
    pub fn redis_key(&self, key: &str) -> String {
        format!(
            "{}{}:{{{key}}}",
            self.inner.settings.key_prefix, self.inner.settings.namespace
        )
    }

    /// Like [`TieredCache::get_or_load`], but answers with the value as `render` turns it into bytes (e.g. a
    /// response body). An in-process hit renders its entry once and then hands out the same bytes, so a hot
    /// value is neither cloned nor serialised again; other paths render the value they got.
    pub async fn get_or_load_rendered<F, Fut, E, R>(
        &self,
        key: &str,
        loader: F,
        render: R,
    ) -> Result<Option<Bytes>, LoadError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
        R: Fn(&V) -> Bytes,
    {
        if let Some(entry) = self.l1_hit(key).await {
            return Ok(entry
                .value
                .as_ref()
                .map(|value| entry.rendered.get_or_init(|| render(value)).clone()));
        }
        Ok(self.get_or_load(key, loader).await?.as_ref().map(render))
    }

    /// A fresh in-process entry of `key` (counted as an L1 hit).
    async fn l1_hit(&self, key: &str) -> Option<Arc<Entry<V>>> {
        let entry = self.inner.l1.as_ref()?.get(key)?;
        if entry.is_expired(now_ms()) {
            return None;
        }
        self.count(|s| &s.l1_hits, |m| &m.l1_hits);
        Some(entry)
    }

    /// The cached value of `key`, or the loader's (then cached); `Ok(None)` when the loader finds nothing.
    pub async fn get_or_load<F, Fut, E>(&self, key: &str, loader: F) -> Result<Option<V>, LoadError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(entry) = self.l1_hit(key).await {
            return Ok(entry.value.clone());
        }
        let loader: Loader<V> = Arc::new(move || {
            let fut = loader();
            async move { fut.await.map_err(|e| Arc::new(e) as LoadError) }.boxed()
        });
        // A load of this key already under way here: wait for it rather than ask Redis again (under a
        // stampede this keeps Redis to about one read per instance).
        if self.inner.settings.stampede_protection
            && let Some(flight) = self.join_flight(key)
        {
            return flight.await;
        }
        if let Some(value) = self.serve_from_l2(key, &loader).await {
            return Ok(value);
        }
        if !self.inner.settings.stampede_protection {
            return self.clone().load_miss(key.to_owned(), loader).await;
        }
        let flight = {
            let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(key) {
                Some(flight) => {
                    self.count(|s| &s.coalesced, |m| &m.coalesced);
                    flight.clone()
                }
                None => {
                    let (this, owned) = (self.clone(), key.to_owned());
                    let flight = async move {
                        let result = this.clone().load_miss(owned.clone(), loader).await;
                        this.inner
                            .flights
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&owned);
                        result
                    }
                    .boxed()
                    .shared();
                    flights.insert(key.to_owned(), flight.clone());
                    flight
                }
            }
        };
        flight.await
    }

    /// The load of `key` under way in this process, if any (counted as a coalesced caller).
    fn join_flight(&self, key: &str) -> Option<Flight<V>> {
        let flight = self
            .inner
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        self.count(|s| &s.coalesced, |m| &m.coalesced);
        Some(flight)
    }

    /// Answers from Redis when it holds a fresh entry (or a stale one within the window, refreshed in the
    /// background). Hits skip the miss machinery: only loads need coalescing.
    async fn serve_from_l2(&self, key: &str, loader: &Loader<V>) -> Option<Option<V>> {
        let now = now_ms();
        let entry = self
            .read_l2(key)
            .await
            .filter(|e| e.value.is_some() || !e.is_expired(now))?;
        if !entry.is_expired(now) {
            self.count(|s| &s.l2_hits, |m| &m.l2_hits);
            if entry.wants_early_refresh(now, self.inner.settings.beta) {
                self.count(|s| &s.early_refreshes, |m| &m.early_refreshes);
                self.refresh_in_background(key.to_owned(), loader.clone());
            }
            self.put_l1(key, entry.clone()).await;
            return Some(entry.value);
        }
        // Expired but still within the stale window (Redis keeps it that long): serve it, refresh once.
        self.count(|s| &s.stale_served, |m| &m.stale_served);
        self.refresh_in_background(key.to_owned(), loader.clone());
        Some(entry.value)
    }

    /// A miss: one loader call for every caller coalesced here, and across instances through the lock.
    async fn load_miss(self, key: String, loader: Loader<V>) -> Result<Option<V>, LoadError> {
        self.count(|s| &s.misses, |m| &m.misses);
        if self.inner.settings.stampede_protection && self.redis_usable() {
            match self.try_lock(&key).await {
                Some(Some(token)) => {
                    // Double-checked: the previous holder may have stored the value just before we locked.
                    let result = match self.read_l2(&key).await.filter(|e| !e.is_expired(now_ms())) {
                        Some(entry) => {
                            self.count(|s| &s.lock_waits, |m| &m.lock_waits);
                            self.put_l1(&key, entry.clone()).await;
                            Ok(entry.value)
                        }
                        None => self.load_and_store(&key, &loader).await,
                    };
                    self.unlock(&key, &token).await;
                    return result;
                }
                Some(None) => {
                    if let Some(entry) = self.wait_for_holder(&key).await {
                        self.count(|s| &s.lock_waits, |m| &m.lock_waits);
                        self.put_l1(&key, entry.clone()).await;
                        return Ok(entry.value);
                    }
                }
                None => {}
            }
        }
        self.load_and_store(&key, &loader).await
    }

    async fn load_and_store(&self, key: &str, loader: &Loader<V>) -> Result<Option<V>, LoadError> {
        self.count(|s| &s.loads, |m| &m.loads);
        let started = Instant::now();
        let value = loader().await?;
        let delta_ms = started.elapsed().as_millis() as u64;
        let (version, ttl) = match &value {
            Some(v) => (v.version(), self.jittered_ttl()),
            None => (-1, self.inner.settings.negative_ttl),
        };
        let entry = Entry {
            value: value.clone(),
            version,
            delta_ms,
            expires_at_ms: now_ms() + ttl.as_millis() as i64,
            rendered: OnceLock::new(),
        };
        self.write(key, entry).await;
        Ok(value)
    }

    fn refresh_in_background(&self, key: String, loader: Loader<V>) {
        let this = self.clone();
        tokio::spawn(async move {
            // The lock keeps it to one refresh across every instance.
            let token = match this.try_lock(&key).await {
                Some(Some(token)) => token,
                _ => return,
            };
            if let Err(e) = this.load_and_store(&key, &loader).await {
                tracing::warn!(
                    error = &*e as &dyn std::error::Error,
                    key,
                    "cache refresh failed; the cached value stays"
                );
            }
            this.unlock(&key, &token).await;
        });
    }

    /// Stores `value` (e.g. from a write or an event) unless a newer version is cached, and tells the other
    /// instances to drop their in-process copy of `key` (see [`TieredCache::listen_for_invalidations`]).
    pub async fn refresh(&self, key: &str, value: &V) {
        let entry = Entry {
            value: Some(value.clone()),
            version: value.version(),
            delta_ms: 0,
            expires_at_ms: now_ms() + self.jittered_ttl().as_millis() as i64,
            rendered: OnceLock::new(),
        };
        self.write(key, entry).await;
        self.announce(key).await;
    }

    /// The pub/sub channel on which instances announce changed keys.
    pub fn invalidation_channel(&self) -> String {
        format!(
            "{}{}:invalidate",
            self.inner.settings.key_prefix, self.inner.settings.namespace
        )
    }

    /// Publishes `<instance> <key>` on the invalidation channel (a Cluster broadcasts it to every node).
    async fn announce(&self, key: &str) {
        let (channel, message) = (
            self.invalidation_channel(),
            format!("{:016x} {key}", self.inner.instance),
        );
        self.redis_call(|mut conn| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await;
    }

    /// Keeps this instance's in-process tier in step with writes made through other instances: subscribes
    /// to the invalidation channel on `target` (any node of a Cluster; the next seed when one fails) and
    /// drops each announced key. While it is disconnected, entries live at most the in-process TTL, and on
    /// every (re)connection the whole in-process tier is dropped, since announcements may have been missed.
    /// The task ends when the cache is dropped.
    pub fn listen_for_invalidations(&self, target: RedisTarget) {
        let Some(l1) = self.inner.l1.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let (channel, me) = (
            self.invalidation_channel(),
            format!("{:016x}", self.inner.instance),
        );
        tokio::spawn(async move {
            let mut seed = 0usize;
            while weak.strong_count() > 0 {
                let url = target
                    .urls
                    .get(seed % target.urls.len().max(1))
                    .cloned()
                    .unwrap_or_default();
                seed += 1;
                match subscribe(&url, &target, &channel).await {
                    Ok(mut pubsub) => {
                        l1.invalidate_all();
                        let mut messages = pubsub.on_message();
                        while let Some(message) = futures::StreamExt::next(&mut messages).await {
                            if weak.strong_count() == 0 {
                                return;
                            }
                            let payload = String::from_utf8_lossy(message.get_payload_bytes());
                            if let Some((from, key)) = payload.split_once(' ')
                                && from != me
                            {
                                l1.invalidate(key);
                            }
                        }
                        tracing::debug!("cache invalidation subscription ended; reconnecting");
                    }
                    Err(e) => tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        "cache invalidation subscription failed"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Drops `key` from both tiers, here and (through the invalidation channel) in other instances' L1.
    pub async fn invalidate(&self, key: &str) {
        if let Some(l1) = &self.inner.l1 {
            l1.invalidate(key);
        }
        let redis_key = self.redis_key(key);
        self.redis_call(|mut conn| async move {
            redis::cmd("DEL")
                .arg(redis_key)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await;
        self.announce(key).await;
    }

    fn jittered_ttl(&self) -> Duration {
        let jitter = self.inner.settings.ttl_jitter.clamp(0.0, 0.9);
        let factor = rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter));
        self.inner.settings.ttl.mul_f64(factor)
    }

    async fn put_l1(&self, key: &str, entry: Entry<V>) {
        if let Some(l1) = &self.inner.l1 {
            l1.insert(key.to_owned(), Arc::new(entry));
        }
    }

    /// Writes both tiers; L1 follows Redis's verdict so it never holds an older version than Redis.
    async fn write(&self, key: &str, entry: Entry<V>) {
        let stored = match &self.inner.redis {
            Some(_) => {
                let value = match &entry.value {
                    Some(v) => serde_json::to_string(v).unwrap_or_default(),
                    None => String::new(),
                };
                // Values stay readable for the stale window after expiry; a "not found" never goes stale.
                let stale = if entry.value.is_some() {
                    self.inner.settings.stale_for.as_millis() as i64
                } else {
                    0
                };
                let physical = (entry.expires_at_ms - now_ms()).max(1) + stale;
                let mut invocation = self.inner.put_script.key(self.redis_key(key));
                invocation
                    .arg(entry.version)
                    .arg(entry.delta_ms)
                    .arg(entry.expires_at_ms)
                    .arg(physical)
                    .arg(value);
                self.redis_call(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
                    .await
                    .is_none_or(|applied| applied == 1)
            }
            None => true,
        };
        if let Some(l1) = &self.inner.l1 {
            let current = l1.get(key);
            if stored && current.is_none_or(|c| c.version <= entry.version) {
                l1.insert(key.to_owned(), Arc::new(entry));
            } else if !stored {
                l1.invalidate(key);
            }
        }
    }

    /// Redis is configured and the breaker is closed (does not claim the half-open probe).
    fn redis_usable(&self) -> bool {
        self.inner.redis.is_some() && self.inner.breaker.state() == BreakerState::Closed
    }

    /// Runs one Redis call with the timeout and breaker; `None` when skipped or failed.
    async fn redis_call<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.inner.redis.clone()?;
        // Closed: go; open: skip, except the one probe let through after the cooldown.
        if !self.inner.breaker.allow() {
            return None;
        }
        match tokio::time::timeout(self.inner.settings.redis_timeout, call(conn)).await {
            Ok(Ok(value)) => {
                self.inner.breaker.success();
                self.inner.metrics.breaker_open.set(0.0);
                Some(value)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = &e as &dyn std::error::Error, "redis call failed");
                self.redis_failed();
                None
            }
            Err(_) => {
                self.redis_failed();
                None
            }
        }
    }

    fn redis_failed(&self) {
        self.count(|s| &s.redis_errors, |m| &m.redis_errors);
        self.inner.breaker.failure();
        let open = self.inner.breaker.state() == BreakerState::Open;
        self.inner.metrics.breaker_open.set(if open { 1.0 } else { 0.0 });
    }

    async fn read_l2(&self, key: &str) -> Option<Entry<V>> {
        let redis_key = self.redis_key(key);
        let fields: HashMap<String, String> = self
            .redis_call(|mut conn| async move {
                redis::cmd("HGETALL").arg(redis_key).query_async(&mut conn).await
            })
            .await?;
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok());
        let (version, delta, expires) = (number("ver")?, number("delta")?, number("exp")?);
        let value = match fields.get("v") {
            Some(json) => Some(serde_json::from_str(json).ok()?),
            None => None,
        };
        Some(Entry {
            value,
            version,
            delta_ms: delta.max(0) as u64,
            expires_at_ms: expires,
            rendered: OnceLock::new(),
        })
    }

    /// `Some(Some(token))` when we got the lock, `Some(None)` when another instance holds it, `None` when
    /// Redis cannot be asked.
    async fn try_lock(&self, key: &str) -> Option<Option<String>> {
        let token = format!("{:032x}", rand::random::<u128>());
        let (lock, value, ttl) = (
            format!("{}:lock", self.redis_key(key)),
            token.clone(),
            self.inner.settings.lock_ttl.as_millis() as u64,
        );
        let acquired: Option<String> = self
            .redis_call(|mut conn| async move {
                redis::cmd("SET")
                    .arg(lock)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Some(acquired.map(|_| token))
    }

    async fn unlock(&self, key: &str, token: &str) {
        let mut invocation = self
            .inner
            .release_script
            .key(format!("{}:lock", self.redis_key(key)));
        invocation.arg(token);
        self.redis_call(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
            .await;
    }

    /// Polls Redis for the lock holder's value until `lock_wait` passes.
    async fn wait_for_holder(&self, key: &str) -> Option<Entry<V>> {
        let deadline = Instant::now() + self.inner.settings.lock_wait;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Some(entry) = self.read_l2(key).await {
                return Some(entry);
            }
        }
        None
    }
}
