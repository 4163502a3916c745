//! Forwarding to the orders instances behind a standalone gateway: round-robin over the upstreams,
//! moving on to the next one when an upstream refuses the connection (the request was never sent, so
//! even a POST is safe to send elsewhere). When every upstream refuses, the answer is `503` with
//! `Retry-After`, since the request took no effect; a failure after the request may have been sent is `502`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, HeaderName, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{GatewayError, Rejection, UpstreamError};

/// The orders instances a gateway forwards to.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpConnector, Full<Bytes>>,
    targets: Vec<Authority>,
    next: AtomicUsize,
    max_body: usize,
}

/// Headers that describe one connection, not the request: never forwarded (RFC 9110, 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Upstreams {
    /// Upstreams from base URLs (`http://host:port`); `max_body` bounds the buffered request body.
    pub fn new(urls: &[String], max_body: usize) -> Result<Self, GatewayError> {
        if urls.is_empty() {
            return Err(GatewayError::Settings(
                "a standalone gateway needs gateway.upstreams (the orders instances' base URLs)".into(),
            ));
        }
        let mut targets = Vec::new();
        for url in urls {
            let uri: Uri = url.parse().map_err(|source| GatewayError::Upstream {
                url: url.clone(),
                source,
            })?;
            if uri.scheme() != Some(&Scheme::HTTP) {
                return Err(GatewayError::Settings(format!(
                    "upstream '{url}': only http:// upstreams are supported (the hop stays inside the deployment's network)"
                )));
            }
            let authority = uri
                .authority()
                .cloned()
                .ok_or_else(|| GatewayError::Settings(format!("upstream '{url}' has no host")))?;
            targets.push(authority);
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                targets,
                next: AtomicUsize::new(0),
                max_body,
            }),
        })
    }

    /// The axum handler forwarding every request.
    pub fn router(self) -> axum::Router {
        axum::Router::new().fallback(forward).with_state(self)
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether `error`, or an error it wraps (the gateway's own body limit arrives wrapped), is a length limit.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

async fn forward(State(upstreams): State<Upstreams>, request: Request) -> Response {
    let inner = &upstreams.inner;
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, inner.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if is_length_limit(e.as_ref()) => {
            return Rejection::PayloadTooLarge(inner.max_body).into_response();
        }
        Err(e) => return Rejection::BadRequest(e).into_response(),
    };
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let start = inner.next.fetch_add(1, Ordering::Relaxed);
    let mut last_error = None;
    for attempt in 0..inner.targets.len() {
        let target = &inner.targets[(start + attempt) % inner.targets.len()];
        let uri = match Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(target.clone())
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(e) => return Rejection::BadRequest(e.into()).into_response(),
        };
        let mut outgoing = axum::http::Request::new(Full::new(body.clone()));
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = uri;
        *outgoing.headers_mut() = headers.clone();
        match inner.client.request(outgoing).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return Response::from_parts(parts, Body::new(body));
            }
            Err(e) => {
                let failed = UpstreamError {
                    upstream: target.to_string(),
                    source: e,
                };
                if !failed.source.is_connect() {
                    return Rejection::BadGateway(Some(failed)).into_response();
                }
                // The last refusal is logged with the answer's error, not here too.
                if attempt + 1 < inner.targets.len() {
                    tracing::warn!(
                        error = &failed as &dyn std::error::Error,
                        "upstream refused the connection; trying the next"
                    );
                }
                last_error = Some(failed);
            }
        }
    }
    // Every upstream refused the connection: the request reached none, so a client may send it again.
    Rejection::Unavailable(last_error).into_response()
}
