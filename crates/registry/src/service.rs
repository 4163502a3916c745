//! The registry's behaviour, independent of HTTP and of storage.

use std::sync::Arc;

use apache_avro::Schema;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::compat::{self, Compatibility, Incompatibility};
use crate::{RegisteredVersion, RegistryError, RegistryStorage, SchemaSource};

/// Which versions a read sees: the live ones (the default), soft-deleted ones too, or only those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deleted {
    /// Live versions only.
    #[default]
    Exclude,
    /// Live and soft-deleted versions.
    Include,
    /// Soft-deleted versions only.
    Only,
}

impl Deleted {
    fn keeps(self, deleted: bool) -> bool {
        match self {
            Self::Exclude => !deleted,
            Self::Include => true,
            Self::Only => deleted,
        }
    }
}

/// What a subject (or the registry) lets writers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Schemas can be registered and deleted.
    #[default]
    ReadWrite,
    /// No registration or deletion.
    ReadOnly,
    /// Read-only, overriding subject-level modes (kept as set; enforced like READONLY).
    ReadOnlyOverride,
}

impl Mode {
    /// The Confluent name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWrite => "READWRITE",
            Self::ReadOnly => "READONLY",
            Self::ReadOnlyOverride => "READONLY_OVERRIDE",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = RegistryError;

    /// A Confluent mode name; IMPORT (registering schemas with given ids) is not served.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_uppercase().as_str() {
            "READWRITE" => Ok(Self::ReadWrite),
            "READONLY" => Ok(Self::ReadOnly),
            "READONLY_OVERRIDE" => Ok(Self::ReadOnlyOverride),
            _ => Err(RegistryError::InvalidMode(text.to_owned())),
        }
    }
}

/// `version` as a version number: `latest` and `-1` are `None`; anything else not a positive number is
/// refused (42202).
fn version_number(version: &str) -> Result<Option<u32>, RegistryError> {
    match version {
        "latest" | "-1" => Ok(None),
        n => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| RegistryError::InvalidVersion(version.to_owned())),
    }
}

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

/// Every stored version parsed, with its number: what compatibility is checked against.
fn parse_all(versions: &[RegisteredVersion]) -> Result<Vec<(u32, Schema)>, RegistryError> {
    versions
        .iter()
        .map(|v| Ok((v.version, parse_stored(v)?)))
        .collect()
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
        self.writable(subject).await?;
        let new = normalise(schema)?;
        let versions = self.live_versions(subject).await?;
        if let Some(existing) = versions.iter().find(|v| v.schema == new.text) {
            return Ok(existing.clone());
        }
        let level = self.compatibility(Some(subject)).await?;
        let previous = parse_all(&versions)?;
        compat::check(level, &new.schema, &previous).map_err(|reasons| RegistryError::Incompatible {
            subject: subject.to_owned(),
            reasons,
        })?;
        Ok(self.storage.append(subject, &new.fingerprint, &new.text).await?)
    }

    /// The live versions of `subject` (none when it has none).
    async fn live_versions(&self, subject: &str) -> Result<Vec<RegisteredVersion>, RegistryError> {
        let mut versions = self.storage.versions(subject).await?;
        versions.retain(|v| !v.deleted);
        Ok(versions)
    }

    /// The version of `subject` holding `schema` (among soft-deleted versions too with [`Deleted::Include`]).
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<RegisteredVersion, RegistryError> {
        self.lookup_in(subject, schema, Deleted::Exclude).await
    }

    /// [`Self::lookup`] among the versions `deleted` selects.
    pub async fn lookup_in(
        &self,
        subject: &str,
        schema: &str,
        deleted: Deleted,
    ) -> Result<RegisteredVersion, RegistryError> {
        let new = normalise(schema)?;
        let mut versions = self.storage.versions(subject).await?;
        versions.retain(|v| deleted.keeps(v.deleted));
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

    /// Every subject with a live version.
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        self.subjects_in(Deleted::Exclude).await
    }

    /// Every subject with a version `deleted` selects.
    pub async fn subjects_in(&self, deleted: Deleted) -> Result<Vec<String>, RegistryError> {
        let mut subjects = Vec::new();
        for subject in self.storage.subjects().await? {
            let versions = self.storage.versions(&subject).await?;
            if versions.iter().any(|v| deleted.keeps(v.deleted)) {
                subjects.push(subject);
            }
        }
        Ok(subjects)
    }

    /// Every live version of `subject`, oldest first.
    pub async fn versions(&self, subject: &str) -> Result<Vec<RegisteredVersion>, RegistryError> {
        self.versions_in(subject, Deleted::Exclude).await
    }

    /// Every version of `subject` that `deleted` selects, oldest first; none is "subject not found".
    pub async fn versions_in(
        &self,
        subject: &str,
        deleted: Deleted,
    ) -> Result<Vec<RegisteredVersion>, RegistryError> {
        let mut versions = self.storage.versions(subject).await?;
        versions.retain(|v| deleted.keeps(v.deleted));
        if versions.is_empty() {
            Err(RegistryError::SubjectNotFound(subject.to_owned()))
        } else {
            Ok(versions)
        }
    }

    /// Version `version` (a number or `latest`) of `subject`, among its live versions.
    pub async fn version(&self, subject: &str, version: &str) -> Result<RegisteredVersion, RegistryError> {
        self.version_in(subject, version, Deleted::Exclude).await
    }

    /// Version `version` (a number or `latest`) of `subject`, among the versions `deleted` selects.
    pub async fn version_in(
        &self,
        subject: &str,
        version: &str,
        deleted: Deleted,
    ) -> Result<RegisteredVersion, RegistryError> {
        let wanted = version_number(version)?;
        let versions = self.versions_in(subject, deleted).await?;
        let found = match wanted {
            None => versions.last().cloned(),
            Some(n) => versions.into_iter().find(|v| v.version == n),
        };
        found.ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: version.to_owned(),
        })
    }

    /// Soft-deletes every live version of `subject` (`permanent` false), or removes every version of a
    /// subject soft-deleted before, with its own compatibility level and mode. Returns the versions.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        let all = self.storage.versions(subject).await?;
        if all.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        self.writable(subject).await?;
        let live: Vec<u32> = all.iter().filter(|v| !v.deleted).map(|v| v.version).collect();
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
            }
            let every: Vec<u32> = all.iter().map(|v| v.version).collect();
            self.storage.hard_delete(subject, &every).await?;
            self.storage.set_compatibility(Some(subject), None).await?;
            self.storage.set_mode(Some(subject), None).await?;
            return Ok(every);
        }
        if live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
        }
        self.storage.soft_delete(subject, &live).await?;
        Ok(live)
    }

    /// Soft-deletes version `version` (a number or `latest`) of `subject`, or removes a version soft-deleted
    /// before (`permanent`). Returns its number.
    pub async fn delete_version(
        &self,
        subject: &str,
        version: &str,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let wanted = version_number(version)?;
        let all = self.storage.versions(subject).await?;
        if all.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let found = match wanted {
            // The latest live version, or for a permanent delete the latest of all.
            None => all.iter().rev().find(|v| permanent || !v.deleted),
            Some(n) => all.iter().find(|v| v.version == n),
        }
        .ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: version.to_owned(),
        })?;
        self.writable(subject).await?;
        let number = found.version;
        match (permanent, found.deleted) {
            (false, true) => Err(RegistryError::VersionSoftDeleted {
                subject: subject.to_owned(),
                version: number,
            }),
            (true, false) => Err(RegistryError::VersionNotSoftDeleted {
                subject: subject.to_owned(),
                version: number,
            }),
            (false, false) => {
                self.storage.soft_delete(subject, &[number]).await?;
                Ok(number)
            }
            (true, true) => {
                self.storage.hard_delete(subject, &[number]).await?;
                Ok(number)
            }
        }
    }

    /// Every subject version holding the schema with id `id` (soft-deleted ones with [`Deleted::Include`]).
    pub async fn usages(&self, id: u32, deleted: Deleted) -> Result<Vec<RegisteredVersion>, RegistryError> {
        self.schema(id).await?;
        let mut found = Vec::new();
        for subject in self.storage.subjects().await? {
            found.extend(
                self.storage
                    .versions(&subject)
                    .await?
                    .into_iter()
                    .filter(|v| v.id == id && deleted.keeps(v.deleted)),
            );
        }
        Ok(found)
    }

    /// The ids of schemas that reference version `version` of `subject`: none, as schema references are
    /// not accepted here (a schema names only types it defines). The version must exist.
    pub async fn referenced_by(&self, subject: &str, version: &str) -> Result<Vec<u32>, RegistryError> {
        self.version_in(subject, version, Deleted::Include).await?;
        Ok(Vec::new())
    }

    /// Removes the compatibility level of `subject` (it then follows the global one), or resets the global
    /// level (`None`) to the default. Returns the level removed.
    pub async fn delete_compatibility(&self, subject: Option<&str>) -> Result<Compatibility, RegistryError> {
        let removed = match subject {
            // Confluent answers "subject not found" when a subject has no level of its own to remove.
            Some(s) => self
                .subject_compatibility(s)
                .await?
                .ok_or_else(|| RegistryError::SubjectNotFound(s.to_owned()))?,
            None => self.compatibility(None).await?,
        };
        self.storage.set_compatibility(subject, None).await?;
        Ok(removed)
    }

    /// The mode of `subject` (its own; else, with `default_to_global`, the global one) or the global mode.
    pub async fn mode(&self, subject: Option<&str>, default_to_global: bool) -> Result<Mode, RegistryError> {
        if let Some(s) = subject {
            match self.storage.mode(Some(s)).await? {
                Some(mode) => return mode.parse(),
                None if !default_to_global => return Err(RegistryError::SubjectModeNotFound(s.to_owned())),
                None => {}
            }
        }
        match self.storage.mode(None).await? {
            Some(mode) => mode.parse(),
            None => Ok(Mode::default()),
        }
    }

    /// The mode that applies to `subject`: a global READONLY_OVERRIDE, else its own, else the global one.
    pub async fn mode_in_force(&self, subject: &str) -> Result<Mode, RegistryError> {
        let global = self.mode(None, true).await?;
        if global == Mode::ReadOnlyOverride {
            return Ok(global);
        }
        match self.storage.mode(Some(subject)).await? {
            Some(own) => own.parse(),
            None => Ok(global),
        }
    }

    /// Sets the mode of `subject` (or the global one).
    pub async fn set_mode(&self, subject: Option<&str>, mode: Mode) -> Result<(), RegistryError> {
        Ok(self.storage.set_mode(subject, Some(mode.as_str())).await?)
    }

    /// Removes the mode of `subject` (it then follows the global one). Returns the mode removed.
    pub async fn delete_mode(&self, subject: &str) -> Result<Mode, RegistryError> {
        // Confluent answers "subject not found" when a subject has no mode of its own to remove.
        let removed = self.mode(Some(subject), false).await.map_err(|e| match e {
            RegistryError::SubjectModeNotFound(s) => RegistryError::SubjectNotFound(s),
            other => other,
        })?;
        self.storage.set_mode(Some(subject), None).await?;
        Ok(removed)
    }

    /// Refuses writes (42205) to a subject whose mode (its own, else the global one) is read-only.
    async fn writable(&self, subject: &str) -> Result<(), RegistryError> {
        match self.mode_in_force(subject).await? {
            Mode::ReadWrite => Ok(()),
            Mode::ReadOnly | Mode::ReadOnlyOverride => Err(RegistryError::ReadOnly(subject.to_owned())),
        }
    }

    /// Which rules `schema` would break if registered under `subject`: against every earlier version for
    /// `latest` or `-1` (respecting transitive levels), or against the one version named.
    pub async fn test_compatibility(
        &self,
        subject: &str,
        version: &str,
        schema: &str,
    ) -> Result<Vec<Incompatibility>, RegistryError> {
        let new = normalise(schema)?;
        let level = self.compatibility(Some(subject)).await?;
        let against = if version_number(version)?.is_none() {
            self.versions(subject).await?
        } else {
            vec![self.version(subject, version).await?]
        };
        let previous = parse_all(&against)?;
        Ok(compat::check(level, &new.schema, &previous)
            .err()
            .unwrap_or_default())
    }

    /// Which rules `schema` would break if registered under `subject`, checked as registering would check it
    /// (against the versions its level names); a subject without versions accepts anything.
    pub async fn test_compatibility_all(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Vec<Incompatibility>, RegistryError> {
        let new = normalise(schema)?;
        let level = self.compatibility(Some(subject)).await?;
        let previous = parse_all(&self.live_versions(subject).await?)?;
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
        Ok(self
            .storage
            .set_compatibility(subject, Some(level.as_str()))
            .await?)
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
