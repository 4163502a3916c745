//! The Confluent Schema Registry REST API over a [`RegistryService`]: subjects and versions (with soft and
//! permanent deletes), schemas by id, compatibility levels and tests, modes, and the schema types served.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{Compatibility, Deleted, Mode, RegisteredVersion, RegistryError, RegistryService};

/// The media type of every registry response.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's routes (mount them at the root or under a prefix such as `/registry`).
pub fn router(service: RegistryService) -> Router {
    openapi_router(service).split_for_parts().0
}

/// [`router`] with its OpenAPI description, for a service that publishes one document for all its routes.
pub fn openapi_router(service: RegistryService) -> OpenApiRouter {
    OpenApiRouter::with_openapi(RegistryDoc::openapi())
        .routes(routes!(subjects))
        .routes(routes!(lookup, delete_subject))
        .routes(routes!(versions, register))
        .routes(routes!(version, delete_version))
        .routes(routes!(version_schema))
        .routes(routes!(referenced_by))
        .routes(routes!(schema_by_id))
        .routes(routes!(schema_versions))
        .routes(routes!(schema_subjects))
        .routes(routes!(schema_types))
        .routes(routes!(test_compatibility))
        .routes(routes!(test_compatibility_all))
        .routes(routes!(global_config, set_global_config, delete_global_config))
        .routes(routes!(subject_config, set_subject_config, delete_subject_config))
        .routes(routes!(global_mode, set_global_mode))
        .routes(routes!(subject_mode, set_subject_mode, delete_subject_mode))
        .with_state(service)
}

/// The registry's reusable answers.
#[derive(utoipa::OpenApi)]
#[openapi(components(responses(RegistryNotFound, RegistryInvalid, RegistryConflict)))]
struct RegistryDoc;

/// Declares a registry error answer: a component under `#/components/responses/<name>`.
macro_rules! error_answer {
    ($($(#[$doc:meta])* $name:ident => $description:literal;)*) => {$(
        $(#[$doc])*
        #[derive(utoipa::ToResponse)]
        #[response(description = $description, content_type = "application/vnd.schemaregistry.v1+json")]
        #[allow(dead_code)] // Only its description and schema are used.
        struct $name(ErrorBody);
    )*};
}

error_answer! {
    /// 404.
    RegistryNotFound => "No such subject (40401), version (40402) or schema (40403); a subject or version \
        soft-deleted (40404, 40406) or not soft-deleted before a permanent delete (40405, 40407); no \
        subject-level compatibility (40408) or mode (40409)";
    /// 422.
    RegistryInvalid => "Invalid schema or body (42201), version (42202), compatibility level (42203) or mode \
        (42204), or a write to a read-only subject (42205)";
    /// 409.
    RegistryConflict => "Incompatible with earlier versions of the subject";
}

/// A version of a subject, as the schema-id routes list them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by `schema_versions`; this type describes it.
struct SubjectVersion {
    /// The subject.
    subject: String,
    /// The version.
    version: u32,
}

/// A mode.
#[derive(Deserialize, utoipa::ToSchema)]
struct ModeBody {
    /// READWRITE, READONLY or READONLY_OVERRIDE.
    mode: String,
}

/// The query parameters the Confluent API takes on reads and deletes; unknown ones are ignored, as clients
/// send more than a registry needs (`normalize`, `verbose`, `format`).
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Flags {
    /// Include soft-deleted subjects or versions (`true`).
    deleted: Option<String>,
    /// Only soft-deleted subjects or versions (`true`).
    deleted_only: Option<String>,
    /// Delete for good what was soft-deleted before (`true`).
    permanent: Option<String>,
    /// Only subjects starting with this.
    #[serde(rename = "subjectPrefix")]
    #[param(rename = "subjectPrefix")]
    subject_prefix: Option<String>,
    /// For a subject's mode: the global mode when the subject has none (`true`).
    #[serde(rename = "defaultToGlobal")]
    #[param(rename = "defaultToGlobal")]
    default_to_global: Option<String>,
    /// Skip this many entries of a list.
    offset: Option<String>,
    /// At most this many entries of a list (-1: all).
    limit: Option<String>,
}

/// Whether a flag is `true` (clients send `true`, `True`, `false`, `False`).
fn is_true(flag: Option<&String>) -> bool {
    flag.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl Flags {
    fn deleted(&self) -> Deleted {
        if is_true(self.deleted_only.as_ref()) {
            Deleted::Only
        } else if is_true(self.deleted.as_ref()) {
            Deleted::Include
        } else {
            Deleted::Exclude
        }
    }

    fn permanent(&self) -> bool {
        is_true(self.permanent.as_ref())
    }

    /// `items` after `offset`, at most `limit` of them.
    fn page<T>(&self, items: Vec<T>) -> Vec<T> {
        let offset = self.offset.as_deref().and_then(|o| o.parse().ok()).unwrap_or(0);
        let limit = self
            .limit
            .as_deref()
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        items.into_iter().skip(offset).take(limit).collect()
    }
}

/// The query string, read leniently: a client's extra or malformed parameters never fail a request.
type Lenient = Result<Query<Flags>, QueryRejection>;

fn flags(query: Lenient) -> Flags {
    query.map(|Query(f)| f).unwrap_or_default()
}

/// A registry error as the Confluent API writes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Written by `RegistryError::into_response`; this type describes it.
struct ErrorBody {
    /// 40401 no such subject, 40402 no such version, 40403 no such schema, 40404 subject soft-deleted,
    /// 40405 subject not soft-deleted first, 40406 version soft-deleted, 40407 version not soft-deleted first,
    /// 40408 no subject-level compatibility, 40409 no subject-level mode, 409 incompatible, 42201 invalid
    /// schema or body, 42202 invalid version, 42203 invalid compatibility level, 42204 invalid mode, 42205
    /// read-only, 50001 storage.
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
    params(Flags),
    responses((status = 200, description = "The subjects", body = Vec<String>, content_type = "application/vnd.schemaregistry.v1+json"))
)]
async fn subjects(State(s): State<RegistryService>, query: Lenient) -> Answer {
    let flags = flags(query);
    let mut subjects = s.subjects_in(flags.deleted()).await?;
    if let Some(prefix) = &flags.subject_prefix {
        subjects.retain(|subject| subject.starts_with(prefix.as_str()));
    }
    Ok(reply(StatusCode::OK, json!(flags.page(subjects))))
}

#[utoipa::path(
    delete,
    path = "/subjects/{subject}",
    operation_id = "deleteSubject",
    summary = "Soft-delete every version of a subject, or with permanent=true remove a soft-deleted subject (scope admin)",
    params(("subject" = String, Path, description = "The subject"), Flags),
    responses(
        (status = 200, description = "The versions deleted", body = Vec<u32>, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn delete_subject(
    State(s): State<RegistryService>,
    Path(subject): Path<String>,
    query: Lenient,
) -> Answer {
    let deleted = s.delete_subject(&subject, flags(query).permanent()).await?;
    Ok(reply(StatusCode::OK, json!(deleted)))
}

#[utoipa::path(
    get,
    path = "/subjects/{subject}/versions",
    operation_id = "listVersions",
    summary = "The versions of a subject (authenticated)",
    params(("subject" = String, Path, description = "The subject"), Flags),
    responses(
        (status = 200, description = "The version numbers", body = Vec<u32>, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
    )
)]
async fn versions(State(s): State<RegistryService>, Path(subject): Path<String>, query: Lenient) -> Answer {
    let flags = flags(query);
    let versions: Vec<u32> = s
        .versions_in(&subject, flags.deleted())
        .await?
        .iter()
        .map(|v| v.version)
        .collect();
    Ok(reply(StatusCode::OK, json!(flags.page(versions))))
}

#[utoipa::path(
    post,
    path = "/subjects/{subject}/versions",
    operation_id = "registerSchema",
    summary = "Register a schema under a subject, if compatible and the subject is writable (scope admin)",
    params(("subject" = String, Path, description = "The subject")),
    request_body(content = SchemaBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The version registered (or found): its id first", body = VersionBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 409, response = RegistryConflict),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn register(State(s): State<RegistryService>, Path(subject): Path<String>, bytes: Bytes) -> Answer {
    let registered = s.register(&subject, &schema_body(&bytes)?).await?;
    Ok(reply(StatusCode::OK, version_json(&registered)))
}

#[utoipa::path(
    post,
    path = "/subjects/{subject}",
    operation_id = "lookupSchema",
    summary = "Find the version of a subject with this schema (authenticated)",
    params(("subject" = String, Path, description = "The subject"), Flags),
    request_body(content = SchemaBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The version", body = VersionBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn lookup(
    State(s): State<RegistryService>,
    Path(subject): Path<String>,
    query: Lenient,
    bytes: Bytes,
) -> Answer {
    let found = s
        .lookup_in(&subject, &schema_body(&bytes)?, flags(query).deleted())
        .await?;
    Ok(reply(StatusCode::OK, version_json(&found)))
}

#[utoipa::path(
    get,
    path = "/subjects/{subject}/versions/{version}",
    operation_id = "getVersion",
    summary = "One version of a subject (authenticated)",
    params(
        ("subject" = String, Path, description = "The subject"),
        ("version" = String, Path, description = "A version number or latest"),
        Flags,
    ),
    responses(
        (status = 200, description = "The version", body = VersionBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn version(
    State(s): State<RegistryService>,
    Path((subject, version)): Path<(String, String)>,
    query: Lenient,
) -> Answer {
    let found = s.version_in(&subject, &version, flags(query).deleted()).await?;
    Ok(reply(StatusCode::OK, version_json(&found)))
}

#[utoipa::path(
    delete,
    path = "/subjects/{subject}/versions/{version}",
    operation_id = "deleteVersion",
    summary = "Soft-delete a version, or with permanent=true remove a soft-deleted one (scope admin)",
    params(
        ("subject" = String, Path, description = "The subject"),
        ("version" = String, Path, description = "A version number or latest"),
        Flags,
    ),
    responses(
        (status = 200, description = "The version deleted", body = u32, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn delete_version(
    State(s): State<RegistryService>,
    Path((subject, version)): Path<(String, String)>,
    query: Lenient,
) -> Answer {
    let deleted = s
        .delete_version(&subject, &version, flags(query).permanent())
        .await?;
    Ok(reply(StatusCode::OK, json!(deleted)))
}

#[utoipa::path(
    get,
    path = "/subjects/{subject}/versions/{version}/schema",
    operation_id = "getVersionSchema",
    summary = "The schema of one version, as JSON (authenticated)",
    params(
        ("subject" = String, Path, description = "The subject"),
        ("version" = String, Path, description = "A version number or latest"),
    ),
    responses(
        (status = 200, description = "The schema", body = serde_json::Value, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
        (status = 422, response = RegistryInvalid),
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
    path = "/subjects/{subject}/versions/{version}/referencedby",
    operation_id = "getReferencedBy",
    summary = "Ids of the schemas referencing a version: none, as schema references are not accepted (authenticated)",
    params(
        ("subject" = String, Path, description = "The subject"),
        ("version" = String, Path, description = "A version number or latest"),
    ),
    responses(
        (status = 200, description = "Schema ids", body = Vec<u32>, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn referenced_by(
    State(s): State<RegistryService>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    Ok(reply(
        StatusCode::OK,
        json!(s.referenced_by(&subject, &version).await?),
    ))
}

/// The schema id of a path: a number, else no such schema.
fn schema_id(id: &str) -> Result<u32, RegistryError> {
    id.parse()
        .map_err(|_| RegistryError::SchemaNotFound(id.to_owned()))
}

#[utoipa::path(
    get,
    path = "/schemas/ids/{id}",
    operation_id = "getSchemaById",
    summary = "A schema by its global id (authenticated)",
    params(("id" = String, Path, description = "The schema's global id")),
    responses(
        (status = 200, description = "The schema", body = SchemaText, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
    )
)]
async fn schema_by_id(State(s): State<RegistryService>, Path(id): Path<String>) -> Answer {
    Ok(reply(
        StatusCode::OK,
        json!({"schema": s.schema(schema_id(&id)?).await?}),
    ))
}

#[utoipa::path(
    get,
    path = "/schemas/ids/{id}/versions",
    operation_id = "getSchemaVersions",
    summary = "Every subject version holding a schema (authenticated)",
    params(("id" = String, Path, description = "The schema's global id"), Flags),
    responses(
        (status = 200, description = "Subject versions", body = Vec<SubjectVersion>, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
    )
)]
async fn schema_versions(State(s): State<RegistryService>, Path(id): Path<String>, query: Lenient) -> Answer {
    let flags = flags(query);
    let usages: Vec<Value> = s
        .usages(schema_id(&id)?, flags.deleted())
        .await?
        .iter()
        .map(|v| json!({"subject": v.subject, "version": v.version}))
        .collect();
    Ok(reply(StatusCode::OK, json!(flags.page(usages))))
}

#[utoipa::path(
    get,
    path = "/schemas/ids/{id}/subjects",
    operation_id = "getSchemaSubjects",
    summary = "Every subject holding a schema (authenticated)",
    params(("id" = String, Path, description = "The schema's global id"), Flags),
    responses(
        (status = 200, description = "Subjects", body = Vec<String>, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
    )
)]
async fn schema_subjects(State(s): State<RegistryService>, Path(id): Path<String>, query: Lenient) -> Answer {
    let flags = flags(query);
    let mut subjects: Vec<String> = s
        .usages(schema_id(&id)?, flags.deleted())
        .await?
        .into_iter()
        .map(|v| v.subject)
        .collect();
    subjects.dedup();
    Ok(reply(StatusCode::OK, json!(flags.page(subjects))))
}

#[utoipa::path(
    get,
    path = "/schemas/types",
    operation_id = "getSchemaTypes",
    summary = "The schema types this registry serves (authenticated)",
    responses((status = 200, description = "Schema types", body = Vec<String>, content_type = "application/vnd.schemaregistry.v1+json"))
)]
async fn schema_types() -> Response {
    reply(StatusCode::OK, json!(["AVRO"]))
}

#[utoipa::path(
    post,
    path = "/compatibility/subjects/{subject}/versions/{version}",
    operation_id = "testCompatibility",
    summary = "Whether a schema could be registered after a version (authenticated)",
    params(
        ("subject" = String, Path, description = "The subject"),
        ("version" = String, Path, description = "A version number, or latest for every version the level names"),
    ),
    request_body(content = SchemaBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The verdict", body = CompatibilityBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
        (status = 422, response = RegistryInvalid),
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
    Ok(compatibility_reply(&broken))
}

#[utoipa::path(
    post,
    path = "/compatibility/subjects/{subject}/versions",
    operation_id = "testCompatibilityAll",
    summary = "Whether a schema could be registered under a subject, checked as registering would (authenticated)",
    params(("subject" = String, Path, description = "The subject")),
    request_body(content = SchemaBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The verdict", body = CompatibilityBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn test_compatibility_all(
    State(s): State<RegistryService>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let broken = s.test_compatibility_all(&subject, &schema_body(&bytes)?).await?;
    Ok(compatibility_reply(&broken))
}

fn compatibility_reply(broken: &[crate::Incompatibility]) -> Response {
    let messages: Vec<String> = broken.iter().map(ToString::to_string).collect();
    reply(
        StatusCode::OK,
        json!({"is_compatible": broken.is_empty(), "messages": messages}),
    )
}

fn level_reply(level: Compatibility) -> Response {
    reply(StatusCode::OK, json!({"compatibilityLevel": level.as_str()}))
}

#[utoipa::path(
    get,
    path = "/config",
    operation_id = "getGlobalConfig",
    summary = "The default compatibility level (authenticated)",
    responses((status = 200, description = "The level", body = LevelBody, content_type = "application/vnd.schemaregistry.v1+json"))
)]
async fn global_config(State(s): State<RegistryService>) -> Answer {
    Ok(level_reply(s.compatibility(None).await?))
}

#[utoipa::path(
    put,
    path = "/config",
    operation_id = "setGlobalConfig",
    summary = "Set the default compatibility level (scope admin)",
    request_body(content = ConfigBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The level set", body = LevelSet, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn set_global_config(State(s): State<RegistryService>, bytes: Bytes) -> Answer {
    let level = level(&bytes)?;
    s.set_compatibility(None, level).await?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level.as_str()})))
}

#[utoipa::path(
    delete,
    path = "/config",
    operation_id = "deleteGlobalConfig",
    summary = "Reset the default compatibility level to BACKWARD (scope admin)",
    responses((status = 200, description = "The level removed", body = LevelBody, content_type = "application/vnd.schemaregistry.v1+json"))
)]
async fn delete_global_config(State(s): State<RegistryService>) -> Answer {
    Ok(level_reply(s.delete_compatibility(None).await?))
}

#[utoipa::path(
    get,
    path = "/config/{subject}",
    operation_id = "getSubjectConfig",
    summary = "A subject's own compatibility level (authenticated)",
    params(("subject" = String, Path, description = "The subject")),
    responses(
        (status = 200, description = "The level", body = LevelBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
    )
)]
async fn subject_config(State(s): State<RegistryService>, Path(subject): Path<String>) -> Answer {
    match s.subject_compatibility(&subject).await? {
        Some(level) => Ok(level_reply(level)),
        None => Err(RegistryError::SubjectCompatibilityNotFound(subject)),
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
    path = "/config/{subject}",
    operation_id = "setSubjectConfig",
    summary = "Set a subject's compatibility level (scope admin)",
    params(("subject" = String, Path, description = "The subject")),
    request_body(content = ConfigBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The level set", body = LevelSet, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, response = RegistryInvalid),
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

#[utoipa::path(
    delete,
    path = "/config/{subject}",
    operation_id = "deleteSubjectConfig",
    summary = "Remove a subject's own compatibility level: it follows the default again (scope admin)",
    params(("subject" = String, Path, description = "The subject")),
    responses(
        (status = 200, description = "The level removed", body = LevelBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
    )
)]
async fn delete_subject_config(State(s): State<RegistryService>, Path(subject): Path<String>) -> Answer {
    Ok(level_reply(s.delete_compatibility(Some(&subject)).await?))
}

fn mode_reply(mode: Mode) -> Response {
    reply(StatusCode::OK, json!({"mode": mode.as_str()}))
}

fn mode(bytes: &[u8]) -> Result<Mode, RegistryError> {
    body::<ModeBody>(bytes)?.mode.parse()
}

#[utoipa::path(
    get,
    path = "/mode",
    operation_id = "getGlobalMode",
    summary = "The registry's mode (authenticated)",
    responses((status = 200, description = "The mode", body = ModeBody, content_type = "application/vnd.schemaregistry.v1+json"))
)]
async fn global_mode(State(s): State<RegistryService>) -> Answer {
    Ok(mode_reply(s.mode(None, true).await?))
}

#[utoipa::path(
    put,
    path = "/mode",
    operation_id = "setGlobalMode",
    summary = "Set the registry's mode: READONLY refuses registrations and deletes (scope admin)",
    request_body(content = ModeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The mode set", body = ModeBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn set_global_mode(State(s): State<RegistryService>, bytes: Bytes) -> Answer {
    let mode = mode(&bytes)?;
    s.set_mode(None, mode).await?;
    Ok(mode_reply(mode))
}

#[utoipa::path(
    get,
    path = "/mode/{subject}",
    operation_id = "getSubjectMode",
    summary = "A subject's own mode, or with defaultToGlobal=true the mode in force (authenticated)",
    params(("subject" = String, Path, description = "The subject"), Flags),
    responses(
        (status = 200, description = "The mode", body = ModeBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
    )
)]
async fn subject_mode(
    State(s): State<RegistryService>,
    Path(subject): Path<String>,
    query: Lenient,
) -> Answer {
    let mode = if is_true(flags(query).default_to_global.as_ref()) {
        s.mode_in_force(&subject).await?
    } else {
        s.mode(Some(&subject), false).await?
    };
    Ok(mode_reply(mode))
}

#[utoipa::path(
    put,
    path = "/mode/{subject}",
    operation_id = "setSubjectMode",
    summary = "Set a subject's mode (scope admin)",
    params(("subject" = String, Path, description = "The subject")),
    request_body(content = ModeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The mode set", body = ModeBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 422, response = RegistryInvalid),
    )
)]
async fn set_subject_mode(
    State(s): State<RegistryService>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let mode = mode(&bytes)?;
    s.set_mode(Some(&subject), mode).await?;
    Ok(mode_reply(mode))
}

#[utoipa::path(
    delete,
    path = "/mode/{subject}",
    operation_id = "deleteSubjectMode",
    summary = "Remove a subject's own mode: it follows the registry's again (scope admin)",
    params(("subject" = String, Path, description = "The subject")),
    responses(
        (status = 200, description = "The mode removed", body = ModeBody, content_type = "application/vnd.schemaregistry.v1+json"),
        (status = 404, response = RegistryNotFound),
    )
)]
async fn delete_subject_mode(State(s): State<RegistryService>, Path(subject): Path<String>) -> Answer {
    Ok(mode_reply(s.delete_mode(&subject).await?))
}
