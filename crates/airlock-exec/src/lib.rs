//! The executor: connectors (HTTP, upstream MCP), credential use, idempotency, outcome
//! verification and receipt signing.
//!
//! The only crate that may decrypt a tool credential; it never decides policy. It holds the
//! connectors' settings, validated when a tool is registered, and executes calls through them:
//! credentials attached, retries only where safe, outcomes verified, secrets scrubbed from
//! whatever goes back to the agent.

pub mod connector;
pub mod execute;

pub use connector::{Connector, ConnectorError, HttpConnector, HttpMethod, McpConnector};
pub use execute::{CredentialMaterial, ExecError, Executor, McpListError, Outcome, OutcomeStatus};
