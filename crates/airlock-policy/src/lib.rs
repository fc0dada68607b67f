//! Deciding: JSON Schema validation, Cedar authorization, risk tiers and approval
//! requirements, the flow rules ([`flow`]) and the critical judge ([`judge`]).
//!
//! Input is a fully materialised context, output a decision with its reasons; no I/O, so every
//! rule can be tested exhaustively. [`ArgumentSchema`] checks a call's arguments against its
//! tool's schema, [`TenantPolicies`] holds a tenant's validated Cedar policies, and [`decide`]
//! turns both, with the facts about the call, into a [`Decision`].

mod cedar;
mod decision;
pub mod flow;
pub mod judge;
mod schema;
mod tier;

pub use cedar::{
    MAX_APPROVERS, MAX_POLICY_BYTES, MAX_POLICY_NESTING, PolicyError, TenantPolicies, cedar_schema_text,
};
pub use decision::{
    ActionContext, Decision, PrincipalFacts, PrincipalKind, RunFacts, ToolFacts, Verdict, decide,
};
pub use schema::{
    ArgumentSchema, KNOWN_SENSITIVE_KINDS, MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, MAX_VIOLATIONS,
    SENSITIVE_KEYWORD, SchemaError, SensitiveArgument, Violation,
};
pub use tier::{RiskTier, TierError};
