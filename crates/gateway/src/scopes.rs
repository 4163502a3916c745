//! Scopes and the route policy: which scope each route needs, and which routes are public.

use std::collections::BTreeSet;
use std::fmt;

use axum::http::Method;

/// A permission a credential grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Place and cancel orders.
    OrdersWrite,
    /// Read orders.
    OrdersRead,
    /// Read the analytics aggregates.
    AnalyticsRead,
    /// Operate the platform: metrics, the schema registry. Grants every other scope too.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [
        Self::OrdersWrite,
        Self::OrdersRead,
        Self::AnalyticsRead,
        Self::Admin,
    ];

    /// The scope's name in configuration and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrdersWrite => "orders:write",
            Self::OrdersRead => "orders:read",
            Self::AnalyticsRead => "analytics:read",
            Self::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes a principal holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// Scopes from names; unknown names are ignored (a token may carry scopes of other services).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self(names.into_iter().filter_map(Scope::parse).collect())
    }

    /// Every scope.
    pub fn all() -> Self {
        Self(Scope::ALL.into_iter().collect())
    }

    /// Whether these scopes allow `needed` (`admin` allows everything).
    pub fn allow(&self, needed: Scope) -> bool {
        self.0.contains(&needed) || self.0.contains(&Scope::Admin)
    }

    /// Whether these are staff scopes (`admin`): never bound to one customer.
    pub fn allow_staff(&self) -> bool {
        self.0.contains(&Scope::Admin)
    }

    /// Whether no scope is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health probes and the API description.
    Public,
    /// Any authenticated caller: reading event schemas, which every event consumer needs.
    Authenticated,
    /// An authenticated caller holding this scope.
    Scope(Scope),
}

/// The access `method path` needs. Unknown paths need `admin`, so that callers cannot probe which routes
/// exist (the upstream then answers 404).
pub fn access(method: &Method, path: &str) -> Access {
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    match path {
        // The console's page is public (it holds no data; its figures come from `/console/state`).
        "/" | "/healthz" | "/readyz" | "/openapi.json" => return Access::Public,
        "/metrics" => return Access::Scope(Scope::Admin),
        _ => {}
    }
    if path == "/registry" || path.starts_with("/registry/") {
        let read = *method == Method::GET || *method == Method::HEAD;
        // Looking a schema up under a subject and testing compatibility are POSTs that change nothing.
        let segments: Vec<&str> = path.trim_start_matches("/registry/").split('/').collect();
        let lookup =
            *method == Method::POST && matches!(segments.as_slice(), ["subjects", _] | ["compatibility", ..]);
        return if read || lookup {
            Access::Authenticated
        } else {
            Access::Scope(Scope::Admin)
        };
    }
    if path.starts_with("/v1/analytics/") {
        return Access::Scope(Scope::AnalyticsRead);
    }
    if path == "/v1/orders" || path.starts_with("/v1/orders/") {
        let read = *method == Method::GET || *method == Method::HEAD;
        return Access::Scope(if read {
            Scope::OrdersRead
        } else {
            Scope::OrdersWrite
        });
    }
    Access::Scope(Scope::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_scope() {
        assert_eq!(
            access(&Method::POST, "/v1/orders"),
            Access::Scope(Scope::OrdersWrite)
        );
        assert_eq!(
            access(&Method::POST, "/v1/orders/x/cancel"),
            Access::Scope(Scope::OrdersWrite)
        );
        assert_eq!(
            access(&Method::GET, "/v1/orders/x"),
            Access::Scope(Scope::OrdersRead)
        );
        assert_eq!(
            access(&Method::GET, "/v1/analytics/revenue"),
            Access::Scope(Scope::AnalyticsRead)
        );
        assert_eq!(access(&Method::GET, "/metrics"), Access::Scope(Scope::Admin));
        assert_eq!(access(&Method::GET, "/registry/subjects"), Access::Authenticated);
        assert_eq!(
            access(&Method::POST, "/registry/subjects/x/versions"),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(
            access(&Method::POST, "/registry/subjects/x"),
            Access::Authenticated
        );
        assert_eq!(
            access(
                &Method::POST,
                "/registry/compatibility/subjects/x/versions/latest"
            ),
            Access::Authenticated
        );
        assert_eq!(
            access(&Method::DELETE, "/registry/subjects/x"),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(access(&Method::GET, "/healthz"), Access::Public);
        assert_eq!(access(&Method::GET, "/openapi.json"), Access::Public);
        assert_eq!(access(&Method::GET, "/"), Access::Public);
        assert_eq!(
            access(&Method::GET, "/console/state"),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(access(&Method::GET, "/elsewhere"), Access::Scope(Scope::Admin));
    }

    #[test]
    fn admin_allows_everything_and_unknown_names_are_ignored() {
        let scopes = Scopes::from_names(["orders:read", "billing:write"]);
        assert!(scopes.allow(Scope::OrdersRead));
        assert!(!scopes.allow(Scope::OrdersWrite));
        assert!(Scopes::from_names(["admin"]).allow(Scope::AnalyticsRead));
    }
}
