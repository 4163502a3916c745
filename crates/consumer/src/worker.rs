//! Handles one batch of one partition: calls the handler, isolates a failing record, retries it in place with
//! backoff, then routes it to a retry or dead-letter topic, and publishes outputs before reporting progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use orderflow_bus::EventProducer;
use orderflow_telemetry::TRACEPARENT;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::error::ConsumerError;
use crate::handler::{ErrorKind, Handler, HandlerError};
use crate::record::{Output, Record};
use crate::routing::{self, Route};
use crate::settings::ConsumerSettings;
use crate::telemetry::{ConsumerEvent, RetryStage, Telemetry};

/// What every batch of one runtime shares.
pub(crate) struct Worker<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) producer: Arc<EventProducer>,
    pub(crate) settings: Arc<ConsumerSettings>,
    pub(crate) transactional: bool,
    pub(crate) telemetry: Arc<Telemetry>,
}

impl<H: Handler> Worker<H> {
    /// Processes `records` in order, storing the next offset to commit in `progress` after each step whose
    /// effects (and outputs) are done. Stops early, without error, when `cancel` fires during a wait.
    pub(crate) async fn process(
        &self,
        records: Vec<Record>,
        progress: Arc<AtomicI64>,
        cancel: CancellationToken,
    ) -> Result<(), ConsumerError> {
        let started = Instant::now();
        let group = &self.settings.group;
        let mut rest: &[Record] = &records;
        // After a batch fails, its records are handled one at a time to find the failing one.
        let mut isolate = 0usize;
        while let Some(first) = rest.first() {
            let take = if isolate > 0 { 1 } else { rest.len() };
            let chunk = &rest[..take];
            let mut attempts = first.attempts();
            let mut tries_here = 0u32;
            let spans = record_spans(group, chunk);
            let split = loop {
                let handled = match spans.as_slice() {
                    [(_, span)] => self.handler.handle(chunk).instrument(span.clone()).await,
                    _ => self.handler.handle(chunk).await,
                };
                match handled {
                    Ok(mut outputs) => {
                        continue_traces(&mut outputs, &spans);
                        if !self.publish(&outputs, &cancel).await? {
                            return Ok(());
                        }
                        // What other batches made newer while these outputs were on their way, until a
                        // read after the last publish finds nothing newer.
                        let mut settled = Ok(());
                        for _ in 0..crate::handler::SETTLE_ROUNDS {
                            match self.handler.settled(chunk, &outputs).await {
                                Ok(newer) if newer.is_empty() => break,
                                Ok(mut newer) => {
                                    continue_traces(&mut newer, &spans);
                                    if !self.publish(&newer, &cancel).await? {
                                        return Ok(());
                                    }
                                    outputs.extend(newer);
                                }
                                Err(error) => {
                                    settled = Err(error);
                                    break;
                                }
                            }
                        }
                        match settled {
                            Ok(()) => {}
                            Err(error) => {
                                tracing::warn!(
                                    error = &error as &dyn std::error::Error,
                                    offset = first.offset,
                                    "re-reading a published batch failed; handling it again"
                                );
                                let wait = self.settings.retry.backoff(1);
                                tokio::select! {
                                    () = cancel.cancelled() => return Ok(()),
                                    () = tokio::time::sleep(wait) => continue,
                                }
                            }
                        }
                        self.telemetry.emit(ConsumerEvent::Processed {
                            topic: first.source_topic(),
                            records: chunk,
                        });
                        break false;
                    }
                    Err(error) if chunk.len() > 1 => {
                        tracing::debug!(
                            error = &error as &dyn std::error::Error,
                            records = chunk.len(),
                            "batch failed; isolating the failing record"
                        );
                        break true;
                    }
                    Err(error) => {
                        attempts += 1;
                        tries_here += 1;
                        self.telemetry.emit(ConsumerEvent::Failed {
                            topic: first.source_topic(),
                        });
                        if error.kind == ErrorKind::Transient
                            && tries_here < self.settings.retry.in_place_attempts
                        {
                            let wait = self.settings.retry.backoff(tries_here);
                            tracing::debug!(
                                error = &error as &dyn std::error::Error,
                                ?wait,
                                offset = first.offset,
                                "retrying in place"
                            );
                            self.telemetry.emit(ConsumerEvent::Retried {
                                topic: first.source_topic(),
                                stage: RetryStage::InPlace,
                            });
                            tokio::select! {
                                () = cancel.cancelled() => return Ok(()),
                                () = tokio::time::sleep(wait) => continue,
                            }
                        }
                        if !self.route(first, &error, attempts, &cancel).await? {
                            return Ok(());
                        }
                        break false;
                    }
                }
            };
            if split {
                isolate = chunk.len(); // go round again one record at a time
                continue;
            }
            if let Some(last) = chunk.last() {
                progress.store(last.offset + 1, Ordering::Release);
            }
            self.telemetry.emit(ConsumerEvent::Done { records: take });
            rest = &rest[take..];
            isolate = isolate.saturating_sub(take);
        }
        self.telemetry.emit(ConsumerEvent::BatchHandled {
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    /// Sends a record that keeps failing to its next retry topic or to the dead-letter topic.
    async fn route(
        &self,
        record: &Record,
        error: &HandlerError,
        attempts: u32,
        cancel: &CancellationToken,
    ) -> Result<bool, ConsumerError> {
        let group = &self.settings.group;
        let route = routing::route(record, error, &self.settings.retry, &self.settings.routing_name);
        let output = routing::routed_output(record, &route, error, attempts, group);
        match &route {
            Route::Retry { topic, .. } => {
                tracing::info!(error = error as &dyn std::error::Error, from = %record.topic, to = topic, offset = record.offset, "moving a record to a retry topic");
                self.telemetry.emit(ConsumerEvent::Retried {
                    topic: record.source_topic(),
                    stage: RetryStage::Topic,
                });
            }
            Route::DeadLetter { topic } => {
                tracing::warn!(error = error as &dyn std::error::Error, from = %record.topic, to = topic, offset = record.offset, "dead-lettering a record");
                self.telemetry.emit(ConsumerEvent::DeadLettered {
                    topic: record.source_topic(),
                });
            }
        }
        self.publish(&[output], cancel).await
    }

    /// Publishes `outputs` and waits for the broker's acknowledgements. Returns false when cancelled first.
    ///
    /// In a transaction a failed delivery dooms the transaction, so it ends the run (to restart from the last
    /// commit). Otherwise delivery is retried until it succeeds: an output is never dropped.
    async fn publish(&self, outputs: &[Output], cancel: &CancellationToken) -> Result<bool, ConsumerError> {
        if outputs.is_empty() {
            return Ok(true);
        }
        let mut attempt = 0u32;
        loop {
            let mut deliveries = Vec::with_capacity(outputs.len());
            for output in outputs {
                deliveries.push(self.enqueue(output).await?);
            }
            let failure = join_all(deliveries)
                .await
                .into_iter()
                .find_map(|result| match result {
                    Ok(Ok(_)) => None,
                    Ok(Err((e, _))) => Some(e),
                    Err(_) => Some(KafkaError::Canceled),
                });
            let Some(error) = failure else {
                return Ok(true);
            };
            if self.transactional {
                return Err(transaction_error(&self.producer, error));
            }
            attempt += 1;
            let wait = self.settings.retry.backoff(attempt.min(8));
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                ?wait,
                "publishing failed; retrying"
            );
            tokio::select! {
                () = cancel.cancelled() => return Ok(false),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn enqueue(&self, output: &Output) -> Result<rdkafka::producer::DeliveryFuture, ConsumerError> {
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(output.headers.len());
            for (key, value) in &output.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&output.topic)
                .payload(&output.payload)
                .headers(headers);
            if let Some(key) = &output.key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) if self.transactional => {
                    return Err(transaction_error(&self.producer, e));
                }
                Err((e, _)) => return Err(ConsumerError::kafka("queueing an output")(e)),
            }
        }
    }
}

/// Classifies a failure inside a transaction: a fenced (or otherwise fatally failed) producer is final,
/// anything else aborts the transaction and restarts from the last commit.
///
/// Deliveries of a fenced producer fail with purge or local codes, so the producer's own fatal state is
/// checked too: restarting would only fence the other instance in turn.
pub(crate) fn transaction_error(producer: &EventProducer, error: KafkaError) -> ConsumerError {
    use rdkafka::producer::Producer;
    let fenced = match &error {
        KafkaError::Transaction(e) => e.is_fatal(),
        other => matches!(
            other.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::Fatal
            )
        ),
    };
    if let Some((code, reason)) = producer.client().fatal_error() {
        return ConsumerError::Fenced(
            orderflow_bus::ClientReport {
                reason,
                error: KafkaError::Global(code),
            }
            .into(),
        );
    }
    if fenced {
        ConsumerError::Fenced(error.into())
    } else {
        ConsumerError::TransactionAborted(error.into())
    }
}

/// One span per record of `chunk` (a child of the record's `traceparent`), with the `traceparent` it came
/// with, so outputs derived from it can continue from its span. None when nothing exports them: the hot
/// path then allocates nothing for traces.
fn record_spans(group: &str, chunk: &[Record]) -> Vec<(Option<String>, tracing::Span)> {
    if !orderflow_telemetry::spans_enabled() {
        return Vec::new();
    }
    chunk
        .iter()
        .map(|record| {
            let incoming = record.header_str(TRACEPARENT);
            let span = orderflow_telemetry::consumer_span(
                group,
                record.source_topic(),
                record.partition,
                record.offset,
                incoming,
            );
            (incoming.map(str::to_owned), span)
        })
        .collect()
}

/// Outputs carry the `traceparent` of the record they came from (handlers copy it); point it at that
/// record's span instead, so the next consumer's span is a child of this one.
fn continue_traces(outputs: &mut [Output], spans: &[(Option<String>, tracing::Span)]) {
    if spans.is_empty() {
        return;
    }
    for output in outputs {
        let Some((_, value)) = output.headers.iter_mut().find(|(name, _)| name == TRACEPARENT) else {
            continue;
        };
        let from = std::str::from_utf8(value).ok();
        let span = spans.iter().find(|(incoming, _)| incoming.as_deref() == from);
        if let Some(own) = span.and_then(|(_, span)| orderflow_telemetry::traceparent(span)) {
            *value = own.into_bytes();
        }
    }
}
