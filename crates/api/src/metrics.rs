//! `GET /metrics`: every metric the process records through the `metrics` facade, in the Prometheus text
//! format. The recorder is process-wide: [`install`] it once at start-up, before the components that
//! register metrics (the cache, the consumer runtime) are built.

use std::sync::OnceLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::ApiError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("installing the metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the Prometheus recorder as the process's metrics recorder (once; later calls are no-ops).
pub fn install() -> Result<(), MetricsError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))?;
    let _ = HANDLE.set(handle);
    Ok(())
}

/// Renders the current metrics; 404 when no recorder was installed in this process.
pub(crate) async fn render() -> Response {
    match HANDLE.get() {
        Some(handle) => {
            handle.run_upkeep();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => ApiError::RouteNotFound("/metrics".into()).into_response(),
    }
}
