//! A schema registry speaking the Confluent Schema Registry REST API: the compatibility rules
//! ([`compat`]), a registry service over pluggable storage ([`RegistryService`], served by [`router`]), and
//! an HTTP client with an in-memory cache ([`RegistryClient`]).
//!
//! Both the service and the client implement [`SchemaSource`], which is all an event codec needs: register
//! a schema under a subject, and fetch a schema by id.

mod client;
pub mod compat;
mod server;
mod service;
mod storage;

use futures::future::BoxFuture;

pub use client::RegistryClient;
pub use compat::{Compatibility, Incompatibility};
pub use server::{CONTENT_TYPE, openapi_router, router};
pub use service::{Deleted, Mode, RegistryService};
pub use storage::{MemoryStorage, RegisteredVersion, RegistryStorage, StorageError};

/// What can go wrong with a registry call; `error_code` values follow the Confluent API.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The schema text is not a valid Avro schema (42201).
    #[error("invalid schema: {reason}")]
    InvalidSchema {
        /// What is wrong with it.
        reason: String,
        /// The parser's error, when the text did not parse.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The schema is incompatible with earlier versions of the subject (409).
    #[error("schema being registered is incompatible with an earlier schema for subject {subject}: {}", details(.reasons))]
    Incompatible {
        /// The subject.
        subject: String,
        /// Every broken rule.
        reasons: Vec<Incompatibility>,
    },
    /// No such subject (40401).
    #[error("subject '{0}' not found")]
    SubjectNotFound(String),
    /// No such version of the subject (40402).
    #[error("version {version} not found for subject '{subject}'")]
    VersionNotFound {
        /// The subject.
        subject: String,
        /// The version asked for.
        version: String,
    },
    /// No schema with this id, or the schema is not registered under the subject (40403).
    #[error("schema {0} not found")]
    SchemaNotFound(String),
    /// An unknown compatibility level (42203).
    #[error("invalid compatibility level '{0}'")]
    InvalidCompatibility(String),
    /// Every version of the subject is soft-deleted (40404).
    #[error("subject '{0}' was soft deleted; set permanent=true to delete it permanently")]
    SubjectSoftDeleted(String),
    /// A permanent delete of a subject that was not soft-deleted first (40405).
    #[error("subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// The version is soft-deleted (40406).
    #[error(
        "subject '{subject}' version {version} was soft deleted; set permanent=true to delete it permanently"
    )]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// A permanent delete of a version that was not soft-deleted first (40407).
    #[error("subject '{subject}' version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The subject has no compatibility level of its own (40408).
    #[error("subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotFound(String),
    /// The subject has no mode of its own (40409).
    #[error("subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotFound(String),
    /// A version that is neither a positive number nor `latest` (42202).
    #[error("the specified version '{0}' is not a valid version id: use a positive integer or 'latest'")]
    InvalidVersion(String),
    /// An unknown or unsupported mode (42204).
    #[error("invalid mode '{0}': expected READWRITE, READONLY or READONLY_OVERRIDE")]
    InvalidMode(String),
    /// A write to a subject in a read-only mode (42205).
    #[error("subject '{0}' is in read-only mode")]
    ReadOnly(String),
    /// The storage behind the registry failed (50001).
    #[error("registry storage")]
    Storage(#[from] StorageError),
    /// The registry could not be reached (or the HTTP client not built).
    #[error("schema registry unavailable")]
    Unavailable(#[source] reqwest::Error),
    /// The registry answered something that is not an answer of its API.
    #[error("unexpected answer from the schema registry: {what}")]
    BadAnswer {
        /// What was wrong with the answer.
        what: String,
        /// Why the answer could not be read, when it is not JSON of the expected shape.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The registry answered with an error not listed above.
    #[error("registry error {error_code}: {message}")]
    Other {
        /// Confluent error code.
        error_code: u32,
        /// Its message.
        message: String,
    },
}

fn details(reasons: &[Incompatibility]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl RegistryError {
    /// The Confluent `error_code` of this error.
    pub fn error_code(&self) -> u32 {
        match self {
            Self::InvalidSchema { .. } => 42201,
            Self::Incompatible { .. } => 409,
            Self::SubjectNotFound(_) => 40401,
            Self::VersionNotFound { .. } => 40402,
            Self::SchemaNotFound(_) => 40403,
            Self::InvalidCompatibility(_) => 42203,
            Self::SubjectSoftDeleted(_) => 40404,
            Self::SubjectNotSoftDeleted(_) => 40405,
            Self::VersionSoftDeleted { .. } => 40406,
            Self::VersionNotSoftDeleted { .. } => 40407,
            Self::SubjectCompatibilityNotFound(_) => 40408,
            Self::SubjectModeNotFound(_) => 40409,
            Self::InvalidVersion(_) => 42202,
            Self::InvalidMode(_) => 42204,
            Self::ReadOnly(_) => 42205,
            Self::Storage(_) | Self::Unavailable(_) | Self::BadAnswer { .. } => 50001,
            Self::Other { error_code, .. } => *error_code,
        }
    }
}

/// Where a codec gets schemas: a remote registry over HTTP or the embedded one in-process.
pub trait SchemaSource: Send + Sync {
    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    fn register<'a>(&'a self, subject: &'a str, schema: &'a str)
    -> BoxFuture<'a, Result<u32, RegistryError>>;
    /// The schema text registered with `id`.
    fn schema_by_id(&self, id: u32) -> BoxFuture<'_, Result<String, RegistryError>>;
    /// Sets the compatibility level `subject` enforces.
    fn set_level<'a>(
        &'a self,
        subject: &'a str,
        level: Compatibility,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
}

/// The subject holding the value schemas of `topic` (Confluent's TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}
