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

/// Turns one statistics report of the client `client` into metrics.
pub fn record_statistics(client: &str, statistics: &Statistics) {
    let label = client.to_owned();
    metrics::gauge!("orderflow_kafka_messages_queued", "client" => label.clone())
        .set(statistics.msg_cnt as f64);
    metrics::gauge!("orderflow_kafka_reply_queue", "client" => label.clone()).set(statistics.replyq as f64);
    metrics::counter!("orderflow_kafka_tx_messages_total", "client" => label.clone())
        .absolute(statistics.txmsgs.max(0) as u64);
    metrics::counter!("orderflow_kafka_rx_messages_total", "client" => label.clone())
        .absolute(statistics.rxmsgs.max(0) as u64);
    for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
        let name = broker.nodename.clone();
        if let Some(rtt) = &broker.rtt {
            metrics::gauge!("orderflow_kafka_broker_rtt_seconds", "client" => label.clone(), "broker" => name.clone())
                .set(rtt.avg as f64 / 1_000_000.0);
        }
        metrics::counter!("orderflow_kafka_broker_errors_total", "client" => label.clone(), "broker" => name)
            .absolute(broker.txerrs + broker.req_timeouts);
    }
}

/// A client context that records the client's statistics as metrics under its label.
#[derive(Debug, Clone)]
pub struct StatsContext {
    client: String,
}

impl StatsContext {
    /// A context for the client labelled `client`.
    pub fn new(client: &str) -> Self {
        Self {
            client: client.to_owned(),
        }
    }
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        record_statistics(&self.client, &statistics);
    }
}
