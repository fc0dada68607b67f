//! One module per concern.

mod audit;
mod identity;
mod inspection;
mod tools;
