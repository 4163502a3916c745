//! Records as handlers see them, and records handlers ask the runtime to produce.

use std::sync::Arc;

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

use crate::naming::{self, headers as h};

/// One consumed record, owned, so batches can move between tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic it was read from (a retry topic for retried records; see [`Record::source_topic`]).
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp in milliseconds since the epoch, when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub(crate) fn from_message(message: &BorrowedMessage<'_>, topic: Arc<str>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        (
                            header.key.to_owned(),
                            header.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_slice())
    }

    /// A header as UTF-8 text, if present and valid.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The topic the record was first published to: itself, or the original of a retried record.
    pub fn source_topic(&self) -> &str {
        self.header_str(h::ORIGINAL_TOPIC)
            .unwrap_or_else(|| naming::source_of(&self.topic))
    }

    /// Where the record was first published: topic, partition and offset (the original for a retried record).
    pub fn source_position(&self) -> (String, i32, i64) {
        let partition = self
            .header_str(h::ORIGINAL_PARTITION)
            .and_then(|v| v.parse().ok());
        let offset = self.header_str(h::ORIGINAL_OFFSET).and_then(|v| v.parse().ok());
        match (partition, offset) {
            (Some(partition), Some(offset)) => (self.source_topic().to_owned(), partition, offset),
            _ => (self.topic.to_string(), self.partition, self.offset),
        }
    }

    /// The identity used for deduplication: the `event-id` header when the producer set one, otherwise the
    /// record's original position (stable across retries and replays of the same record).
    pub fn event_id(&self) -> String {
        match self.header_str(h::EVENT_ID) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => {
                let (topic, partition, offset) = self.source_position();
                format!("{topic}/{partition}/{offset}")
            }
        }
    }

    /// How many times the record has been handled and failed before this delivery (0 for a fresh record).
    pub fn attempts(&self) -> u32 {
        self.header_str(h::ATTEMPTS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A record a handler wants published (in the same transaction as its input in transactional delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Full topic name.
    pub topic: String,
    /// Key; records of one entity should share it to keep their order.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Output {
    /// A keyed record for `topic` with no headers.
    pub fn new(topic: impl Into<String>, key: impl Into<Vec<u8>>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            key: Some(key.into()),
            payload: payload.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}
