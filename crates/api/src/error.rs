//! The API's error boundary: every failure becomes an RFC 9457 `application/problem+json` response with a
//! stable `type`, and internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orderflow_domain::{FieldError, ValidationErrors};
use serde::Serialize;

/// Everything an API handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (`content-type` is something else).
    #[error("expected content-type application/json, got {0}")]
    UnsupportedMediaType(String),
    /// The body is not well-formed JSON.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body could not be read (too large, connection dropped).
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    /// The body is larger than the API accepts.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is JSON but some fields are missing, of the wrong type or out of range.
    #[error("{0}")]
    Validation(ValidationErrors),
    /// A path parameter is not a valid order id.
    #[error("'{0}' is not a valid order id (expected a UUID)")]
    InvalidOrderId(String),
    /// A query parameter is unknown, malformed or out of range.
    #[error("{0}")]
    BadQuery(String),
    /// No order has this id.
    #[error("no order with id {0}")]
    OrderNotFound(String),
    /// No route matches the path.
    #[error("no resource at {0}")]
    RouteNotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The order's status does not allow the change asked for.
    #[error("{0}")]
    Transition(orderflow_domain::TransitionError),
    /// The order changed concurrently too many times while the request was deciding.
    #[error("{0}")]
    Conflict(String),
    /// A dependency (the database) is unavailable; the client may retry.
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "/problems/unsupported-media-type",
                "Unsupported media type",
            ),
            Self::MalformedJson(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/malformed-json",
                "Malformed JSON",
            ),
            Self::BadBody(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/unreadable-body",
                "Unreadable request body",
            ),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "/problems/payload-too-large",
                "Request body too large",
            ),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation",
                "The request has invalid fields",
            ),
            Self::InvalidOrderId(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/invalid-order-id",
                "Invalid order id",
            ),
            Self::BadQuery(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/invalid-query",
                "Invalid query parameter",
            ),
            Self::OrderNotFound(_) => (
                StatusCode::NOT_FOUND,
                "/problems/order-not-found",
                "Order not found",
            ),
            Self::RouteNotFound(_) => (StatusCode::NOT_FOUND, "/problems/not-found", "Not found"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "/problems/method-not-allowed",
                "Method not allowed",
            ),
            Self::Transition(_) => (
                StatusCode::CONFLICT,
                "/problems/invalid-transition",
                "The order's status does not allow this",
            ),
            Self::Conflict(_) => (StatusCode::CONFLICT, "/problems/conflict", "Concurrent change"),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service temporarily unavailable",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        if let Self::Unavailable(cause) = &self {
            tracing::error!(cause = %cause, "request failed: dependency unavailable");
        }
        let problem = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                Self::Validation(v) => Some(v.errors()),
                _ => None,
            },
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge(crate::MAX_BODY_BYTES)
        } else {
            Self::BadBody(e.body_text())
        }
    }
}

impl From<orderflow_store::StoreError> for ApiError {
    fn from(e: orderflow_store::StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
