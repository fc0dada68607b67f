//! Airlock's HTTP server: configuration, authentication, the REST and admin routes, metrics
//! and the wiring that holds them together.
//!
//! [`Application::build`] turns a validated [`Config`] into a bound, ready server (port 0
//! gives an ephemeral port, which is how the tests run it); [`Application::run`] serves until
//! the shutdown future completes, then drains in-flight requests.

pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod extract;
pub mod flow_guard;
pub mod mcp;
pub mod metrics;
pub mod problem;
pub mod ratelimit;
pub mod routes;
pub mod secrets;
pub mod state;
pub mod telemetry;
pub mod webhook;

mod app;
mod judge_models;
mod openapi;

pub use app::{Application, shutdown_signal};
pub use config::{Config, ConfigError, Mode, RawConfig};
pub use openapi::openapi_document;
