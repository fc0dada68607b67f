//! Airlock's Cedar schema and a tenant's policy set, parsed and strictly validated against it.
//!
//! A [`TenantPolicies`] only exists for text that parses, validates in strict mode, and uses
//! Airlock's annotations correctly, so a policy is rejected when written, with Cedar's own
//! messages, rather than misbehaving when a call is decided.
//!
//! # What a policy sees
//!
//! Principals are `Airlock::User` (roles, and optional team, project and data class) or
//! `Airlock::Agent`; the resource is an `Airlock::Tool`; the action is always
//! `Airlock::Action::"call"`. Arguments reach Cedar in three shapes, because Cedar records need
//! their attributes declared up front while a tool's arguments vary:
//!
//! - `context.arguments: Set<String>` holds `"name=value"` for every top-level scalar argument
//!   (strings as they are, numbers and booleans as JSON text): `context.arguments.contains("currency=EUR")`;
//! - `context.argument_names: Set<String>` holds every top-level argument name, scalar or not;
//! - `context.args` is an `Airlock::Arguments` entity whose tags are the same scalars as
//!   strings, for pattern matches: `context.args.hasTag("to") && context.args.getTag("to") like "*@example.com"`;
//! - `context.integers` is an `Airlock::Integers` entity whose tags are the top-level integer
//!   arguments as `Long`, for thresholds: `context.integers.hasTag("amount_cents") &&
//!   context.integers.getTag("amount_cents") > 100000`. Fractional numbers appear only as text;
//!   money is best passed in integer minor units.
//!
//! # Annotations
//!
//! - `@id("name")` names a policy in decisions and the audit log (default `policy0`, `policy1`, …
//!   by position); ids are unique, 1 to 64 of `[A-Za-z0-9._:-]`.
//! - `@approval("N")` on a `permit` makes a match require N approvers (1 to 10).
//! - `@reason("…")` is quoted in the reasons of a decision the policy determines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr as _;
use std::sync::LazyLock;

use cedar_policy::{Effect, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

/// The longest policy text accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// The deepest nesting of brackets accepted in policy text; keeps Cedar's recursive passes far
/// from the end of the stack.
pub const MAX_POLICY_NESTING: usize = 64;
/// The most approvers an `@approval` annotation can ask for.
pub const MAX_APPROVERS: u32 = 10;

const SCHEMA_TEXT: &str = r#"// Airlock's Cedar schema: what a tenant policy can refer to.
namespace Airlock {
  // A human user of the tenant.
  entity User = {
    "roles": Set<String>,
    "team"?: String,
    "project"?: String,
    "data_class"?: String,
  };

  // An agent identity.
  entity Agent = {
    "name": String,
  };

  // A registered tool.
  entity Tool = {
    "name": String,
    "tier": String,
    "side_effects": Bool,
    "classification": String,
    "cost_cents": Long,
  };

  // The call's top-level scalar arguments as text, keyed by argument name.
  entity Arguments tags String;

  // The call's top-level integer arguments, keyed by argument name.
  entity Integers tags Long;

  action "call" appliesTo {
    principal: [User, Agent],
    resource: [Tool],
    context: {
      "arguments": Set<String>,
      "argument_names": Set<String>,
      "args": Arguments,
      "integers": Integers,
      "intent": String,
      "run_id": String,
      "on_behalf_of": String,
      "hour": Long,
      "weekday": Long,
      "untrusted_sensitive": Bool,
      "flow_grounded": Bool,
      "flow_classes": Set<String>,
      "read_classification": String,
    }
  };
}
"#;

/// The Cedar schema (human syntax) every tenant policy is validated against. Namespace `Airlock`.
///
/// Entity types: `User` (`roles: Set<String>`, optional `team`, `project`, `data_class`),
/// `Agent` (`name`), `Tool` (`name`, `tier`, `side_effects`, `classification`, `cost_cents`),
/// and the argument holders `Arguments` (tags `String`) and `Integers` (tags `Long`). One action,
/// `"call"`, from a `User` or `Agent` on a `Tool`, whose context holds the arguments (see the
/// module documentation), `intent`, `run_id`, `on_behalf_of` (empty when the run acts for no
/// one), `hour` (0–23, UTC), `weekday` (ISO 8601: 1 is Monday, 7 is Sunday) and
/// the flow facts: `untrusted_sensitive` (some sensitive value is not grounded),
/// `flow_grounded` (every one is), `flow_classes` (the classes present: `grounded`,
/// `untrusted`, `injected`, `unknown`) and `read_classification` (`confidential` or
/// `restricted` once the run has read such data, else empty).
#[must_use]
pub fn cedar_schema_text() -> &'static str {
    SCHEMA_TEXT
}

static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(|| {
    Schema::from_cedarschema_str(SCHEMA_TEXT).map(|(schema, _warnings)| schema).map_err(|e| e.to_string())
});

/// The parsed schema; an error only if the constant above were broken, which the tests rule out.
pub(crate) fn schema() -> Result<&'static Schema, PolicyError> {
    SCHEMA.as_ref().map_err(|message| PolicyError::Schema(message.clone()))
}

/// Policy text that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is longer than [`MAX_POLICY_BYTES`].
    #[error("the policy text is {bytes} bytes; the limit is {MAX_POLICY_BYTES}")]
    TooLarge {
        /// Its length.
        bytes: usize,
    },
    /// The text nests brackets deeper than [`MAX_POLICY_NESTING`].
    #[error("the policy text nests brackets deeper than {MAX_POLICY_NESTING} levels")]
    TooDeep,
    /// Cedar could not parse the text; its messages, verbatim, with positions.
    #[error("the policies do not parse: {}", .0.join("; "))]
    Parse(Vec<String>),
    /// The policies parse but do not validate against [`cedar_schema_text`]; the validator's
    /// messages, verbatim, with positions.
    #[error("the policies do not validate against Airlock's Cedar schema: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The text holds a template (a policy with `?principal` or `?resource`).
    #[error("policy `{0}` is a template; tenant policies cannot use `?principal` or `?resource`")]
    Template(String),
    /// Two policies have the same id.
    #[error("policy id `{0}` is used more than once")]
    DuplicateId(String),
    /// An Airlock annotation is malformed or misplaced.
    #[error("policy `{policy}`: {message}")]
    Annotation {
        /// The policy's id.
        policy: String,
        /// What is wrong.
        message: String,
    },
    /// Airlock's own Cedar schema did not load (a bug, not a policy problem).
    #[error("airlock's cedar schema does not load: {0}")]
    Schema(String),
}

/// A tenant's Cedar policies, parsed and validated.
#[derive(Debug, Clone)]
pub struct TenantPolicies {
    text: String,
    set: PolicySet,
    /// Approvers required by each `permit` with an `@approval` annotation.
    approvals: BTreeMap<String, u32>,
}

impl Default for TenantPolicies {
    fn default() -> Self {
        Self::empty()
    }
}

impl TenantPolicies {
    /// Parses and validates Cedar policy text against the schema (strict validation). On failure
    /// the error carries the parser's or validator's messages verbatim, each with its line and
    /// column and Cedar's help where it has some.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge { bytes: text.len() });
        }
        if nesting_exceeds(text, MAX_POLICY_NESTING) {
            return Err(PolicyError::TooDeep);
        }
        let parsed = PolicySet::from_str(text)
            .map_err(|errors| PolicyError::Parse(errors.iter().map(|e| describe(e, text)).collect()))?;
        if let Some(template) = parsed.templates().next() {
            return Err(PolicyError::Template(template.id().to_string()));
        }

        let mut set = PolicySet::new();
        let mut approvals = BTreeMap::new();
        for policy in parsed.policies() {
            let id = match policy.annotation("id") {
                Some(id) if is_policy_id(id) => id.to_owned(),
                Some(_) => {
                    return Err(PolicyError::Annotation {
                        policy: policy.id().to_string(),
                        message: "`@id` must be 1 to 64 letters, digits, `.`, `_`, `:` or `-`".to_owned(),
                    });
                }
                None => policy.id().to_string(),
            };
            if let Some(count) = policy.annotation("approval") {
                if policy.effect() == Effect::Forbid {
                    return Err(PolicyError::Annotation {
                        policy: id,
                        message: "`@approval` only makes sense on a `permit`".to_owned(),
                    });
                }
                match count.parse::<u32>() {
                    Ok(n) if (1..=MAX_APPROVERS).contains(&n) => {
                        approvals.insert(id.clone(), n);
                    }
                    _ => {
                        return Err(PolicyError::Annotation {
                            policy: id,
                            message: format!(
                                "`@approval(\"{count}\")` must give a whole number of approvers from 1 to {MAX_APPROVERS}"
                            ),
                        });
                    }
                }
            }
            set.add(policy.new_id(PolicyId::new(&id))).map_err(|_| PolicyError::DuplicateId(id.clone()))?;
        }

        let validation = Validator::new(schema()?.clone()).validate(&set, ValidationMode::Strict);
        let errors: Vec<String> = validation.validation_errors().map(|e| describe(e, text)).collect();
        if !errors.is_empty() {
            return Err(PolicyError::Invalid(errors));
        }
        Ok(Self { text: text.to_owned(), set, approvals })
    }

    /// No policies: every decision falls to the built-in tier defaults.
    #[must_use]
    pub fn empty() -> Self {
        Self { text: String::new(), set: PolicySet::new(), approvals: BTreeMap::new() }
    }

    /// The policy text as written.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The policies' ids, sorted.
    #[must_use]
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.set.policies().map(|policy| policy.id().to_string()).collect();
        ids.sort();
        ids
    }

    /// Whether there are no policies.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub(crate) fn set(&self) -> &PolicySet {
        &self.set
    }

    /// The approvers a `permit` asks for; 0 for a permit without `@approval`.
    pub(crate) fn approvals(&self, id: &str) -> u32 {
        self.approvals.get(id).copied().unwrap_or(0)
    }

    /// The policy's `@reason`, if it has one.
    pub(crate) fn reason(&self, id: &PolicyId) -> Option<&str> {
        self.set.annotation(id, "reason")
    }

    /// Builds a set without validating it, to test how decisions treat a policy that fails at
    /// evaluation time (which strict validation normally prevents).
    #[cfg(test)]
    pub(crate) fn unvalidated(text: &str) -> Self {
        let set = PolicySet::from_str(text).unwrap();
        Self { text: text.to_owned(), set, approvals: BTreeMap::new() }
    }
}

fn is_policy_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A Cedar diagnostic as one line: `line L, column C: message (help: …)`.
pub(crate) fn describe(error: &(impl Diagnostic + ?Sized), text: &str) -> String {
    let mut line = String::new();
    let offset = error.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
    if let Some((row, column)) = offset.and_then(|offset| position(text, offset)) {
        let _ = write!(line, "line {row}, column {column}: ");
    }
    let _ = write!(line, "{error}");
    if let Some(help) = error.help() {
        let _ = write!(line, " (help: {help})");
    }
    line
}

/// The 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let row = before.matches('\n').count().saturating_add(1);
    let line_start = before.rfind('\n').map_or(0, |i| i.saturating_add(1));
    let column = before.get(line_start..)?.chars().count().saturating_add(1);
    Some((row, column))
}

/// Whether brackets nest deeper than `limit` outside string literals and comments.
fn nesting_exceeds(text: &str, limit: usize) -> bool {
    let mut depth = 0_usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // Skip the string literal, honouring backslash escapes.
                while let Some(inner) = chars.next() {
                    match inner {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for inner in chars.by_ref() {
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth = depth.saturating_add(1);
                if depth > limit {
                    return true;
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
#[path = "cedar_tests.rs"]
mod tests;
