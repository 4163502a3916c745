//! librdkafka's statistics (emitted every [`STATISTICS_INTERVAL_MS`]) as metrics, through the `metrics`
//! facade. Every Orderflow client is labelled by what it is for (`orderflow-relay`, a consumer group).
//!
//! | name | kind | labels | from |
//! | --- | --- | --- | --- |
//! | `orderflow_kafka_messages_queued` | gauge | client | `msg_cnt`: produced, not yet acknowledged |
//! | `orderflow_kafka_reply_queue` | gauge | client | `replyq`: events waiting for the application |
//! | `orderflow_kafka_tx_messages_total` | counter | client | `txmsgs`: messages sent to brokers |
//! | `orderflow_kafka_rx_messages_total` | counter | client | `rxmsgs`: messages fetched from brokers |
//! | `orderflow_kafka_broker_rtt_seconds` | gauge | client, broker | mean request round trip, last window |
//! | `orderflow_kafka_broker_errors_total` | counter | client, broker | `txerrs` + `req_timeouts` |

use rdkafka::ClientContext;
use rdkafka::Statistics;

/// How often librdkafka hands statistics to the client context (milliseconds).
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// Turns a client's statistics reports into metrics. librdkafka's counts are cumulative per client, so each
/// report adds what grew since the previous one: a rebuilt client (a new recorder) starts from zero again
/// without freezing the counters.
#[derive(Debug, Default)]
pub struct StatisticsRecorder {
    last: std::sync::Mutex<std::collections::HashMap<(&'static str, String), u64>>,
}

impl StatisticsRecorder {
    /// Records one report of the client labelled `client`.
    pub fn record(&self, client: &str, statistics: &Statistics) {
        let label = client.to_owned();
        metrics::gauge!("orderflow_kafka_messages_queued", "client" => label.clone())
            .set(statistics.msg_cnt as f64);
        metrics::gauge!("orderflow_kafka_reply_queue", "client" => label.clone())
            .set(statistics.replyq as f64);
        self.grow(
            metrics::counter!("orderflow_kafka_tx_messages_total", "client" => label.clone()),
            ("tx", String::new()),
            statistics.txmsgs.max(0) as u64,
        );
        self.grow(
            metrics::counter!("orderflow_kafka_rx_messages_total", "client" => label.clone()),
            ("rx", String::new()),
            statistics.rxmsgs.max(0) as u64,
        );
        for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            let name = broker.nodename.clone();
            if let Some(rtt) = &broker.rtt {
                metrics::gauge!("orderflow_kafka_broker_rtt_seconds", "client" => label.clone(), "broker" => name.clone())
                    .set(rtt.avg as f64 / 1_000_000.0);
            }
            self.grow(
                metrics::counter!("orderflow_kafka_broker_errors_total", "client" => label.clone(), "broker" => name.clone()),
                ("errors", name),
                broker.txerrs + broker.req_timeouts,
            );
        }
    }

    fn grow(&self, counter: metrics::Counter, key: (&'static str, String), now: u64) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = last.insert(key, now).unwrap_or(0);
        counter.increment(now.saturating_sub(before));
    }
}

/// A client context that records the client's statistics as metrics under its label.
#[derive(Debug)]
pub struct StatsContext {
    client: String,
    recorder: StatisticsRecorder,
}

impl StatsContext {
    /// A context for the client labelled `client`.
    pub fn new(client: &str) -> Self {
        Self {
            client: client.to_owned(),
            recorder: StatisticsRecorder::default(),
        }
    }
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        self.recorder.record(&self.client, &statistics);
    }
}
