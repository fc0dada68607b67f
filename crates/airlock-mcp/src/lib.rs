//! Airlock's Model Context Protocol adapter. Every type of the MCP SDK (`rmcp`, pinned) stays
//! inside this crate: the rest of Airlock sees plain Rust types and JSON.
//!
//! - [`server`]: Airlock as the MCP server agents connect to (streamable HTTP at `/mcp`).
//! - [`client`]: Airlock as an MCP client of upstream tool servers (stdio and streamable HTTP).

pub mod client;
pub mod server;
