//! End to end: orders posted over HTTP reach the database, Kafka and the read model, on real servers from
//! the harness and in the embedded default; bad input changes nothing; the binary starts and stops cleanly.
//! One module per concern; `support` holds what they share.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod api;
mod binary;
mod cache;
mod commands;
mod faults;
mod observability;
mod pipeline;
mod security;
mod support;
