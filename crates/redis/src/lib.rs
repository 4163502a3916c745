//! The Redis connection shared by every part of Orderflow that keeps state in Redis: the read-model cache,
//! the analytics aggregates, the windowed join, the projector's read model, enrichment's reference data and
//! the gateway's rate limits.
//!
//! [`RedisTarget::resolve`] turns configuration (URLs, Cluster or not, CA and password files) into where and
//! how to connect; [`RedisConnection::connect`] opens a multiplexed, self-reconnecting connection to one
//! server or to a Cluster. [`Rebuild`] is the marker and lock of state that is rebuilt as a whole after Redis
//! loses it.

mod connection;
mod rebuild;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use connection::{
    CLUSTER_REBUILD_AFTER, ClusterHandle, REPLICATION_WAIT, RedisConnection, RedisTarget, subscribe,
};
pub use rebuild::{LOCK_MS as REBUILD_LOCK_MS, Rebuild, rebuild_token};

/// What can go wrong resolving where Redis is.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The CA file for TLS could not be read.
    #[error("reading the Redis CA file {path}")]
    CaFile {
        /// The file named in the settings.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The Redis password file could not be read.
    #[error("reading the Redis password file {path}")]
    PasswordFile {
        /// The file named in the settings.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
}

impl RedisTarget {
    /// Where Redis is, from configuration: `urls` is one URL or, for a Cluster, seed nodes separated by
    /// commas; the CA file (PEM) is trusted for `rediss://`; the password file's content (trimmed) is put
    /// into every URL. `None` when `urls` is empty.
    pub fn resolve(
        urls: &str,
        cluster: bool,
        ca_file: Option<&Path>,
        password_file: Option<&Path>,
    ) -> Result<Option<Self>, TargetError> {
        let urls: Vec<&str> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return Ok(None);
        }
        let ca_pem = match ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| TargetError::CaFile {
                path: path.to_owned(),
                source,
            })?),
            None => None,
        };
        let password = match password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| TargetError::PasswordFile {
                        path: path.to_owned(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let with_password = |u: &str| -> String {
            let Some(password) = &password else {
                return u.to_owned();
            };
            match url::Url::parse(u) {
                Ok(mut parsed) => match parsed.set_password(Some(password)) {
                    Ok(()) => parsed.to_string(),
                    Err(()) => u.to_owned(),
                },
                Err(_) => u.to_owned(),
            }
        };
        Ok(Some(Self {
            urls: urls.into_iter().map(with_password).collect(),
            cluster,
            ca_pem,
            connect_timeout: Duration::from_secs(2),
        }))
    }
}
