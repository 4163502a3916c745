//! An HTTP client for a Confluent-compatible schema registry, caching what never changes (schemas by id,
//! ids of registered schemas) so a warm codec makes no round trip per message.

use std::collections::HashMap;
use std::sync::RwLock;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{RegistryError, SchemaSource, server::CONTENT_TYPE};

/// A registry client; share one per process.
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    schemas: RwLock<HashMap<u32, String>>,
    ids: RwLock<HashMap<(String, String), u32>>,
}

fn bad_answer(what: &str, source: Option<serde_json::Error>) -> RegistryError {
    RegistryError::BadAnswer {
        what: what.to_owned(),
        source,
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

impl RegistryClient {
    /// A client for the registry at `base_url` (e.g. `http://registry:8081` or `http://host:8080/registry`).
    pub fn new(base_url: &str) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(RegistryError::Unavailable)?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            schemas: RwLock::default(),
            ids: RwLock::default(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, RegistryError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", CONTENT_TYPE);
        if let Some(body) = body {
            request = request
                .header("content-type", CONTENT_TYPE)
                .body(body.to_string());
        }
        let response = request.send().await.map_err(RegistryError::Unavailable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(RegistryError::Unavailable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| bad_answer("a body that is not JSON", Some(e)));
        }
        let error: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
            bad_answer(
                &format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                None,
            )
        })?;
        Err(RegistryError::Other {
            error_code: error.error_code,
            message: error.message,
        })
    }

    fn path_segment(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// Registers `schema` under `subject`; returns its id (cached).
    pub async fn register_schema(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = self.ids.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(*id);
        }
        let path = format!("/subjects/{}/versions", Self::path_segment(subject));
        let answer = self
            .call(reqwest::Method::POST, &path, Some(json!({"schema": schema})))
            .await?;
        let id = answer["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| bad_answer("no id", None))?;
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, id);
        Ok(id)
    }

    /// The schema with `id` (cached: ids never change meaning).
    pub async fn schema(&self, id: u32) -> Result<String, RegistryError> {
        if let Some(schema) = self.schemas.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(schema.clone());
        }
        let answer = self
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        let schema = answer["schema"]
            .as_str()
            .ok_or_else(|| bad_answer("no schema", None))?
            .to_owned();
        self.schemas
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// The version numbers of `subject`.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let path = format!("/subjects/{}/versions", Self::path_segment(subject));
        let answer = self.call(reqwest::Method::GET, &path, None).await?;
        serde_json::from_value(answer).map_err(|e| bad_answer("not a list of versions", Some(e)))
    }

    /// The schema text of version `version` (a number or `latest`) of `subject`.
    pub async fn version_schema(&self, subject: &str, version: &str) -> Result<String, RegistryError> {
        let path = format!("/subjects/{}/versions/{version}", Self::path_segment(subject));
        let answer = self.call(reqwest::Method::GET, &path, None).await?;
        answer["schema"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad_answer("no schema", None))
    }

    /// Asks whether `schema` could be registered under `subject`; returns the registry's reasons if not.
    pub async fn test_compatibility(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Result<(), Vec<String>>, RegistryError> {
        let path = format!(
            "/compatibility/subjects/{}/versions/latest?verbose=true",
            Self::path_segment(subject)
        );
        let answer = self
            .call(reqwest::Method::POST, &path, Some(json!({"schema": schema})))
            .await?;
        if answer["is_compatible"].as_bool() == Some(true) {
            return Ok(Ok(()));
        }
        let messages = answer["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok(Err(messages))
    }

    /// Sets the compatibility level of `subject` (or the global one).
    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: crate::Compatibility,
    ) -> Result<(), RegistryError> {
        let path = match subject {
            Some(s) => format!("/config/{}", Self::path_segment(s)),
            None => "/config".to_owned(),
        };
        self.call(
            reqwest::Method::PUT,
            &path,
            Some(json!({"compatibility": level.as_str()})),
        )
        .await
        .map(|_| ())
    }
}

impl SchemaSource for RegistryClient {
    fn register<'a>(
        &'a self,
        subject: &'a str,
        schema: &'a str,
    ) -> BoxFuture<'a, Result<u32, RegistryError>> {
        Box::pin(self.register_schema(subject, schema))
    }

    fn schema_by_id(&self, id: u32) -> BoxFuture<'_, Result<String, RegistryError>> {
        Box::pin(self.schema(id))
    }

    fn set_level<'a>(
        &'a self,
        subject: &'a str,
        level: crate::Compatibility,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.set_compatibility(Some(subject), level))
    }
}
