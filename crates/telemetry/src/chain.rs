//! An error with its causes on one line, for the few places that need the whole chain as text (a
//! dead-letter header, a one-line message). Log fields take the error itself instead
//! (`error = &e as &dyn std::error::Error`): the log then prints its sources too.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, joined with `": "` (`connecting to Redis: timed out`);
/// a source whose text already ends the previous one (some libraries print their cause) is not repeated.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !previous.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connecting to Redis")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_an_error_and_its_sources() {
        let error = Outer(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"));
        assert_eq!(ErrorChain(&error).to_string(), "connecting to Redis: timed out");
        let alone = std::io::Error::other("alone");
        assert_eq!(ErrorChain(&alone).to_string(), "alone");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("database error: {0}")]
    struct Printed(#[source] std::io::Error);

    #[test]
    fn a_cause_already_printed_is_not_repeated() {
        let error = Outer2(Printed(std::io::Error::other("refused")));
        assert_eq!(ErrorChain(&error).to_string(), "reading: database error: refused");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading")]
    struct Outer2(#[source] Printed);
}
