//! Content inspection measured against public data sets and checked by property tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

mod suites {
    mod injection;
    mod pii;
}
