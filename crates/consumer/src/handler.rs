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

/// Any error, as the cause of a [`HandlerError`].
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a handler could not apply a batch; nothing of the batch may have taken effect.
///
/// The cause is kept as the error's source (the log prints the whole chain); [`HandlerError::message`] is
/// that chain as one line, written to the dead-letter headers. Where nothing underlies the failure, a plain
/// message is the cause: `HandlerError::permanent("unknown field")`.
#[derive(Debug, thiserror::Error)]
#[error("{kind} error")]
pub struct HandlerError {
    /// Transient or permanent.
    pub kind: ErrorKind,
    /// What went wrong.
    #[source]
    source: BoxError,
}

impl HandlerError {
    /// A failure of `kind` caused by `cause` (an error, or a message when there is none).
    pub fn new(kind: ErrorKind, cause: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: cause.into(),
        }
    }

    /// A failure that may clear by retrying.
    pub fn transient(cause: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::Transient, cause)
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(cause: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::Permanent, cause)
    }

    /// The cause.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The cause and its own sources on one line (`corrupt order.created body (schema 3): ...`), for the
    /// dead-letter headers.
    pub fn message(&self) -> String {
        orderflow_telemetry::ErrorChain(self.cause()).to_string()
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

    /// Called once `published`, every output published for `batch` so far (those of [`Handler::handle`],
    /// then those this returned before), is acknowledged, before the batch's offsets move on; what it returns
    /// is published, and it is called again with that added, until it returns nothing (at most
    /// [`SETTLE_ROUNDS`] times). A handler whose outputs describe per-key state that batches of other
    /// partitions also change (a projection of several topics) races with them: two changes of one key
    /// applied in one order can be published in the other, leaving an older state last. Re-reading here and
    /// returning what became newer meanwhile closes that race, provided the re-reading goes on until a read
    /// after the last publish finds nothing newer: whichever output lands last was then published after the
    /// newest change was applied. An error re-runs the batch from `handle` (which must therefore be
    /// idempotent). By default nothing.
    fn settled(
        &self,
        batch: &[Record],
        published: &[Output],
    ) -> impl Future<Output = Result<Vec<Output>, HandlerError>> + Send {
        let _ = (batch, published);
        async { Ok(Vec::new()) }
    }
}

/// Most times [`Handler::settled`] is asked about one batch: each round needs a key to have changed again
/// during the round before, which a key's few versions allow only a few times.
pub const SETTLE_ROUNDS: usize = 8;

/// A shared handler handles as the handler it shares.
impl<H: Handler> Handler for std::sync::Arc<H> {
    fn handle(&self, batch: &[Record]) -> impl Future<Output = Result<Vec<Output>, HandlerError>> + Send {
        (**self).handle(batch)
    }

    fn settled(
        &self,
        batch: &[Record],
        published: &[Output],
    ) -> impl Future<Output = Result<Vec<Output>, HandlerError>> + Send {
        (**self).settled(batch, published)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("corrupt order.created body (schema 3)")]
    struct Corrupt(#[source] std::num::ParseIntError);

    #[test]
    fn the_cause_is_the_source_and_the_message_its_chain() {
        let cause = Corrupt("x".parse::<u32>().unwrap_err());
        let error = HandlerError::permanent(cause);
        assert_eq!(error.kind, ErrorKind::Permanent);
        assert_eq!(error.to_string(), "permanent error");
        assert_eq!(
            error.message(),
            "corrupt order.created body (schema 3): invalid digit found in string"
        );
        assert!(error.source().and_then(|s| s.downcast_ref::<Corrupt>()).is_some());
    }

    #[test]
    fn a_plain_message_is_a_cause_of_its_own() {
        let error = HandlerError::transient("database busy");
        assert_eq!(error.kind, ErrorKind::Transient);
        assert_eq!(error.message(), "database busy");
        assert_eq!(error.cause().to_string(), "database busy");
    }
}
