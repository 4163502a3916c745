//! Live counters of one runtime, for probes, consoles and tests. Only [`crate::telemetry::Telemetry`]
//! writes them, together with the metrics of the same figures.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by a runtime and whoever watches it; cheap to read at any time.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub(crate) assigned: AtomicU64,
    pub(crate) revocations: AtomicU64,
    pub(crate) paused: AtomicU64,
    pub(crate) pauses: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) joined: std::sync::atomic::AtomicBool,
}

impl ConsumerStats {
    /// Partitions assigned to this member now.
    pub fn assigned(&self) -> u64 {
        self.assigned.load(Ordering::Relaxed)
    }
    /// Partitions revoked from this member so far.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Relaxed)
    }
    /// Partitions paused by back-pressure now.
    pub fn paused(&self) -> u64 {
        self.paused.load(Ordering::Relaxed)
    }
    /// Times a partition was paused so far.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }
    /// Times a partition was resumed so far.
    pub fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }
    /// Batches being handled now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// Records whose effects are done (including dead-lettered ones).
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }
    /// Whether the member has joined its group (it has partitions, or librdkafka reports the group
    /// up and steady; a member of a group with more members than partitions has none and is still joined).
    pub fn joined(&self) -> bool {
        self.assigned() > 0 || self.joined.load(Ordering::Relaxed)
    }

    /// Commits (offset commits or transactions) so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Times the runtime found a partition starved by its client and rebuilt the clients.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }
}
