//! The console: one page served at `/` that shows the pipeline live, and the JSON it refreshes from.
//!
//! The figures come from this process's own metrics (the Prometheus text the recorder renders) and its
//! consumers' live counters, plus the newest orders from the database. In `orderflow up` that is the whole
//! pipeline; a process running some roles shows those roles (Prometheus and the Grafana dashboard in
//! `deploy/observability` show every process).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::response::{Html, IntoResponse};

use crate::{Backends, Role};

/// The page: plain HTML, CSS and JavaScript, no build step.
const PAGE: &str = include_str!("console.html");

/// How far back the latency percentiles look.
const WINDOW: Duration = Duration::from_secs(60);

/// How many recent orders the console lists.
const RECENT_ORDERS: i64 = 12;

/// Serves the page.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "console",
    summary = "The live console (an HTML page; its figures come from /console/state)",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
pub(crate) async fn page() -> impl IntoResponse {
    Html(PAGE)
}

/// The console's figures.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Built as JSON by `Console::state`; this type describes it.
pub(crate) struct ConsoleState {
    /// The roles this process runs.
    roles: Vec<String>,
    /// Orders accepted by this process's API.
    orders_accepted: f64,
    /// Records processed by its consumers.
    processed_total: u64,
    /// Its consumers, with their lag and dead letters.
    #[schema(value_type = Vec<Object>)]
    consumers: Vec<serde_json::Value>,
    /// Lag per group and topic.
    #[schema(value_type = Vec<Object>)]
    lag: Vec<serde_json::Value>,
    /// Dead letters per topic.
    #[schema(value_type = Vec<Object>)]
    dead_letters: Vec<serde_json::Value>,
    /// Order cache hits, lookups, hit ratio, stale answers and whether its breaker is open.
    #[schema(value_type = Object)]
    cache: serde_json::Value,
    /// Events committed and not yet published.
    outbox_backlog: f64,
    /// End-to-end latency percentiles over the last minute.
    #[schema(value_type = Object)]
    end_to_end: serde_json::Value,
    /// The newest orders.
    #[schema(value_type = Vec<Object>)]
    recent_orders: Vec<serde_json::Value>,
    /// The last 15 minutes, a point every `sample_secs`: records/s per role, lag per group, end-to-end p50
    /// and p99, dead letters.
    #[schema(value_type = Object)]
    history: serde_json::Value,
}

/// One sample of a metric: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// Remembers earlier end-to-end latency buckets, so percentiles cover the last [`WINDOW`] rather than the
/// process's whole life.
pub(crate) struct Console {
    roles: Vec<Role>,
    /// The charts' points.
    pub(crate) timeline: std::sync::Arc<super::timeline::Timeline>,
    history: Mutex<VecDeque<(Instant, BTreeMap<String, f64>)>>,
}

impl Console {
    pub(crate) fn new(roles: Vec<Role>) -> Self {
        Self {
            roles,
            timeline: std::sync::Arc::default(),
            history: Mutex::new(VecDeque::new()),
        }
    }

    /// The figures the page shows.
    pub(crate) async fn state(
        &self,
        backends: &Backends,
    ) -> Result<serde_json::Value, orderflow_store::StoreError> {
        let recent = backends.store.recent_orders(RECENT_ORDERS).await?;
        let metrics = parse(&orderflow_api::metrics::snapshot().unwrap_or_default());
        let series = |name: &str| metrics.get(name).map(Vec::as_slice).unwrap_or_default();
        let total = |name: &str| series(name).iter().fold(0.0, |sum, (_, v)| sum + v);

        let running = backends.consumers.list();
        let consumers: Vec<serde_json::Value> = running
            .iter()
            .map(|(role, handle)| {
                let group = handle.group();
                let sum_for = |name: &str| {
                    series(name)
                        .iter()
                        .filter(|(l, _)| l.get("group").map(String::as_str) == Some(group))
                        .fold(0.0, |sum, (_, v)| sum + v)
                };
                let mut view =
                    serde_json::to_value(super::consumer_view(Some(*role), handle)).unwrap_or_default();
                view["lag"] = sum_for("orderflow_consumer_lag").into();
                view["dead_lettered"] = sum_for("orderflow_consumer_dead_lettered_total").into();
                view
            })
            .collect();
        let processed_total: u64 = running.iter().map(|(_, h)| h.stats().processed()).sum();

        // Only this process's consumers (the recorder may hold series of consumers that stopped).
        let groups: std::collections::BTreeSet<&str> = running.iter().map(|(_, h)| h.group()).collect();
        let ours = |labels: &BTreeMap<String, String>| {
            labels.get("group").is_some_and(|g| groups.contains(g.as_str()))
        };
        let mut lag: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (labels, value) in series("orderflow_consumer_lag").iter().filter(|(l, _)| ours(l)) {
            let key = (label(labels, "group"), label(labels, "topic"));
            *lag.entry(key).or_default() += value;
        }
        // Retry topics are listed only while they hold something.
        lag.retain(|(_, topic), lag| *lag > 0.0 || !topic.contains(".retry."));
        let mut dlq: BTreeMap<String, f64> = BTreeMap::new();
        for (labels, value) in series("orderflow_consumer_dead_lettered_total")
            .iter()
            .filter(|(l, _)| ours(l))
        {
            *dlq.entry(label(labels, "topic")).or_default() += value;
        }
        let hits = total("orderflow_cache_hits_total");
        let lookups = hits + total("orderflow_cache_misses_total");
        let accepted: f64 = series("orderflow_http_requests_total")
            .iter()
            .filter(|(l, _)| {
                label(l, "route") == "/v1/orders"
                    && label(l, "method") == "POST"
                    && label(l, "status") == "201"
            })
            .fold(0.0, |sum, (_, v)| sum + v);
        let (p50, p99, samples) = self.latency(series("orderflow_consumer_end_to_end_seconds_bucket"));

        Ok(serde_json::json!({
            "roles": self.roles.iter().map(Role::name).collect::<Vec<_>>(),
            "orders_accepted": accepted,
            "processed_total": processed_total,
            "consumers": consumers,
            "lag": lag.into_iter().map(|((group, topic), lag)| serde_json::json!({"group": group, "topic": topic, "lag": lag})).collect::<Vec<_>>(),
            "dead_letters": dlq.into_iter().map(|(topic, count)| serde_json::json!({"topic": topic, "count": count})).collect::<Vec<_>>(),
            "cache": {
                "hits": hits,
                "lookups": lookups,
                "hit_ratio": (lookups > 0.0).then(|| hits / lookups),
                "stale_served": total("orderflow_cache_stale_served_total"),
                "breaker_open": total("orderflow_cache_breaker_open") > 0.0,
            },
            "outbox_backlog": total("orderflow_outbox_backlog"),
            "end_to_end": {"p50_seconds": p50, "p99_seconds": p99, "samples": samples, "window_seconds": WINDOW.as_secs()},
            "recent_orders": recent,
            "history": {
                "sample_secs": super::timeline::SAMPLE_EVERY.as_secs(),
                "window_secs": super::timeline::KEEP.as_secs(),
                "points": self.timeline.points(),
            },
        }))
    }

    /// p50 and p99 of end-to-end latency (every consumer group together) over about the last [`WINDOW`]:
    /// the bucket counts now minus those of the oldest remembered sample within the window.
    fn latency(&self, buckets: &[Sample]) -> (Option<f64>, Option<f64>, f64) {
        let mut now: BTreeMap<String, f64> = BTreeMap::new();
        for (labels, value) in buckets {
            *now.entry(label(labels, "le")).or_default() += value;
        }
        let mut history = self
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while history.len() > 1 && history.get(1).is_some_and(|(at, _)| at.elapsed() >= WINDOW) {
            history.pop_front();
        }
        let base = history.front().map(|(_, b)| b.clone()).unwrap_or_default();
        history.push_back((Instant::now(), now.clone()));
        let cumulative = bucket_delta(&now, &base);
        let samples = cumulative.last().map_or(0.0, |(_, c)| *c);
        let quantile = |q: f64| quantile(&cumulative, q);
        (quantile(0.5), quantile(0.99), samples)
    }
}

/// The cumulative histogram buckets counted between `base` and `now` (both by their `le` label), as
/// `(upper bound, count)` sorted by bound. A consumer that left takes its counts with it: a bucket never
/// counts less than nothing.
pub(crate) fn bucket_delta(now: &BTreeMap<String, f64>, base: &BTreeMap<String, f64>) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = now
        .iter()
        .filter_map(|(le, count)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, (count - base.get(le).copied().unwrap_or(0.0)).max(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, interpolated within its bucket as
/// Prometheus's `histogram_quantile` does.
pub(crate) fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        lower = bound;
        below = count;
    }
    Some(lower)
}

fn label(labels: &BTreeMap<String, String>, name: &str) -> String {
    labels.get(name).cloned().unwrap_or_default()
}

/// Parses the Prometheus text format into samples by metric name. Only what the recorder renders is
/// handled (no timestamps); comment lines are skipped.
pub(crate) fn parse(text: &str) -> BTreeMap<String, Vec<Sample>> {
    let mut metrics: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        metrics.entry(name.to_owned()).or_default().push((labels, value));
    }
    metrics
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format_with_labels_and_escapes() {
        let text = "# TYPE x counter\nx{a=\"1\",b=\"q\\\"uote\"} 3\ny 2.5\n";
        let parsed = parse(text);
        assert_eq!(parsed["x"][0].0["a"], "1");
        assert_eq!(parsed["x"][0].0["b"], "q\"uote");
        assert_eq!(parsed["x"][0].1, 3.0);
        assert_eq!(parsed["y"][0].1, 2.5);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let buckets = [(0.1, 50.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&buckets, 0.5), Some(0.1));
        let p75 = quantile(&buckets, 0.75).unwrap_or_default();
        assert!((p75 - 0.55).abs() < 1e-9, "{p75}");
        assert_eq!(quantile(&[(1.0, 0.0)], 0.5), None);
    }
}
