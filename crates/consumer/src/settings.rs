//! How a consumer runtime behaves: group, topics, delivery, concurrency, back-pressure, retries, shutdown.

use std::time::Duration;

/// How consumed offsets are committed relative to the effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Offsets are committed to the group after the effects are done; effects must be idempotent (the
    /// database and Redis adapters make them so). Outputs are published before the offsets are committed.
    AtLeastOnce,
    /// Outputs, retry and dead-letter records, and the consumed offsets are written in one Kafka transaction
    /// (consume-transform-produce): exactly once for Kafka-to-Kafka processing.
    Transactional,
}

/// The retry policy for transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in place (including the first) before a record moves to the next retry topic.
    pub in_place_attempts: u32,
    /// Backoff before the second attempt; doubled each attempt, with full jitter.
    pub initial_backoff: Duration,
    /// Upper bound of the backoff.
    pub max_backoff: Duration,
    /// Delay of each retry topic `<topic>.<group>.retry.<n>` (n from 1); after the last, the dead-letter topic.
    pub topic_delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            in_place_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            topic_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1` (attempt counts from 1), with full jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff);
        let jitter: f64 = rand::random();
        cap.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Settings of one consumer runtime.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Consumer group id.
    pub group: String,
    /// The group's name in its retry and dead-letter topics (`<topic>.<routing_name>.retry.<n>`): the group
    /// id by default; roles use their group's name without the deployment prefix the topics already carry.
    pub routing_name: String,
    /// Full names of the topics to consume (their retry topics are consumed too).
    pub topics: Vec<String>,
    /// How offsets relate to effects.
    pub delivery: Delivery,
    /// Identity of this instance in the group; used for the transactional id (`<group>-<instance>`) and, with
    /// `static_membership`, as `group.instance.id`. When absent, one is drawn for the runtime (kept across its
    /// restarts).
    pub instance_id: Option<String>,
    /// Join with static membership (`group.instance.id`), so a quick restart keeps the assignment.
    pub static_membership: bool,
    /// Partitions processed at once.
    pub concurrency: usize,
    /// Largest batch handed to the handler.
    pub max_batch: usize,
    /// A partition is paused when this many of its records wait.
    pub high_water: usize,
    /// A paused partition is resumed when no more than this many wait.
    pub low_water: usize,
    /// How often offsets are committed. A transaction also commits as soon as no batch runs, so a
    /// transactional stage adds no commit delay at low load.
    pub commit_interval: Duration,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// How long shutdown and revocation wait for in-flight batches.
    pub drain_timeout: Duration,
    /// Hard bound on leaving the group and closing the client.
    pub close_timeout: Duration,
    /// Kafka transaction timeout (transactional delivery): an abandoned transaction is aborted after it.
    pub transaction_timeout: Duration,
    /// A partition with records at the broker past the committed offset, yet none queued, running or
    /// arriving for this long, is starved by a wedged client: the runtime rebuilds its clients and resumes
    /// from the committed offsets. Retry topics (whose records wait on purpose) and held consumers are exempt.
    pub stall_timeout: Duration,
}

impl ConsumerSettings {
    /// Partitions worked on at once unless configured otherwise.
    pub const DEFAULT_CONCURRENCY: usize = 8;

    /// Defaults for `group` consuming `topics` (its retry and dead-letter topics are named after `group`).
    pub fn new(group: impl Into<String>, topics: Vec<String>, delivery: Delivery) -> Self {
        let group = group.into();
        Self {
            routing_name: group.clone(),
            group,
            topics,
            delivery,
            instance_id: None,
            static_membership: false,
            concurrency: Self::DEFAULT_CONCURRENCY,
            max_batch: 500,
            high_water: 5_000,
            low_water: 1_000,
            commit_interval: Duration::from_millis(100),
            retry: RetryPolicy::default(),
            drain_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            transaction_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
        }
    }
}
