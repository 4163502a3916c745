//! The orders role: the HTTP API, beside it the outbox relay that publishes what the API commits, the
//! [`status`] follower that moves each order along the pipeline's outcomes, and the [`sweeper`] that reports
//! orders that stopped moving.

mod status;
pub(crate) mod sweeper;

use std::net::SocketAddr;

use futures::future::BoxFuture;
use orderflow_api::AppState;
use orderflow_outbox::OutboxRelay;
use tokio_util::sync::CancellationToken;

use crate::{Backends, RoleError, Settings};

/// The topics the status follower consumes.
pub const FOLLOWED: [orderflow_events::LifecycleTopic; 4] = status::OUTCOMES;

/// A started orders role: its bound address and the future that serves until shutdown.
pub struct RunningOrders {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Serves HTTP and relays the outbox until `shutdown` fires.
    pub serve: BoxFuture<'static, Result<(), RoleError>>,
}

/// Binds the listener and prepares the relay; nothing is served until `serve` is polled. With a
/// `gateway`, the API is served behind its checks.
pub async fn start(
    settings: &Settings,
    backends: &Backends,
    gateway: Option<orderflow_gateway::Gateway>,
    ops: crate::ops::OpsState,
    shutdown: CancellationToken,
) -> Result<RunningOrders, RoleError> {
    let (listener, addr) = crate::bind(settings.http.listen).await?;

    let relay = OutboxRelay::new(
        backends.store.clone(),
        backends.bus.clone(),
        settings.relay.clone(),
    )?;
    let state = AppState {
        store: backends.store.clone(),
        orders: orderflow_store::OrderWriter::spawn(backends.store.clone(), Default::default()),
        catalogue: orderflow_api::Catalogue::new(backends.store.clone()),
        idempotency_ttl: std::time::Duration::from_secs(settings.orders.idempotency_ttl_secs.max(1)),
        cache: backends.cache.clone(),
        codec: backends.codec.clone(),
        registry: backends.registry.clone(),
        analytics: backends.analytics.clone(),
        relay_wakeup: Some(relay.wakeup()),
    };
    let app = orderflow_api::router_with(state, crate::ops::api_routes(ops));
    let app = match gateway {
        Some(gateway) => gateway.wrap(app),
        None => app,
    };
    let tls = settings.http.tls.clone();
    let (status_group, follower_backends) = (settings.orders.status_group.clone(), backends.clone());
    let (sweep_store, sweep_bus, sweep_settings) = (
        backends.store.clone(),
        backends.bus.clone(),
        settings.orders.clone(),
    );
    let drive = settings
        .orders
        .drive_on_stranded
        .then(|| {
            sweeper::DriveOn::new(
                backends.store.clone(),
                &backends.bus,
                backends.codec.clone(),
                settings,
            )
        })
        .transpose()?;
    let serve = async move {
        let http_shutdown = shutdown.clone();
        let http = crate::serve_http(listener, addr, app, tls, http_shutdown);
        let relay_task = async { relay.run(shutdown.clone()).await.map_err(RoleError::from) };
        let follow = status::run(status_group, follower_backends, shutdown.clone());
        let sweep = sweeper::run(sweep_store, sweep_bus, sweep_settings, drive, shutdown.clone());
        let (http, relayed, followed, ()) = tokio::join!(http, relay_task, follow, sweep);
        http.and(relayed).and(followed)
    };
    Ok(RunningOrders {
        addr,
        serve: Box::pin(serve),
    })
}
