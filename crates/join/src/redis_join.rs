//! Join state on Redis: one hash per key (`<prefix>join:{<key>}`, the braces a Cluster hash tag) updated by
//! atomic scripts, and a sorted set of deadlines (`<prefix>join:deadlines`) for waiting left sides.

use orderflow_redis::RedisConnection;
use redis::{Script, Value};

use crate::{Expired, Put, Side, StateError};

/// Stores one side, and answers with both (fixing the join id on the first match) or with the left side of
/// an already reported expiry.
const PUT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local l = redis.call('HGET', KEYS[1], 'l')
local r = redis.call('HGET', KEYS[1], 'r')
if l and r then
  if redis.call('HEXISTS', KEYS[1], 'rep') == 1 then return {'late', l} end
  local id = redis.call('HGET', KEYS[1], 'id')
  if not id then
    id = ARGV[4]
    redis.call('HSET', KEYS[1], 'id', id)
  end
  return {'joined', l, r, id}
end
return {'waiting'}
";

/// Marks a waiting left side reported (fixing the report id once) and returns it; nil when it was joined
/// or is gone.
const EXPIRE: &str = r"
if redis.call('HEXISTS', KEYS[1], 'r') == 1 then return false end
local l = redis.call('HGET', KEYS[1], 'l')
if not l then return false end
local rep = redis.call('HGET', KEYS[1], 'rep')
if not rep then
  rep = ARGV[1]
  redis.call('HSET', KEYS[1], 'rep', rep)
end
return {l, rep}
";

/// Join state in Redis (standalone or Cluster); cheap to clone.
#[derive(Clone)]
pub struct RedisJoin {
    connection: RedisConnection,
    prefix: String,
    put: Script,
    expire: Script,
}

fn unexpected(reply: &impl std::fmt::Debug) -> StateError {
    StateError::Reply {
        reply: format!("{reply:?}"),
        source: None,
    }
}

fn bytes(value: &Value) -> Result<Vec<u8>, StateError> {
    match value {
        Value::BulkString(b) => Ok(b.clone()),
        Value::SimpleString(s) => Ok(s.clone().into_bytes()),
        other => Err(unexpected(&other)),
    }
}

fn text(value: &Value) -> Result<String, StateError> {
    String::from_utf8(bytes(value)?).map_err(|e| StateError::Reply {
        reply: "text that is not UTF-8".into(),
        source: Some(e),
    })
}

impl RedisJoin {
    /// State under `prefix` (e.g. `orderflow:enrichment:`) on `connection`.
    pub fn new(connection: RedisConnection, prefix: impl Into<String>) -> Self {
        Self {
            connection,
            prefix: prefix.into(),
            put: Script::new(PUT),
            expire: Script::new(EXPIRE),
        }
    }

    /// The hash holding `key`'s state.
    pub fn state_key(&self, key: &str) -> String {
        format!("{}join:{{{key}}}", self.prefix)
    }

    fn deadlines_key(&self) -> String {
        format!("{}join:deadlines", self.prefix)
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        side: Side,
        record: &[u8],
        deadline_ms: i64,
        keep_ms: i64,
        proposed_id: &str,
    ) -> Result<Put, StateError> {
        let mut conn = self.connection.clone();
        if side == Side::Left {
            // The deadline goes in first: a crash between the two leaves an entry the sweep finds joined or
            // reports, never a waiting order nobody will look at.
            redis::cmd("ZADD")
                .arg(self.deadlines_key())
                .arg("NX")
                .arg(deadline_ms)
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        let field = match side {
            Side::Left => "l",
            Side::Right => "r",
        };
        let reply: Value = self
            .put
            .key(self.state_key(key))
            .arg(field)
            .arg(record)
            .arg(keep_ms.max(1))
            .arg(proposed_id)
            .invoke_async(&mut conn)
            .await?;
        let Value::Array(parts) = reply else {
            return Err(unexpected(&reply));
        };
        match (parts.first().map(text).transpose()?.as_deref(), parts.as_slice()) {
            (Some("waiting"), _) => Ok(Put::Waiting),
            (Some("late"), [_, left]) => Ok(Put::Late { left: bytes(left)? }),
            (Some("joined"), [_, left, right, id]) => Ok(Put::Joined {
                left: bytes(left)?,
                right: bytes(right)?,
                join_id: text(id)?,
            }),
            _ => Err(unexpected(&parts)),
        }
    }

    pub(crate) async fn expired(
        &self,
        now_ms: i64,
        limit: usize,
        mut propose_id: impl FnMut() -> String,
    ) -> Result<Vec<Expired>, StateError> {
        let mut conn = self.connection.clone();
        let due: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.deadlines_key())
            .arg("-inf")
            .arg(now_ms)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let mut expired = Vec::new();
        let mut settled = Vec::new();
        for key in due {
            let reply: Value = self
                .expire
                .key(self.state_key(&key))
                .arg(propose_id())
                .invoke_async(&mut conn)
                .await?;
            match reply {
                Value::Array(parts) if parts.len() == 2 => expired.push(Expired {
                    left: bytes(&parts[0])?,
                    report_id: text(&parts[1])?,
                    key,
                }),
                Value::Nil => settled.push(key),
                other => return Err(unexpected(&other)),
            }
        }
        self.forget_expired(&settled).await?;
        Ok(expired)
    }

    pub(crate) async fn forget_expired(&self, keys: &[String]) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection.clone();
        redis::cmd("ZREM")
            .arg(self.deadlines_key())
            .arg(keys)
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }
}
