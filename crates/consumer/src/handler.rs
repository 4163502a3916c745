//! The handler API: what a consumer role implements.

use std::fmt;
use std::future::Future;

use crate::record::{Output, Record};

/// Whether a failure may clear by trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// It may clear (a timeout, a connection refused): retried in place, then through the retry topics.
    Transient,
    /// It will not clear (an undecodable or invalid record): dead-lettered at once.
    Permanent,
}

impl ErrorKind {
    /// The name written to the `error-kind` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a handler could not apply a batch; nothing of the batch may have taken effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} error: {message}")]
pub struct HandlerError {
    /// Transient or permanent.
    pub kind: ErrorKind,
    /// What went wrong, for logs and the dead-letter headers.
    pub message: String,
}

impl HandlerError {
    /// A failure that may clear by retrying.
    pub fn transient(message: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.to_string(),
        }
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.to_string(),
        }
    }
}

/// Applies the effects of records, a batch at a time.
///
/// A batch holds records of one partition in offset order. The call is all or nothing: `Ok` means every
/// record's effect is done and the returned outputs should be published; `Err` means none took effect. On an
/// error the runtime retries the records one at a time to find the failing one, so the others still pass.
/// Effects must tolerate re-delivery (see the `effects` module for exactly-once adapters).
pub trait Handler: Send + Sync + 'static {
    /// Applies `batch` and returns the records to publish.
    fn handle(&self, batch: &[Record]) -> impl Future<Output = Result<Vec<Output>, HandlerError>> + Send;
}
