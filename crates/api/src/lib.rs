//! The orders role's HTTP API (axum): routes, the problem+json error boundary, health endpoints and
//! `/metrics`.

mod analytics;
mod catalogue;
mod error;
mod idempotency;
pub mod identity;
mod listing;
pub mod metrics;
pub mod openapi;
mod orders;
mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use orderflow_cache::OrderCache;
use orderflow_events::AvroCodec;
use orderflow_registry::RegistryService;
use orderflow_store::Store;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

pub use catalogue::{Catalogue, PRICE_TTL};
pub use error::ApiError;
pub use idempotency::{HEADER as IDEMPOTENCY_KEY, MAX_KEY_CHARS};
pub use listing::{DEFAULT_LIMIT, MAX_LIMIT, OrderPage};
pub use orders::{OrderItemView, OrderView};
pub use tls::{TlsSettings, serve_tls};

/// Largest request body accepted (bytes).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler can reach; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The source of truth.
    pub store: Store,
    /// Writes new orders through group commits (concurrent POSTs share one transaction).
    pub orders: orderflow_store::OrderWriter,
    /// The order cache (in-process and Redis tiers).
    pub cache: OrderCache,
    /// Prices new orders from the product catalogue.
    pub catalogue: Catalogue,
    /// Encodes events for the outbox.
    pub codec: Arc<AvroCodec>,
    /// The embedded schema registry, served under `/registry` when present.
    pub registry: Option<RegistryService>,
    /// The analytics aggregates served under `/v1/analytics`.
    pub analytics: orderflow_analytics::Analytics,
    /// How long an `Idempotency-Key` is kept after its first use.
    pub idempotency_ttl: std::time::Duration,
    /// Poked after each committed write so the outbox relay publishes at once (when it runs in-process).
    pub relay_wakeup: Option<Arc<Notify>>,
}

/// The API's routes with tracing, a body limit and problem+json fallbacks.
pub fn router(state: AppState) -> Router {
    router_with(state, OpenApiRouter::new())
}

/// [`router`] with `extra` routes (the operator routes of the process) served beside the API's, behind the
/// same request metrics, tracing and body limit, and described in the same OpenAPI document.
pub fn router_with(state: AppState, extra: OpenApiRouter) -> Router {
    let (app, _) = router_and_document(state, extra);
    app
}

/// [`router_with`] and the OpenAPI document it serves at `/openapi.json`, generated from its routes.
pub fn router_and_document(state: AppState, extra: OpenApiRouter) -> (Router, utoipa::openapi::OpenApi) {
    let registry = state.registry.clone();
    let app = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(answer_405(routes!(orders::create, listing::list)))
        .routes(answer_405(routes!(orders::get)))
        .routes(answer_405(routes!(orders::cancel)))
        .routes(answer_405(routes!(analytics::revenue)))
        .routes(answer_405(routes!(analytics::orders_per_minute)))
        .routes(answer_405(routes!(analytics::customers)))
        .routes(answer_405(routes!(analytics::top_products)))
        .routes(answer_405(routes!(analytics::funnel)))
        .routes(answer_405(routes!(openapi::serve)))
        .routes(answer_405(routes!(healthz)))
        .routes(answer_405(routes!(metrics::render)))
        .with_state(state)
        .merge(extra);
    let app = match registry {
        Some(service) => app.nest("/registry", orderflow_registry::openapi_router(service)),
        None => app,
    };
    let (app, mut document) = app.split_for_parts();
    openapi::gateway_answers(&mut document);
    // A document of plain strings and numbers always renders.
    let rendered = serde_json::to_vec(&document).unwrap_or_default();
    let app = app
        .fallback(not_found)
        .layer(axum::Extension(openapi::Rendered(rendered.into())))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http().make_span_with(request_span));
    (app, document)
}

/// `route` with a problem+json `405` for the methods it does not serve.
pub fn answer_405<S: Clone + Send + Sync + 'static>(route: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
    let (schemas, paths, methods) = route;
    (schemas, paths, methods.fallback(method_not_allowed))
}

/// 404 problem+json naming the path: the fallback of every router the process serves.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

/// 405 problem+json: the fallback of a route for the methods it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// What `GET /healthz` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    status: &'static str,
}

/// `GET /healthz`: the process runs (nothing else is checked).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "The process is alive",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Serves `app` (the API's [`router`], possibly behind the gateway) on `listener` until `shutdown`
/// completes, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The span of one request: method, path and the request id the gateway (or the caller) gave it, so
/// log lines of one request can be found from the id the client saw.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Span names stay few: the route pattern and a known method, never the raw path.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = metrics::method_label(request.method());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = %route,
        path = %request.uri().path(),
        request_id = %id,
    );
    // Behind an in-process gateway, the gateway's span (which continued the caller's trace) is the parent.
    if tracing::Span::current().is_none()
        && let Some(parent) = request
            .headers()
            .get(orderflow_telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
    {
        orderflow_telemetry::set_parent(&span, parent);
    }
    span
}
