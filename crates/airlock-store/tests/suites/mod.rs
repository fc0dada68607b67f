//! One module per concern.

mod audit;
mod identity;
mod inspection;
mod models;
mod tools;
