//! The store's guarantees, checked against real SQLite files in a fresh directory per test,
//! in one test binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "tests")]

mod common;
mod suites;
