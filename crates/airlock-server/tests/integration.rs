//! HTTP integration tests for Airlock's server: each test starts the real server on port 0
//! with a fresh data directory and talks to it over HTTP, as a client would.
//!
//! One binary for every integration test (each extra binary costs a link).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "tests")]

mod api;
mod common;
