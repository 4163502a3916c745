//! Who is calling: the client and, for a credential bound to one customer, that customer, as the gateway
//! names them in headers it sets itself (it removes any a caller sent). The orders role trusts these headers,
//! so only the gateway may reach it (the deployment's network policy makes it so).

use axum::extract::FromRequestParts;
use axum::http::HeaderName;
use axum::http::request::Parts;
use orderflow_domain::Order;

/// The client the request's credential names (an API key's id or a token's `sub`).
pub const CLIENT: HeaderName = HeaderName::from_static("x-orderflow-client");
/// The customer the request's credential is bound to, when it is bound to one.
pub const CUSTOMER: HeaderName = HeaderName::from_static("x-orderflow-customer");

/// The caller of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The client, or empty when nothing in front named one (no gateway).
    pub client: String,
    /// The customer its credential is bound to: it may place, read, cancel and list only that customer's
    /// orders. `None` for staff and unbound credentials.
    pub customer: Option<String>,
}

impl Caller {
    /// Whether the caller may see (read, cancel) `order`.
    pub fn may_see(&self, order: &Order) -> bool {
        self.customer
            .as_deref()
            .is_none_or(|own| own == order.customer_id.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Ok(Self {
            client: header(&CLIENT).unwrap_or_default(),
            customer: header(&CUSTOMER),
        })
    }
}
