//! A Kafka consumer runtime with exactly-once effects.
//!
//! Implement [`Handler`] (a batch of one partition's records in, outputs out) and run it in a
//! [`ConsumerRuntime`]. The runtime
//! - keeps per-partition order and runs up to `concurrency` partitions at once, one batch each;
//! - commits offsets only for records whose effects are done, never past a failing record;
//! - retries transient failures in place with exponential backoff and jitter, then through the group's own
//!   retry topics `<topic>.<group>.retry.<n>`, and sends permanent failures to its `<topic>.<group>.dlq` with
//!   headers saying where and why (see [`routing::headers`]); [`dlq`] lists, shows and replays them;
//! - pauses a partition whose queue passes the high-water mark and resumes it below the low-water mark,
//!   while polling goes on so the member keeps its assignment;
//! - on revocation finishes the revoked partitions' running batches and commits them before letting go;
//! - on shutdown drains within a deadline, commits and leaves the group, with a hard close timeout;
//! - rebuilds its clients when a partition the broker holds records for gets none for the stall timeout
//!   (a client wedged by a broker failure heals itself).
//!
//! Exactly-once effects come from one of three [`Delivery`] set-ups: a Kafka transaction carrying the
//! outputs and the consumed offsets ([`Delivery::Transactional`]), or at-least-once delivery into
//! idempotent effects: [`effects::DbEffects`] (effect plus a dedup row in one database transaction) and
//! [`effects::RedisEffects`] (one atomic script that checks the event id first).

mod engine;
mod error;
mod handler;
mod naming;
mod poller;
mod record;
mod runtime;
mod settings;
mod stall;
mod stats;
mod telemetry;
mod watermarks;
mod worker;

pub mod dlq;
pub mod effects;
pub mod groups;
pub mod routing;

pub use error::ConsumerError;
pub use handler::{ErrorKind, Handler, HandlerError, SETTLE_ROUNDS};
pub use record::{Output, Record};
pub use runtime::{ConsumerHandle, ConsumerRuntime, ROUTING_RETENTION_DAYS};
pub use settings::{ConsumerSettings, Delivery, RetryPolicy};
pub use stats::ConsumerStats;
