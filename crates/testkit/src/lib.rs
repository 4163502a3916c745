//! Test harness: real PostgreSQL, redis-server (standalone, TLS, Cluster) and Apache Kafka (KRaft) servers on 127.0.0.1.
//!
//! Each server runs as a child process on free ports with its data in a temp dir. The shared accessors
//! ([`postgres`], [`redis`], [`kafka`]) start one server per test binary on first use; tests isolate
//! themselves with a fresh database ([`PostgresServer::fresh_database`]) and unique names ([`unique`]).
//! Servers and their directories are removed when the test binary exits, even when it crashes or a test
//! fails: a watchdog process outlives the binary for that purpose. No docker involved.

pub mod checks;
mod kafka;
mod kafka_cluster;
mod postgres;
mod process;
mod proxy;
mod python;
mod redis;
mod redis_cluster;
mod topic_reader;
pub mod workload;

use std::sync::OnceLock;

pub use kafka::{Acl, KAFKA_ADMIN, KAFKA_VERSION, KafkaServer, kafka_jars};
pub use kafka_cluster::KafkaCluster;
pub use postgres::PostgresServer;
pub use process::{free_port, log_tail, temp_dir};
pub use proxy::TcpProxy;
pub use python::{console_check, interop_python, schemathesis};
pub use redis::{RedisServer, make_certificates};
pub use redis_cluster::RedisCluster;
pub use topic_reader::{Record, read_topic};

/// Why a server could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program the harness needs is not installed.
    #[error("{0}")]
    Missing(String),
    /// A system call failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not become ready in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server or a setup step reported an error.
    #[error("{0}")]
    Failed(String),
    /// A setup step failed with an error of its own.
    #[error("{what}")]
    Step {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A server did not become ready; the end of its log says more.
    #[error("the server did not become ready (the end of its log:\n{log}\n)")]
    NotReady {
        /// The last lines of the server's log.
        log: String,
        /// Why waiting ended (a timeout).
        #[source]
        source: Box<HarnessError>,
    },
}

impl HarnessError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_owned(),
            source,
        }
    }

    pub(crate) fn step(
        what: impl Into<String>,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Self {
        let what = what.into();
        move |source| Self::Step { what, source }
    }

    pub(crate) fn not_ready(log: String) -> impl FnOnce(HarnessError) -> Self {
        move |source| Self::NotReady {
            log,
            source: Box::new(source),
        }
    }
}

/// Returns the shared server, starting it on first use; a server that cannot start fails the test loudly.
fn shared<T>(
    cell: &'static OnceLock<T>,
    name: &str,
    start: impl FnOnce() -> Result<T, HarnessError>,
) -> &'static T {
    cell.get_or_init(|| match start() {
        Ok(server) => server,
        // The harness is test-only: a test without its server cannot run, so stop it with the reason.
        #[allow(clippy::panic)]
        Err(e) => panic!("test harness could not start {name}: {:#}", anyhow::Error::new(e)),
    })
}

/// The PostgreSQL server shared by this test binary.
pub fn postgres() -> &'static PostgresServer {
    static CELL: OnceLock<PostgresServer> = OnceLock::new();
    shared(&CELL, "PostgreSQL", PostgresServer::start)
}

/// The redis-server shared by this test binary.
pub fn redis() -> &'static RedisServer {
    static CELL: OnceLock<RedisServer> = OnceLock::new();
    shared(&CELL, "redis-server", RedisServer::start)
}

/// The six-node Redis Cluster (three masters, three replicas) shared by this test binary.
pub fn redis_cluster() -> &'static RedisCluster {
    static CELL: OnceLock<RedisCluster> = OnceLock::new();
    shared(&CELL, "a Redis Cluster", RedisCluster::start)
}

/// The Kafka broker shared by this test binary.
pub fn kafka() -> &'static KafkaServer {
    static CELL: OnceLock<KafkaServer> = OnceLock::new();
    shared(&CELL, "Kafka", KafkaServer::start)
}

/// A name unique within this machine, for per-test topics, groups and key prefixes: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}
