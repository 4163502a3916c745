//! The Confluent Schema Registry REST API (the subset Orderflow and common tools use) over a
//! [`RegistryService`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Compatibility, RegisteredVersion, RegistryError, RegistryService};

/// The media type of every registry response.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's routes (mount them at the root or under a prefix such as `/registry`).
pub fn router(service: RegistryService) -> Router {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(test_compatibility),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route("/config/{subject}", get(subject_config).put(set_subject_config))
        .with_state(service)
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

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct ConfigBody {
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

async fn subjects(State(s): State<RegistryService>) -> Answer {
    Ok(reply(StatusCode::OK, json!(s.subjects().await?)))
}

async fn versions(State(s): State<RegistryService>, Path(subject): Path<String>) -> Answer {
    let versions: Vec<u32> = s.versions(&subject).await?.iter().map(|v| v.version).collect();
    Ok(reply(StatusCode::OK, json!(versions)))
}

async fn register(State(s): State<RegistryService>, Path(subject): Path<String>, bytes: Bytes) -> Answer {
    let registered = s.register(&subject, &schema_body(&bytes)?).await?;
    Ok(reply(StatusCode::OK, json!({"id": registered.id})))
}

async fn lookup(State(s): State<RegistryService>, Path(subject): Path<String>, bytes: Bytes) -> Answer {
    Ok(reply(
        StatusCode::OK,
        version_json(&s.lookup(&subject, &schema_body(&bytes)?).await?),
    ))
}

async fn version(
    State(s): State<RegistryService>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    Ok(reply(
        StatusCode::OK,
        version_json(&s.version(&subject, &version).await?),
    ))
}

async fn version_schema(
    State(s): State<RegistryService>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let schema: Value =
        serde_json::from_str(&s.version(&subject, &version).await?.schema).unwrap_or(Value::Null);
    Ok(reply(StatusCode::OK, schema))
}

async fn schema_by_id(State(s): State<RegistryService>, Path(id): Path<String>) -> Answer {
    let id: u32 = id
        .parse()
        .map_err(|_| RegistryError::SchemaNotFound(id.clone()))?;
    Ok(reply(StatusCode::OK, json!({"schema": s.schema(id).await?})))
}

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

async fn global_config(State(s): State<RegistryService>) -> Answer {
    Ok(reply(
        StatusCode::OK,
        json!({"compatibilityLevel": s.compatibility(None).await?.as_str()}),
    ))
}

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

async fn set_global_config(State(s): State<RegistryService>, bytes: Bytes) -> Answer {
    let level = level(&bytes)?;
    s.set_compatibility(None, level).await?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level.as_str()})))
}

async fn set_subject_config(
    State(s): State<RegistryService>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let level = level(&bytes)?;
    s.set_compatibility(Some(&subject), level).await?;
    Ok(reply(StatusCode::OK, json!({"compatibility": level.as_str()})))
}
