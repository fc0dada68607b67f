//! Airlock's shared vocabulary.
//!
//! Every identifier, name and role that crosses a crate boundary is a newtype here with a
//! fallible `parse`, so a value that reached a repository or a policy decision has already
//! been validated once, at the edge. This crate does no I/O.

mod id;
mod name;
mod role;
mod timestamp;

pub use id::{AgentId, ApiKeyId, IdError, OperatorId, SessionId, TenantId, UserId};
pub use name::{AgentName, Email, NameError, TenantSlug};
pub use role::{Role, RoleError, RoleSet};
pub use timestamp::Timestamp;
