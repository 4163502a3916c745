//! The gateway's error boundary: every refusal is an RFC 9457 `application/problem+json` answer.

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::telemetry::GatewayEvent;

/// Why the gateway refused or could not forward a request.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No credential, or one that is not valid (unknown key, bad signature, expired token).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential without the scope the route needs.
    #[error("this route needs the scope '{0}'")]
    Forbidden(&'static str),
    /// The client spent its budget; it may retry after the given seconds.
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until one more request is allowed.
        retry_after_secs: u64,
    },
    /// The request body is larger than allowed.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The request could not be read (the detail adds why).
    #[error("the request body could not be read")]
    BadRequest(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An upstream failed after the request may have reached it; its failure is kept for the log, never
    /// sent. Whether the request took effect is unknown.
    #[error("no orders instance could be reached")]
    BadGateway(#[source] Option<UpstreamError>),
    /// Every upstream refused the connection, so the request reached none of them and is safe to send
    /// again: answered `503` with `Retry-After`. The last refusal is kept for the log, never sent.
    #[error("no orders instance is accepting connections")]
    Unavailable(#[source] Option<UpstreamError>),
    /// The request took longer than allowed.
    #[error("the request took longer than {0} ms")]
    Timeout(u64),
}

/// An upstream that could not be reached or failed mid-request.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream}")]
pub struct UpstreamError {
    /// Which upstream.
    pub upstream: String,
    /// The HTTP client's error.
    #[source]
    pub source: hyper_util::client::legacy::Error,
}

#[derive(Serialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
}

impl Rejection {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "/problems/unauthenticated",
                "Authentication required",
            ),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "/problems/forbidden", "Missing scope"),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/rate-limited",
                "Too many requests",
            ),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "/problems/payload-too-large",
                "Request body too large",
            ),
            Self::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/unreadable-body",
                "Unreadable request body",
            ),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "/problems/bad-gateway", "Bad gateway"),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service unavailable",
            ),
            Self::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "/problems/timeout",
                "The request timed out",
            ),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        // The reason is the problem type's last segment: `unauthenticated`, `forbidden`, `rate-limited`, ...
        let reason = kind.rsplit('/').next().unwrap_or(kind);
        GatewayEvent::Rejected { reason }.emit();
        if let Self::BadGateway(_) | Self::Unavailable(_) = &self {
            tracing::error!(error = &self as &dyn std::error::Error, "no upstream answered");
        }
        // A client error's detail says why (its cause included); a server error's says only what happened.
        let detail = if status.is_server_error() {
            self.to_string()
        } else {
            orderflow_telemetry::ErrorChain(&self).to_string()
        };
        let problem = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"orderflow\""),
                );
            }
            Self::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            _ => {}
        }
        response
    }
}

/// Why the gateway could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A key or secret file could not be read.
    #[error("cannot read {what} from {path}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("gateway settings: {0}")]
    Settings(String),
    /// An upstream URL does not parse.
    #[error("gateway settings: upstream '{url}' is not a URL")]
    Upstream {
        /// The URL as configured.
        url: String,
        /// Why it does not parse.
        #[source]
        source: axum::http::uri::InvalidUri,
    },
    /// The JWKS file is not a JWK set.
    #[error("gateway settings: {path} is not a JWK set")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A public key or secret is not usable.
    #[error("gateway key {name}")]
    Key {
        /// Which key.
        name: String,
        /// Why.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}
