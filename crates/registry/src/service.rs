//! The registry's behaviour, independent of HTTP and of storage.

use std::sync::Arc;

use apache_avro::Schema;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::compat::{self, Compatibility, Incompatibility};
use crate::{RegisteredVersion, RegistryError, RegistryStorage, SchemaSource};

/// A schema registry over some storage; cheap to clone.
#[derive(Clone)]
pub struct RegistryService {
    storage: Arc<dyn RegistryStorage>,
}

/// A schema parsed and normalised: the text is JSON with sorted keys and no whitespace, so equal schemas
/// have equal text and fingerprint whatever their original formatting.
struct Normalised {
    schema: Schema,
    text: String,
    fingerprint: String,
}

fn invalid(
    reason: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> RegistryError {
    RegistryError::InvalidSchema {
        reason: reason.into(),
        source: Some(Box::new(source)),
    }
}

fn normalise(text: &str) -> Result<Normalised, RegistryError> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid("not JSON", e))?;
    let text = json.to_string();
    let schema = Schema::parse_str(&text).map_err(|e| invalid("not an Avro schema", e))?;
    let fingerprint = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Normalised {
        schema,
        text,
        fingerprint,
    })
}

fn parse_stored(version: &RegisteredVersion) -> Result<Schema, RegistryError> {
    Schema::parse_str(&version.schema).map_err(|e| {
        invalid(
            format!(
                "stored version {} of {} is invalid",
                version.version, version.subject
            ),
            e,
        )
    })
}

impl RegistryService {
    /// A registry over `storage`.
    pub fn new(storage: Arc<dyn RegistryStorage>) -> Self {
        Self { storage }
    }

    /// Registers `schema` as the next version of `subject` after checking it against earlier versions under
    /// the subject's compatibility level; registering a schema the subject already has returns that version.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<RegisteredVersion, RegistryError> {
        let new = normalise(schema)?;
        let versions = self.storage.versions(subject).await?;
        if let Some(existing) = versions.iter().find(|v| v.schema == new.text) {
            return Ok(existing.clone());
        }
        let level = self.compatibility(Some(subject)).await?;
        let previous = versions
            .iter()
            .map(|v| Ok((v.version, parse_stored(v)?)))
            .collect::<Result<Vec<_>, RegistryError>>()?;
        compat::check(level, &new.schema, &previous).map_err(|reasons| RegistryError::Incompatible {
            subject: subject.to_owned(),
            reasons,
        })?;
        Ok(self.storage.append(subject, &new.fingerprint, &new.text).await?)
    }

    /// The version of `subject` holding `schema`.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<RegisteredVersion, RegistryError> {
        let new = normalise(schema)?;
        let versions = self.storage.versions(subject).await?;
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        versions
            .into_iter()
            .find(|v| v.schema == new.text)
            .ok_or_else(|| RegistryError::SchemaNotFound(format!("under subject '{subject}'")))
    }

    /// The schema text with this id.
    pub async fn schema(&self, id: u32) -> Result<String, RegistryError> {
        self.storage
            .schema_by_id(id)
            .await?
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// Every subject.
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        Ok(self.storage.subjects().await?)
    }

    /// Every version of `subject`, oldest first.
    pub async fn versions(&self, subject: &str) -> Result<Vec<RegisteredVersion>, RegistryError> {
        let versions = self.storage.versions(subject).await?;
        if versions.is_empty() {
            Err(RegistryError::SubjectNotFound(subject.to_owned()))
        } else {
            Ok(versions)
        }
    }

    /// Version `version` (a number or `latest`) of `subject`.
    pub async fn version(&self, subject: &str, version: &str) -> Result<RegisteredVersion, RegistryError> {
        let versions = self.versions(subject).await?;
        let found = match version {
            "latest" | "-1" => versions.last().cloned(),
            n => n
                .parse::<u32>()
                .ok()
                .and_then(|n| versions.into_iter().find(|v| v.version == n)),
        };
        found.ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: version.to_owned(),
        })
    }

    /// Which rules `schema` would break if registered under `subject`: against every earlier version for
    /// `latest` (respecting transitive levels), or against the one version named.
    pub async fn test_compatibility(
        &self,
        subject: &str,
        version: &str,
        schema: &str,
    ) -> Result<Vec<Incompatibility>, RegistryError> {
        let new = normalise(schema)?;
        let level = self.compatibility(Some(subject)).await?;
        let against = if version == "latest" {
            self.versions(subject).await?
        } else {
            vec![self.version(subject, version).await?]
        };
        let previous = against
            .iter()
            .map(|v| Ok((v.version, parse_stored(v)?)))
            .collect::<Result<Vec<_>, RegistryError>>()?;
        Ok(compat::check(level, &new.schema, &previous)
            .err()
            .unwrap_or_default())
    }

    /// The level in force for `subject` (its own, else the global one, else BACKWARD); `None` asks for the
    /// global level.
    pub async fn compatibility(&self, subject: Option<&str>) -> Result<Compatibility, RegistryError> {
        let own = match subject {
            Some(s) => self.storage.compatibility(Some(s)).await?,
            None => None,
        };
        let level = match own {
            Some(level) => Some(level),
            None => self.storage.compatibility(None).await?,
        };
        Ok(level.and_then(|l| l.parse().ok()).unwrap_or_default())
    }

    /// The level set on `subject` itself, if any.
    pub async fn subject_compatibility(&self, subject: &str) -> Result<Option<Compatibility>, RegistryError> {
        Ok(self
            .storage
            .compatibility(Some(subject))
            .await?
            .and_then(|l| l.parse().ok()))
    }

    /// Sets the level of `subject` (or the global one).
    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<(), RegistryError> {
        Ok(self.storage.set_compatibility(subject, level.as_str()).await?)
    }
}

impl SchemaSource for RegistryService {
    fn register<'a>(
        &'a self,
        subject: &'a str,
        schema: &'a str,
    ) -> BoxFuture<'a, Result<u32, RegistryError>> {
        Box::pin(async move {
            RegistryService::register(self, subject, schema)
                .await
                .map(|v| v.id)
        })
    }

    fn schema_by_id(&self, id: u32) -> BoxFuture<'_, Result<String, RegistryError>> {
        Box::pin(self.schema(id))
    }

    fn set_level<'a>(
        &'a self,
        subject: &'a str,
        level: Compatibility,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.set_compatibility(Some(subject), level))
    }
}
