//! The gateway role: the only door to the API. In a process that also runs the orders role it guards the
//! in-process API on `http.listen`; alone it forwards what passes its checks to `gateway.upstreams`.
//!
//! When no credential is configured and `gateway.dev_key` is on (the embedded default), it creates a
//! development API key with every scope in `<data_dir>/api-key` (readable by the owner only) and uses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use orderflow_cache::CacheError;
use orderflow_gateway::{Authenticator, Gateway, Scopes, Upstreams};
use orderflow_redis::RedisConnection;
use tokio_util::sync::CancellationToken;

use crate::{RoleError, Settings};

/// A started standalone gateway: its bound address and the future that serves until shutdown.
pub struct RunningGateway {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// Whether rate limits are shared with other instances through Redis.
    pub shared_limits: bool,
    /// Serves until `shutdown` fires.
    pub serve: BoxFuture<'static, Result<(), RoleError>>,
}

/// The file holding the development API key.
pub fn dev_key_path(settings: &Settings) -> PathBuf {
    settings.data_dir().join("api-key")
}

/// Reads the development key, creating it (owner-only permissions) when missing.
fn dev_key(path: &Path) -> Result<String, RoleError> {
    let io = |what: &'static str, source: std::io::Error| RoleError::DevKey {
        path: path.to_owned(),
        what,
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(key) if !key.trim().is_empty() => return Ok(key.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create its folder", e))?;
    }
    let bytes: [u8; 24] = rand::random();
    let key: String = std::iter::once("ofk_".to_owned())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| io("create", e))?;
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes()).map_err(|e| io("write", e))?;
    tracing::info!(path = %path.display(), "created a development API key with every scope");
    Ok(key)
}

/// Builds the gateway from `settings`, limiting rates in `redis` when given.
pub fn build(settings: &Settings, redis: Option<RedisConnection>) -> Result<Gateway, RoleError> {
    let gateway = &settings.gateway;
    let mut auth = Authenticator::new(gateway)?;
    if !gateway.has_credentials() {
        if !gateway.dev_key {
            return Err(RoleError::Settings(
                "the gateway has no credentials: configure gateway.api_keys or gateway.jwt (or allow gateway.dev_key)"
                    .into(),
            ));
        }
        let key = dev_key(&dev_key_path(settings))?;
        auth.add_key("dev", &key, Scopes::all());
    }
    Ok(Gateway::new(gateway, auth, redis, &settings.cache.key_prefix)?)
}

/// Binds `http.listen` and forwards what passes the gateway's checks to `gateway.upstreams`. Connects to
/// Redis for shared rate limits when `redis` is not given but one is configured.
pub async fn start_proxy(
    settings: &Settings,
    redis: Option<RedisConnection>,
    shutdown: CancellationToken,
) -> Result<RunningGateway, RoleError> {
    let redis = match redis {
        Some(conn) => Some(conn),
        None => match settings.cache.redis_target()? {
            Some(target) => Some(
                RedisConnection::connect(&target)
                    .await
                    .map_err(CacheError::from)?,
            ),
            None => None,
        },
    };
    let gateway = build(settings, redis)?;
    let upstreams = Upstreams::new(&settings.gateway.upstreams, settings.gateway.max_body_bytes)?;
    let (listener, addr) = crate::bind(settings.http.listen).await?;
    let shared_limits = gateway.shares_limits();
    let app = gateway.proxy(upstreams);
    let serve = crate::serve_http(listener, addr, app, settings.http.tls.clone(), shutdown);
    Ok(RunningGateway {
        addr,
        shared_limits,
        serve: Box::pin(serve),
    })
}
