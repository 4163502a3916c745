//! `GET /metrics`: every metric the process records through the `metrics` facade, in the Prometheus text
//! format, and the HTTP request metrics ([`track`]). The recorder is process-wide: [`install`] it once at
//! start-up, before the components that register metrics (the cache, the consumer runtime) are built.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `orderflow_http_requests_total` | counter | route (the matched pattern), method, status |
//! | `orderflow_http_request_duration_seconds` | histogram | route, method |

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ApiError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Bucket bounds (seconds) of every `*_seconds` histogram: 1 ms to 30 s, dense where the SLOs are.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("installing the metrics recorder")]
pub struct MetricsError(#[source] metrics_exporter_prometheus::BuildError);

/// Installs the Prometheus recorder as the process's metrics recorder (once; later calls are no-ops).
/// Histograms named `*_seconds` get [`LATENCY_BUCKETS`], so quantiles can be aggregated across instances.
pub fn install() -> Result<(), MetricsError> {
    // Callers may race (tests of one binary do): one installs, the others find it installed.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(MetricsError)?
        .install_recorder()
        .map_err(MetricsError)?;
    let _ = HANDLE.set(handle);
    Ok(())
}

/// The current metrics in the Prometheus text format, when a recorder was installed in this process.
pub fn snapshot() -> Option<String> {
    HANDLE.get().map(|handle| {
        handle.run_upkeep();
        handle.render()
    })
}

/// Serves [`snapshot`]; 404 problem+json when no recorder was installed in this process.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics of this process, in the text exposition format (scope admin)",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain"),
        (status = 404, description = "No metrics recorder runs in this process", body = crate::error::Problem,
            content_type = "application/problem+json"),
    )
)]
pub async fn render() -> Response {
    match snapshot() {
        Some(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        None => ApiError::RouteNotFound("/metrics".into()).into_response(),
    }
}

/// The method as a label: one of the standard methods, or `_OTHER` (HTTP allows any token as a method, and
/// labels must stay few whatever callers send).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// Middleware counting requests and timing them per route pattern (`/v1/orders/{id}`, never the id, so
/// the series stay few), method and status. Requests matching no route count as `route="unmatched"`.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        "orderflow_http_request_duration_seconds",
        "route" => route.clone(),
        "method" => method
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "orderflow_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status
    )
    .increment(1);
    response
}
