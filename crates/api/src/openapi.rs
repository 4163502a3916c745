//! The OpenAPI document at `/openapi.json`, generated from the code: every route is registered through
//! [`utoipa_axum`] from a handler carrying its `#[utoipa::path]` description, and the bodies are the
//! schemas of the types the handlers read and write. What the gateway in front adds (authentication,
//! scopes, rate limits, its time limit) is added to each operation by [`gateway_answers`].

use axum::Extension;
use axum::body::Bytes;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Response};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::error::Problem;

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

/// The document's fixed parts: what it is, how callers authenticate, and the reusable problem answers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orderflow API",
        version = "1",
        description = "Orders over HTTP behind the gateway. Every route but /, /healthz, /readyz and \
            /openapi.json needs an API key (X-Api-Key) or a bearer token with the route's scope. Errors are \
            RFC 9457 problem documents (the schema registry under /registry answers in the Confluent \
            format)."
    ),
    servers((url = "/")),
    security(("apiKey" = []), ("bearer" = [])),
    components(
        schemas(Problem),
        responses(
            BadRequest,
            Unauthenticated,
            Forbidden,
            RateLimited,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Validation,
            Unavailable,
            Timeout
        )
    ),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// The two ways to authenticate: an API key header or a JWT bearer token.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Declares a reusable problem+json answer: a component under `#/components/responses/<name>`.
macro_rules! problem_response {
    ($($(#[$doc:meta])* $name:ident => $description:literal;)*) => {$(
        $(#[$doc])*
        #[derive(ToResponse)]
        #[response(description = $description, content_type = "application/problem+json")]
        #[allow(dead_code)] // Only its description and schema are used.
        pub struct $name(Problem<'static>);
    )*};
}

problem_response! {
    /// 400.
    BadRequest => "Malformed JSON, an unreadable body, a bad id or query parameter";
    /// 401, from the gateway.
    Unauthenticated => "No valid credential";
    /// 403, from the gateway (or the API, for an order placed for another customer).
    Forbidden => "The credential lacks the route's scope";
    /// 429, from the gateway.
    RateLimited => "The client's budget is spent; see Retry-After";
    /// 404.
    NotFound => "No such order";
    /// 409.
    Conflict => "The order's status does not allow this, it kept changing, or a quoted price is not the catalogue's";
    /// 413, from the gateway or the API.
    PayloadTooLarge => "The body is too large";
    /// 415.
    UnsupportedMediaType => "The body is not JSON";
    /// 422.
    Validation => "Fields are missing, of the wrong type or out of range";
    /// 503.
    Unavailable => "A dependency is unavailable; retry";
    /// 504, from the gateway.
    Timeout => "The request took too long";
}

/// The paths the gateway lets through without a credential (it rate-limits them per address, except
/// `/healthz`).
const PUBLIC: [&str; 4] = ["/", "/healthz", "/readyz", PATH];

/// Adds to every operation the answers the gateway in front gives: `401`, `403` and `504` where a credential
/// is needed, `413` where a body is sent, `429` everywhere but `/healthz`. Public paths need no credential.
pub fn gateway_answers(doc: &mut Document) {
    let reference = |name: &str| RefOr::<Response>::Ref(utoipa::openapi::Ref::from_response_name(name));
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = PUBLIC.contains(&path.as_str());
        let operations: [(&mut Option<Operation>, bool); 5] = [
            (&mut item.get, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.delete, false),
            (&mut item.patch, true),
        ];
        for (operation, has_body) in operations {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, name: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| reference(name));
            };
            if public {
                operation.security = Some(Vec::new());
            } else {
                add("401", "Unauthenticated");
                add("403", "Forbidden");
                add("504", "Timeout");
            }
            if has_body {
                add("413", "PayloadTooLarge");
            }
            if path != "/healthz" {
                add("429", "RateLimited");
            }
        }
    }
}

/// The rendered document, shared by every request for it.
#[derive(Clone)]
pub struct Rendered(pub Bytes);

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The document (OpenAPI 3.1)", body = serde_json::Value))
)]
pub(crate) async fn serve(Extension(Rendered(doc)): Extension<Rendered>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], doc)
}
