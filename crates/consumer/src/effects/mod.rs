//! Exactly-once effect adapters.
