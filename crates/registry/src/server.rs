//! The Confluent Schema Registry REST API (the subset Orderflow and common tools use) over a
//! [`RegistryService`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{Compatibility, RegisteredVersion, RegistryError, RegistryService};

/// The media type of every registry response.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's routes (mount them at the root or under a prefix such as `/registry`).
pub fn router(service: RegistryService) -> Router {
    openapi_router(service).split_for_parts().0
}

/// [`router`] with its OpenAPI description, for a service that publishes one document for all its routes.
pub fn openapi_router(service: RegistryService) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(subjects))
        .routes(routes!(lookup))
        .routes(routes!(versions, register))
        .routes(routes!(version))
        .routes(routes!(version_schema))
        .routes(routes!(schema_by_id))
        .routes(routes!(test_compatibility))
        .routes(routes!(global_config, set_global_config))
        .routes(routes!(subject_config, set_subject_config))
        .with_state(service)
}

/// A registry error as the Confluent API writes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by `RegistryError::into_response`; this type describes it.
struct ErrorBody {
    /// 40401 no such subject, 40402 no such version, 40403 no such schema, 40408 no subject-level
    /// compatibility, 409 incompatible, 42201 invalid schema or body, 42202 invalid version, 42203 invalid
    /// compatibility level, 50001 storage.
    error_code: u32,
    /// What went wrong.
    message: String,
}

/// A registered version of a subject.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by `version_json`; this type describes it.
struct VersionBody {
    /// The subject.
    subject: String,
    /// The version within the subject, from 1.
    version: u32,
    /// The schema's global id.
    id: u32,
    /// The schema text.
    schema: String,
}

/// A compatibility level: BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL,
/// FULL_TRANSITIVE or NONE.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by the config handlers; this type describes it.
struct LevelBody {
    /// The level.
    #[schema(rename = "compatibilityLevel")]
    compatibility_level: String,
}

/// The level a config change set.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by the config handlers; this type describes it.
struct LevelSet {
    /// The level now in force.
    compatibility: String,
}

/// The answer of a compatibility test.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by `test_compatibility`; this type describes it.
struct CompatibilityBody {
    /// Whether the schema could be registered.
    is_compatible: bool,
    /// Every rule it breaks.
    messages: Vec<String>,
}

/// The id of a registered schema.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by `register`; this type describes it.
struct IdBody {
    /// The schema's global id.
    id: u32,
}

/// A schema by id.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by `schema_by_id`; this type describes it.
struct SchemaText {
    /// The schema text.
    schema: String,
}

fn reply(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let code = self.error_code();
        let status = match code {
            409 => StatusCode::CONFLICT,
            40000..=40999 => StatusCode::NOT_FOUND,
            42200..=42299 => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // A server error's cause stays in the log; a client error's message says why, its cause included.
        let message = if status.is_server_error() {
            tracing::error!(
                error = &self as &dyn std::error::Error,
                "schema registry request failed"
            );
            self.to_string()
        } else {
            std::iter::successors(Some(&self as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ")
        };
        reply(status, json!({"error_code": code, "message": message}))
    }
}

type Answer = Result<Response, RegistryError>;

/// A schema to register, look up or test.
#[derive(Deserialize, utoipa::ToSchema)]
struct SchemaBody {
    /// The schema text (Avro JSON).
    schema: String,
    /// AVRO (the default and the only type served).
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

/// A compatibility level to set.
#[derive(Deserialize, utoipa::ToSchema)]
struct ConfigBody {
    /// BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE.
    compatibility: String,
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Other {
        error_code: 42201,
        message: format!("bad request body: {e}"),
    })
}

fn schema_body(bytes: &[u8]) -> Result<String, RegistryError> {
    let parsed: SchemaBody = body(bytes)?;
    match parsed.schema_type.as_deref() {
        None | Some("AVRO") => Ok(parsed.schema),
        Some(other) => Err(RegistryError::InvalidSchema {
            reason: format!("schema type {other} is not supported (AVRO only)"),
            source: None,
        }),
    }
}

fn version_json(v: &RegisteredVersion) -> Value {
    json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema})
}

#[utoipa::path(
    get,
    path = "/subjects",
    operation_id = "listSubjects",
    summary = "Every subject (authenticated)",
    responses(
        (status = 200, description = "Done", body = Vec<String>, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn subjects(State(s): State<RegistryService>) -> Answer {
    Ok(reply(StatusCode::OK, json!(s.subjects().await?)))
}

#[utoipa::path(
    get,
    path = "/subjects/{subject}/versions",
    operation_id = "listVersions",
    summary = "The versions of a subject (authenticated)",
    params(("subject" = String, Path, description = "The subject (usually <topic>-value)")),
    responses(
        (status = 200, description = "Done", body = Vec<u32>, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, description = "No such subject or version (40401, 40402)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn versions(State(s): State<RegistryService>, Path(subject): Path<String>) -> Answer {
    let versions: Vec<u32> = s.versions(&subject).await?.iter().map(|v| v.version).collect();
    Ok(reply(StatusCode::OK, json!(versions)))
}

#[utoipa::path(
    post,
    path = "/subjects/{subject}/versions",
    operation_id = "registerSchema",
    summary = "Register a schema under a subject, if compatible (scope admin)",
    params(("subject" = String, Path, description = "The subject (usually <topic>-value)")),
    request_body(content = SchemaBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Done", body = IdBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 409, description = "Incompatible with earlier versions", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, description = "Invalid schema, body or version (42201, 42202)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn register(State(s): State<RegistryService>, Path(subject): Path<String>, bytes: Bytes) -> Answer {
    let registered = s.register(&subject, &schema_body(&bytes)?).await?;
    Ok(reply(StatusCode::OK, json!({"id": registered.id})))
}

#[utoipa::path(
    post,
    path = "/subjects/{subject}",
    operation_id = "lookupSchema",
    summary = "Find the version of a subject with this schema (authenticated)",
    params(("subject" = String, Path, description = "The subject (usually <topic>-value)")),
    request_body(content = SchemaBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Done", body = VersionBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, description = "No such subject, or the schema is not registered under it (40401, 40403)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, description = "Invalid schema, body or version (42201, 42202)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn lookup(State(s): State<RegistryService>, Path(subject): Path<String>, bytes: Bytes) -> Answer {
    Ok(reply(
        StatusCode::OK,
        version_json(&s.lookup(&subject, &schema_body(&bytes)?).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/subjects/{subject}/versions/{version}",
    operation_id = "getVersion",
    summary = "One version of a subject (authenticated)",
    params(("subject" = String, Path, description = "The subject (usually <topic>-value)"), ("version" = String, Path, description = "A version number or latest")),
    responses(
        (status = 200, description = "Done", body = VersionBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, description = "No such subject or version (40401, 40402)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, description = "Invalid schema, body or version (42201, 42202)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn version(
    State(s): State<RegistryService>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    Ok(reply(
        StatusCode::OK,
        version_json(&s.version(&subject, &version).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/subjects/{subject}/versions/{version}/schema",
    operation_id = "getVersionSchema",
    summary = "The schema of one version, as JSON (authenticated)",
    params(("subject" = String, Path, description = "The subject (usually <topic>-value)"), ("version" = String, Path, description = "A version number or latest")),
    responses(
        (status = 200, description = "Done", body = serde_json::Value, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, description = "No such subject or version (40401, 40402)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, description = "Invalid schema, body or version (42201, 42202)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn version_schema(
    State(s): State<RegistryService>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let schema: Value =
        serde_json::from_str(&s.version(&subject, &version).await?.schema).unwrap_or(Value::Null);
    Ok(reply(StatusCode::OK, schema))
}

#[utoipa::path(
    get,
    path = "/schemas/ids/{id}",
    operation_id = "getSchemaById",
    summary = "A schema by its global id (authenticated)",
    params(("id" = String, Path, description = "The schema's global id")),
    responses(
        (status = 200, description = "Done", body = SchemaText, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, description = "No schema with this id (40403)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn schema_by_id(State(s): State<RegistryService>, Path(id): Path<String>) -> Answer {
    let id: u32 = id
        .parse()
        .map_err(|_| RegistryError::SchemaNotFound(id.clone()))?;
    Ok(reply(StatusCode::OK, json!({"schema": s.schema(id).await?})))
}

#[utoipa::path(
    post,
    path = "/compatibility/subjects/{subject}/versions/{version}",
    operation_id = "testCompatibility",
    summary = "Whether a schema could be registered after a version (authenticated)",
    params(("subject" = String, Path, description = "The subject (usually <topic>-value)"), ("version" = String, Path, description = "A version number or latest")),
    request_body(content = SchemaBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Done", body = CompatibilityBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, description = "No such subject or version (40401, 40402)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, description = "Invalid schema, body or version (42201, 42202)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn test_compatibility(
    State(s): State<RegistryService>,
    Path((subject, version)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let broken = s
        .test_compatibility(&subject, &version, &schema_body(&bytes)?)
        .await?;
    let messages: Vec<String> = broken.iter().map(ToString::to_string).collect();
    Ok(reply(
        StatusCode::OK,
        json!({"is_compatible": broken.is_empty(), "messages": messages}),
    ))
}

#[utoipa::path(
    get,
    path = "/config",
    operation_id = "getGlobalConfig",
    summary = "The default compatibility level (authenticated)",
    responses(
        (status = 200, description = "Done", body = LevelBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn global_config(State(s): State<RegistryService>) -> Answer {
    Ok(reply(
        StatusCode::OK,
        json!({"compatibilityLevel": s.compatibility(None).await?.as_str()}),
    ))
}

#[utoipa::path(
    get,
    path = "/config/{subject}",
    operation_id = "getSubjectConfig",
    summary = "A subject's own compatibility level (authenticated)",
    params(("subject" = String, Path, description = "The subject (usually <topic>-value)")),
    responses(
        (status = 200, description = "Done", body = LevelBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, description = "The subject has no level of its own (40408)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn subject_config(State(s): State<RegistryService>, Path(subject): Path<String>) -> Answer {
    match s.subject_compatibility(&subject).await? {
        Some(level) => Ok(reply(
            StatusCode::OK,
            json!({"compatibilityLevel": level.as_str()}),
        )),
        None => Err(RegistryError::Other {
            error_code: 40408,
            message: format!("subject '{subject}' does not have subject-level compatibility configured"),
        }),
    }
}

fn level(bytes: &[u8]) -> Result<Compatibility, RegistryError> {
    let requested: ConfigBody = body(bytes)?;
    requested
        .compatibility
        .parse()
        .map_err(|_| RegistryError::InvalidCompatibility(requested.compatibility))
}

#[utoipa::path(
    put,
    path = "/config",
    operation_id = "setGlobalConfig",
    summary = "Set the default compatibility level (scope admin)",
    request_body(content = ConfigBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Done", body = LevelSet, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, description = "Unknown level or invalid body (42201, 42203)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn set_global_config(State(s): State<RegistryService>, bytes: Bytes) -> Answer {
    let level = level(&bytes)?;
    s.set_compatibility(None, level).await?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level.as_str()})))
}

#[utoipa::path(
    put,
    path = "/config/{subject}",
    operation_id = "setSubjectConfig",
    summary = "Set a subject's compatibility level (scope admin)",
    params(("subject" = String, Path, description = "The subject (usually <topic>-value)")),
    request_body(content = ConfigBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Done", body = LevelSet, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, description = "Unknown level or invalid body (42201, 42203)", body = ErrorBody, content_type = "application/vnd.schemaregistry.v1+json"),
    )
)]
async fn set_subject_config(
    State(s): State<RegistryService>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let level = level(&bytes)?;
    s.set_compatibility(Some(&subject), level).await?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level.as_str()})))
}
