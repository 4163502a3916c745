//! The console's charts: every [`SAMPLE_EVERY`] a point of what this process's pipeline did since the one
//! before (records/s per role, lag per consumer group, end-to-end p50 and p99, dead letters), kept for the
//! last [`KEEP`], so an operator who opens the console sees the last quarter of an hour at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Consumers;
use super::console::{bucket_delta, parse, quantile};

/// How often a point is taken.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How far back the charts go.
pub(crate) const KEEP: Duration = Duration::from_secs(15 * 60);

/// What the pipeline did in one interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Point {
    /// When the interval ended, milliseconds since the epoch.
    pub at_ms: i64,
    /// Records handled per second, per role.
    pub throughput: BTreeMap<String, f64>,
    /// Lag at the end of the interval, per consumer group.
    pub lag: BTreeMap<String, f64>,
    /// End-to-end latency of the events handled in the interval: median, seconds.
    pub p50_seconds: Option<f64>,
    /// And 99th percentile.
    pub p99_seconds: Option<f64>,
    /// Records dead-lettered in the interval.
    pub dead_letters: f64,
}

/// The points of the last [`KEEP`], oldest first.
#[derive(Default)]
pub(crate) struct Timeline(Mutex<VecDeque<Point>>);

impl Timeline {
    /// Every point kept.
    pub(crate) fn points(&self) -> Vec<Point> {
        self.lock().iter().cloned().collect()
    }

    fn push(&self, point: Point) {
        let oldest = point.at_ms - i64::try_from(KEEP.as_millis()).unwrap_or(i64::MAX);
        let mut points = self.lock();
        points.push_back(point);
        while points.front().is_some_and(|p| p.at_ms < oldest) {
            points.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Point>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The cumulative figures a point is the difference of.
#[derive(Default)]
struct Totals {
    processed: BTreeMap<String, u64>,
    buckets: BTreeMap<String, f64>,
    dead_letters: f64,
}

/// The cumulative figures now, and the lag per group, from the consumers and this process's metrics.
fn totals(consumers: &Consumers) -> (Totals, BTreeMap<String, f64>) {
    let running = consumers.list();
    let metrics = parse(&orderflow_api::metrics::snapshot().unwrap_or_default());
    let ours: std::collections::BTreeSet<String> =
        running.iter().map(|(_, h)| h.group().to_owned()).collect();
    let series = |name: &str| {
        metrics
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(labels, _)| labels.get("group").is_some_and(|g| ours.contains(g)))
    };
    let mut totals = Totals::default();
    for (role, handle) in &running {
        *totals.processed.entry(role.name().to_owned()).or_default() += handle.stats().processed();
    }
    for (labels, value) in series("orderflow_consumer_end_to_end_seconds_bucket") {
        *totals
            .buckets
            .entry(labels.get("le").cloned().unwrap_or_default())
            .or_default() += value;
    }
    totals.dead_letters = series("orderflow_consumer_dead_lettered_total")
        .map(|(_, v)| v)
        .sum();
    let mut lag: BTreeMap<String, f64> = ours.iter().map(|g| (g.clone(), 0.0)).collect();
    for (labels, value) in series("orderflow_consumer_lag") {
        if let Some(group) = labels.get("group") {
            *lag.entry(group.clone()).or_default() += value;
        }
    }
    (totals, lag)
}

/// The point of the interval from `before` (taken `elapsed` ago) to `now`.
fn point(before: &Totals, now: &Totals, lag: BTreeMap<String, f64>, elapsed: Duration, at_ms: i64) -> Point {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let throughput = now
        .processed
        .iter()
        .map(|(role, n)| {
            let was = before.processed.get(role).copied().unwrap_or(*n);
            (role.clone(), n.saturating_sub(was) as f64 / secs)
        })
        .collect();
    let buckets = bucket_delta(&now.buckets, &before.buckets);
    Point {
        at_ms,
        throughput,
        lag,
        p50_seconds: quantile(&buckets, 0.5),
        p99_seconds: quantile(&buckets, 0.99),
        dead_letters: (now.dead_letters - before.dead_letters).max(0.0),
    }
}

/// Adds a point to `timeline` every [`SAMPLE_EVERY`] until `shutdown` fires.
pub(crate) async fn sample(
    timeline: std::sync::Arc<Timeline>,
    consumers: Consumers,
    shutdown: CancellationToken,
) {
    let (mut before, _) = totals(&consumers);
    let mut taken = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
        let (now, lag) = totals(&consumers);
        let at_ms = chrono::Utc::now().timestamp_millis();
        timeline.push(point(&before, &now, lag, taken.elapsed(), at_ms));
        before = now;
        taken = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_point_is_the_difference_of_two_totals() {
        let before = Totals {
            processed: [("payments".to_owned(), 100)].into(),
            buckets: [
                ("0.01".to_owned(), 10.0),
                ("0.1".to_owned(), 10.0),
                ("+Inf".to_owned(), 10.0),
            ]
            .into(),
            dead_letters: 1.0,
        };
        let now = Totals {
            processed: [("payments".to_owned(), 150), ("audit".to_owned(), 7)].into(),
            buckets: [
                ("0.01".to_owned(), 20.0),
                ("0.1".to_owned(), 30.0),
                ("+Inf".to_owned(), 30.0),
            ]
            .into(),
            dead_letters: 3.0,
        };
        let p = point(&before, &now, BTreeMap::new(), Duration::from_secs(5), 42);
        assert_eq!(p.throughput["payments"], 10.0);
        assert_eq!(
            p.throughput["audit"], 0.0,
            "a role first seen starts from its own count"
        );
        assert_eq!(p.dead_letters, 2.0);
        // 20 events in the interval: 10 under 10 ms, 10 between 10 and 100 ms.
        assert_eq!(p.p50_seconds, Some(0.01));
        assert!(p.p99_seconds.unwrap() > 0.09);
    }

    #[test]
    fn points_older_than_the_window_are_dropped() {
        let timeline = Timeline::default();
        let at = |ms| Point {
            at_ms: ms,
            throughput: BTreeMap::new(),
            lag: BTreeMap::new(),
            p50_seconds: None,
            p99_seconds: None,
            dead_letters: 0.0,
        };
        timeline.push(at(0));
        timeline.push(at(1_000));
        timeline.push(at(1_000 + 15 * 60 * 1000));
        let kept: Vec<i64> = timeline.points().iter().map(|p| p.at_ms).collect();
        assert_eq!(kept, vec![1_000, 1_000 + 15 * 60 * 1000]);
    }
}
