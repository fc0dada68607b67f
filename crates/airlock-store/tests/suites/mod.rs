//! One module per concern.

mod audit;
mod identity;
mod tools;
