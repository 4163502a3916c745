//! Dead letters: list and show the records of a `<topic>.<group>.dlq` topic, and replay them to the group
//! that gave up on them (the consumers' dedup keeps effects single however often a record is replayed).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use orderflow_bus::Bus;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::naming::headers as h;

/// What can go wrong reading or replaying dead letters.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// A Kafka call failed.
    #[error("{context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The bus could not make a client.
    #[error(transparent)]
    Bus(#[from] orderflow_bus::BusError),
    /// The topic does not exist.
    #[error("topic {0} does not exist")]
    NoSuchTopic(String),
    /// No record at that position.
    #[error("no dead letter at {topic} partition {partition} offset {offset}")]
    NotFound {
        /// Dead-letter topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// The record lacks the header naming its original topic.
    #[error("the record at partition {partition} offset {offset} has no original-topic header")]
    NoOrigin {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// Reading did not reach the end of the topic in time.
    #[error("timed out reading {0}")]
    Timeout(String),
    /// The blocking reader's task failed (it panicked or was cancelled).
    #[error("the dead-letter reader's task failed")]
    Task(#[source] tokio::task::JoinError),
}

fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> DlqError {
    let context = context.into();
    move |source| DlqError::Kafka { context, source }
}

/// One dead-lettered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Dead-letter topic.
    pub topic: String,
    /// Partition there.
    pub partition: i32,
    /// Offset there.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// When it was dead-lettered (milliseconds since the epoch), when the broker gave a time.
    pub timestamp_ms: Option<i64>,
}

/// Which dead letters a command takes: every one, or those of an error kind, dead-lettered since a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only letters whose `error-kind` header is this (`permanent` or `transient`).
    pub error_kind: Option<String>,
    /// Only letters dead-lettered at or after this time (milliseconds since the epoch).
    pub since_ms: Option<i64>,
}

impl Filter {
    /// Whether `letter` is one of those taken.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.error_kind
            .as_deref()
            .is_none_or(|kind| letter.header(h::ERROR_KIND) == kind)
            && self
                .since_ms
                .is_none_or(|since| letter.timestamp_ms.is_some_and(|at| at >= since))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters read.
    pub read: usize,
    /// Of those, the ones the filter took.
    pub matched: usize,
    /// Of those, the ones republished (none on a dry run).
    pub replayed: usize,
}

impl DeadLetter {
    /// A header as text (empty when missing).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    /// One line for listings: position, origin, group, error kind, attempts and message.
    pub fn summary(&self) -> String {
        format!(
            "{}:{} from {}/{}/{} group={} kind={} attempts={} error={:?}",
            self.partition,
            self.offset,
            self.header(h::ORIGINAL_TOPIC),
            self.header(h::ORIGINAL_PARTITION),
            self.header(h::ORIGINAL_OFFSET),
            self.header(h::CONSUMER_GROUP),
            self.header(h::ERROR_KIND),
            self.header(h::ATTEMPTS),
            self.header(h::ERROR_MESSAGE),
        )
    }
}

/// The dead-letter topics in the cluster under `bus`'s prefix.
pub async fn topics(bus: &Bus) -> Result<Vec<String>, DlqError> {
    let config = bus.client_config("orderflow-dlq");
    let prefix = bus.topic("");
    blocking(move || {
        let client: BaseConsumer = config.create().map_err(kafka("creating a client"))?;
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(kafka("fetching metadata"))?;
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|n| n.starts_with(&prefix) && n.ends_with(".dlq"))
            .collect();
        names.sort();
        Ok(names)
    })
    .await
}

/// How many dead letters each dead-letter topic under `bus`'s prefix holds, for the topics that hold any.
/// Empty topics are told by their watermarks alone; the others are read, since transaction markers take
/// offsets too.
pub async fn counts(bus: &Bus) -> Result<Vec<(String, usize)>, DlqError> {
    let config = bus.client_config("orderflow-dlq");
    let prefix = bus.topic("");
    let holding = blocking(move || {
        let client: BaseConsumer = config.create().map_err(kafka("creating a client"))?;
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(kafka("fetching metadata"))?;
        let mut holding = Vec::new();
        for topic in metadata.topics() {
            let name = topic.name();
            if !(name.starts_with(&prefix) && name.ends_with(".dlq")) {
                continue;
            }
            for partition in topic.partitions() {
                let (low, high) =
                    crate::watermarks::fetch(&client, name, partition.id(), Duration::from_secs(15))
                        .map_err(kafka("fetching watermarks"))?;
                if high > low {
                    holding.push(name.to_owned());
                    break;
                }
            }
        }
        holding.sort();
        Ok(holding)
    })
    .await?;
    let mut counts = Vec::new();
    for topic in holding {
        let letters = list(bus, &topic).await?.len();
        if letters > 0 {
            counts.push((topic, letters));
        }
    }
    Ok(counts)
}

/// Every record of topic `topic` (full name; a dead-letter topic, or any other), in partition and offset
/// order.
pub async fn list(bus: &Bus, topic: &str) -> Result<Vec<DeadLetter>, DlqError> {
    let config = bus.client_config("orderflow-dlq");
    let topic = topic.to_owned();
    blocking(move || read_all(config, &topic, None)).await
}

/// Sends every record of topic `topic` (full name), from its beginning to the end each partition has when
/// the reader gets there, to `chunks` in chunks of up to `chunk` records (in offset order per partition),
/// without holding the whole topic in memory; returns how many were sent. Stops early when the receiver is
/// dropped.
pub async fn stream(
    bus: &Bus,
    topic: &str,
    chunk: usize,
    chunks: tokio::sync::mpsc::Sender<Vec<DeadLetter>>,
) -> Result<usize, DlqError> {
    let config = bus.client_config("orderflow-topic-reader");
    let topic = topic.to_owned();
    let chunk = chunk.max(1);
    blocking(move || {
        let (mut sent, mut open) = (0, true);
        let mut pending = Vec::with_capacity(chunk);
        read_each(config, &topic, None, |record| {
            pending.push(record);
            if pending.len() >= chunk {
                sent += pending.len();
                open = chunks.blocking_send(std::mem::take(&mut pending)).is_ok();
            }
            open
        })?;
        if open && !pending.is_empty() {
            sent += pending.len();
            // A receiver gone by now wanted no more.
            let _ = chunks.blocking_send(pending);
        }
        Ok(sent)
    })
    .await
}

/// The record at `partition`/`offset` of dead-letter topic `topic`.
pub async fn show(bus: &Bus, topic: &str, partition: i32, offset: i64) -> Result<DeadLetter, DlqError> {
    let config = bus.client_config("orderflow-dlq");
    let name = topic.to_owned();
    let found = blocking(move || read_all(config, &name, Some((partition, offset)))).await?;
    found
        .into_iter()
        .find(|d| d.partition == partition && d.offset == offset)
        .ok_or(DlqError::NotFound {
            topic: topic.to_owned(),
            partition,
            offset,
        })
}

/// Republishes dead letters of `topic` (all, or the one at `only`) with the same key, value and event
/// identity, and returns how many were sent.
///
/// They go to the first retry topic of the group that gave up on them (`<topic>.<group>.retry.1`), so only
/// that group handles them again, with fresh attempts; when that group has no retry topic, or the
/// dead-letter topic has the older shared name `<topic>.dlq`, they go to their original topic, where every
/// group's dedup keeps effects single.
pub async fn replay(bus: &Bus, topic: &str, only: Option<(i32, i64)>) -> Result<usize, DlqError> {
    match only {
        Some((partition, offset)) => {
            let letter = show(bus, topic, partition, offset).await?;
            Republisher::new(bus, topic)?.send(&letter).await?;
            Ok(1)
        }
        None => {
            let report = replay_matching(bus, topic, &Filter::default(), false, |_| {}).await?;
            Ok(report.replayed)
        }
    }
}

/// Replays (as [`replay`] does) the dead letters of `topic` that `filter` takes, reading the topic a chunk
/// at a time rather than whole; with `dry_run` only counts them. `progress` sees the running report after
/// each chunk.
pub async fn replay_matching(
    bus: &Bus,
    topic: &str,
    filter: &Filter,
    dry_run: bool,
    mut progress: impl FnMut(&ReplayReport),
) -> Result<ReplayReport, DlqError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let reader = {
        let (bus, topic) = (bus.clone(), topic.to_owned());
        tokio::spawn(async move { stream(&bus, &topic, 256, tx).await })
    };
    let mut republisher = if dry_run {
        None
    } else {
        Some(Republisher::new(bus, topic)?)
    };
    let mut report = ReplayReport::default();
    while let Some(chunk) = rx.recv().await {
        report.read += chunk.len();
        for letter in chunk.iter().filter(|l| filter.matches(l)) {
            report.matched += 1;
            if let Some(republisher) = republisher.as_mut() {
                republisher.send(letter).await?;
                report.replayed += 1;
            }
        }
        progress(&report);
    }
    reader.await.map_err(DlqError::Task)??;
    Ok(report)
}

/// Sends dead letters of one dead-letter topic back for handling; remembers which retry topics exist.
struct Republisher<'a> {
    bus: &'a Bus,
    topic: String,
    producer: orderflow_bus::EventProducer,
    retry_exists: std::collections::HashMap<String, bool>,
}

impl<'a> Republisher<'a> {
    fn new(bus: &'a Bus, topic: &str) -> Result<Self, DlqError> {
        Ok(Self {
            bus,
            topic: topic.to_owned(),
            producer: bus.producer("orderflow-dlq-replay")?,
            retry_exists: std::collections::HashMap::new(),
        })
    }

    /// Republishes `letter` to its group's first retry topic, or to its original topic.
    async fn send(&mut self, letter: &DeadLetter) -> Result<(), DlqError> {
        let original = letter.header(h::ORIGINAL_TOPIC);
        if original.is_empty() {
            return Err(DlqError::NoOrigin {
                partition: letter.partition,
                offset: letter.offset,
            });
        }
        let retry = match crate::naming::replay_topic(&self.topic, &original) {
            Some(retry) => {
                let found = match self.retry_exists.get(&retry) {
                    Some(&found) => found,
                    None => {
                        let found = exists(self.bus, &retry).await?;
                        self.retry_exists.insert(retry.clone(), found);
                        found
                    }
                };
                found.then_some(retry)
            }
            None => None,
        };
        // Into the retry topic the record keeps where it came from (the source its handler needs); to the
        // original topic it goes as it was first published.
        let keep: &[&str] = match retry {
            Some(_) => &[
                h::ORIGINAL_TOPIC,
                h::ORIGINAL_PARTITION,
                h::ORIGINAL_OFFSET,
                h::ORIGINAL_TIMESTAMP,
            ],
            None => &[],
        };
        let mut headers = OwnedHeaders::new();
        let mut has_event_id = false;
        for (key, value) in &letter.headers {
            if h::ROUTING.contains(&key.as_str()) && !keep.contains(&key.as_str()) {
                continue;
            }
            has_event_id |= key == h::EVENT_ID;
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if !has_event_id {
            // Keep the identity consumers deduplicate on: the record's first position.
            let id = format!(
                "{original}/{}/{}",
                letter.header(h::ORIGINAL_PARTITION),
                letter.header(h::ORIGINAL_OFFSET)
            );
            headers = headers.insert(Header {
                key: h::EVENT_ID,
                value: Some(id.as_bytes()),
            });
        }
        let target = retry.as_deref().unwrap_or(&original);
        let mut record = FutureRecord::<[u8], [u8]>::to(target)
            .payload(&letter.payload)
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| kafka(format!("republishing to {target}"))(e))?;
        Ok(())
    }
}

/// Whether `topic` exists in the cluster.
async fn exists(bus: &Bus, topic: &str) -> Result<bool, DlqError> {
    let config = bus.client_config("orderflow-dlq");
    let topic = topic.to_owned();
    blocking(move || {
        let client: BaseConsumer = config.create().map_err(kafka("creating a client"))?;
        let metadata = client
            .fetch_metadata(Some(&topic), Duration::from_secs(15))
            .map_err(kafka("fetching metadata"))?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
    })
    .await
}

/// The reader's client context: reaching the end of a partition is how reading stops, not an error.
struct Reader;

impl rdkafka::ClientContext for Reader {
    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                reason,
                "dead-letter reader"
            );
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Reader {}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DlqError> + Send + 'static,
) -> Result<T, DlqError> {
    tokio::task::spawn_blocking(f).await.map_err(DlqError::Task)?
}

/// Reads `topic` from the start of every partition (or from `at` in its partition) to the current end.
fn read_all(
    config: rdkafka::ClientConfig,
    topic: &str,
    at: Option<(i32, i64)>,
) -> Result<Vec<DeadLetter>, DlqError> {
    let mut letters = Vec::new();
    read_each(config, topic, at, |letter| {
        letters.push(letter);
        true
    })?;
    letters.sort_by_key(|d| (d.partition, d.offset));
    Ok(letters)
}

/// Hands every record of `topic` (or only the one at `at`) to `sink` as it arrives, until every partition
/// reached the end it had when reading began (records written since, such as letters a replay sent back
/// to this topic, are left for the next read), or `sink` answers `false`. Fails when 30 s pass without a
/// record or the end of a partition.
fn read_each(
    mut config: rdkafka::ClientConfig,
    topic: &str,
    at: Option<(i32, i64)>,
    mut sink: impl FnMut(DeadLetter) -> bool,
) -> Result<(), DlqError> {
    config
        .set("group.id", "orderflow-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer<Reader> = config
        .create_with_context(Reader)
        .map_err(kafka("creating a reader"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(15))
        .map_err(kafka("fetching metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .filter(|p| at.is_none_or(|(only, _)| only == *p))
        .collect();
    if partitions.is_empty() {
        return Err(DlqError::NoSuchTopic(topic.to_owned()));
    }
    if let Some((partition, offset)) = at {
        let (low, high) = crate::watermarks::fetch(&consumer, topic, partition, Duration::from_secs(15))
            .map_err(kafka("fetching watermarks"))?;
        if offset < low || offset >= high {
            return Err(DlqError::NotFound {
                topic: topic.to_owned(),
                partition,
                offset,
            });
        }
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let start = match at {
            Some((_, offset)) => Offset::Offset(offset),
            None => Offset::Beginning,
        };
        tpl.add_partition_offset(topic, p, start)
            .map_err(kafka("assigning"))?;
    }
    consumer.assign(&tpl).map_err(kafka("assigning"))?;
    let mut at_end: HashSet<i32> = HashSet::new();
    // Where each partition ends now: reading stops there.
    let mut ends = std::collections::HashMap::new();
    for &p in &partitions {
        let (low, high) = crate::watermarks::fetch(&consumer, topic, p, Duration::from_secs(15))
            .map_err(kafka("fetching watermarks"))?;
        if high <= low && at.is_none() {
            at_end.insert(p);
        }
        ends.insert(p, high);
    }
    let quiet = Duration::from_secs(30);
    let mut deadline = Instant::now() + quiet;
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Err(DlqError::Timeout(topic.to_owned()));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                deadline = Instant::now() + quiet;
            }
            Some(Err(e)) => return Err(kafka(format!("reading {topic}"))(e)),
            Some(Ok(message)) => {
                let end = ends.get(&message.partition()).copied().unwrap_or(i64::MAX);
                if at.is_none() && message.offset() >= end {
                    // Written after reading began.
                    at_end.insert(message.partition());
                    continue;
                }
                if at.is_none() && message.offset() + 1 >= end {
                    at_end.insert(message.partition());
                }
                let headers = message
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|hd| (hd.key.to_owned(), hd.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                deadline = Instant::now() + quiet;
                let more = sink(DeadLetter {
                    topic: topic.to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                    timestamp_ms: message.timestamp().to_millis(),
                });
                if at.is_some() || !more {
                    break; // the one asked for, or enough
                }
            }
        }
    }
    Ok(())
}
