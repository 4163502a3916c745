//! Redis effects applied by one atomic script that records the event id first.

use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::handler::{Handler, HandlerError};
use crate::record::{Output, Record};

/// The effect of one record: keys that share one hash tag, and the script's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEffect {
    /// Keys the script touches, available to it as `keys[1..]`; all must share the hash tag of the first.
    pub keys: Vec<String>,
    /// Arguments, available to the script as `args[1..]`.
    pub args: Vec<Vec<u8>>,
}

/// Says what a record does in Redis; [`RedisEffects`] runs it atomically, once per event id.
pub trait RedisHandler: Send + Sync + 'static {
    /// The effect of `record`, or `None` when it has none.
    fn effect(&self, record: &Record) -> Result<Option<RedisEffect>, HandlerError>;
}

/// The `{...}` hash tag of a key (Redis Cluster hashes only that part), or the whole key without one.
pub fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

/// Maps a Redis error: connection trouble and timeouts are transient; an error the server returned for the
/// script (wrong type, a script error) is permanent.
pub fn redis_error(error: redis::RedisError) -> HandlerError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::NoScript
                    | redis::ServerErrorKind::ReadOnly
            )
        )
    {
        HandlerError::transient(error)
    } else {
        HandlerError::permanent(error)
    }
}

/// The dedup set member for an event id: the first 16 bytes of its SHA-256. Short, fixed-size members keep
/// the per-entity sets small and their lookups fast; a collision among one entity's events is out of reach.
fn dedup_member(event_id: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(event_id.as_bytes());
    let mut member = [0u8; 16];
    member.copy_from_slice(&digest[..16]);
    member
}

/// How records are grouped into one script call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Records of one hash tag per call: every call touches one slot, as Redis Cluster requires.
    PerHashTag,
    /// Up to this many records of a batch per call, whatever their slots: for a single Redis server only,
    /// where it saves most of the per-call cost.
    SingleServer(usize),
}

/// A [`Handler`] that applies each record's [`RedisEffect`] atomically, after adding the event id to a
/// per-entity dedup set (in the entity's hash slot), and not at all if the id was there.
///
/// Records are sent in groups (see [`Grouping`]): one script call runs a group's effects in record order, so
/// each record's check and effect stay atomic, and the calls of a batch go in one pipeline.
pub struct RedisEffects<H, C> {
    connection: C,
    script: redis::Script,
    consumer: String,
    dedup_ttl: Duration,
    grouping: Grouping,
    handler: H,
}

/// The script around a user's effect body; see [`RedisEffects::new`] for the calling convention.
const SCRIPT: &str = r"
local call = redis.call
local ttl, n, nk, na = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ki, ai = 1, 5
local applied = 0
local keys, args = {}, {}
for _ = 1, n do
  local dedup, event_id = KEYS[ki], ARGV[ai]
  for j = 1, nk do keys[j] = KEYS[ki + j] end
  for j = 1, na do args[j] = ARGV[ai + j] end
  ki = ki + nk + 1
  ai = ai + na + 1
  -- The '~' marker makes one call tell both: 2 = new set and new event, 1 = new event, 0 = seen before.
  local added = call('SADD', dedup, event_id, '~')
  if added > 0 then
    if added == 2 then call('EXPIRE', dedup, ttl) end
    apply(keys, args)
    applied = applied + 1
  end
end
return applied
";

impl<H: RedisHandler, C: ConnectionLike + Clone + Send + Sync + 'static> RedisEffects<H, C> {
    /// Runs `body` (Lua using the locals `keys` and `args`, which hold one record's [`RedisEffect`] and are
    /// reused between records, so the body must not keep them) for
    /// `handler`'s effects over `connection`, for the consumer named `consumer`; an entity's dedup set
    /// expires `dedup_ttl` after its first event (keep it longer than any record can be re-delivered). Groups are per hash tag (safe on Redis Cluster); see
    /// [`RedisEffects::grouping`].
    pub fn new(
        connection: C,
        consumer: impl Into<String>,
        body: &str,
        dedup_ttl: Duration,
        handler: H,
    ) -> Self {
        let source = format!("local function apply(keys, args)\n{body}\nend\n{SCRIPT}");
        Self {
            connection,
            script: redis::Script::new(&source),
            consumer: consumer.into(),
            dedup_ttl,
            grouping: Grouping::PerHashTag,
            handler,
        }
    }

    /// Sets how records are grouped into script calls.
    pub fn grouping(mut self, grouping: Grouping) -> Self {
        self.grouping = grouping;
        self
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.handler
    }

    fn dedup_key(&self, effect: &RedisEffect) -> String {
        let tag = effect.keys.first().map(|k| hash_tag(k)).unwrap_or_default();
        format!("{{{tag}}}:applied:{}", self.consumer)
    }

    async fn load(&self) -> Result<(), HandlerError> {
        let mut connection = self.connection.clone();
        self.script
            .prepare_invoke()
            .load_async(&mut connection)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }

    /// One script call for `group`, whose effects all have the same number of keys and arguments.
    fn call(&self, group: &[(String, &Record, RedisEffect)]) -> redis::Cmd {
        let (nk, na) = group
            .first()
            .map(|(_, _, e)| (e.keys.len(), e.args.len()))
            .unwrap_or_default();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(group.len() * (nk + 1));
        for (dedup, _, effect) in group {
            cmd.arg(dedup).arg(&effect.keys);
        }
        cmd.arg(self.dedup_ttl.as_secs().max(1))
            .arg(group.len())
            .arg(nk)
            .arg(na);
        for (_, record, effect) in group {
            cmd.arg(&dedup_member(&record.event_id())[..]);
            for arg in &effect.args {
                cmd.arg(arg.as_slice());
            }
        }
        cmd
    }

    /// Adds calls for `effects` (in order) to `pipe`: consecutive effects of one shape share a call, up to `max`.
    fn add_calls(&self, pipe: &mut redis::Pipeline, effects: &[(String, &Record, RedisEffect)], max: usize) {
        let shape = |e: &RedisEffect| (e.keys.len(), e.args.len());
        let mut start = 0;
        while start < effects.len() {
            let first = shape(&effects[start].2);
            let mut end = start + 1;
            while end < effects.len() && end - start < max && shape(&effects[end].2) == first {
                end += 1;
            }
            pipe.add_command(self.call(&effects[start..end])).ignore();
            start = end;
        }
    }
}

impl<H: RedisHandler, C: ConnectionLike + Clone + Send + Sync + 'static> Handler for RedisEffects<H, C> {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let mut effects = Vec::with_capacity(batch.len());
        for record in batch {
            if let Some(effect) = self.handler.effect(record)? {
                effects.push((self.dedup_key(&effect), record, effect));
            }
        }
        if effects.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        match self.grouping {
            Grouping::SingleServer(max) => self.add_calls(&mut pipe, &effects, max.max(1)),
            Grouping::PerHashTag => {
                // Group by dedup key (one per hash tag), keeping record order within each group; groups of
                // different tags are independent, so their relative order does not matter.
                let mut groups: Vec<Vec<(String, &Record, RedisEffect)>> = Vec::new();
                let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
                for item in effects {
                    match index.get(&item.0) {
                        Some(&i) => groups[i].push(item),
                        None => {
                            index.insert(item.0.clone(), groups.len());
                            groups.push(vec![item]);
                        }
                    }
                }
                for group in &groups {
                    self.add_calls(&mut pipe, group, usize::MAX);
                }
            }
        }
        let mut connection = self.connection.clone();
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => Ok(Vec::new()),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // A restarted or failed-over server lost its script cache: load it and let the retry run.
                self.load().await?;
                Err(HandlerError::transient("script was not loaded; loaded it"))
            }
            Err(e) => Err(redis_error(e)),
        }
    }
}
