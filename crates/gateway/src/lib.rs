//! The gateway: the only door to the API. It authenticates (API keys, JWT bearer tokens), checks the scope
//! each route needs, limits each client's request rate (in Redis, so the budget holds across gateway
//! instances), bounds body sizes and request time, and gives every request an id. It holds no business
//! data and publishes nothing.
//!
//! It runs in front of an in-process API ([`Gateway::wrap`], `orderflow up`) or forwards to orders
//! instances over HTTP ([`Gateway::proxy`], `orderflow run --role gateway`).

mod auth;
mod error;
mod proxy;
mod rate_limit;
pub mod scopes;
pub mod settings;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orderflow_api::identity;
use orderflow_redis::RedisConnection;
use orderflow_telemetry::TRACEPARENT;
use tracing::Instrument;

pub use auth::{Authenticator, Principal, key_digest};
pub use error::{GatewayError, Rejection, UpstreamError};
pub use proxy::Upstreams;
pub use rate_limit::{Decision, Limit, OwnLimit, RateLimiter};
pub use scopes::{Access, Scope, Scopes};
pub use settings::{ApiKeySettings, GatewaySettings, JwtKeySettings, JwtSettings, RateLimitSettings};

/// The request id header, accepted from the caller when well-formed and generated otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A built gateway: credentials loaded, limiter connected. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Authenticator,
    limiter: RateLimiter,
    timeout: Duration,
    timeout_ms: u64,
    max_body: usize,
}

impl Gateway {
    /// A gateway checking credentials with `auth` and limiting rates in `redis` when given (keys under
    /// `key_prefix`), else in this process.
    pub fn new(
        settings: &GatewaySettings,
        auth: Authenticator,
        redis: Option<RedisConnection>,
        key_prefix: &str,
    ) -> Result<Self, GatewayError> {
        if auth.is_empty() {
            return Err(GatewayError::Settings(
                "no credentials configured: add gateway.api_keys or gateway.jwt keys".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                auth,
                limiter: RateLimiter::new(&settings.rate_limit, redis, key_prefix),
                timeout: Duration::from_millis(settings.timeout_ms),
                timeout_ms: settings.timeout_ms,
                max_body: settings.max_body_bytes,
            }),
        })
    }

    /// Whether rate limits are shared through Redis.
    pub fn shares_limits(&self) -> bool {
        self.inner.limiter.is_shared()
    }

    /// `app` behind the gateway's checks (the in-process API of `orderflow up`).
    pub fn wrap(&self, app: Router) -> Router {
        app.layer(axum::middleware::from_fn_with_state(self.inner.clone(), guard))
    }

    /// A router forwarding every request that passes the checks to `upstreams`.
    pub fn proxy(&self, upstreams: Upstreams) -> Router {
        self.wrap(upstreams.router())
    }
}

/// A caller's id is kept when it is 1 to 128 visible characters without spaces; else one is generated.
fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::try_from(uuid::Uuid::now_v7().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        })
}

fn rate_headers(response: &mut Response, decision: &Decision) {
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_secs));
}

/// Counts one request of `client` (with its own limit, if any): the decision when limits are on, or the
/// 429 answer when its budget is spent.
async fn spend(gateway: &Inner, client: &str, own: Option<OwnLimit>) -> Result<Option<Decision>, Response> {
    if !gateway.limiter.is_enabled() {
        return Ok(None);
    }
    let verdict = gateway
        .limiter
        .check(client, gateway.limiter.limit_for(own))
        .await;
    if verdict.allowed {
        return Ok(Some(verdict));
    }
    let mut response = Rejection::RateLimited {
        retry_after_secs: verdict.retry_after_secs,
    }
    .into_response();
    rate_headers(&mut response, &verdict);
    Err(response)
}

/// The gateway's checks, in order: request id, authentication, scope, rate limit, body size, time.
async fn guard(State(gateway): State<Arc<Inner>>, mut request: Request, next: Next) -> Response {
    let id = request_id(&request);
    let span = tracing::info_span!(
        "gateway",
        request_id = %id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = %request.uri().path(),
        client = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    // The gateway's span continues the caller's trace, and what it forwards continues from the gateway's.
    if let Some(parent) = request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        orderflow_telemetry::set_parent(&span, parent);
    }
    if let Some(own) = orderflow_telemetry::traceparent(&span).and_then(|v| HeaderValue::try_from(v).ok()) {
        request.headers_mut().insert(TRACEPARENT, own);
    }
    let work = async {
        request.headers_mut().insert(REQUEST_ID, id.clone());
        // Who the caller is, the gateway says: whatever a caller claims in these headers goes.
        request.headers_mut().remove(identity::CLIENT);
        request.headers_mut().remove(identity::CUSTOMER);
        let mut decision = None;
        let access = scopes::access(request.method(), request.uri().path());
        // Callers the gateway cannot name (public routes, failed logins) share a budget per address, so
        // floods of probes or forged tokens are limited too. Liveness stays free: it touches nothing.
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| format!("ip:{}", info.0.ip()));
        if access == Access::Public
            && request.uri().path() != "/healthz"
            && let Some(peer) = &peer
            && let Err(refused) = spend(&gateway, peer, None).await
        {
            return refused;
        }
        if access != Access::Public {
            let principal = match gateway.auth.authenticate(request.headers()) {
                Ok(principal) => principal,
                Err(rejection) => {
                    return match &peer {
                        Some(peer) => spend(&gateway, peer, None).await.err(),
                        None => None,
                    }
                    .unwrap_or_else(|| rejection.into_response());
                }
            };
            tracing::Span::current().record("client", principal.client.as_str());
            if let Ok(client) = HeaderValue::from_str(&principal.client) {
                request.headers_mut().insert(identity::CLIENT, client);
            }
            if let Some(customer) = &principal.customer {
                // A bound credential whose customer cannot travel as a header is refused rather than let
                // through unbound.
                match HeaderValue::from_str(customer) {
                    Ok(value) => {
                        request.headers_mut().insert(identity::CUSTOMER, value);
                    }
                    Err(_) => {
                        return Rejection::Unauthenticated(
                            "the credential's customer id is not visible ASCII".into(),
                        )
                        .into_response();
                    }
                }
            }
            if let Access::Scope(needed) = access
                && !principal.scopes.allow(needed)
            {
                return Rejection::Forbidden(needed.as_str()).into_response();
            }
            match spend(&gateway, &principal.client, principal.limit).await {
                Ok(verdict) => decision = verdict,
                Err(refused) => return refused,
            }
        }
        // Credentials stop here: nothing behind the gateway sees them.
        request.headers_mut().remove(header::AUTHORIZATION);
        request.headers_mut().remove("x-api-key");
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > gateway.max_body) {
            return Rejection::PayloadTooLarge(gateway.max_body).into_response();
        }
        let request = request.map(|body| Body::new(http_body_util::Limited::new(body, gateway.max_body)));
        let mut response = match tokio::time::timeout(gateway.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => Rejection::Timeout(gateway.timeout_ms).into_response(),
        };
        if let Some(decision) = &decision {
            rate_headers(&mut response, decision);
        }
        response
    };
    let mut response = work.instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    response.headers_mut().insert(REQUEST_ID, id);
    response
}
