//! The Redis read model: one hash per order, written by a version-checking script.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use orderflow_domain::{Currency, CustomerId, MinorUnits, Order, OrderId, OrderItem};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::{CacheError, CacheSettings};

/// Replaces the hash only when the stored version is older (or absent or unreadable), then sets its TTL;
/// atomic.
const PUT_IF_NEWER: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[1], 'version'))
if current and current >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Read model in Redis; clones share one multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct RedisReadModel {
    conn: ConnectionManager,
    put_script: redis::Script,
    settings: CacheSettings,
}

impl RedisReadModel {
    /// Connects to `url`.
    pub async fn connect(url: &str, settings: CacheSettings) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            put_script: redis::Script::new(PUT_IF_NEWER),
            settings,
        })
    }

    /// The hash key of one order: `<prefix>order:{<id>}`.
    pub fn key(&self, id: OrderId) -> String {
        format!("{}order:{{{id}}}", self.settings.key_prefix)
    }

    /// The cached order, if any.
    pub async fn get(&self, id: OrderId) -> Result<Option<Order>, CacheError> {
        let key = self.key(id);
        let fields: HashMap<String, String> = self.conn.clone().hgetall(&key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode(&fields)
            .map(Some)
            .map_err(|reason| CacheError::Corrupt { key, reason })
    }

    /// Stores `order` unless a version at least as new is cached; returns whether it was stored.
    pub async fn put(&self, order: &Order) -> Result<bool, CacheError> {
        let ttl_ms = self.settings.jittered_ttl().as_millis() as u64;
        let mut invocation = self.put_script.key(self.key(order.id));
        invocation.arg(order.version).arg(ttl_ms);
        for (field, value) in encode(order) {
            invocation.arg(field).arg(value);
        }
        let stored: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(stored == 1)
    }

    /// Drops the cached entry of `id`.
    pub async fn invalidate(&self, id: OrderId) -> Result<(), CacheError> {
        let _: i64 = self.conn.clone().del(self.key(id)).await?;
        Ok(())
    }
}

fn encode(order: &Order) -> Vec<(&'static str, String)> {
    vec![
        ("id", order.id.to_string()),
        ("customer_id", order.customer_id.to_string()),
        ("currency", order.currency.code().to_owned()),
        ("status", order.status.as_str().to_owned()),
        ("version", order.version.to_string()),
        ("total_minor", order.total_minor.get().to_string()),
        ("created_at", order.created_at.to_rfc3339()),
        ("updated_at", order.updated_at.to_rfc3339()),
        (
            "items",
            serde_json::to_string(&order.items).unwrap_or_else(|_| "[]".into()),
        ),
    ]
}

fn decode(fields: &HashMap<String, String>) -> Result<Order, String> {
    let get = |name: &str| {
        fields
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("field {name} missing"))
    };
    let time = |name: &str| -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(get(name)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("{name}: {e}"))
    };
    let number =
        |name: &str| -> Result<i64, String> { get(name)?.parse().map_err(|e| format!("{name}: {e}")) };
    let items: Vec<OrderItem> = serde_json::from_str(get("items")?).map_err(|e| format!("items: {e}"))?;
    Ok(Order {
        id: get("id")?.parse::<OrderId>().map_err(|e| e.to_string())?,
        customer_id: CustomerId::parse(get("customer_id")?)?,
        currency: Currency::parse(get("currency")?)?,
        status: get("status")?
            .parse()
            .map_err(|e: orderflow_domain::UnknownStatus| e.to_string())?,
        version: number("version")?,
        items,
        total_minor: MinorUnits::try_from(number("total_minor")?)?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
    })
}
