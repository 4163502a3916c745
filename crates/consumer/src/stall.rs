//! The stall watchdog's evidence: where the broker says each assigned partition ends, and where this
//! member's fetcher stands in it.
//!
//! A Kafka client can wedge after a broker failure (a fetcher or a group state that never recovers) and
//! then simply stop delivering, with no error to react to. The engine knows when a partition has nothing
//! queued and nothing running; the lag sampler asks the broker where each partition ends (its last stable
//! offset, for this read-committed member); librdkafka's statistics say which offset the fetcher will fetch
//! next (past transaction markers and aborted records, which are never delivered). A partition whose
//! fetcher stays short of the broker's end while nothing of it is queued or running, for the stall
//! timeout, is starved by its client, and the runtime rebuilds its clients from the committed offsets, as
//! for an aborted transaction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::poller::Tp;

/// One measurement per partition, with when it was taken.
#[derive(Debug, Default)]
struct Measured(Mutex<Option<(Instant, HashMap<Tp, i64>)>>);

impl Measured {
    fn record(&self, offsets: HashMap<Tp, i64>) {
        if let Ok(mut measured) = self.0.lock() {
            *measured = Some((Instant::now(), offsets));
        }
    }

    fn fresh(&self, max_age: Duration) -> Option<HashMap<Tp, i64>> {
        let measured = self.0.lock().ok()?;
        match measured.as_ref() {
            Some((at, offsets)) if at.elapsed() <= max_age => Some(offsets.clone()),
            _ => None,
        }
    }
}

/// The newest evidence of one runtime: partition ends from the lag sampler, fetch positions from the
/// statistics callback; read by the engine.
#[derive(Debug, Default)]
pub(crate) struct FetchBoard {
    ends: Measured,
    fetched: Measured,
}

impl FetchBoard {
    /// Where the broker says each assigned partition ends, asked now.
    pub(crate) fn record_ends(&self, ends: HashMap<Tp, i64>) {
        self.ends.record(ends);
    }

    /// The next offset the fetcher will fetch of each partition, reported now.
    pub(crate) fn record_fetched(&self, fetched: HashMap<Tp, i64>) {
        self.fetched.record(fetched);
    }

    /// Records each partition has at the broker beyond what the fetcher has fetched, where both were
    /// measured within `max_age` (an old measurement proves nothing) and the fetcher knows its position.
    pub(crate) fn unfetched(&self, max_age: Duration) -> HashMap<Tp, i64> {
        let (Some(ends), Some(fetched)) = (self.ends.fresh(max_age), self.fetched.fresh(max_age)) else {
            return HashMap::new();
        };
        ends.into_iter()
            .filter_map(|(tp, end)| {
                let next = *fetched.get(&tp)?;
                (next >= 0).then(|| (tp, (end - next).max(0)))
            })
            .collect()
    }
}

/// How long one partition has been starved, judged at each look of the watchdog.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StarvationClock(Option<Instant>);

impl StarvationClock {
    /// Records of the partition arrived: it is not starved.
    pub(crate) fn reset(&mut self) {
        self.0 = None;
    }

    /// A look at `now`; `starving` when the broker holds records of the partition past the committed offset
    /// while nothing of it is queued or running here. Returns how long it has been starving, without a break.
    pub(crate) fn look(&mut self, starving: bool, now: Instant) -> Duration {
        if !starving {
            self.0 = None;
            return Duration::ZERO;
        }
        now.duration_since(*self.0.get_or_insert(now))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn unfetched_records_need_both_measurements_fresh_and_a_known_position() {
        let board = FetchBoard::default();
        let (a, b, c): (Tp, Tp, Tp) = (
            (Arc::from("orders"), 0),
            (Arc::from("orders"), 1),
            (Arc::from("orders"), 2),
        );
        let window = Duration::from_secs(10);
        board.record_ends(HashMap::from([(a.clone(), 100), (b.clone(), 50), (c.clone(), 7)]));
        assert!(board.unfetched(window).is_empty(), "no fetch position yet");
        // b's fetcher is past a transaction marker the committed offset never covers; c's has no position.
        board.record_fetched(HashMap::from([
            (a.clone(), 60),
            (b.clone(), 50),
            (c.clone(), -1001),
        ]));
        assert_eq!(
            board.unfetched(window),
            HashMap::from([(a.clone(), 40), (b.clone(), 0)])
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            board.unfetched(Duration::from_millis(10)).is_empty(),
            "too old to trust"
        );
    }

    #[test]
    fn starvation_counts_only_unbroken_time() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut clock = StarvationClock::default();
        assert_eq!(clock.look(true, at(0)), Duration::ZERO);
        assert_eq!(clock.look(true, at(20)), Duration::from_secs(20));
        clock.reset(); // records arrived
        assert_eq!(clock.look(true, at(25)), Duration::ZERO);
        assert_eq!(clock.look(false, at(30)), Duration::ZERO, "caught up");
        assert_eq!(clock.look(true, at(35)), Duration::ZERO);
        assert_eq!(clock.look(true, at(70)), Duration::from_secs(35));
    }
}
