//! What operators use to run the platform: readiness, the live console, holding and releasing consumers,
//! and the ops listener that serves metrics and probes for processes without the API.
//!
//! | route | served on | what |
//! | --- | --- | --- |
//! | `GET /readyz` | API and ops listener | dependencies reachable, consumers assigned, not shutting down |
//! | `GET /` | API | the console: one page that refreshes itself from `/console/state` |
//! | `GET /console/state` | API | the console's figures as JSON |
//! | `GET /admin/consumers` | API | every consumer of this process, with its live counters |
//! | `POST /admin/consumers/{group}/hold`, `.../release` | API | stop starting new batches; start again |
//! | `GET /metrics`, `GET /healthz` | ops listener (the API serves its own) | Prometheus text; liveness |

mod console;
mod readiness;
mod timeline;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use orderflow_consumer::{ConsumerHandle, ConsumerRuntime};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::telemetry::RoleEvent;
use crate::{Backends, Role};

pub use readiness::Readiness;

/// The consumers running in this process, by role; roles register theirs as they start.
#[derive(Clone, Default)]
pub struct Consumers(Arc<Mutex<Vec<(Role, ConsumerHandle)>>>);

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list().iter().map(|(r, h)| (r.name(), h.group())))
            .finish()
    }
}

impl Consumers {
    /// Registers `runtime` as one of `role`'s consumers and gives it back.
    pub fn watch<H: orderflow_consumer::Handler>(
        &self,
        role: Role,
        runtime: ConsumerRuntime<H>,
    ) -> ConsumerRuntime<H> {
        let handle = runtime.handle();
        let mut list = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        list.retain(|(_, h)| h.group() != handle.group());
        list.push((role, handle));
        runtime
    }

    /// Every registered consumer, in start order.
    pub fn list(&self) -> Vec<(Role, ConsumerHandle)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The consumer of `group` (its full name, or its name without the deployment prefix).
    pub fn find(&self, group: &str) -> Option<ConsumerHandle> {
        self.list()
            .into_iter()
            .map(|(_, h)| h)
            .find(|h| h.group() == group || h.group().rsplit('.').next() == Some(group))
    }
}

/// What the operator routes need; cheap to clone.
#[derive(Clone)]
pub struct OpsState {
    backends: Backends,
    readiness: Arc<Readiness>,
    console: Arc<console::Console>,
}

impl OpsState {
    /// State for a process running `roles` on `backends`, not ready once `shutdown` fires.
    pub fn new(backends: Backends, roles: Vec<Role>, shutdown: CancellationToken) -> Self {
        let readiness = Arc::new(Readiness::new(backends.clone(), roles.clone(), shutdown.clone()));
        let console = Arc::new(console::Console::new(roles));
        tokio::spawn(timeline::sample(
            console.timeline.clone(),
            backends.consumers.clone(),
            shutdown.clone(),
        ));
        Self {
            backends,
            readiness,
            console,
        }
    }
}

/// The operator routes merged into the API (behind the gateway when it runs): readiness, the console
/// and consumer holds, with their OpenAPI description.
pub fn api_routes(state: OpsState) -> OpenApiRouter {
    use orderflow_api::answer_405;
    OpenApiRouter::new()
        .routes(answer_405(routes!(readyz)))
        .routes(answer_405(routes!(console::page)))
        .routes(answer_405(routes!(console_state)))
        .routes(answer_405(routes!(consumers)))
        .routes(answer_405(routes!(hold)))
        .routes(answer_405(routes!(release)))
        .with_state(state)
}

/// The ops listener's routes: metrics, liveness and readiness, for processes that serve no API.
pub fn listener_routes(state: OpsState) -> Router {
    ops_routes(Router::new().route("/readyz", get(readyz)).with_state(state))
}

/// `/healthz` and `/metrics` beside `app`'s routes, with problem+json 404 and 405 answers.
fn ops_routes(app: Router) -> Router {
    use orderflow_api::method_not_allowed as other;
    app.route("/healthz", get(orderflow_api::healthz).fallback(other))
        .route("/metrics", get(orderflow_api::metrics::render).fallback(other))
        .fallback(orderflow_api::not_found)
}

/// The ops listener of a standalone gateway (no database, no Kafka): metrics, liveness, and readiness that
/// fails only once shutdown began.
pub fn gateway_listener_routes(shutdown: CancellationToken) -> Router {
    let ready = move || {
        let shutting_down = shutdown.is_cancelled();
        async move {
            let status = if shutting_down {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let body = serde_json::json!({
                "status": if shutting_down { "not ready" } else { "ready" },
                "roles": ["gateway"],
                "shutting_down": shutting_down,
                "dependencies": {},
                "consumers": [],
                "reasons": if shutting_down { vec!["shutting down"] } else { Vec::new() },
            });
            (status, axum::Json(body))
        }
    };
    ops_routes(Router::new().route("/readyz", get(ready)))
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    summary = "Ready for traffic: dependencies answer, every consumer has partitions, not shutting down",
    responses(
        (status = 200, description = "Ready", body = readiness::Report),
        (status = 503, description = "Not ready", body = readiness::Report),
    )
)]
async fn readyz(State(state): State<OpsState>) -> Response {
    let report = state.readiness.check().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

#[utoipa::path(
    get,
    path = "/console/state",
    operation_id = "consoleState",
    summary = "The figures of the console at / (scope admin)",
    responses(
        (status = 200, description = "Roles, consumers, lag, dead letters, cache, end-to-end latency and the \
            newest orders", body = console::ConsoleState),
        (status = 503, description = "The database does not answer", body = Object,
            content_type = "application/problem+json"),
    )
)]
async fn console_state(State(state): State<OpsState>) -> Response {
    match state.console.state(&state.backends).await {
        Ok(figures) => axum::Json(figures).into_response(),
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "console: reading the recent orders failed"
            );
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database does not answer",
                "",
            )
        }
    }
}

#[utoipa::path(
    get,
    path = "/admin/consumers",
    operation_id = "listConsumers",
    summary = "The consumers of this process with their live counters (scope admin)",
    responses((status = 200, description = "Every consumer", body = Vec<ConsumerView>))
)]
async fn consumers(State(state): State<OpsState>) -> Response {
    axum::Json(consumer_views(&state.backends.consumers)).into_response()
}

#[utoipa::path(
    post,
    path = "/admin/consumers/{group}/hold",
    operation_id = "holdConsumer",
    summary = "Hold a consumer: it keeps its partitions but starts no new batch, so its lag grows (scope admin)",
    params(("group" = String, Path, description = "A consumer group of this process (with or without the \
        deployment prefix)")),
    responses(
        (status = 200, description = "The consumer, as it is now", body = ConsumerView),
        (status = 404, description = "No consumer of that group runs in this process", body = Object,
            content_type = "application/problem+json"),
    )
)]
async fn hold(State(state): State<OpsState>, Path(group): Path<String>) -> Response {
    set_held(&state, &group, true)
}

#[utoipa::path(
    post,
    path = "/admin/consumers/{group}/release",
    operation_id = "releaseConsumer",
    summary = "Release a held consumer (scope admin)",
    params(("group" = String, Path, description = "A consumer group of this process (with or without the \
        deployment prefix)")),
    responses(
        (status = 200, description = "The consumer, as it is now", body = ConsumerView),
        (status = 404, description = "No consumer of that group runs in this process", body = Object,
            content_type = "application/problem+json"),
    )
)]
async fn release(State(state): State<OpsState>, Path(group): Path<String>) -> Response {
    set_held(&state, &group, false)
}

fn set_held(state: &OpsState, group: &str, held: bool) -> Response {
    match state.backends.consumers.find(group) {
        Some(handle) => {
            handle.set_held(held);
            tracing::info!(
                group = handle.group(),
                held,
                "an operator changed a consumer's hold"
            );
            axum::Json(consumer_view(None, &handle)).into_response()
        }
        None => problem(
            StatusCode::NOT_FOUND,
            "No such consumer",
            &format!("no consumer of group '{group}' runs in this process"),
        ),
    }
}

/// One consumer as the operator routes show it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Consumer)]
pub(crate) struct ConsumerView {
    /// The role it serves (null in the answer to a hold or release).
    role: Option<&'static str>,
    /// Its consumer group.
    group: String,
    /// Partitions it holds.
    assigned_partitions: u64,
    /// Partitions paused for backpressure.
    paused_partitions: u64,
    /// Batches being handled.
    in_flight_batches: u64,
    /// Records handled since start.
    processed: u64,
    /// Offset commits since start.
    commits: u64,
    /// Whether an operator holds it.
    held: bool,
}

/// One consumer as the operator routes show it.
fn consumer_view(role: Option<Role>, handle: &ConsumerHandle) -> ConsumerView {
    let stats = handle.stats();
    ConsumerView {
        role: role.map(|r| r.name()),
        group: handle.group().to_owned(),
        assigned_partitions: stats.assigned(),
        paused_partitions: stats.paused(),
        in_flight_batches: stats.in_flight(),
        processed: stats.processed(),
        commits: stats.commits(),
        held: handle.is_held(),
    }
}

fn consumer_views(consumers: &Consumers) -> Vec<ConsumerView> {
    consumers
        .list()
        .iter()
        .map(|(role, handle)| consumer_view(Some(*role), handle))
        .collect()
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail});
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// Samples the database pool into `orderflow_db_pool_connections{state}` and
/// `orderflow_db_pool_max_connections` every second until `shutdown` fires.
pub async fn sample_pool(store: orderflow_store::Store, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (open, idle, max) = store.pool_usage();
        RoleEvent::DbPool { open, idle, max }.emit();
    }
}
