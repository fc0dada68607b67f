//! One module per concern.

mod audit;
mod export;
mod identity;
mod inspection;
pub(crate) mod keys;
mod models;
mod tools;
