//! The embedded schema registry's storage: registry tables in the same database as the orders.

use futures::future::BoxFuture;
use orderflow_registry::{RegisteredVersion, RegistryStorage, StorageError};

use crate::{Store, StoreError};

fn storage(e: StoreError) -> StorageError {
    StorageError::new(e)
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        Box::pin(async move {
            match $self {
                Store::Postgres($s) => $e,
                Store::Sqlite($s) => $e,
            }
            .map_err(storage)
        })
    };
}

impl RegistryStorage for Store {
    fn schema_by_id(&self, id: u32) -> BoxFuture<'_, Result<Option<String>, StorageError>> {
        dispatch!(self, s => s.registry_schema(id).await)
    }

    fn subjects(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        dispatch!(self, s => s.registry_subjects().await)
    }

    fn versions<'a>(
        &'a self,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RegisteredVersion>, StorageError>> {
        dispatch!(self, s => s.registry_versions(subject).await)
    }

    fn append<'a>(
        &'a self,
        subject: &'a str,
        fingerprint: &'a str,
        schema: &'a str,
    ) -> BoxFuture<'a, Result<RegisteredVersion, StorageError>> {
        dispatch!(self, s => s.registry_append(subject, fingerprint, schema).await)
    }

    fn compatibility<'a>(
        &'a self,
        subject: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        dispatch!(self, s => s.registry_compatibility(subject.unwrap_or("")).await)
    }

    fn set_compatibility<'a>(
        &'a self,
        subject: Option<&'a str>,
        level: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        dispatch!(self, s => s.registry_set_compatibility(subject.unwrap_or(""), level).await)
    }

    fn soft_delete<'a>(
        &'a self,
        subject: &'a str,
        versions: &'a [u32],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        dispatch!(self, s => s.registry_delete(subject, versions, false).await)
    }

    fn hard_delete<'a>(
        &'a self,
        subject: &'a str,
        versions: &'a [u32],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        dispatch!(self, s => s.registry_delete(subject, versions, true).await)
    }

    fn mode<'a>(&'a self, subject: Option<&'a str>) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        dispatch!(self, s => s.registry_mode(subject.unwrap_or("")).await)
    }

    fn set_mode<'a>(
        &'a self,
        subject: Option<&'a str>,
        mode: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        dispatch!(self, s => s.registry_set_mode(subject.unwrap_or(""), mode).await)
    }
}
