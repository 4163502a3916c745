//! Windowed stream state: a join of two event streams per key, with a deadline for the side that waits.
//!
//! [`JoinState`] keeps, per key, the left record (e.g. an order), the right record (e.g. its payment) and the
//! ids chosen for what the join emits. Putting one side returns both once both are there ([`Put::Joined`]),
//! with a join id fixed once (on the first match; in the database, when the key is first stored: one
//! statement per batch), so processing the same records again (after a crash, a rebalance, a re-delivery)
//! yields the same output with the same id. A left record that waits past its
//! deadline is reported once by [`JoinState::expired`], again with a fixed report id; a right record that
//! comes after that is [`Put::Late`]. State lives in the database ([`DbJoin`]: durable, so a restart or a
//! Redis loss drops no half-made join; what Orderflow's enrichment uses), in Redis ([`RedisJoin`]: one hash
//! per key under the key's hash tag, updated by atomic scripts, so it holds on Redis Cluster and survives
//! restarts and rebalances, but not the loss of Redis's data) or in process ([`MemoryJoin`]).
//!
//! Records are opaque bytes: callers store the encoded events as they consumed them.

mod db;
mod memory;
mod redis_join;

pub use db::DbJoin;
pub use memory::MemoryJoin;
pub use redis_join::RedisJoin;

/// Which input a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The side that waits and can expire (e.g. the order).
    Left,
    /// The side that completes it (e.g. the payment).
    Right,
}

/// What putting a record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// The other side is not there yet; the record waits.
    Waiting,
    /// Both sides are there.
    Joined {
        /// The left record.
        left: Vec<u8>,
        /// The right record.
        right: Vec<u8>,
        /// The id fixed for this join's output (a caller's proposal: the first match's, or in the database the
        /// first put's).
        join_id: String,
    },
    /// The right side came after the left was reported expired.
    Late {
        /// The left record.
        left: Vec<u8>,
    },
}

/// One record to put (see [`JoinState::put`] for the meaning of each field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutRequest<'a> {
    /// The key both sides share.
    pub key: &'a str,
    /// Which side the record is.
    pub side: Side,
    /// The record.
    pub record: &'a [u8],
    /// When a waiting left side expires (epoch ms).
    pub deadline_ms: i64,
    /// How long the state is kept at all (ms from now).
    pub keep_ms: i64,
    /// The join id to fix if this put makes the first match (in the database: if it stores the key first).
    pub proposed_id: &'a str,
}

/// A left record whose deadline passed without its right side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Its key.
    pub key: String,
    /// The left record.
    pub left: Vec<u8>,
    /// The id fixed for the expiry report (the first caller's proposal).
    pub report_id: String,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis refused the command or could not be reached.
    #[error("join state in Redis")]
    Redis(#[from] redis::RedisError),
    /// The database refused or could not be reached.
    #[error("join state in the database")]
    Database(#[from] orderflow_store::StoreError),
    /// Redis answered something the scripts never return.
    #[error("join state: unexpected reply {reply}")]
    Reply {
        /// The reply, as received.
        reply: String,
        /// Why it could not be read, when it is text that is not UTF-8.
        #[source]
        source: Option<std::string::FromUtf8Error>,
    },
}

/// Join state in the database, on Redis or in process.
#[derive(Clone)]
pub enum JoinState {
    /// Durable in the source-of-truth database, shared by every instance.
    Database(DbJoin),
    /// Shared by every instance, durable across restarts (as durable as the Redis deployment).
    Redis(RedisJoin),
    /// This process only; gone with it.
    Memory(MemoryJoin),
}

impl JoinState {
    /// Stores `record` as `side` of `key` and says whether the join is complete. `deadline_ms` (epoch ms)
    /// is when a waiting left side expires; `keep_ms` is how long the state is kept at all (longer than the
    /// deadline, so late right sides are recognised); `proposed_id` becomes the join id if this call makes
    /// the first match (in the database: if it stores the key first).
    pub async fn put(
        &self,
        key: &str,
        side: Side,
        record: &[u8],
        deadline_ms: i64,
        keep_ms: i64,
        proposed_id: &str,
    ) -> Result<Put, StateError> {
        let request = PutRequest {
            key,
            side,
            record,
            deadline_ms,
            keep_ms,
            proposed_id,
        };
        match self {
            Self::Database(s) => s
                .put_batch(&[request])
                .await?
                .pop()
                .ok_or_else(|| StateError::Reply {
                    reply: "no outcome for a put".into(),
                    source: None,
                }),
            Self::Redis(s) => s.put(key, side, record, deadline_ms, keep_ms, proposed_id).await,
            Self::Memory(s) => Ok(s.put(key, side, record, deadline_ms, keep_ms, proposed_id)),
        }
    }

    /// Puts several records at once and says, for each, what it did (as [`JoinState::put`] one by one would,
    /// in order). In the database they are one statement; on Redis the scripts are pipelined.
    pub async fn put_batch(&self, puts: &[PutRequest<'_>]) -> Result<Vec<Put>, StateError> {
        match self {
            Self::Database(s) => s.put_batch(puts).await,
            Self::Redis(s) => futures::future::join_all(
                puts.iter()
                    .map(|p| s.put(p.key, p.side, p.record, p.deadline_ms, p.keep_ms, p.proposed_id)),
            )
            .await
            .into_iter()
            .collect(),
            Self::Memory(s) => Ok(puts
                .iter()
                .map(|p| s.put(p.key, p.side, p.record, p.deadline_ms, p.keep_ms, p.proposed_id))
                .collect()),
        }
    }

    /// Deletes entries whose keep time passed before `now_ms` (bounded per call) and returns how many. Redis
    /// expires them by itself and the in-process state drops them as it goes, so only the database needs
    /// this.
    pub async fn prune(&self, now_ms: i64) -> Result<u64, StateError> {
        match self {
            Self::Database(s) => s.prune(now_ms).await,
            Self::Redis(_) | Self::Memory(_) => Ok(0),
        }
    }

    /// Up to `limit` left records whose deadline is at or before `now_ms` and whose right side never came,
    /// each marked reported (with `propose_id()` as its report id unless one was fixed before). Call
    /// [`JoinState::forget_expired`] once the reports are published.
    pub async fn expired(
        &self,
        now_ms: i64,
        limit: usize,
        propose_id: impl FnMut() -> String,
    ) -> Result<Vec<Expired>, StateError> {
        match self {
            Self::Database(s) => s.expired(now_ms, limit, propose_id).await,
            Self::Redis(s) => s.expired(now_ms, limit, propose_id).await,
            Self::Memory(s) => Ok(s.expired(now_ms, limit, propose_id)),
        }
    }

    /// Takes `keys` off the deadline index (their reports are out).
    pub async fn forget_expired(&self, keys: &[String]) -> Result<(), StateError> {
        match self {
            Self::Database(s) => s.forget_expired(keys).await,
            Self::Redis(s) => s.forget_expired(keys).await,
            Self::Memory(s) => {
                s.forget_expired(keys);
                Ok(())
            }
        }
    }
}
