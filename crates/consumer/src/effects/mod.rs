//! Exactly-once effect adapters: wrap an effect in a [`Handler`](crate::Handler) that skips records whose
//! effect is already done, so re-delivery (a rewind, a rebalance, a replayed dead letter) changes nothing.
//!
//! - [`DbEffects`]: the effect and a `(consumer, event id)` dedup row in one database transaction per batch,
//!   on PostgreSQL or SQLite.
//! - [`RedisEffects`]: one atomic script per record that records the event id before applying the effect;
//!   the dedup set shares the effect's hash tag, so it holds on Redis Cluster too.

mod db;
mod redis;

pub use db::{DEDUP_RETENTION, DbEffects, DbHandler, DedupPruner, db_error};
pub use redis::{Grouping, RedisEffect, RedisEffects, RedisHandler, hash_tag, redis_error};
