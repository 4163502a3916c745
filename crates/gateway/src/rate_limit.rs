//! Per-client rate limits with the generic cell rate algorithm (GCRA): each client has a "theoretical
//! arrival time" (TAT); a request is allowed when the TAT, moved one emission interval on, is at most
//! `burst` intervals ahead of now. One number per client, no refill timer.
//!
//! In Redis (one script per request, on Redis's own clock) the budget holds across every gateway
//! instance; in process it holds per instance (the embedded default). The two share the arithmetic
//! below. Written here rather than taken from a crate because the limiter must be the same algorithm in
//! both tiers and report what the `RateLimit-*` headers need (remaining and reset), which the in-process
//! crates do not expose together with a Redis variant.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orderflow_redis::RedisConnection;
use redis::Script;

use crate::settings::RateLimitSettings;

/// A client's limit: sustained rate and burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Microseconds between requests at the sustained rate.
    pub interval_us: u64,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Limit {
    /// A limit of `per_second` sustained requests and `burst` at once (both at least 1 request).
    pub fn new(per_second: f64, burst: u32) -> Self {
        // Bounded so the arithmetic below cannot overflow: one request per 1,000 s up to 1e9 per second.
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second.clamp(0.001, 1e9)
        } else {
            1.0
        };
        Self {
            interval_us: ((1_000_000.0 / per_second).round() as u64).max(1),
            burst: burst.max(1),
        }
    }

    fn tolerance_us(&self) -> u64 {
        self.interval_us.saturating_mul(u64::from(self.burst))
    }
}

/// A client's own rate and burst, each replacing the default when given.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OwnLimit {
    /// Sustained requests per second.
    pub requests_per_second: Option<f64>,
    /// Requests at once.
    pub burst: Option<u32>,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The burst (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests left right now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the full burst is available again (`RateLimit-Reset`).
    pub reset_secs: u64,
    /// When refused, seconds until one request is allowed (`Retry-After`).
    pub retry_after_secs: u64,
}

/// The GCRA step: given the stored TAT (or none) and now, the new TAT to store (when allowed) and the
/// decision. Times in microseconds.
fn gcra(limit: Limit, stored_tat: Option<u64>, now: u64) -> (Option<u64>, Decision) {
    let tat = stored_tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(limit.interval_us);
    let tolerance = limit.tolerance_us();
    if new_tat - now > tolerance {
        let wait = new_tat - now - tolerance;
        let decision = Decision {
            allowed: false,
            limit: limit.burst,
            remaining: 0,
            reset_secs: ceil_secs(tat - now),
            retry_after_secs: ceil_secs(wait).max(1),
        };
        return (None, decision);
    }
    let remaining = (tolerance - (new_tat - now)) / limit.interval_us;
    let decision = Decision {
        allowed: true,
        limit: limit.burst,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_secs: ceil_secs(new_tat - now),
        retry_after_secs: 0,
    };
    (Some(new_tat), decision)
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// The same step in Redis, on Redis's clock, so instances with skewed clocks still share one budget.
/// Numbers cross as decimal strings: Lua would format large numbers in exponent notation.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, string.format('%d', tat - now), string.format('%d', new_tat - now - tolerance)}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, string.format('%d', new_tat - now), '0'}
"#;

/// Limits requests per client, in Redis when configured (falling back to this process when Redis does
/// not answer in time) or in this process.
pub struct RateLimiter {
    default_rate: f64,
    default_burst: u32,
    enabled: bool,
    redis: Option<(RedisConnection, Script, String)>,
    redis_timeout: Duration,
    /// Redis is not asked again before this many microseconds after `epoch` once a call failed, so an
    /// outage costs one timeout per second, not one per request.
    redis_resting_until: std::sync::atomic::AtomicU64,
    local: Mutex<HashMap<String, u64>>,
    epoch: Instant,
}

impl RateLimiter {
    /// A limiter with `settings`' default limit, keeping budgets under `<key_prefix>ratelimit:` in Redis
    /// when `redis` is given.
    pub fn new(settings: &RateLimitSettings, redis: Option<RedisConnection>, key_prefix: &str) -> Self {
        Self {
            default_rate: settings.requests_per_second,
            default_burst: settings.burst,
            enabled: settings.enabled,
            redis: redis.map(|conn| (conn, Script::new(GCRA_SCRIPT), format!("{key_prefix}ratelimit:"))),
            redis_timeout: Duration::from_millis(settings.redis_timeout_ms),
            redis_resting_until: std::sync::atomic::AtomicU64::new(0),
            local: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    /// Whether limits are kept in Redis (shared by every gateway instance).
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether requests are limited at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The limit of a client with its own settings, or the default.
    pub fn limit_for(&self, own: Option<OwnLimit>) -> Limit {
        let own = own.unwrap_or_default();
        Limit::new(
            own.requests_per_second.unwrap_or(self.default_rate),
            own.burst.unwrap_or(self.default_burst),
        )
    }

    /// Counts one request of `client` against `limit`.
    pub async fn check(&self, client: &str, limit: Limit) -> Decision {
        let now_us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let resting = now_us
            < self
                .redis_resting_until
                .load(std::sync::atomic::Ordering::Relaxed);
        if let Some((conn, script, prefix)) = self.redis.as_ref().filter(|_| !resting) {
            let mut conn = conn.clone();
            let mut invocation = script.prepare_invoke();
            invocation
                .key(format!("{prefix}{{{client}}}"))
                .arg(limit.interval_us.to_string())
                .arg(limit.tolerance_us().to_string());
            let call = invocation.invoke_async::<(i64, String, String)>(&mut conn);
            match tokio::time::timeout(self.redis_timeout, call).await {
                Ok(Ok((allowed, ahead, wait))) => {
                    return redis_decision(limit, allowed == 1, &ahead, &wait);
                }
                Ok(Err(e)) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "rate limit in Redis failed; limiting in this process"
                    )
                }
                Err(_) => tracing::warn!("rate limit in Redis timed out; limiting in this process"),
            }
            self.redis_resting_until.store(
                now_us.saturating_add(1_000_000),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.check_local(client, limit)
    }

    fn check_local(&self, client: &str, limit: Limit) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut budgets = match self.local.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Forget clients whose budget is full again, so the map stays as large as the active clients.
        if budgets.len() > 100_000 {
            budgets.retain(|_, tat| *tat > now);
        }
        let (new_tat, decision) = gcra(limit, budgets.get(client).copied(), now);
        if let Some(tat) = new_tat {
            budgets.insert(client.to_owned(), tat);
        }
        decision
    }
}

fn redis_decision(limit: Limit, allowed: bool, ahead: &str, wait: &str) -> Decision {
    let ahead: u64 = ahead.parse().unwrap_or(0);
    let wait: u64 = wait.parse().unwrap_or(0);
    let tolerance = limit.tolerance_us();
    Decision {
        allowed,
        limit: limit.burst,
        remaining: if allowed {
            u32::try_from(tolerance.saturating_sub(ahead) / limit.interval_us).unwrap_or(u32::MAX)
        } else {
            0
        },
        reset_secs: ceil_secs(ahead),
        retry_after_secs: if allowed { 0 } else { ceil_secs(wait).max(1) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_one_request_per_interval() {
        let limit = Limit::new(1.0, 3);
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let (next, decision) = gcra(limit, tat, 0);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = next;
        }
        let (next, refused) = gcra(limit, tat, 0);
        assert!(!refused.allowed && next.is_none());
        assert_eq!(refused.retry_after_secs, 1);
        let (_, later) = gcra(limit, tat, 1_000_000);
        assert!(later.allowed, "one interval later one request passes");
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let limit = Limit::new(0.5, 1);
        let (tat, _) = gcra(limit, None, 0);
        let (_, refused) = gcra(limit, tat, 500_000);
        assert_eq!(refused.retry_after_secs, 2, "1.5 s left rounds up to 2");
    }
}
