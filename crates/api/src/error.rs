//! The API's error boundary: every failure becomes an RFC 9457 `application/problem+json` response with a
//! stable `type`, and internal details are logged, never sent.
//!
//! A client error's `detail` says why, its cause included (`the request body is not valid JSON: expected
//! value at line 1 column 1`); a server error's `detail` says only what happened, and its whole cause chain
//! goes to the log, once, here.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orderflow_domain::{FieldError, ValidationErrors};
use serde::Serialize;

/// The error behind a server error: shared, as the order cache hands one load error to every request that
/// waited for it.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Everything an API handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (`content-type` is something else).
    #[error("expected content-type application/json, got {0}")]
    UnsupportedMediaType(String),
    /// The body is not well-formed JSON.
    #[error("the request body is not valid JSON")]
    MalformedJson(#[source] serde_json::Error),
    /// The body could not be read (too large, connection dropped).
    #[error("the request body could not be read")]
    BadBody(#[source] axum::extract::rejection::BytesRejection),
    /// The body is larger than the API accepts.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is JSON but some fields are missing, of the wrong type or out of range.
    #[error(transparent)]
    Validation(ValidationErrors),
    /// Lines quote a unit price that is not the catalogue's (409, one entry per line).
    #[error("the prices quoted differ from the catalogue's")]
    PriceChanged(ValidationErrors),
    /// The `Idempotency-Key` header is malformed.
    #[error("the Idempotency-Key header is invalid: {0}")]
    InvalidIdempotencyKey(String),
    /// The idempotency key was first used for a different request.
    #[error("idempotency key '{0}' was already used for a different request (method, path or body)")]
    IdempotencyKeyReused(String),
    /// The body names a customer other than the one the caller's credential is bound to.
    #[error("this credential places orders for customer '{0}' only")]
    ForeignCustomer(String),
    /// A path parameter is not a valid order id.
    #[error("'{0}' is not a valid order id (expected a UUID)")]
    InvalidOrderId(String),
    /// A query parameter is unknown, malformed or out of range.
    #[error("{0}")]
    BadQuery(String),
    /// A query parameter is not an RFC 3339 time.
    #[error("'{name}' is not an RFC 3339 time ({value})")]
    BadTime {
        /// The parameter.
        name: String,
        /// Its value.
        value: String,
        /// Why it does not parse.
        #[source]
        source: chrono::ParseError,
    },
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
    #[error(transparent)]
    Transition(orderflow_domain::TransitionError),
    /// The order changed concurrently too many times while the request was deciding.
    #[error("{0}")]
    Conflict(String),
    /// A dependency (the database, Redis) cannot be reached or is too busy; the client may retry (503 with
    /// `Retry-After`).
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] Cause),
    /// A fault of the service itself (an event that does not fit its schema, a corrupt row); retrying does
    /// not help (500).
    #[error("the request could not be completed")]
    Internal(#[source] Cause),
}

impl ApiError {
    /// An error of the store: 503 when the database cannot be reached or is too busy, else 500.
    pub fn store(error: orderflow_store::StoreError) -> Self {
        if error.is_unavailable() {
            Self::Unavailable(Arc::new(error))
        } else {
            Self::Internal(Arc::new(error))
        }
    }

    /// A load through the order cache failed: classified like a store error when it is one (the loader
    /// reads the store), else unavailable.
    pub fn load(error: Cause) -> Self {
        match error.downcast_ref::<orderflow_store::StoreError>() {
            Some(store) if !store.is_unavailable() => Self::Internal(error),
            _ => Self::Unavailable(error),
        }
    }
}

/// An RFC 9457 problem document: what every error answer of the API carries.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub(crate) struct Problem<'a> {
    /// What kind of problem (`/problems/validation`, `/problems/order-not-found`, ...).
    #[serde(rename = "type")]
    kind: &'static str,
    /// A short summary of the kind.
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// What happened, for a person.
    detail: String,
    /// One entry per offending field (validation and changed prices).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldProblem>>)]
    errors: Option<&'a [FieldError]>,
}

/// One offending field of a problem document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes how a `FieldError` is written.
pub(crate) struct FieldProblem {
    /// The field's path, such as `items[0].quantity` (`""` for the document itself).
    field: String,
    /// Why it is refused.
    message: String,
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
            Self::PriceChanged(_) => (
                StatusCode::CONFLICT,
                "/problems/price-changed",
                "Quoted prices differ from the catalogue",
            ),
            Self::InvalidIdempotencyKey(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/invalid-idempotency-key",
                "Invalid Idempotency-Key header",
            ),
            Self::IdempotencyKeyReused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/idempotency-key-reused",
                "Idempotency key already used for another request",
            ),
            Self::ForeignCustomer(_) => (
                StatusCode::FORBIDDEN,
                "/problems/foreign-customer",
                "Orders for another customer are not allowed",
            ),
            Self::InvalidOrderId(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/invalid-order-id",
                "Invalid order id",
            ),
            Self::BadQuery(_) | Self::BadTime { .. } => (
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
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "/problems/internal",
                "Internal error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        let detail = if status.is_server_error() {
            let message = match &self {
                Self::Unavailable(_) => "request failed: dependency unavailable",
                _ => "request failed",
            };
            tracing::error!(error = &self as &dyn std::error::Error, "{message}");
            self.to_string()
        } else {
            orderflow_telemetry::ErrorChain(&self).to_string()
        };
        let problem = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
            errors: match &self {
                Self::Validation(v) | Self::PriceChanged(v) => Some(v.errors()),
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
            Self::BadBody(e)
        }
    }
}

impl From<orderflow_store::StoreError> for ApiError {
    fn from(e: orderflow_store::StoreError) -> Self {
        Self::store(e)
    }
}

impl From<orderflow_events::CodecError> for ApiError {
    /// Encoding an event fails only on a fault of the service (an event that does not fit its schema).
    fn from(e: orderflow_events::CodecError) -> Self {
        Self::Internal(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::to_bytes;
    use chrono::Utc;
    use orderflow_domain::{NewOrder, Order};
    use orderflow_events::{AvroCodec, OrderCreated};
    use orderflow_registry::{MemoryStorage, RegistryService};
    use orderflow_store::Store;

    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, Option<HeaderValue>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let body = to_bytes(response.into_body(), 64 * 1024).await.expect("body");
        (
            status,
            retry_after,
            serde_json::from_slice(&body).expect("problem json"),
        )
    }

    #[tokio::test]
    async fn an_event_that_does_not_fit_its_schema_is_a_500_without_retry_after() {
        let registry = Arc::new(RegistryService::new(Arc::new(MemoryStorage::default())));
        let codec = AvroCodec::connect(registry, "").await.expect("codec");
        let doc = serde_json::json!({"customer_id": "c1", "currency": "EUR",
            "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 100}]});
        let order = Order::create(NewOrder::parse(&doc).expect("valid order"), Utc::now());
        let mut event = OrderCreated::from_order(&order);
        event.event_id = "not-a-uuid".into();
        let Err(error) = codec.encode(&event, None) else {
            unreachable!("an event id that is not a UUID does not encode");
        };
        let (status, retry_after, problem) = answer(ApiError::from(error)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None, "retrying does not fix a schema fault");
        assert_eq!(problem["type"], "/problems/internal");
        assert_eq!(problem["status"], 500);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.contains("not-a-uuid"),
            "the cause stays in the log: {detail}"
        );
    }

    #[tokio::test]
    async fn a_database_that_cannot_be_reached_is_a_503_with_retry_after() {
        // Nothing listens on port 1: the connection is refused at once.
        let Err(error) = Store::connect("postgres://orderflow:s3cret@127.0.0.1:1/orders", 1).await else {
            unreachable!("nothing listens on port 1");
        };
        assert!(error.is_unavailable(), "{error:?}");
        let (status, retry_after, problem) = answer(ApiError::from(error)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_ref().and_then(|v| v.to_str().ok()), Some("1"));
        assert_eq!(problem["type"], "/problems/unavailable");
        assert_eq!(problem["detail"], "the service is temporarily unavailable");
        assert!(!problem.to_string().contains("s3cret"));
    }

    #[tokio::test]
    async fn a_client_error_keeps_its_cause_in_the_detail() {
        let Err(cause) = serde_json::from_slice::<serde_json::Value>(b"{") else {
            unreachable!("an unclosed object is not JSON");
        };
        let (status, retry_after, problem) = answer(ApiError::MalformedJson(cause)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(retry_after, None);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("the request body is not valid JSON: EOF while parsing"),
            "{detail}"
        );
    }
}
