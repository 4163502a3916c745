//! Windowed stream state: a join of two event streams per key, with a deadline for the side that waits.
//!
//! [`JoinState`] keeps, per key, the left record (e.g. an order), the right record (e.g. its payment) and the
//! ids chosen for what the join emits. Putting one side returns both once both are there ([`Put::Joined`]),
//! with a join id fixed on the first match, so processing the same records again (after a crash, a
//! rebalance, a re-delivery) yields the same output with the same id. A left record that waits past its
//! deadline is reported once by [`JoinState::expired`], again with a fixed report id; a right record that
//! comes after that is [`Put::Late`]. State lives in Redis ([`RedisJoin`]: one hash per key under the key's
//! hash tag, updated by atomic scripts, so it holds on Redis Cluster and survives restarts and rebalances)
//! or in process ([`MemoryJoin`], for the embedded default).
//!
//! Records are opaque bytes: callers store the encoded events as they consumed them.

mod memory;
mod redis_join;

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
        /// The id fixed for this join's output (the first caller's proposal).
        join_id: String,
    },
    /// The right side came after the left was reported expired.
    Late {
        /// The left record.
        left: Vec<u8>,
    },
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

/// Join state on Redis or in process.
#[derive(Clone)]
pub enum JoinState {
    /// Shared by every instance, durable across restarts (as durable as the Redis deployment).
    Redis(RedisJoin),
    /// This process only; gone with it.
    Memory(MemoryJoin),
}

impl JoinState {
    /// Stores `record` as `side` of `key` and says whether the join is complete. `deadline_ms` (epoch ms)
    /// is when a waiting left side expires; `keep_ms` is how long the state is kept at all (longer than the
    /// deadline, so late right sides are recognised); `proposed_id` becomes the join id if this call makes
    /// the first match.
    pub async fn put(
        &self,
        key: &str,
        side: Side,
        record: &[u8],
        deadline_ms: i64,
        keep_ms: i64,
        proposed_id: &str,
    ) -> Result<Put, StateError> {
        match self {
            Self::Redis(s) => s.put(key, side, record, deadline_ms, keep_ms, proposed_id).await,
            Self::Memory(s) => Ok(s.put(key, side, record, deadline_ms, keep_ms, proposed_id)),
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
            Self::Redis(s) => s.expired(now_ms, limit, propose_id).await,
            Self::Memory(s) => Ok(s.expired(now_ms, limit, propose_id)),
        }
    }

    /// Takes `keys` off the deadline index (their reports are out).
    pub async fn forget_expired(&self, keys: &[String]) -> Result<(), StateError> {
        match self {
            Self::Redis(s) => s.forget_expired(keys).await,
            Self::Memory(s) => {
                s.forget_expired(keys);
                Ok(())
            }
        }
    }
}
