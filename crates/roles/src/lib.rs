//! Orderflow's roles and the platform that runs any set of them in one process.
//!
//! One module per role: [`orders`] (HTTP API + outbox relay + status follower), [`payments`] (charges each
//! order with the simulated provider), [`enrichment`] (order x payment windowed join), [`inventory`] (stock
//! reservations), [`projector`] (Redis read model), [`analytics`] (revenue, order counts, customers, products, funnel)
//! and [`audit`] (hash-chained audit trail). Roles share the process's backends
//! ([`Backends`]): the store, the bus and the read model.

mod access;
pub mod analytics;
pub mod audit;
pub mod enrichment;
pub mod gateway;
pub mod inventory;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod projector;
pub mod reconcile;
mod runner;
mod settings;
mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use orderflow_bus::{Bus, BusError};
use orderflow_cache::{CacheError, OrderCache};
use orderflow_events::AvroCodec;
use orderflow_redis::RedisConnection;
use orderflow_registry::{RegistryClient, RegistryService, SchemaSource};
use orderflow_store::{Store, StoreError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use access::{KafkaAccess, KafkaGrant, routing_topics};
pub use payments::PaymentsSettings;
pub use settings::{
    DatabaseSettings, HttpSettings, OpsSettings, OrdersSettings, ProjectorSettings, RegistrySettings,
    Settings, ShutdownSettings, redact_url,
};

/// A role a process can run (`orderflow run --role <name>`; the variants' docs are the command line's help).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// The only door to the API: authentication, scopes, rate limits.
    Gateway,
    /// REST API and outbox relay.
    Orders,
    /// Charges each created order and reports the payment.
    Payments,
    /// Joins orders with their payments and reference data.
    Enrichment,
    /// Reserves stock for paid orders and releases it on cancel.
    Inventory,
    /// Keeps the read model current from the order topics.
    Projector,
    /// Folds the lifecycle into the analytics aggregates.
    Analytics,
    /// Appends every event to the hash-chained audit trail.
    Audit,
}

impl Role {
    /// Every role, in start-up order.
    pub const ALL: &'static [Role] = &[
        Role::Gateway,
        Role::Orders,
        Role::Payments,
        Role::Enrichment,
        Role::Inventory,
        Role::Projector,
        Role::Analytics,
        Role::Audit,
    ];

    /// Whether the role runs a Kafka consumer (every role but the gateway; the orders role's is its status
    /// follower).
    pub fn consumes(&self) -> bool {
        !matches!(self, Self::Gateway)
    }

    /// The role's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Orders => "orders",
            Self::Payments => "payments",
            Self::Enrichment => "enrichment",
            Self::Inventory => "inventory",
            Self::Projector => "projector",
            Self::Analytics => "analytics",
            Self::Audit => "audit",
        }
    }
}

/// Why a role could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The database.
    #[error("database")]
    Store(#[from] StoreError),
    /// Kafka.
    #[error("kafka")]
    Bus(#[from] BusError),
    /// The read model.
    #[error("read model")]
    Cache(#[from] CacheError),
    /// Rebuilding derived state after its store lost it.
    #[error("rebuilding the {what}")]
    Rebuild {
        /// What was being rebuilt.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Redis settings.
    #[error("redis settings")]
    Redis(#[from] orderflow_redis::TargetError),
    /// The outbox relay.
    #[error("outbox relay")]
    Relay(#[from] orderflow_outbox::RelayError),
    /// A Kafka client call.
    #[error("kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A consumer runtime stopped.
    #[error("consumer")]
    Consumer(#[from] orderflow_consumer::ConsumerError),
    /// Binding or serving the HTTP listener.
    #[error("http listener on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The event codec (schema registration).
    #[error("event contracts")]
    Codec(#[from] orderflow_events::CodecError),
    /// The schema registry client.
    #[error("schema registry")]
    Registry(#[from] orderflow_registry::RegistryError),
    /// Reference data could not be loaded or read.
    #[error("reference data: {context}")]
    Reference {
        /// What was being done.
        context: &'static str,
        /// Redis's error.
        #[source]
        source: redis::RedisError,
    },
    /// A role's settings hold a value it cannot run with.
    #[error("settings: {0}")]
    Settings(String),
    /// The gateway's settings (keys, upstreams, limits) cannot be used.
    #[error("settings")]
    Gateway(#[from] orderflow_gateway::GatewayError),
    /// The analytics settings cannot be used.
    #[error("settings: analytics")]
    Analytics(#[source] orderflow_analytics::AnalyticsError),
    /// The development API key file could not be read or written.
    #[error("settings: development API key {}: cannot {what}", path.display())]
    DevKey {
        /// The key file.
        path: std::path::PathBuf,
        /// What could not be done (`read`, `create its folder`, `create`, `write`).
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `orderflow reconcile` could not read what it checks.
    #[error("reconcile: {context}")]
    Reconcile {
        /// What was being read.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A role that serves HTTP was started as a consumer (a bug).
    #[error("{0} is not a consumer role")]
    NotConsumer(&'static str),
    /// A role's task ended abnormally (it panicked or was cancelled).
    #[error("role task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Maps an event that cannot be decoded to a handler error: a registry outage may clear (retried), a
/// malformed record never will (dead-lettered).
pub(crate) fn decode_error(error: orderflow_events::DecodeError) -> orderflow_consumer::HandlerError {
    if error.is_transient() {
        orderflow_consumer::HandlerError::transient(error)
    } else {
        orderflow_consumer::HandlerError::permanent(error)
    }
}

/// Maps a store error to a handler error: database trouble is classified by [`effects::db_error`]
/// (connection loss and conflicts retry), anything else is permanent.
///
/// [`effects::db_error`]: orderflow_consumer::effects::db_error
pub(crate) fn store_error(error: StoreError) -> orderflow_consumer::HandlerError {
    match error {
        StoreError::Database(e) => orderflow_consumer::effects::db_error(e),
        other => orderflow_consumer::HandlerError::permanent(other),
    }
}

/// An encoded event as a record for the consumer runtime to publish (keyed by its order id).
pub(crate) fn event_output(
    topic: &str,
    encoded: orderflow_events::EncodedEvent,
) -> orderflow_consumer::Output {
    orderflow_consumer::Output {
        topic: topic.to_owned(),
        key: Some(encoded.key.into_bytes()),
        payload: encoded.payload,
        headers: encoded
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    }
}

/// An encoded event's headers as Kafka headers, for roles that publish outside the consumer runtime.
pub(crate) fn kafka_headers(encoded: &orderflow_events::EncodedEvent) -> rdkafka::message::OwnedHeaders {
    encoded.headers.iter().fold(
        rdkafka::message::OwnedHeaders::new_with_capacity(encoded.headers.len() + 1),
        |headers, (name, value)| {
            headers.insert(rdkafka::message::Header {
                key: name,
                value: Some(value.as_slice()),
            })
        },
    )
}

/// Consumer settings every role starts from: `group` (already prefixed, see [`Bus::group`]), bounded drain
/// and close, and, when `kafka.instance_id` is set, static membership under that name (so a restarted
/// instance takes its partitions back at once and fences its predecessor's open transaction).
pub(crate) fn consumer_settings(
    bus: &orderflow_bus::Bus,
    group: String,
    topics: Vec<String>,
    delivery: orderflow_consumer::Delivery,
) -> orderflow_consumer::ConsumerSettings {
    let mut consumer = orderflow_consumer::ConsumerSettings::new(group, topics, delivery);
    // Topics already carry the deployment prefix: name the group's retry topics after its bare name.
    if let Some(name) = consumer.group.strip_prefix(&bus.settings().topic_prefix) {
        consumer.routing_name = name.to_owned();
    }
    consumer.drain_timeout = Duration::from_secs(5);
    consumer.close_timeout = Duration::from_secs(5);
    if let Some(instance) = bus
        .settings()
        .instance_id
        .as_deref()
        .filter(|i| !i.trim().is_empty())
    {
        consumer.instance_id = Some(instance.to_owned());
        consumer.static_membership = true;
    }
    consumer
}

/// Binds the HTTP listener; returns it with the address it got (the port, when `listen` asked for 0).
pub(crate) async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), RoleError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RoleError::Listen { addr: listen, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| RoleError::Listen { addr: listen, source })?;
    Ok((listener, addr))
}

/// Serves `app` on `listener` (HTTPS when `tls` is given) until `shutdown` fires.
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    app: axum::Router,
    tls: Option<orderflow_api::TlsSettings>,
    shutdown: CancellationToken,
) -> Result<(), RoleError> {
    let served = match tls {
        Some(tls) => orderflow_api::serve_tls(listener, app, tls, shutdown.cancelled_owned()).await,
        None => orderflow_api::serve(listener, app, shutdown.cancelled_owned()).await,
    };
    served.map_err(|source| RoleError::Listen { addr, source })
}

/// The backends a process's roles share.
#[derive(Clone)]
pub struct Backends {
    /// Source of truth.
    pub store: Store,
    /// Event log.
    pub bus: Bus,
    /// Order cache (read path).
    pub cache: OrderCache,
    /// Event codec, with its schemas registered.
    pub codec: Arc<AvroCodec>,
    /// The embedded schema registry, when no external registry is configured.
    pub registry: Option<RegistryService>,
    /// Redis for stream state and reference data, when configured (the cache has its own connection).
    pub redis: Option<RedisConnection>,
    /// Prefix of every Redis key this deployment writes.
    pub key_prefix: String,
    /// The analytics aggregates (in Redis when configured, else in this process).
    pub analytics: orderflow_analytics::Analytics,
    /// The consumers running in this process (for readiness, the console and holds).
    pub consumers: ops::Consumers,
}

/// The catalogue the embedded default starts with when it has none, so a first order (the README's) can be
/// served: five products with 1,000 units each.
pub fn demo_catalogue() -> Vec<orderflow_store::Product> {
    [
        ("SKU-1", "Espresso beans, 1 kg", 1_250),
        ("SKU-2", "Burr grinder", 8_900),
        ("SKU-3", "Milk jug, 600 ml", 1_900),
        ("SKU-4", "Paper filters, 100", 450),
        ("SKU-5", "Cleaning tablets, 50", 1_200),
    ]
    .into_iter()
    .map(|(sku, name, price_minor)| orderflow_store::Product {
        sku: sku.into(),
        name: name.into(),
        price_minor,
        stock: 1_000,
    })
    .collect()
}

impl Backends {
    /// Connects to every configured backend (or starts the embedded ones), migrates when configured and
    /// makes sure the topics exist.
    pub async fn connect(settings: &Settings) -> Result<Self, RoleError> {
        let store = Store::connect(&settings.database_url(), settings.database.max_connections).await?;
        if settings.database.migrate_on_start {
            store.migrate().await?;
        }
        if settings
            .database
            .url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
            && store.seed_catalogue(&demo_catalogue()).await?
        {
            tracing::info!("embedded default: seeded a demo catalogue (SKU-1 to SKU-5, 1,000 units each)");
        }
        let bus = Bus::connect(settings.kafka.clone())?;
        if !bus.is_embedded() {
            bus.verify(Duration::from_secs(15)).await?;
        }
        if settings.kafka.manage_topics {
            match bus.apply_topics().await {
                Ok(_) => {}
                Err(BusError::TopicMismatch(differences)) => {
                    tracing::warn!(
                        ?differences,
                        "topics differ from the topic table; run `orderflow topics apply`"
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        let cache = settings.cache.connect().await?;
        let redis = match settings.cache.redis_target()? {
            Some(target) => Some(
                RedisConnection::connect(&target)
                    .await
                    .map_err(CacheError::from)?,
            ),
            None => None,
        };
        let (source, registry): (Arc<dyn SchemaSource>, _) =
            match settings.registry.url.as_deref().filter(|u| !u.trim().is_empty()) {
                Some(url) => (Arc::new(RegistryClient::new(url)?), None),
                None => {
                    let service = RegistryService::new(Arc::new(store.clone()));
                    (Arc::new(service.clone()), Some(service))
                }
            };
        let codec = Arc::new(AvroCodec::connect(source, &settings.kafka.topic_prefix).await?);
        let analytics = settings
            .analytics
            .open(redis.as_ref(), &settings.cache.key_prefix)?;
        Ok(Self {
            store,
            bus,
            cache,
            codec,
            registry,
            redis,
            key_prefix: settings.cache.key_prefix.clone(),
            analytics,
            consumers: ops::Consumers::default(),
        })
    }
}

/// Roles running in this process.
pub struct Platform {
    /// Where the HTTP API listens, when the orders role runs.
    pub http_addr: Option<SocketAddr>,
    /// Where the ops listener (metrics and probes) listens, when `ops.listen` is set.
    pub ops_addr: Option<SocketAddr>,
    /// The shared backends.
    pub backends: Backends,
    shutdown: CancellationToken,
    tasks: JoinSet<(Role, Result<(), RoleError>)>,
    deadline: Duration,
}

impl Platform {
    /// Connects the backends and starts `roles`; returns once every listener is bound.
    pub async fn start(settings: Settings, roles: &[Role]) -> Result<Self, RoleError> {
        let backends = Backends::connect(&settings).await?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut http_addr = None;
        let guarded = roles.contains(&Role::Gateway);
        let ops = ops::OpsState::new(backends.clone(), roles.to_vec(), shutdown.clone());
        let ops_addr = match settings.ops.listen {
            Some(listen) => {
                let (listener, addr) = bind(listen).await?;
                let app = ops::listener_routes(ops.clone());
                let serve = serve_http(listener, addr, app, None, shutdown.clone());
                tasks.spawn(async move { (Role::Orders, serve.await) });
                Some(addr)
            }
            None => None,
        };
        {
            let (store, shutdown) = (backends.store.clone(), shutdown.clone());
            tasks.spawn(async move {
                ops::sample_pool(store, shutdown).await;
                (Role::Orders, Ok(()))
            });
        }
        for role in roles {
            match role {
                Role::Gateway if roles.contains(&Role::Orders) => {}
                Role::Gateway => {
                    let running =
                        gateway::start_proxy(&settings, backends.redis.clone(), shutdown.clone()).await?;
                    http_addr = Some(running.addr);
                    tasks.spawn(async move { (Role::Gateway, running.serve.await) });
                }
                Role::Orders => {
                    let door = if guarded {
                        Some(gateway::build(&settings, backends.redis.clone())?)
                    } else {
                        None
                    };
                    let running =
                        orders::start(&settings, &backends, door, ops.clone(), shutdown.clone()).await?;
                    http_addr = Some(running.addr);
                    tasks.spawn(async move { (Role::Orders, running.serve.await) });
                }
                consumer => {
                    let task = consumer_role(*consumer, &settings, &backends, shutdown.clone());
                    let role = *consumer;
                    tasks.spawn(async move { (role, task.await) });
                }
            }
        }
        let deadline = Duration::from_secs(settings.shutdown.deadline_secs);
        Ok(Self {
            http_addr,
            ops_addr,
            backends,
            shutdown,
            tasks,
            deadline,
        })
    }

    /// A token that stops every role when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until shutdown is requested or a role fails; then stops every role within the deadline.
    pub async fn wait(mut self) -> Result<(), RoleError> {
        let mut first_error = None;
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            Some(done) = self.tasks.join_next() => {
                first_error = role_result(done).err();
                self.shutdown.cancel();
            }
        }
        self.drain(first_error).await
    }

    /// Requests shutdown and waits for every role to stop (bounded by the deadline).
    pub async fn stop(self) -> Result<(), RoleError> {
        self.shutdown.cancel();
        self.drain(None).await
    }

    async fn drain(mut self, mut first_error: Option<RoleError>) -> Result<(), RoleError> {
        let drained = tokio::time::timeout(self.deadline, async {
            while let Some(done) = self.tasks.join_next().await {
                if let Err(e) = role_result(done) {
                    first_error.get_or_insert(e);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(deadline = ?self.deadline, "roles did not stop within the shutdown deadline");
            self.tasks.abort_all();
        }
        self.backends.store.close().await;
        first_error.map_or(Ok(()), Err)
    }
}

/// The task of a role that only consumes (every role but the gateway and orders, which serve HTTP).
fn consumer_role(
    role: Role,
    settings: &Settings,
    backends: &Backends,
    shutdown: CancellationToken,
) -> futures::future::BoxFuture<'static, Result<(), RoleError>> {
    let backends = backends.clone();
    match role {
        Role::Gateway | Role::Orders => Box::pin(async move { Err(RoleError::NotConsumer(role.name())) }),
        Role::Payments => Box::pin(payments::run(settings.payments.clone(), backends, shutdown)),
        Role::Enrichment => Box::pin(enrichment::run(settings.enrichment.clone(), backends, shutdown)),
        Role::Inventory => Box::pin(inventory::run(settings.inventory.clone(), backends, shutdown)),
        Role::Projector => Box::pin(projector::run(settings.projector.clone(), backends, shutdown)),
        Role::Analytics => Box::pin(analytics::run(settings.analytics.clone(), backends, shutdown)),
        Role::Audit => Box::pin(audit::run(settings.audit.clone(), backends, shutdown)),
    }
}

fn role_result(done: Result<(Role, Result<(), RoleError>), tokio::task::JoinError>) -> Result<(), RoleError> {
    match done {
        Ok((_, Ok(()))) => Ok(()),
        Ok((role, Err(e))) => {
            tracing::error!(
                role = role.name(),
                error = &e as &dyn std::error::Error,
                "role stopped with an error"
            );
            Err(e)
        }
        Err(e) => Err(RoleError::Task(e)),
    }
}
