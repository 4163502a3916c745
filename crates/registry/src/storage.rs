//! Where the registry keeps schemas, subject versions and compatibility levels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures::future::BoxFuture;

/// A schema registered as one version of one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredVersion {
    /// The subject.
    pub subject: String,
    /// Its version number, from 1.
    pub version: u32,
    /// The schema's global id (the same schema has the same id under every subject).
    pub id: u32,
    /// The schema text.
    pub schema: String,
}

/// A storage failure: the backend's own error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(Box<dyn std::error::Error + Send + Sync>);

impl StorageError {
    /// Wraps the backend's error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// Persistence behind a [`crate::RegistryService`]; object-safe so services can share any backend.
pub trait RegistryStorage: Send + Sync {
    /// The schema with this id.
    fn schema_by_id(&self, id: u32) -> BoxFuture<'_, Result<Option<String>, StorageError>>;
    /// Every subject with at least one version, sorted.
    fn subjects(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>>;
    /// Every version of `subject`, oldest first.
    fn versions<'a>(
        &'a self,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RegisteredVersion>, StorageError>>;
    /// Stores `schema` (deduplicated globally by `fingerprint`) as the next version of `subject`.
    fn append<'a>(
        &'a self,
        subject: &'a str,
        fingerprint: &'a str,
        schema: &'a str,
    ) -> BoxFuture<'a, Result<RegisteredVersion, StorageError>>;
    /// The compatibility level set for `subject` (or globally, for `None`).
    fn compatibility<'a>(
        &'a self,
        subject: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, StorageError>>;
    /// Sets the compatibility level of `subject` (or globally, for `None`).
    fn set_compatibility<'a>(
        &'a self,
        subject: Option<&'a str>,
        level: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
}

#[derive(Default)]
struct Inner {
    schemas: Vec<(String, String)>,
    subjects: BTreeMap<String, Vec<u32>>,
    config: HashMap<String, String>,
}

/// Registry storage in memory (tests, tools); lost when dropped.
#[derive(Default)]
pub struct MemoryStorage(Mutex<Inner>);

impl MemoryStorage {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl RegistryStorage for MemoryStorage {
    fn schema_by_id(&self, id: u32) -> BoxFuture<'_, Result<Option<String>, StorageError>> {
        let found = self.with(|i| {
            id.checked_sub(1)
                .and_then(|n| i.schemas.get(n as usize))
                .map(|(_, s)| s.clone())
        });
        Box::pin(async move { Ok(found) })
    }

    fn subjects(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        let subjects = self.with(|i| i.subjects.keys().cloned().collect());
        Box::pin(async move { Ok(subjects) })
    }

    fn versions<'a>(
        &'a self,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RegisteredVersion>, StorageError>> {
        let versions = self.with(|i| {
            i.subjects
                .get(subject)
                .map(|ids| {
                    ids.iter()
                        .enumerate()
                        .map(|(n, id)| RegisteredVersion {
                            subject: subject.to_owned(),
                            version: n as u32 + 1,
                            id: *id,
                            schema: i.schemas[*id as usize - 1].1.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        });
        Box::pin(async move { Ok(versions) })
    }

    fn append<'a>(
        &'a self,
        subject: &'a str,
        fingerprint: &'a str,
        schema: &'a str,
    ) -> BoxFuture<'a, Result<RegisteredVersion, StorageError>> {
        let registered = self.with(|i| {
            let id = match i.schemas.iter().position(|(f, _)| f == fingerprint) {
                Some(n) => n as u32 + 1,
                None => {
                    i.schemas.push((fingerprint.to_owned(), schema.to_owned()));
                    i.schemas.len() as u32
                }
            };
            let versions = i.subjects.entry(subject.to_owned()).or_default();
            versions.push(id);
            RegisteredVersion {
                subject: subject.to_owned(),
                version: versions.len() as u32,
                id,
                schema: schema.to_owned(),
            }
        });
        Box::pin(async move { Ok(registered) })
    }

    fn compatibility<'a>(
        &'a self,
        subject: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        let level = self.with(|i| i.config.get(subject.unwrap_or("")).cloned());
        Box::pin(async move { Ok(level) })
    }

    fn set_compatibility<'a>(
        &'a self,
        subject: Option<&'a str>,
        level: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.with(|i| {
            i.config
                .insert(subject.unwrap_or("").to_owned(), level.to_owned())
        });
        Box::pin(async move { Ok(()) })
    }
}
