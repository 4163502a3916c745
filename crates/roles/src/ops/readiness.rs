//! `/readyz`: whether this process should get traffic and work now.
//!
//! Ready when not shutting down, the database answers, Redis answers (when configured), Kafka answers (checked
//! at most every [`KAFKA_EVERY`], since each check is a fresh client login), and every role's consumer has
//! started and joined its group. A member without partitions (during a rebalance, or in a group with more
//! members than partitions) stays ready: it is where it should be. The answer names each check, so an operator sees which one failed; error texts go
//! to the log only (the route is public).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{Backends, Role};

/// How long a Kafka check's outcome is reused.
const KAFKA_EVERY: Duration = Duration::from_secs(10);

/// How long each dependency may take to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks readiness of one process.
pub struct Readiness {
    backends: Backends,
    roles: Vec<Role>,
    shutdown: CancellationToken,
    kafka: Mutex<Option<(Instant, bool)>>,
}

/// How a dependency answered.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the strings `Check::status` holds.
pub enum CheckStatus {
    /// It answered in time.
    #[schema(rename = "ok")]
    Ok,
    /// It refused or failed.
    #[schema(rename = "unavailable")]
    Unavailable,
    /// It did not answer in time.
    #[schema(rename = "timed out")]
    TimedOut,
}

/// Whether the process is ready.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the strings `Report::status` holds.
pub enum ReadyStatus {
    /// Every check passed.
    #[schema(rename = "ready")]
    Ready,
    /// Some check failed; `reasons` says which.
    #[schema(rename = "not ready")]
    NotReady,
}

/// One dependency's outcome.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `ok`, `unavailable` or `timed out`.
    #[schema(value_type = CheckStatus)]
    pub status: &'static str,
    /// How long it took (milliseconds).
    pub millis: u64,
}

/// One consumer's outcome.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerCheck {
    /// The role it belongs to.
    pub role: &'static str,
    /// Its group.
    pub group: String,
    /// Partitions it holds now.
    pub assigned_partitions: u64,
    /// Whether it has joined its group.
    pub joined: bool,
    /// Whether an operator holds it (it stays ready: holding is deliberate).
    pub held: bool,
    /// Partitions paused for backpressure now.
    pub paused_partitions: u64,
}

/// The `/readyz` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// `ready` or `not ready`.
    #[schema(value_type = ReadyStatus)]
    pub status: &'static str,
    /// Whether every check passed.
    #[serde(skip)]
    pub ready: bool,
    /// The roles this process runs.
    pub roles: Vec<&'static str>,
    /// True once shutdown began.
    pub shutting_down: bool,
    /// The database, Redis (when configured) and Kafka.
    pub dependencies: std::collections::BTreeMap<&'static str, Check>,
    /// Every consumer of the process.
    pub consumers: Vec<ConsumerCheck>,
    /// Why the process is not ready, one line per failed check.
    pub reasons: Vec<String>,
}

impl Readiness {
    /// Readiness of a process running `roles` on `backends`.
    pub fn new(backends: Backends, roles: Vec<Role>, shutdown: CancellationToken) -> Self {
        Self {
            backends,
            roles,
            shutdown,
            kafka: Mutex::new(None),
        }
    }

    /// Runs the checks (concurrently, each bounded by a second).
    pub async fn check(&self) -> Report {
        let (database, redis, kafka) = tokio::join!(self.database(), self.redis(), self.kafka());
        let mut dependencies = std::collections::BTreeMap::new();
        let mut reasons = Vec::new();
        for (name, check) in [
            ("database", Some(database)),
            ("redis", redis),
            ("kafka", Some(kafka)),
        ] {
            if let Some(check) = check {
                if check.status != "ok" {
                    reasons.push(format!("{name}: {}", check.status));
                }
                dependencies.insert(name, check);
            }
        }
        let consumers: Vec<ConsumerCheck> = self
            .backends
            .consumers
            .list()
            .into_iter()
            .map(|(role, handle)| ConsumerCheck {
                role: role.name(),
                group: handle.group().to_owned(),
                assigned_partitions: handle.stats().assigned(),
                joined: handle.stats().joined(),
                held: handle.is_held(),
                paused_partitions: handle.stats().paused(),
            })
            .collect();
        for role in self.roles.iter().filter(|r| r.consumes()) {
            if !consumers.iter().any(|c| c.role == role.name()) {
                reasons.push(format!("{}: its consumer has not started", role.name()));
            }
        }
        for consumer in consumers.iter().filter(|c| !c.joined) {
            reasons.push(format!("consumer {}: not in its group yet", consumer.group));
        }
        let shutting_down = self.shutdown.is_cancelled();
        if shutting_down {
            reasons.push("shutting down".to_owned());
        }
        let ready = reasons.is_empty();
        Report {
            status: if ready { "ready" } else { "not ready" },
            ready,
            roles: self.roles.iter().map(Role::name).collect(),
            shutting_down,
            dependencies,
            consumers,
            reasons,
        }
    }

    async fn database(&self) -> Check {
        timed("database", self.backends.store.outbox_backlog()).await
    }

    async fn redis(&self) -> Option<Check> {
        let mut connection = self.backends.redis.clone()?;
        Some(
            timed("redis", async move {
                redis::cmd("PING").query_async::<String>(&mut connection).await
            })
            .await,
        )
    }

    async fn kafka(&self) -> Check {
        let cached = *self
            .kafka
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, ok)) = cached.filter(|(at, _)| at.elapsed() < KAFKA_EVERY) {
            return Check {
                status: if ok { "ok" } else { "unavailable" },
                millis: 0,
            };
        }
        let check = if self.backends.bus.is_embedded() {
            Check {
                status: "ok",
                millis: 0,
            }
        } else {
            let bus = self.backends.bus.clone();
            timed("kafka", async move { bus.verify(CHECK_TIMEOUT).await }).await
        };
        *self
            .kafka
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), check.status == "ok"));
        check
    }
}

async fn timed<T, E: std::error::Error + 'static>(
    name: &'static str,
    check: impl std::future::Future<Output = Result<T, E>>,
) -> Check {
    let started = Instant::now();
    let status = match tokio::time::timeout(CHECK_TIMEOUT + Duration::from_millis(500), check).await {
        Ok(Ok(_)) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(
                dependency = name,
                error = &e as &dyn std::error::Error,
                "readiness: a dependency does not answer"
            );
            "unavailable"
        }
        Err(_) => "timed out",
    };
    Check {
        status,
        millis: started.elapsed().as_millis() as u64,
    }
}
