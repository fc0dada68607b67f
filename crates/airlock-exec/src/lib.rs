//! The executor: connectors (HTTP, upstream MCP), credential use, idempotency, outcome
//! verification and receipt signing.
//!
//! The only crate that may decrypt a tool credential; it never decides policy. So far it
//! holds the connectors' settings, validated when a tool is registered; execution arrives
//! with the rest of the action path.

pub mod connector;

pub use connector::{Connector, ConnectorError, HttpConnector, HttpMethod};
