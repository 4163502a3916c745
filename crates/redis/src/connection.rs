//! The connection: one server or a Redis Cluster, plain or TLS (`rediss://`), with ACL user and password
//! taken from the URL (`redis://user:password@host:port`).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, TlsCertificates, Value};

/// Where and how to reach Redis.
#[derive(Clone, Default)]
pub struct RedisTarget {
    /// Server URL, or for a Cluster one or more seed nodes' URLs (the client discovers the rest).
    pub urls: Vec<String>,
    /// Whether `urls` name Redis Cluster nodes.
    pub cluster: bool,
    /// PEM of the CA to trust for `rediss://` when it is not in the system store.
    pub ca_pem: Option<Vec<u8>>,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password: print the number of them only.
        f.debug_struct("RedisTarget")
            .field("urls", &self.urls.len())
            .field("cluster", &self.cluster)
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

/// A multiplexed, self-reconnecting connection to one Redis server or to a Redis Cluster (which follows
/// slot moves and failovers); cheap to clone.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server (standalone, or a primary behind a stable address).
    Single(ConnectionManager),
    /// A Redis Cluster: commands go to the node serving their key's slot.
    Cluster(ClusterHandle),
}

impl From<ConnectionManager> for RedisConnection {
    fn from(connection: ConnectionManager) -> Self {
        Self::Single(connection)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(connection: ClusterConnection) -> Self {
        Self::Cluster(ClusterHandle::new(None, connection))
    }
}

/// How long every request must have failed before a Cluster connection is replaced, and the least time
/// between two replacements.
pub const CLUSTER_REBUILD_AFTER: Duration = Duration::from_secs(5);

/// A Redis Cluster connection that replaces itself when it stops answering altogether; cheap to clone.
///
/// redis-rs recovers from a failover by refreshing its slot map; a recovery that never completes (seen when
/// a killed master came back while the client was still recovering from its loss) leaves every request
/// timing out for good, and a timed-out request is retried on the same connection, never rebuilt. So when
/// every request has failed on I/O (timeouts, refused or dropped connections) for
/// [`CLUSTER_REBUILD_AFTER`], the next failure builds a fresh connection from the seed nodes and swaps it in.
/// A failover in progress, where the other masters still answer, resets the clock with each success.
#[derive(Clone)]
pub struct ClusterHandle(Arc<ClusterInner>);

struct ClusterInner {
    /// The client that built the connection; `None` when handed a connection (it cannot be rebuilt).
    client: Option<ClusterClient>,
    current: RwLock<ClusterConnection>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Since when every request has failed on I/O.
    failing_since: Option<Instant>,
    /// When the connection was last replaced.
    rebuilt_at: Option<Instant>,
    /// A replacement is being built.
    rebuilding: bool,
}

impl ClusterHandle {
    fn new(client: Option<ClusterClient>, connection: ClusterConnection) -> Self {
        Self(Arc::new(ClusterInner {
            client,
            current: RwLock::new(connection),
            health: Mutex::new(Health::default()),
        }))
    }

    /// The connection in use now.
    fn connection(&self) -> Option<ClusterConnection> {
        self.0.current.read().ok().map(|c| c.clone())
    }

    /// Notes how a request ended, and replaces the connection when requests have only failed for long.
    async fn observe(&self, error: Option<&RedisError>) {
        let failed_on_io = error.is_some_and(|e| {
            e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
        });
        let due = {
            let Ok(mut health) = self.0.health.lock() else {
                return;
            };
            if !failed_on_io {
                // An answer, even an error reply, shows the connection works.
                health.failing_since = None;
                return;
            }
            let now = Instant::now();
            let since = *health.failing_since.get_or_insert(now);
            let due = now.duration_since(since) >= CLUSTER_REBUILD_AFTER
                && !health.rebuilding
                && health
                    .rebuilt_at
                    .is_none_or(|at| now.duration_since(at) >= CLUSTER_REBUILD_AFTER);
            if due {
                health.rebuilding = true;
            }
            due
        };
        if !due {
            return;
        }
        let Some(client) = &self.0.client else {
            return;
        };
        let rebuilt = tokio::time::timeout(CLUSTER_REBUILD_AFTER, client.get_async_connection()).await;
        let replaced = match rebuilt {
            Ok(Ok(connection)) => {
                if let Ok(mut current) = self.0.current.write() {
                    *current = connection;
                }
                true
            }
            _ => false,
        };
        if let Ok(mut health) = self.0.health.lock() {
            health.rebuilding = false;
            health.rebuilt_at = Some(Instant::now());
            if replaced {
                health.failing_since = None;
            }
        }
        if replaced {
            tracing::warn!(
                after = ?CLUSTER_REBUILD_AFTER,
                "every Redis Cluster request failed for a while: reconnected from the seed nodes"
            );
        } else {
            tracing::warn!(
                "reconnecting to the Redis Cluster from the seed nodes failed; trying again later"
            );
        }
    }
}

/// The error of a request made while the connection could not be read.
fn poisoned() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Client,
        "the Redis Cluster connection is unusable",
    ))
}

impl ConnectionLike for ClusterHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut connection = self.connection().ok_or_else(poisoned)?;
            let result = connection.req_packed_command(cmd).await;
            self.observe(result.as_ref().err()).await;
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut connection = self.connection().ok_or_else(poisoned)?;
            let result = connection.req_packed_commands(pipeline, offset, count).await;
            self.observe(result.as_ref().err()).await;
            result
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

impl RedisConnection {
    /// Connects to `target`.
    pub async fn connect(target: &RedisTarget) -> redis::RedisResult<Self> {
        // rustls needs a process-wide crypto provider; ring is the one built in. An application that installed
        // its own keeps it (the call fails harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certificates = target.ca_pem.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
        let connect_timeout = if target.connect_timeout.is_zero() {
            Duration::from_secs(2)
        } else {
            target.connect_timeout
        };
        if target.cluster {
            let mut builder =
                redis::cluster::ClusterClientBuilder::new(target.urls.iter().map(String::as_str))
                    .connection_timeout(connect_timeout)
                    .response_timeout(Duration::from_secs(1))
                    // Fail fast: the cache has its own timeout and breaker, and reads fall back to the loader.
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(200);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            let client = builder.build()?;
            let connection = client.get_async_connection().await?;
            return Ok(Self::Cluster(ClusterHandle::new(Some(client), connection)));
        }
        let url = target.urls.first().map(String::as_str).unwrap_or_default();
        let client = match certificates {
            Some(certificates) => redis::Client::build_with_tls(url, certificates)?,
            None => redis::Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }
}

impl RedisConnection {
    /// On a Cluster, waits until the writes this connection sent so far are on a replica of every master
    /// that has a replica, so that a failover (which promotes a replica) keeps them. Call it before
    /// acknowledging state that must survive a failover (before a consumer commits its offsets). A master
    /// with no replica right now (its replica was just promoted) is not waited for: nothing can take its
    /// place yet. A master whose replica has not confirmed the writes within [`REPLICATION_WAIT`] fails the
    /// call with a timeout, so the caller makes the writes again rather than acknowledge what a failover
    /// could lose (seen: a projector's change lost that way let an older state be published last). One
    /// server has no replica to wait for.
    pub async fn wait_replicated(&self) -> redis::RedisResult<()> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
        let Self::Cluster(handle) = self else {
            return Ok(());
        };
        let mut connection = handle.connection().ok_or_else(poisoned)?;
        let every_master =
            || RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::Special)));
        let deadline = Instant::now() + REPLICATION_WAIT;
        loop {
            // Each master answers how many replicas have everything this connection wrote to it.
            let mut wait = redis::cmd("WAIT");
            wait.arg(1).arg(200);
            let answers = connection.route_command(wait, every_master()).await?;
            let mut behind: Vec<String> = per_node(answers)
                .into_iter()
                .filter(|(_, value)| !matches!(value, Value::Int(n) if *n >= 1))
                .map(|(node, _)| node)
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            // ROLE lists each master's connected replicas; one without any has nothing to wait for.
            let roles = per_node(
                connection
                    .route_command(redis::cmd("ROLE"), every_master())
                    .await?,
            );
            behind.retain(|node| {
                roles.iter().any(|(n, role)| {
                    n == node
                        && matches!(role, Value::Array(parts)
                            if matches!(parts.get(2), Some(Value::Array(replicas)) if !replicas.is_empty()))
                })
            });
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "writes not confirmed by a replica of {} within {REPLICATION_WAIT:?}",
                        behind.join(", ")
                    ),
                )));
            }
        }
    }
}

/// How long [`RedisConnection::wait_replicated`] waits for a master's replica before it fails.
pub const REPLICATION_WAIT: Duration = Duration::from_secs(2);

/// The answers of a command sent to several nodes, by node address.
fn per_node(answers: Value) -> Vec<(String, Value)> {
    match answers {
        Value::Map(entries) => entries
            .into_iter()
            .map(|(node, value)| {
                let node = match node {
                    Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    other => format!("{other:?}"),
                };
                (node, value)
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A pub/sub connection to the server at `url` (TLS and CA as in `target`), subscribed to `channel`.
pub async fn subscribe(
    url: &str,
    target: &RedisTarget,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let client = match &target.ca_pem {
        Some(pem) => redis::Client::build_with_tls(
            url,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        )?,
        None => redis::Client::open(url)?,
    };
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
