//! Analytics on Redis. Every key carries one hash tag (`{<prefix>analytics}`), so a whole batch is applied
//! by one atomic script, on Redis Cluster too (one slot holds the aggregates):
//!
//! - `o:<order>`: hash of what was seen of an order (the idempotence marks; expires after `order_ttl`);
//! - `rev:<hour>`: hash, revenue in minor units per currency;
//! - `slots:<hour>`: hash, orders created per hop slot (its start second);
//! - `cust:<hour>`: HyperLogLog of customers;
//! - `top:<hour>` and `top:all`: sorted sets of units per product;
//! - `funnel`: hash of orders per stage;
//! - `epoch`: the marker that the aggregates are intact (set when a rebuild finishes, never expires);
//! - `rebuild`: the lock of the process rebuilding them (its token; expires unless the rebuild moves on).
//!
//! Hourly keys expire `retention` after their last update.

use std::collections::BTreeMap;
use std::time::Duration;

use orderflow_redis::{REBUILD_LOCK_MS, Rebuild, RedisConnection};
use redis::Script;

use crate::{AnalyticsError, Customers, Fact, Funnel, Hopping, RevenueHour, hours, top};

/// Applies a batch of facts, or returns -1 without applying any: with no rebuild token (ARGV[3] empty) when
/// the epoch marker is missing, with one when that rebuild no longer holds the lock. Per fact eight arguments: kind, order, hour, hop slot, customer, currency, amount,
/// items (`sku\tunits\n`...). A kind already marked on the order is skipped. Times and amounts arrive as
/// decimal strings and are only ever passed on: Lua numbers turned into Redis arguments can come out in
/// exponent notation on some Redis versions, which would name the wrong bucket.
const APPLY: &str = r"
local p = KEYS[1]
local order_ttl, retention, token = ARGV[1], ARGV[2], ARGV[3]
local call = redis.call
if token == '' then
  if call('EXISTS', p .. 'epoch') == 0 then return -1 end
else
  if call('GET', p .. 'rebuild') ~= token then return -1 end
  call('PEXPIRE', p .. 'rebuild', ARGV[4])
end
local applied = 0
local function bump(key, field, by)
  call('HINCRBY', key, field, by)
  call('EXPIRE', key, retention)
end
for i = 5, #ARGV, 8 do
  local kind, id, hour, slot = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local okey = p .. 'o:' .. id
  if call('HSETNX', okey, kind, hour) == 1 then
    call('EXPIRE', okey, order_ttl)
    applied = applied + 1
    call('HINCRBY', p .. 'funnel', kind, 1)
    if kind == 'created' then
      bump(p .. 'slots:' .. hour, slot, 1)
      local cust = p .. 'cust:' .. hour
      call('PFADD', cust, ARGV[i + 4])
      call('EXPIRE', cust, retention)
      local tk = p .. 'top:' .. hour
      for sku, units in string.gmatch(ARGV[i + 7], '([^\t\n]+)\t(%d+)') do
        call('ZINCRBY', tk, units, sku)
        call('ZINCRBY', p .. 'top:all', units, sku)
      end
      call('EXPIRE', tk, retention)
    elseif kind == 'paid' then
      local currency, amount = ARGV[i + 5], ARGV[i + 6]
      call('HSET', okey, 'currency', currency, 'amount', amount)
      if call('HEXISTS', okey, 'refunded') == 0 then
        bump(p .. 'rev:' .. hour, currency, amount)
      end
    elseif kind == 'refunded' then
      local paid = call('HGET', okey, 'paid')
      if paid then
        local currency, amount = unpack(call('HMGET', okey, 'currency', 'amount'))
        if amount ~= '0' then bump(p .. 'rev:' .. paid, currency, '-' .. amount) end
      end
    end
  end
end
return applied
";

/// Analytics in Redis (standalone or Cluster); cheap to clone.
#[derive(Clone)]
pub struct RedisAnalytics {
    connection: RedisConnection,
    base: String,
    hopping: Hopping,
    order_ttl: Duration,
    retention: Duration,
    apply: Script,
    rebuild: Rebuild,
}

impl RedisAnalytics {
    /// Aggregates under `prefix` (e.g. `orderflow:`) on `connection`. An order's marks are kept for
    /// `order_ttl` (longer than any of its events can arrive late or be re-delivered); hourly aggregates
    /// for `retention` after their last update.
    pub fn new(
        connection: RedisConnection,
        prefix: &str,
        hopping: Hopping,
        order_ttl: Duration,
        retention: Duration,
    ) -> Result<Self, AnalyticsError> {
        let base = format!("{{{prefix}analytics}}:");
        Ok(Self {
            rebuild: Rebuild::new(
                connection.clone(),
                format!("{base}epoch"),
                format!("{base}rebuild"),
            ),
            connection,
            base,
            hopping: hopping.validated()?,
            order_ttl,
            retention,
            apply: Script::new(APPLY),
        })
    }

    pub(crate) fn hopping(&self) -> Hopping {
        self.hopping
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    pub(crate) async fn intact(&self) -> Result<bool, AnalyticsError> {
        Ok(self.rebuild.intact().await?)
    }

    /// Takes the rebuild lock; `None` while another process holds it.
    pub(crate) async fn begin_rebuild(&self) -> Result<Option<String>, AnalyticsError> {
        Ok(self.rebuild.begin().await?)
    }

    pub(crate) async fn finish_rebuild(&self, token: &str) -> Result<bool, AnalyticsError> {
        Ok(self.rebuild.finish(token).await?)
    }

    pub(crate) async fn abandon_rebuild(&self, token: &str) -> Result<(), AnalyticsError> {
        Ok(self.rebuild.abandon(token).await?)
    }

    pub(crate) async fn apply(&self, facts: &[Fact], rebuild: Option<&str>) -> Result<usize, AnalyticsError> {
        let mut applied = 0;
        let mut conn = self.connection.clone();
        // Bounded batches keep each script short: Redis serves nothing else while one runs.
        for chunk in facts.chunks(256) {
            let mut invocation = self.apply.key(&self.base);
            invocation
                .arg(self.order_ttl.as_secs().max(1))
                .arg(self.retention.as_secs().max(1))
                .arg(rebuild.unwrap_or_default())
                .arg(REBUILD_LOCK_MS);
            for fact in chunk {
                let items: String = fact
                    .items
                    .iter()
                    .map(|(sku, units)| format!("{sku}\t{units}\n"))
                    .collect();
                invocation
                    .arg(fact.kind.as_str())
                    .arg(&fact.order_id)
                    .arg(crate::hour_of(fact.at).to_string())
                    .arg((fact.at - fact.at.rem_euclid(self.hopping.hop_secs)).to_string())
                    .arg(&fact.customer)
                    .arg(&fact.currency)
                    .arg(fact.amount_minor.max(0).to_string())
                    .arg(items);
            }
            let n: i64 = invocation.invoke_async(&mut conn).await?;
            applied += usize::try_from(n).map_err(|_| AnalyticsError::Lost)?;
        }
        // What was counted must outlive a failover before the caller acknowledges it.
        self.connection.wait_replicated().await?;
        Ok(applied)
    }

    pub(crate) async fn revenue(&self, from: i64, to: i64) -> Result<Vec<RevenueHour>, AnalyticsError> {
        let hours: Vec<i64> = hours(from, to).collect();
        let mut pipe = redis::pipe();
        for hour in &hours {
            pipe.hgetall(self.key(&format!("rev:{hour}")));
        }
        let replies: Vec<BTreeMap<String, i64>> = pipe.query_async(&mut self.connection.clone()).await?;
        Ok(hours
            .into_iter()
            .zip(replies)
            .filter(|(_, by_currency)| !by_currency.is_empty())
            .map(|(hour, by_currency)| RevenueHour { hour, by_currency })
            .collect())
    }

    pub(crate) async fn slot_counts(&self, slots: &[i64]) -> Result<Vec<u64>, AnalyticsError> {
        let mut pipe = redis::pipe();
        for slot in slots {
            pipe.hget(self.key(&format!("slots:{}", crate::hour_of(*slot))), slot);
        }
        let counts: Vec<Option<u64>> = pipe.query_async(&mut self.connection.clone()).await?;
        Ok(counts.into_iter().map(Option::unwrap_or_default).collect())
    }

    pub(crate) async fn unique_customers(&self, from: i64, to: i64) -> Result<Customers, AnalyticsError> {
        let keys: Vec<(i64, String)> = hours(from, to)
            .map(|hour| (hour, self.key(&format!("cust:{hour}"))))
            .collect();
        let mut pipe = redis::pipe();
        for (_, key) in &keys {
            pipe.pfcount(key);
        }
        // One key slot, so PFCOUNT over all of them merges the estimates, on Cluster too.
        pipe.pfcount(keys.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>());
        let mut counts: Vec<u64> = pipe.query_async(&mut self.connection.clone()).await?;
        let total = counts.pop().unwrap_or_default();
        Ok(Customers {
            per_hour: keys
                .iter()
                .map(|(hour, _)| *hour)
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .collect(),
            total,
        })
    }

    pub(crate) async fn top_products(
        &self,
        range: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, AnalyticsError> {
        let mut conn = self.connection.clone();
        let Some((from, to)) = range else {
            let best: Vec<(String, i64)> = redis::cmd("ZRANGE")
                .arg(self.key("top:all"))
                .arg(0)
                .arg(limit.saturating_sub(1))
                .arg("REV")
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            return Ok(top(best, limit));
        };
        let keys: Vec<String> = hours(from, to)
            .map(|hour| self.key(&format!("top:{hour}")))
            .collect();
        let totals: Vec<(String, i64)> = redis::cmd("ZUNION")
            .arg(keys.len())
            .arg(&keys)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        Ok(top(totals, limit))
    }

    pub(crate) async fn funnel(&self) -> Result<Funnel, AnalyticsError> {
        let stages: BTreeMap<String, u64> = redis::cmd("HGETALL")
            .arg(self.key("funnel"))
            .query_async(&mut self.connection.clone())
            .await?;
        let get = |name: &str| stages.get(name).copied().unwrap_or_default();
        Ok(Funnel {
            created: get("created"),
            paid: get("paid"),
            allocated: get("allocated"),
            payment_failed: get("failed"),
            rejected: get("rejected"),
            cancelled: get("cancelled"),
            refunded: get("refunded"),
        })
    }
}
