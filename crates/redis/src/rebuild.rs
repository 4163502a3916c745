//! The marker and lock of state kept in Redis that must be rebuilt as a whole when Redis loses it, as Kafka
//! Streams keeps a checkpoint beside a state store.
//!
//! The marker key is written when a rebuild completes and never expires, so a Redis that lost its data (a
//! flush, a restart that came back empty, a failover to a replica that had nothing) has lost the marker
//! too: its owner sees that and rebuilds. The lock key names the one process rebuilding (a token of its
//! own); it expires [`LOCK_MS`] after it was last taken or renewed, so a rebuild whose process died is
//! taken over.

use redis::Script;

use crate::RedisConnection;

/// How long a rebuild's lock lasts without being renewed (milliseconds).
pub const LOCK_MS: u64 = 60_000;

/// Sets the marker if the rebuild still holds the lock (1), else changes nothing (0).
const FINISH: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
";

/// Gives the lock up if the rebuild still holds it.
const ABANDON: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// Renews the lock if the rebuild still holds it (1), else 0.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// A token no other rebuild holds: this process, and when and in which order it asked.
pub fn rebuild_token() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id())
}

/// The marker and lock keys of one rebuildable store; cheap to clone.
#[derive(Clone)]
pub struct Rebuild {
    connection: RedisConnection,
    marker: String,
    lock: String,
}

impl Rebuild {
    /// The marker `marker` and lock `lock` on `connection`; on a Cluster both names MUST share a hash tag
    /// (`{p}:epoch`, `{p}:rebuild`), since one script reads both.
    pub fn new(connection: RedisConnection, marker: String, lock: String) -> Self {
        Self {
            connection,
            marker,
            lock,
        }
    }

    /// The lock key (for scripts that check the lock themselves).
    pub fn lock_key(&self) -> &str {
        &self.lock
    }

    /// The marker key (for scripts that check it themselves).
    pub fn marker_key(&self) -> &str {
        &self.marker
    }

    /// Whether the store is intact: its marker is there.
    pub async fn intact(&self) -> Result<bool, redis::RedisError> {
        redis::cmd("EXISTS")
            .arg(&self.marker)
            .query_async(&mut self.connection.clone())
            .await
    }

    /// Takes the lock with a fresh token; `None` while another rebuild holds it.
    pub async fn begin(&self) -> Result<Option<String>, redis::RedisError> {
        let token = rebuild_token();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&self.lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_MS)
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(taken.map(|_| token))
    }

    /// Renews the lock (`false`: the rebuild lost it, to expiry or to a loss of Redis).
    pub async fn renew(&self, token: &str) -> Result<bool, redis::RedisError> {
        let held: i64 = Script::new(RENEW)
            .key(&self.lock)
            .arg(token)
            .arg(LOCK_MS)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(held == 1)
    }

    /// Marks the store intact if the rebuild still holds the lock (`false` otherwise: rebuild again).
    pub async fn finish(&self, token: &str) -> Result<bool, redis::RedisError> {
        let done: i64 = Script::new(FINISH)
            .key(&self.marker)
            .key(&self.lock)
            .arg(token)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(done == 1)
    }

    /// Gives the lock up, if the rebuild still holds it.
    pub async fn abandon(&self, token: &str) -> Result<(), redis::RedisError> {
        let _: i64 = Script::new(ABANDON)
            .key(&self.lock)
            .arg(token)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }
}
