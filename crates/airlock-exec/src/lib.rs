//! The executor: connectors (HTTP, upstream MCP), credential use, idempotency, outcome
//! verification and receipt signing.
//!
//! The only crate that may decrypt a tool credential; it never decides policy. Its contents
//! arrive with the governed-actions capability.
