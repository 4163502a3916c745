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

/// A [`Handler`] that applies each record's [`RedisEffect`] with one script that first adds the event id to a
/// per-entity dedup set (in the entity's hash slot) and does nothing if it was there.
pub struct RedisEffects<H, C> {
    connection: C,
    script: redis::Script,
    consumer: String,
    dedup_ttl: Duration,
    handler: H,
}

impl<H: RedisHandler, C: ConnectionLike + Clone + Send + Sync + 'static> RedisEffects<H, C> {
    /// Runs `body` (Lua using the locals `keys` and `args`) for `handler`'s effects over `connection`, for the
    /// consumer named `consumer`; dedup sets expire `dedup_ttl` after their last write.
    pub fn new(
        connection: C,
        consumer: impl Into<String>,
        body: &str,
        dedup_ttl: Duration,
        handler: H,
    ) -> Self {
        let source = format!(
            "if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end\n\
             redis.call('EXPIRE', KEYS[1], ARGV[2])\n\
             local keys = {{unpack(KEYS, 2)}}\n\
             local args = {{unpack(ARGV, 3)}}\n\
             {body}\n\
             return 1"
        );
        Self {
            connection,
            script: redis::Script::new(&source),
            consumer: consumer.into(),
            dedup_ttl,
            handler,
        }
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
}

impl<H: RedisHandler, C: ConnectionLike + Clone + Send + Sync + 'static> Handler for RedisEffects<H, C> {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let mut pipe = redis::pipe();
        let mut count = 0;
        for record in batch {
            let Some(effect) = self.handler.effect(record)? else {
                continue;
            };
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.script.get_hash())
                .arg(effect.keys.len() + 1)
                .arg(self.dedup_key(&effect))
                .arg(&effect.keys)
                .arg(record.event_id())
                .arg(self.dedup_ttl.as_secs().max(1));
            for arg in &effect.args {
                cmd.arg(arg.as_slice());
            }
            pipe.add_command(cmd).ignore();
            count += 1;
        }
        if count == 0 {
            return Ok(Vec::new());
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
