//! The projector's read model: per order, the header and lines (from `order.created`), the current status
//! and version (only ever forward), and the status history (one entry per version).
//!
//! On Redis: a hash `<prefix>rm:{<id>}` and a sorted set `<prefix>rm:{<id>}:history` (score = version), under
//! the order's hash tag, updated by one script per change, so it holds on Redis Cluster; in process for the
//! embedded default. Applying a change twice, or changes out of order, ends in the same state.
//!
//! Beside the orders, a marker (`{<prefix>rm}:epoch`) says the model is intact; when Redis loses its data
//! the marker goes with it, and the projector rebuilds the model by applying every change of its input topics
//! again (the topics are the model's changelog), under a lock (`{<prefix>rm}:rebuild`) so that one process
//! does it. In process the model is intact from the start: the embedded bus it folds lives and dies with
//! the same process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use orderflow_domain::{Order, OrderStatus};
use orderflow_redis::{Rebuild, RedisConnection};
use redis::{Script, Value};

/// The Redis hash holding order `order_id`'s read model under key prefix `prefix` (fields `h` header,
/// `s` status, `v` version, `at`).
pub(crate) fn redis_key(prefix: &str, order_id: &str) -> String {
    format!("{prefix}rm:{{{order_id}}}")
}

/// Stores one change and answers with the read model, or nil while the order's header is unknown.
const APPLY: &str = r"
local key, hist = KEYS[1], KEYS[2]
local version, status, at, header, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if header ~= '' then redis.call('HSETNX', key, 'h', header) end
redis.call('ZADD', hist, 'NX', version, status .. '@' .. at)
local current = tonumber(redis.call('HGET', key, 'v') or '0')
if version > current then redis.call('HSET', key, 's', status, 'v', version, 'at', at) end
redis.call('EXPIRE', key, ttl)
redis.call('EXPIRE', hist, ttl)
local state = redis.call('HMGET', key, 'h', 's', 'v', 'at')
if not state[1] then return false end
return {state[1], state[2], state[3], state[4], redis.call('ZRANGE', hist, 0, -1)}
";

/// One status change of an order.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The order.
    pub order_id: String,
    /// The status it enters.
    pub status: OrderStatus,
    /// The version it enters it at.
    pub version: i64,
    /// When, microseconds since the epoch.
    pub at: i64,
    /// The order as created, for the `order.created` change.
    pub created: Option<Order>,
}

/// The read model of one order after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    /// The order at its current status and version.
    pub order: Order,
    /// Every status it went through, oldest first: (status, microseconds since the epoch).
    pub history: Vec<(String, i64)>,
}

/// Why the read model could not be updated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ModelError {
    /// Redis failed or could not be reached.
    #[error("read model in Redis")]
    Redis(#[from] redis::RedisError),
    /// Stored or returned state did not parse.
    #[error("read model state: {what}")]
    State {
        /// What did not parse.
        what: String,
        /// The parser's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ModelError {
    fn state(what: impl Into<String>) -> Self {
        Self::State {
            what: what.into(),
            source: None,
        }
    }

    fn unreadable(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::State {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl From<ModelError> for orderflow_consumer::HandlerError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Redis(e) => orderflow_consumer::effects::redis_error(e),
            state @ ModelError::State { .. } => Self::permanent(state),
        }
    }
}

/// What the in-process model keeps per order.
#[derive(Default)]
pub(crate) struct Entry {
    header: Option<Order>,
    status: Option<(OrderStatus, i64, i64)>,
    history: BTreeMap<i64, (String, i64)>,
}

/// The read model, on Redis or in process.
pub(crate) enum ReadModel {
    /// Shared by every projector instance.
    Redis {
        /// The connection.
        connection: RedisConnection,
        /// Key prefix (`orderflow:`).
        prefix: String,
        /// How long an order's read model is kept after its last change.
        ttl: Duration,
        /// The change script.
        script: Script,
        /// The model's marker and rebuild lock.
        rebuild: Rebuild,
    },
    /// This process only.
    Memory(Mutex<MemoryModel>),
}

/// The in-process model.
#[derive(Default)]
pub(crate) struct MemoryModel {
    entries: HashMap<String, Entry>,
    /// Whether the model holds everything its topics hold (always, in process).
    intact: bool,
    /// The rebuild under way.
    rebuilding: Option<String>,
}

fn view(mut order: Order, status: OrderStatus, version: i64, at: i64, history: Vec<(String, i64)>) -> View {
    order.status = status;
    order.version = version;
    if let Some(at) = chrono::DateTime::from_timestamp_micros(at) {
        order.updated_at = order.updated_at.max(at);
    }
    View { order, history }
}

fn text(value: &Value) -> Result<String, ModelError> {
    match value {
        Value::BulkString(b) => {
            String::from_utf8(b.clone()).map_err(|e| ModelError::unreadable("a reply", e))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(ModelError::state(format!("unexpected reply {other:?}"))),
    }
}

fn number(value: &Value) -> Result<i64, ModelError> {
    text(value)?
        .parse()
        .map_err(|e| ModelError::unreadable("a number", e))
}

fn status(text: &str) -> Result<OrderStatus, ModelError> {
    text.parse().map_err(|e| ModelError::unreadable("a status", e))
}

impl ReadModel {
    /// A model on Redis under `prefix`, keeping each order `ttl` after its last change.
    pub(crate) fn redis(connection: RedisConnection, prefix: &str, ttl: Duration) -> Self {
        Self::Redis {
            rebuild: Rebuild::new(
                connection.clone(),
                format!("{{{prefix}rm}}:epoch"),
                format!("{{{prefix}rm}}:rebuild"),
            ),
            connection,
            prefix: prefix.to_owned(),
            ttl,
            script: Script::new(APPLY),
        }
    }

    /// A model in this process.
    pub(crate) fn memory() -> Self {
        // The embedded bus it folds lives in this process too, so there is never more to rebuild it from.
        Self::Memory(Mutex::new(MemoryModel {
            intact: true,
            ..MemoryModel::default()
        }))
    }

    fn memory_state(model: &Mutex<MemoryModel>) -> std::sync::MutexGuard<'_, MemoryModel> {
        model.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the model is intact: its marker is there, so nothing was lost since the last rebuild.
    pub(crate) async fn intact(&self) -> Result<bool, ModelError> {
        match self {
            Self::Redis { rebuild, .. } => Ok(rebuild.intact().await?),
            Self::Memory(model) => Ok(Self::memory_state(model).intact),
        }
    }

    /// Takes the rebuild lock with a fresh token; `None` while another rebuild holds it.
    pub(crate) async fn begin_rebuild(&self) -> Result<Option<String>, ModelError> {
        match self {
            Self::Redis { rebuild, .. } => Ok(rebuild.begin().await?),
            Self::Memory(model) => {
                let mut model = Self::memory_state(model);
                if model.rebuilding.is_some() {
                    return Ok(None);
                }
                let token = orderflow_redis::rebuild_token();
                model.rebuilding = Some(token.clone());
                Ok(Some(token))
            }
        }
    }

    /// Renews the rebuild lock (`false`: the rebuild lost it).
    pub(crate) async fn renew_rebuild(&self, token: &str) -> Result<bool, ModelError> {
        match self {
            Self::Redis { rebuild, .. } => Ok(rebuild.renew(token).await?),
            Self::Memory(model) => Ok(Self::memory_state(model).rebuilding.as_deref() == Some(token)),
        }
    }

    /// Ends a rebuild: marks the model intact if the rebuild still held the lock (`false` otherwise), or,
    /// with `done` false, only gives the lock up.
    pub(crate) async fn end_rebuild(&self, token: &str, done: bool) -> Result<bool, ModelError> {
        match self {
            Self::Redis { rebuild, .. } if done => Ok(rebuild.finish(token).await?),
            Self::Redis { rebuild, .. } => {
                rebuild.abandon(token).await?;
                Ok(false)
            }
            Self::Memory(model) => {
                let mut model = Self::memory_state(model);
                if model.rebuilding.as_deref() != Some(token) {
                    return Ok(false);
                }
                model.rebuilding = None;
                model.intact |= done;
                Ok(done)
            }
        }
    }

    /// The current version of each of `order_ids` (`None` for an order the model does not know): a read
    /// only, for checking what was published against the model.
    pub(crate) async fn versions(&self, order_ids: &[&str]) -> Result<Vec<Option<i64>>, ModelError> {
        match self {
            Self::Redis {
                connection, prefix, ..
            } => {
                let keys: Vec<String> = order_ids.iter().map(|id| redis_key(prefix, id)).collect();
                let mut connection = connection.clone();
                let versions: Vec<Option<i64>> = match &connection {
                    RedisConnection::Single(_) => {
                        let mut pipe = redis::pipe();
                        for key in &keys {
                            pipe.hget(key, "v");
                        }
                        pipe.query_async(&mut connection).await?
                    }
                    // One slot per order: concurrent calls, as for changes.
                    RedisConnection::Cluster(_) => {
                        futures::future::try_join_all(keys.iter().map(|key| {
                            let mut connection = connection.clone();
                            async move {
                                redis::cmd("HGET")
                                    .arg(key)
                                    .arg("v")
                                    .query_async::<Option<i64>>(&mut connection)
                                    .await
                            }
                        }))
                        .await?
                    }
                };
                Ok(versions)
            }
            Self::Memory(model) => {
                let model = Self::memory_state(model);
                Ok(order_ids
                    .iter()
                    .map(|id| {
                        model
                            .entries
                            .get(*id)
                            .and_then(|entry| entry.status.map(|(_, version, _)| version))
                    })
                    .collect())
            }
        }
    }

    /// Applies `changes` in order; answers each one's view (`None` while its order's header is unknown).
    pub(crate) async fn apply(&self, changes: &[Change]) -> Result<Vec<Option<View>>, ModelError> {
        match self {
            Self::Redis {
                connection,
                prefix,
                ttl,
                script,
                ..
            } => {
                let mut invocations = Vec::with_capacity(changes.len());
                for change in changes {
                    let key = redis_key(prefix, &change.order_id);
                    let header = match &change.created {
                        Some(order) => {
                            serde_json::to_string(order).map_err(|e| ModelError::unreadable("an order", e))?
                        }
                        None => String::new(),
                    };
                    let mut invocation = script.key(&key);
                    invocation
                        .key(format!("{key}:history"))
                        .arg(change.version)
                        .arg(change.status.as_str())
                        .arg(change.at)
                        .arg(header)
                        .arg(ttl.as_secs().max(1));
                    invocations.push(invocation);
                }
                let mut connection = connection.clone();
                let replies: Vec<Value> = match &connection {
                    RedisConnection::Single(_) => {
                        let mut pipe = redis::pipe();
                        for invocation in &invocations {
                            pipe.invoke_script(invocation);
                        }
                        match pipe.query_async(&mut connection).await {
                            Ok(replies) => replies,
                            Err(e)
                                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                            {
                                script.prepare_invoke().load_async(&mut connection).await?;
                                pipe.query_async(&mut connection).await?
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    // A Cluster pipeline must keep to one slot, and every order has its own: the changes go
                    // as concurrent calls instead (multiplexed on each node's connection).
                    RedisConnection::Cluster(_) => {
                        futures::future::try_join_all(invocations.iter().map(|invocation| {
                            let mut connection = connection.clone();
                            async move { invocation.invoke_async::<Value>(&mut connection).await }
                        }))
                        .await?
                    }
                };
                // The changes must outlive a failover before the projector publishes and commits.
                connection.wait_replicated().await?;
                replies.iter().map(parse_view).collect()
            }
            Self::Memory(model) => {
                let mut model = Self::memory_state(model);
                let entries = &mut model.entries;
                Ok(changes
                    .iter()
                    .map(|change| {
                        let entry = entries.entry(change.order_id.clone()).or_default();
                        if entry.header.is_none() {
                            entry.header = change.created.clone();
                        }
                        entry
                            .history
                            .entry(change.version)
                            .or_insert_with(|| (change.status.as_str().to_owned(), change.at));
                        if entry.status.is_none_or(|(_, v, _)| change.version > v) {
                            entry.status = Some((change.status, change.version, change.at));
                        }
                        match (&entry.header, entry.status) {
                            (Some(order), Some((status, version, at))) => Some(view(
                                order.clone(),
                                status,
                                version,
                                at,
                                entry.history.values().cloned().collect(),
                            )),
                            _ => None,
                        }
                    })
                    .collect())
            }
        }
    }
}

/// Reads the script's answer.
fn parse_view(reply: &Value) -> Result<Option<View>, ModelError> {
    let parts = match reply {
        Value::Nil | Value::Boolean(false) => return Ok(None),
        Value::Array(parts) => parts,
        other => return Err(ModelError::state(format!("unexpected reply {other:?}"))),
    };
    let [header, current, version, at, Value::Array(history)] = parts.as_slice() else {
        return Err(ModelError::state(format!("unexpected reply {parts:?}")));
    };
    let order: Order =
        serde_json::from_str(&text(header)?).map_err(|e| ModelError::unreadable("the order", e))?;
    let history = history
        .iter()
        .map(|entry| {
            let entry = text(entry)?;
            let (status, at) = entry
                .rsplit_once('@')
                .ok_or_else(|| ModelError::state(format!("history entry {entry}")))?;
            let at = at
                .parse()
                .map_err(|e| ModelError::unreadable(format!("history entry {entry}"), e))?;
            Ok((status.to_owned(), at))
        })
        .collect::<Result<_, ModelError>>()?;
    Ok(Some(view(
        order,
        status(&text(current)?)?,
        number(version)?,
        number(at)?,
        history,
    )))
}
