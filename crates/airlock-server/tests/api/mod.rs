//! The API's behaviour, one module per concern.

mod approvals;
mod audit;
mod auth;
mod flow;
mod gateway;
mod headers;
mod health;
mod identity;
mod input;
mod inspection;
mod judge;
mod lifecycle;
mod mcp;
mod openapi;
mod problems;
mod rate_limits;
mod runs;
mod sdk;
mod secrets;
mod sessions;
mod tenancy;
mod tool_servers;
mod tools;
