//! The HTTP routes, grouped by what they manage. Each handler carries its OpenAPI
//! description, so the published document and the router cannot drift apart.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod flow;
pub mod gateway;
pub mod health;
pub mod identity;
pub mod inspect;
pub mod models;
pub mod runs;
pub mod sessions;
pub mod tool_servers;
pub mod tools;
pub mod views;
