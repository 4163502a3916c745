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
    /// Soft-deleted: hidden from reads unless asked for, and no longer checked against.
    pub deleted: bool,
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
    /// Every subject with at least one version (soft-deleted ones included), sorted.
    fn subjects(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>>;
    /// Every version of `subject`, soft-deleted ones included, oldest first.
    fn versions<'a>(
        &'a self,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RegisteredVersion>, StorageError>>;
    /// Stores `schema` (deduplicated globally by `fingerprint`) as the next version of `subject`: one past
    /// the highest it ever had, soft-deleted versions included.
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
    /// Sets the compatibility level of `subject` (or globally, for `None`); `None` removes it.
    fn set_compatibility<'a>(
        &'a self,
        subject: Option<&'a str>,
        level: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Marks `versions` of `subject` soft-deleted.
    fn soft_delete<'a>(
        &'a self,
        subject: &'a str,
        versions: &'a [u32],
    ) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Removes `versions` of `subject` for good (the schemas stay, by id).
    fn hard_delete<'a>(
        &'a self,
        subject: &'a str,
        versions: &'a [u32],
    ) -> BoxFuture<'a, Result<(), StorageError>>;
    /// The mode set for `subject` (or globally, for `None`).
    fn mode<'a>(&'a self, subject: Option<&'a str>) -> BoxFuture<'a, Result<Option<String>, StorageError>>;
    /// Sets the mode of `subject` (or globally, for `None`); `None` removes it.
    fn set_mode<'a>(
        &'a self,
        subject: Option<&'a str>,
        mode: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
}

/// One version of a subject in memory.
struct Version {
    version: u32,
    id: u32,
    deleted: bool,
}

#[derive(Default)]
struct Inner {
    schemas: Vec<(String, String)>,
    subjects: BTreeMap<String, Vec<Version>>,
    config: HashMap<String, String>,
    modes: HashMap<String, String>,
}

/// Sets (`Some`) or removes (`None`) `key` of `map`.
fn put(map: &mut HashMap<String, String>, key: Option<&str>, value: Option<&str>) {
    let key = key.unwrap_or("").to_owned();
    match value {
        Some(value) => map.insert(key, value.to_owned()),
        None => map.remove(&key),
    };
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
                .map(|versions| {
                    versions
                        .iter()
                        .map(|v| RegisteredVersion {
                            subject: subject.to_owned(),
                            version: v.version,
                            id: v.id,
                            schema: i.schemas[v.id as usize - 1].1.clone(),
                            deleted: v.deleted,
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
            let version = versions.last().map_or(1, |v| v.version + 1);
            versions.push(Version {
                version,
                id,
                deleted: false,
            });
            RegisteredVersion {
                subject: subject.to_owned(),
                version,
                id,
                schema: schema.to_owned(),
                deleted: false,
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
        level: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.with(|i| put(&mut i.config, subject, level));
        Box::pin(async move { Ok(()) })
    }

    fn soft_delete<'a>(
        &'a self,
        subject: &'a str,
        versions: &'a [u32],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.with(|i| {
            for v in i.subjects.get_mut(subject).into_iter().flatten() {
                v.deleted |= versions.contains(&v.version);
            }
        });
        Box::pin(async move { Ok(()) })
    }

    fn hard_delete<'a>(
        &'a self,
        subject: &'a str,
        versions: &'a [u32],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.with(|i| {
            if let Some(kept) = i.subjects.get_mut(subject) {
                kept.retain(|v| !versions.contains(&v.version));
                if kept.is_empty() {
                    i.subjects.remove(subject);
                }
            }
        });
        Box::pin(async move { Ok(()) })
    }

    fn mode<'a>(&'a self, subject: Option<&'a str>) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        let mode = self.with(|i| i.modes.get(subject.unwrap_or("")).cloned());
        Box::pin(async move { Ok(mode) })
    }

    fn set_mode<'a>(
        &'a self,
        subject: Option<&'a str>,
        mode: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.with(|i| put(&mut i.modes, subject, mode));
        Box::pin(async move { Ok(()) })
    }
}
