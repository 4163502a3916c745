//! The projector role: keeps the read model current from the order lifecycle topics, on the consumer runtime.
//!
//! Every lifecycle event is a status change of its order. The projector applies it to its read model
//! ([`model`]: header, lines, current status, status history; versions only move forward), refreshes the
//! order cache with the result (version-checked, so an older version never replaces a newer one), and
//! publishes the result as `order.read-model` and as `order.state` (the compacted latest state per order).
//! Offsets are committed after; a re-delivered event changes nothing and publishes the order's current state
//! again. Once a batch's states are acknowledged it reads the model again and publishes what other batches
//! made newer meanwhile, until a read finds nothing newer ([`Handler::settled`]), so the last `order.state`
//! record of an order is its current state.
//! An undecodable record goes to the dead-letter topic; a registry or Redis outage is retried.
//!
//! When Redis loses the model, two things bring it back. A change for an order whose header is unknown
//! (its `order.created` was applied before the loss, or not yet) takes the header from the database, so the
//! order's state is published at once. And the projector notices the loss (the model's marker is gone: at
//! once on start, then every [`WATCH_INTERVAL`]) and applies every record of its input topics again, from
//! their beginning (the topics are the model's changelog, as a Kafka Streams store is rebuilt from its
//! changelog topic), which restores each order's status and whole history; changes applied meanwhile are
//! not disturbed, since applying changes in any order ends in the same state.

mod model;

pub(crate) use model::redis_key as read_model_key;

use std::collections::HashMap;
use std::time::Duration;

use orderflow_consumer::{Delivery, Handler, HandlerError, Output, Record};
use orderflow_events::{
    Envelope, Event, Lifecycle, LifecycleEvent, LifecycleTopic, LifecycleTopics, OrderReadModel, OrderState,
    StatusChange, headers, topics,
};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

use crate::runner::ConsumerRole;
use crate::{Backends, ProjectorSettings, RoleError, decode_error, event_output};
use model::{Change, ModelError, ReadModel, View};

/// The topics the read model follows: every event that moves an order's status.
pub const FOLLOWED: [LifecycleTopic; 6] = LifecycleTopic::STATUS_CHANGES;

/// How often the projector checks that its read model is intact.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Records applied per step of a rebuild.
const REBUILD_CHUNK: usize = 1_000;
/// Rounds of publishing a rebuilt chunk again while live batches overtake it (each round needs an order
/// to have changed during the previous one, so a few suffice).
const REPUBLISH_ROUNDS: usize = 5;

/// Applies status changes to the read model and reports the results.
struct Projection {
    backends: Backends,
    model: ReadModel,
    /// [`FOLLOWED`] under their full names (with the deployment prefix).
    inputs: LifecycleTopics,
    state_topic: String,
    read_model_topic: String,
}

impl Projection {
    fn new(settings: &ProjectorSettings, backends: &Backends, role: &ConsumerRole<'_>) -> Self {
        let model = match &backends.redis {
            Some(connection) => ReadModel::redis(
                connection.clone(),
                &backends.key_prefix,
                Duration::from_secs(settings.ttl_secs),
            ),
            None => ReadModel::memory(),
        };
        Self {
            state_topic: backends.bus.topic(topics::ORDER_STATE),
            read_model_topic: backends.bus.topic(topics::ORDER_READ_MODEL),
            inputs: role.topics(backends),
            backends: backends.clone(),
            model,
        }
    }

    async fn change(&self, record: &Record) -> Result<Change, HandlerError> {
        self.change_of(
            record.source_topic(),
            record.payload.as_deref().unwrap_or_default(),
        )
        .await
    }

    /// The change a record of input topic `source` stands for.
    async fn change_of(&self, source: &str, payload: &[u8]) -> Result<Change, HandlerError> {
        let not_followed =
            || HandlerError::permanent(format!("the projector does not follow topic {source}"));
        let topic = self.inputs.get(source).ok_or_else(not_followed)?;
        let event = Lifecycle::decode(&self.backends.codec, topic, payload)
            .await
            .map_err(decode_error)?;
        let status = event.status().ok_or_else(not_followed)?;
        let created = match &event.event {
            LifecycleEvent::OrderCreated(created) => Some(created.to_order().map_err(decode_error)?),
            _ => None,
        };
        Ok(Change {
            order_id: event.envelope.order_id.to_string(),
            status,
            version: event.envelope.version,
            at: event.envelope.occurred_at_micros(),
            created,
        })
    }

    /// `order.state` and `order.read-model` records describing `view`.
    fn outputs(&self, view: &View, traceparent: Option<&str>) -> Result<[Output; 2], HandlerError> {
        let order = &view.order;
        let at = order.updated_at;
        let envelope = Envelope::new(order.id, order.version, at);
        let state = OrderState {
            event_id: envelope.event_id_text(),
            event_type: OrderState::TYPE.into(),
            order_id: envelope.order_id_text(),
            order_version: envelope.version,
            occurred_at: envelope.occurred_at_micros(),
            customer_id: order.customer_id.to_string(),
            status: order.status.as_str().to_owned(),
            currency: order.currency.code().to_owned(),
            total_minor: order.total_minor.get(),
        };
        let envelope = Envelope::new(order.id, order.version, at);
        let read_model = OrderReadModel {
            event_id: envelope.event_id_text(),
            event_type: OrderReadModel::TYPE.into(),
            order_id: envelope.order_id_text(),
            order_version: envelope.version,
            occurred_at: envelope.occurred_at_micros(),
            customer_id: state.customer_id.clone(),
            status: state.status.clone(),
            currency: state.currency.clone(),
            items: orderflow_events::OrderCreated::from_order(order).items,
            total_minor: state.total_minor,
            created_at: order.created_at.timestamp_micros(),
            history: view
                .history
                .iter()
                .map(|(status, at)| StatusChange {
                    status: status.clone(),
                    at: *at,
                })
                .collect(),
        };
        let codec = &self.backends.codec;
        let mut state_output = event_output(
            &self.state_topic,
            codec
                .encode(&state, traceparent)
                .map_err(HandlerError::permanent)?,
        );
        // What the settle check compares, without decoding the record again.
        state_output
            .headers
            .push((VERSION_HEADER.to_owned(), order.version.to_string().into_bytes()));
        Ok([
            state_output,
            event_output(
                &self.read_model_topic,
                codec
                    .encode(&read_model, traceparent)
                    .map_err(HandlerError::permanent)?,
            ),
        ])
    }
}

/// `key` as an order id written as the platform writes it (the read model's key), or `None`.
fn canonical(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok().filter(|text| {
        text.parse::<orderflow_domain::OrderId>()
            .is_ok_and(|id| id.to_string() == *text)
    })
}

/// The header of each `order.state` record carrying the order's version.
const VERSION_HEADER: &str = "order-version";

/// An order as the database holds it, as two changes: its creation (what its `order.created` carried) and
/// its current status and version.
fn database_changes(mut order: orderflow_domain::Order) -> (Change, Change) {
    let id = order.id.to_string();
    let current = Change {
        order_id: id.clone(),
        status: order.status,
        version: order.version,
        at: order.updated_at.timestamp_micros(),
        created: None,
    };
    order.status = orderflow_domain::OrderStatus::Created;
    order.version = 1;
    order.updated_at = order.created_at;
    let created = Change {
        order_id: id,
        status: order.status,
        version: 1,
        at: order.created_at.timestamp_micros(),
        created: Some(order),
    };
    (created, current)
}

/// A failed rebuild of the read model.
fn rebuild_error(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> RoleError {
    RoleError::Rebuild {
        what: "read model",
        source: source.into(),
    }
}

impl Projection {
    /// Applies `changes` again after giving the orders without a view (their header unknown: their
    /// `order.created` not applied yet, or lost with Redis) their header from the database, as their
    /// `order.created` would have, and their current status and version from the database too. An order
    /// the model does not know may have been lost from it after newer changes than `changes` were applied
    /// (a Redis node that came back empty and served its slots for a moment before it learnt of its
    /// failover, say); folding only `changes` into a fresh entry would then answer, and publish, an older
    /// state than the order's. The database is never behind an event, so its state is safe to fold in.
    async fn with_headers(
        &self,
        changes: &[Change],
        views: Vec<Option<View>>,
    ) -> Result<Vec<Option<View>>, HandlerError> {
        let mut missing: Vec<&str> = changes
            .iter()
            .zip(&views)
            .filter(|(_, view)| view.is_none())
            .map(|(change, _)| change.order_id.as_str())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let mut created = Vec::with_capacity(missing.len());
        for id in missing {
            let Ok(order_id) = id.parse::<orderflow_domain::OrderId>() else {
                continue;
            };
            let found = self
                .backends
                .store
                .get_order(order_id)
                .await
                .map_err(crate::store_error)?;
            if let Some(order) = found {
                let (first, current) = database_changes(order);
                created.push(first);
                if current.version > 1 {
                    created.push(current);
                }
            }
        }
        if created.is_empty() {
            return Ok(views);
        }
        self.model.apply(&created).await?;
        Ok(self.model.apply(changes).await?)
    }

    /// Rebuilds the model from its input topics if it is not intact; returns the records applied, or `None`
    /// when it was intact or another process is rebuilding it.
    async fn rebuild_if_lost(&self) -> Result<Option<usize>, RoleError> {
        let failed = |e: ModelError| rebuild_error(e);
        if self.model.intact().await.map_err(failed)? {
            return Ok(None);
        }
        let Some(token) = self.model.begin_rebuild().await.map_err(failed)? else {
            return Ok(None);
        };
        let result = self.refold(&token, &|_| {}).await;
        let done = result.is_ok();
        let finished = self.model.end_rebuild(&token, done).await.map_err(failed)?;
        let applied = result?;
        Ok(finished.then_some(applied))
    }

    /// Applies every record of the input topics again, chunk by chunk, then publishes the state of every
    /// order it touched once more.
    ///
    /// While the model was lost, live batches applied their changes to what was left of it and may have
    /// published states older than the orders' own (an order cancelled before the loss read back as its
    /// earlier payment failure, say); nothing publishes an order again until it changes. Once every change
    /// is in again, each order's current state goes out, so `order.state` and `order.read-model` end
    /// agreeing with the model.
    async fn refold(&self, token: &str, progress: &(dyn Fn(usize) + Sync)) -> Result<usize, RoleError> {
        let failed = |e: ModelError| rebuild_error(e);
        let mut applied = 0;
        // The newest change of each order (without the order as created: re-applying it answers the state).
        let mut latest: HashMap<String, Change> = HashMap::new();
        for topic in self.inputs.names() {
            let (tx, mut chunks) = tokio::sync::mpsc::channel(2);
            let bus = self.backends.bus.clone();
            let name = topic.clone();
            let reader =
                tokio::spawn(
                    async move { orderflow_consumer::dlq::stream(&bus, &name, REBUILD_CHUNK, tx).await },
                );
            while let Some(chunk) = chunks.recv().await {
                let mut changes = Vec::with_capacity(chunk.len());
                for record in &chunk {
                    // What the live projection dead-letters, a rebuild skips.
                    if let Ok(change) = self.change_of(&topic, &record.payload).await {
                        let newest = latest
                            .get(&change.order_id)
                            .is_none_or(|known| change.version > known.version);
                        if newest {
                            latest.insert(
                                change.order_id.clone(),
                                Change {
                                    created: None,
                                    ..change.clone()
                                },
                            );
                        }
                        changes.push(change);
                    }
                }
                self.model.apply(&changes).await.map_err(failed)?;
                applied += changes.len();
                progress(applied);
                if !self.model.renew_rebuild(token).await.map_err(failed)? {
                    return Err(rebuild_error("another process took the rebuild over"));
                }
            }
            match reader.await {
                Ok(Ok(_)) => {}
                // A topic nothing was published to yet has nothing to rebuild from.
                Ok(Err(orderflow_consumer::dlq::DlqError::NoSuchTopic(_))) => {}
                Ok(Err(e)) => return Err(rebuild_error(e)),
                Err(e) => return Err(rebuild_error(e)),
            }
        }
        let republished = self.republish(latest.into_values().collect(), token).await?;
        tracing::info!(
            orders = republished,
            "published the rebuilt state of every order again"
        );
        Ok(applied)
    }

    /// Applies every order of the database again, page by page: its creation, then its current status and
    /// version (the database is never behind an event); then publishes every order's state once more.
    async fn refold_from_database(
        &self,
        token: &str,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<usize, RoleError> {
        let failed = |e: ModelError| rebuild_error(e);
        let store = &self.backends.store;
        let mut filter = orderflow_store::OrderFilter {
            customer_id: None,
            status: None,
            created_after: None,
            after: None,
            limit: REBUILD_PAGE,
        };
        let (mut applied, mut republished) = (0, 0);
        loop {
            let ids = store.list_orders(&filter).await.map_err(rebuild_error)?;
            let mut orders = store.get_orders(&ids).await.map_err(rebuild_error)?;
            orders.sort_by_key(|o| (o.created_at, o.id.as_uuid()));
            let mut changes = Vec::with_capacity(2 * orders.len());
            let next = orders.last().map(|last| (last.created_at, last.id));
            let mut latest = Vec::with_capacity(orders.len());
            for order in orders {
                let (first, current) = database_changes(order);
                changes.push(first);
                if current.version > 1 {
                    changes.push(current.clone());
                }
                latest.push(current);
            }
            self.model.apply(&changes).await.map_err(failed)?;
            applied += changes.len();
            progress(applied);
            // Each page's states go out once it is in (the model never goes back), so memory stays a page.
            republished += self.republish(latest, token).await?;
            match next {
                Some(after) if i64::try_from(ids.len()).unwrap_or(i64::MAX) >= REBUILD_PAGE => {
                    filter.after = Some(after);
                }
                _ => break,
            }
        }
        tracing::info!(
            orders = republished,
            "published the rebuilt state of every order again"
        );
        Ok(applied)
    }

    /// Applies `changes` again (a no-op that answers each order's current state) and publishes the states,
    /// waiting for the broker's acknowledgements; returns how many orders went out.
    ///
    /// Live batches (of this process, or of another member of the group that owns the order's partition)
    /// keep publishing while this runs, from another producer: one of them may publish a newer state that
    /// lands before this older one. So once a chunk is acknowledged, its changes are applied once more, and
    /// the orders now newer than what went out are published again, until none is: a live batch updates the
    /// model before it publishes, so a newer state acknowledged before this one is seen here.
    async fn republish(&self, changes: Vec<Change>, token: &str) -> Result<usize, RoleError> {
        let failed = |e: ModelError| rebuild_error(e);
        let producer = self
            .backends
            .bus
            .producer("orderflow-projector-rebuild")
            .map_err(rebuild_error)?;
        let mut sent = 0;
        for chunk in changes.chunks(REBUILD_CHUNK) {
            let mut views = self.current_views(chunk).await?;
            sent += views.len();
            for _ in 0..REPUBLISH_ROUNDS {
                self.publish_views(&producer, &views).await?;
                let published: HashMap<String, i64> = views
                    .iter()
                    .map(|v| (v.order.id.to_string(), v.order.version))
                    .collect();
                views = self
                    .current_views(chunk)
                    .await?
                    .into_iter()
                    .filter(|v| {
                        published
                            .get(&v.order.id.to_string())
                            .is_some_and(|&version| v.order.version > version)
                    })
                    .collect();
                if views.is_empty() {
                    break;
                }
            }
            if !self.model.renew_rebuild(token).await.map_err(failed)? {
                return Err(rebuild_error("another process took the rebuild over"));
            }
        }
        Ok(sent)
    }

    /// The current views of the orders of `changes` (applying them again is a no-op that answers them).
    async fn current_views(&self, changes: &[Change]) -> Result<Vec<View>, RoleError> {
        let views = self.model.apply(changes).await.map_err(rebuild_error)?;
        Ok(views.into_iter().flatten().collect())
    }

    /// Publishes the state and read-model records of `views` and waits for the broker's acknowledgements.
    async fn publish_views(
        &self,
        producer: &orderflow_bus::EventProducer,
        views: &[View],
    ) -> Result<(), RoleError> {
        use rdkafka::message::{Header, OwnedHeaders};
        let mut outputs = Vec::with_capacity(2 * views.len());
        for view in views {
            outputs.extend(self.outputs(view, None).map_err(rebuild_error)?);
        }
        let deliveries = outputs.iter().map(|output| {
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
            producer.send(record, Duration::from_secs(10))
        });
        for delivered in futures::future::join_all(deliveries).await {
            delivered.map_err(|(e, _)| rebuild_error(e))?;
        }
        Ok(())
    }
}

impl Handler for Projection {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let mut changes = Vec::with_capacity(batch.len());
        for record in batch {
            changes.push(self.change(record).await?);
        }
        let mut views = self.model.apply(&changes).await?;
        if views.iter().any(Option::is_none) {
            views = self.with_headers(&changes, views).await?;
        }
        // Version-checked: a re-delivered or late event never moves the cached order backwards. A Redis
        // outage is absorbed by the cache (reads fall back to the database), so it does not stall here.
        let keys: Vec<(String, &View)> = views
            .iter()
            .flatten()
            .map(|v| (v.order.id.to_string(), v))
            .collect();
        futures::future::join_all(
            keys.iter()
                .map(|(key, view)| self.backends.cache.refresh(key, &view.order)),
        )
        .await;
        let mut outputs = Vec::with_capacity(2 * batch.len());
        for (record, view) in batch.iter().zip(&views) {
            if let Some(view) = view {
                outputs.extend(self.outputs(view, record.header_str(headers::TRACEPARENT))?);
            }
        }
        Ok(outputs)
    }

    /// A batch of another topic may have applied a newer change of the same order and published it before
    /// this batch's (older) state landed: applying the changes again (a no-op that answers the current state)
    /// finds the orders now newer than the newest state this batch published for them, and their current
    /// state is published once more. The runtime asks again after each such publish (the newer state may
    /// itself be overtaken while on its way) until nothing is newer, so the last `order.state` record of an
    /// order is never older than its read model.
    ///
    /// Most rounds find nothing newer, so the check reads only the model's versions of the batch's orders
    /// (records are keyed by order id) and the versions published (a header of each state record); the
    /// changes are decoded and applied again only for the orders found newer.
    async fn settled(&self, batch: &[Record], published: &[Output]) -> Result<Vec<Output>, HandlerError> {
        let mut sent: HashMap<&[u8], i64> = HashMap::new();
        for output in published.iter().filter(|o| o.topic == self.state_topic) {
            let carried = output
                .headers
                .iter()
                .find(|(name, _)| name == VERSION_HEADER)
                .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse().ok());
            let version = match carried {
                Some(version) => version,
                None => {
                    let state: OrderState = self
                        .backends
                        .codec
                        .decode(&output.payload)
                        .await
                        .map_err(decode_error)?;
                    state.order_version
                }
            };
            if let Some(key) = output.key.as_deref() {
                let known = sent.entry(key).or_insert(version);
                *known = (*known).max(version);
            }
        }
        // The fast path needs every key to be an order id as the platform writes it (the model's key).
        let keys: Option<Vec<&str>> = batch
            .iter()
            .map(|r| r.key.as_deref().and_then(canonical))
            .collect();
        let batch: Vec<&Record> = match keys {
            Some(mut ids) => {
                ids.sort_unstable();
                ids.dedup();
                let versions = self.model.versions(&ids).await?;
                let newer: std::collections::HashSet<&str> = ids
                    .iter()
                    .zip(versions)
                    .filter(|(id, version)| {
                        version.is_some_and(|v| sent.get(id.as_bytes()).is_none_or(|&s| v > s))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                batch
                    .iter()
                    .filter(|r| {
                        r.key
                            .as_deref()
                            .and_then(canonical)
                            .is_some_and(|id| newer.contains(id))
                    })
                    .collect()
            }
            // A record without an order id for key: check every change the slow way (apply again).
            None => batch.iter().collect(),
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut changes = Vec::with_capacity(batch.len());
        for record in &batch {
            changes.push(self.change(record).await?);
        }
        let views = self.model.apply(&changes).await?;
        let mut outputs = Vec::new();
        let mut again = std::collections::HashSet::new();
        for (record, view) in batch.iter().zip(&views) {
            let Some(view) = view else { continue };
            let id = view.order.id.to_string();
            let newer = sent
                .get(id.as_bytes())
                .is_none_or(|&version| view.order.version > version);
            if newer && again.insert(id) {
                outputs.extend(self.outputs(view, record.header_str(headers::TRACEPARENT))?);
            }
        }
        Ok(outputs)
    }
}

/// Where `orderflow rebuild read-model` takes the read model from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RebuildSource {
    /// Every change of the projector's input topics, the model's changelog.
    Kafka,
    /// Every order's creation and current status in the database.
    Postgres,
}

/// Whether the backends' bus is a cluster of this process only (no `kafka.bootstrap_servers`): nothing a
/// rebuild could read the deployment's changes from or publish them to.
fn settings_kafka_missing(backends: &Backends) -> bool {
    backends.bus.settings().cluster().is_none()
}

/// How long `orderflow rebuild read-model` waits for a rebuild another process holds.
const REBUILD_LOCK_WAIT: Duration = Duration::from_secs(600);

/// Orders read per page by a rebuild from the database.
const REBUILD_PAGE: i64 = 1_000;

/// Rebuilds the Redis read model from `from`, then publishes every order's state once more, as the
/// projector does when it finds the model lost; returns the changes applied. Safe while the platform runs:
/// it holds the projector's rebuild lock (one rebuild at a time), the model only moves forward (applying a
/// change again, or out of order, ends in the same state), and states published meanwhile are republished
/// until none is newer. `progress` sees the running count.
pub async fn rebuild(
    settings: &ProjectorSettings,
    backends: &Backends,
    from: RebuildSource,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<usize, RoleError> {
    if backends.redis.is_none() {
        return Err(rebuild_error(
            "the read model lives in the projector's process without Redis: set cache.redis_url",
        ));
    }
    if settings_kafka_missing(backends) {
        return Err(rebuild_error(
            "the read model is rebuilt from and republished to the deployment's Kafka: set kafka.bootstrap_servers",
        ));
    }
    let role = ConsumerRole {
        role: crate::Role::Projector,
        group: &settings.group,
        inputs: &FOLLOWED,
        delivery: Delivery::AtLeastOnce,
        concurrency: settings.concurrency,
    };
    let projection = Projection::new(settings, backends, &role);
    let failed = |e: ModelError| rebuild_error(e);
    // A projector that found the model lost may be rebuilding it: wait for it, then rebuild as asked.
    let waited = std::time::Instant::now();
    let token = loop {
        if let Some(token) = projection.model.begin_rebuild().await.map_err(failed)? {
            break token;
        }
        if waited.elapsed() > REBUILD_LOCK_WAIT {
            return Err(rebuild_error(
                "another process has been rebuilding the read model for 10 minutes: try again when it is done",
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let result = match from {
        RebuildSource::Kafka => projection.refold(&token, progress).await,
        RebuildSource::Postgres => projection.refold_from_database(&token, progress).await,
    };
    let finished = projection
        .model
        .end_rebuild(&token, result.is_ok())
        .await
        .map_err(failed)?;
    let applied = result?;
    if !finished {
        return Err(rebuild_error("another process took the rebuild over"));
    }
    Ok(applied)
}

/// Consumes until `shutdown` fires, then drains, commits and leaves the group (bounded).
pub async fn run(
    settings: ProjectorSettings,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let role = ConsumerRole {
        role: crate::Role::Projector,
        group: &settings.group,
        inputs: &FOLLOWED,
        delivery: Delivery::AtLeastOnce,
        concurrency: settings.concurrency,
    };
    let projection = std::sync::Arc::new(Projection::new(&settings, &backends, &role));
    let watch = tokio::spawn(watch(projection.clone(), shutdown.clone()));
    let result = role.run(&backends, projection, shutdown).await;
    watch.abort();
    result
}

/// Checks at once and every [`WATCH_INTERVAL`] that the read model is intact, and rebuilds it when not.
/// A failed rebuild is tried again after twice the wait of the one before, up to 5 minutes: each attempt reads
/// the topics from their beginning.
async fn watch(projection: std::sync::Arc<Projection>, shutdown: CancellationToken) {
    let mut wait = WATCH_INTERVAL;
    loop {
        match projection.rebuild_if_lost().await {
            Ok(Some(applied)) => {
                tracing::warn!(
                    applied,
                    "read model missing (Redis lost it, or a new deployment): rebuilt from its input topics"
                );
                wait = WATCH_INTERVAL;
            }
            Ok(None) => wait = WATCH_INTERVAL,
            Err(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "rebuilding the read model");
                wait = (wait * 2).min(Duration::from_secs(300));
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
