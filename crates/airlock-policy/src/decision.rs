//! The policy decision for one proposed call: a tenant's Cedar policies first, then the
//! built-in tier defaults, with a short human reason for every outcome.
//!
//! The rules, in order:
//!
//! 1. If any tenant policy fails to evaluate, the call is denied (fail closed), whatever the
//!    tool. Cedar skips a policy that errors, so a broken `forbid` would otherwise silently
//!    stop protecting; that matters as much for a read-only tool that returns restricted data
//!    to an agent as for one with side effects. The tenant sees the error in the reasons and
//!    fixes the policy.
//! 2. A matching `forbid` denies; the reasons name each such policy and quote its `@reason`.
//! 3. Matching `permit`s decide: the call needs as many approvers as the largest `@approval`
//!    among them (a permit without one counts as 0), so one permit that asks for approval is
//!    enough to require it; if none asks, the call is permitted, whatever its tier ("unless a
//!    tenant policy says otherwise").
//! 4. When no tenant policy matches, tiers that need approval by default (financial,
//!    destructive, bulk, egress) require one approver; others are permitted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr as _;

use airlock_types::RoleSet;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Request, RestrictedExpression,
};
use serde_json::Value;

use crate::cedar::{TenantPolicies, schema};
use crate::tier::RiskTier;

/// Who proposes the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A human user (`Airlock::User` in Cedar).
    User,
    /// An agent identity (`Airlock::Agent` in Cedar).
    Agent,
}

/// The facts about the principal a policy can see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrincipalFacts {
    /// User or agent.
    pub kind: PrincipalKind,
    /// The user's or agent's id; the Cedar entity id.
    pub id: String,
    /// The user's roles; ignored for agents, which hold none.
    pub roles: RoleSet,
    /// For users, `team`, `project` and `data_class` become the Cedar attributes of the same
    /// names; for agents, `name` is the agent's name (the id when absent). Other keys are not
    /// visible to policies.
    pub attributes: BTreeMap<String, String>,
}

/// The facts about the tool a policy can see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolFacts {
    /// The tool's name; also the Cedar entity id.
    pub name: String,
    /// Its risk tier.
    pub tier: RiskTier,
    /// Whether calling it changes anything.
    pub side_effects: bool,
    /// The classification of the data it touches (`public`, `internal`, `restricted`, …).
    pub classification: String,
    /// Its estimated cost per call, in cents.
    pub cost_cents: i64,
}

/// The facts about the run a policy can see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunFacts {
    /// The run's id.
    pub id: String,
    /// The run's declared intent, in words.
    pub intent: String,
    /// The user the run acts for, if any.
    pub on_behalf_of: Option<String>,
}

/// Everything a decision depends on, fully materialised.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActionContext {
    /// Who proposes the call.
    pub principal: PrincipalFacts,
    /// The tool called.
    pub tool: ToolFacts,
    /// The arguments, already valid against the tool's schema (a JSON object).
    pub arguments: Value,
    /// The run the call belongs to.
    pub run: RunFacts,
    /// When the call is decided, in milliseconds since the Unix epoch.
    pub time_unix_ms: i64,
    /// Where the call's sensitive values came from (see [`crate::flow`]).
    #[serde(default)]
    pub flow: crate::flow::FlowFacts,
}

/// What happens to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The call may go ahead.
    Permit,
    /// The call may go ahead once this many distinct approvers agree.
    RequireApproval {
        /// How many approvers, at least 1.
        approvers: u32,
    },
    /// The call must not happen.
    Deny,
}

/// A verdict with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// What happens to the call; serialized inline: `{"verdict": "require_approval",
    /// "approvers": 2, "reasons": […], "policies": […]}`.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Why, as short sentences for the agent, the approver and the audit log.
    pub reasons: Vec<String>,
    /// The ids of the tenant policies that determined the verdict (matching forbids, matching
    /// permits, or the policies that failed to evaluate); empty when the default applied.
    pub policies: Vec<String>,
}

impl Decision {
    fn deny(reason: String, policies: Vec<String>) -> Self {
        Self { verdict: Verdict::Deny, reasons: vec![reason], policies }
    }
}

/// Decides a call.
///
/// A tenant `forbid` wins (Deny; the reasons name the policy ids and any `@reason("…")`); a
/// tenant `permit` that matches decides: with `@approval("N")` it requires N approvers (the
/// largest N when several permits match), without it the call is permitted, even for high-risk
/// tiers. If no tenant policy matches, the built-in default applies: tiers that need approval by
/// default require one approver, others are permitted. If any policy fails to evaluate, or the
/// request cannot be put to Cedar at all, the call is denied, for every tool (see the module
/// documentation for why read-only tools are no exception).
#[must_use]
pub fn decide(policies: &TenantPolicies, context: &ActionContext) -> Decision {
    let (request, entities) = match materialise(context) {
        Ok(materialised) => materialised,
        Err(error) => {
            return Decision::deny(
                format!("The call could not be put to the tenant's policies, so it is denied: {error}."),
                Vec::new(),
            );
        }
    };
    let response = Authorizer::new().is_authorized(&request, policies.set(), &entities);
    let diagnostics = response.diagnostics();

    let mut errors: Vec<(String, String)> =
        diagnostics.errors().map(|error| (error_policy(error), error.to_string())).collect();
    if !errors.is_empty() {
        errors.sort();
        let policies = errors.iter().map(|(id, _)| id.clone()).collect();
        let reasons = errors
            .into_iter()
            .map(|(_, error)| {
                format!(
                    "Denied because a policy failed to evaluate ({error}); \
                     a broken policy must not let calls through."
                )
            })
            .collect();
        return Decision { verdict: Verdict::Deny, reasons, policies };
    }

    let mut determining: Vec<_> = diagnostics.reason().collect();
    determining.sort();
    let ids: Vec<String> = determining.iter().map(ToString::to_string).collect();
    match response.decision() {
        CedarDecision::Deny if determining.is_empty() => default_for(&context.tool, &context.flow),
        CedarDecision::Deny => {
            let reasons = determining
                .iter()
                .map(|id| match policies.reason(id) {
                    Some(reason) => format!("Policy `{id}` forbids this call: {reason}"),
                    None => format!("Policy `{id}` forbids this call."),
                })
                .collect();
            Decision { verdict: Verdict::Deny, reasons, policies: ids }
        }
        CedarDecision::Allow => {
            let approvers = ids.iter().map(|id| policies.approvals(id)).max().unwrap_or(0);
            let reasons = determining
                .iter()
                .map(|id| {
                    let wanted = policies.approvals(id.as_ref());
                    let mut sentence = match wanted {
                        0 => format!("Policy `{id}` permits this call"),
                        1 => format!("Policy `{id}` permits this call with one approval"),
                        n => format!("Policy `{id}` permits this call with {n} approvals"),
                    };
                    match policies.reason(id) {
                        Some(reason) => sentence.push_str(&format!(": {reason}")),
                        None => sentence.push('.'),
                    }
                    sentence
                })
                .collect();
            let verdict =
                if approvers == 0 { Verdict::Permit } else { Verdict::RequireApproval { approvers } };
            Decision { verdict, reasons, policies: ids }
        }
    }
}

/// The built-in rule when no tenant policy matches. A tool that declares its sensitive
/// arguments is left to the flow rules and the judge, which hold or refuse what is not
/// grounded; others of tiers that need approval by default get one approver.
fn default_for(tool: &ToolFacts, flow: &crate::flow::FlowFacts) -> Decision {
    let tier = tool.tier.as_str();
    if tool.tier.needs_approval_by_default() && flow.guarded && tool.side_effects {
        Decision {
            verdict: Verdict::Permit,
            reasons: vec![format!(
                "No tenant policy matched; `{tier}` calls of a tool that declares its sensitive arguments are \
                 decided by the flow rules and the judge."
            )],
            policies: Vec::new(),
        }
    } else if tool.tier.needs_approval_by_default() {
        Decision {
            verdict: Verdict::RequireApproval { approvers: 1 },
            reasons: vec![format!("No tenant policy matched; `{tier}` tools need one approval by default.")],
            policies: Vec::new(),
        }
    } else {
        Decision {
            verdict: Verdict::Permit,
            reasons: vec![format!("No tenant policy matched; `{tier}` tools are permitted by default.")],
            policies: Vec::new(),
        }
    }
}

fn error_policy(error: &cedar_policy::AuthorizationError) -> String {
    match error {
        cedar_policy::AuthorizationError::PolicyEvaluationError(inner) => inner.policy_id().to_string(),
    }
}

/// The Cedar request and entities for a call, both checked against the schema.
fn materialise(context: &ActionContext) -> Result<(Request, Entities), String> {
    let schema = schema().map_err(|e| e.to_string())?;
    let principal_type = match context.principal.kind {
        PrincipalKind::User => "Airlock::User",
        PrincipalKind::Agent => "Airlock::Agent",
    };
    let principal = uid(principal_type, &context.principal.id)?;
    let action = uid("Airlock::Action", "call")?;
    let resource = uid("Airlock::Tool", &context.tool.name)?;
    let args_uid = uid("Airlock::Arguments", "call")?;
    let integers_uid = uid("Airlock::Integers", "call")?;

    let principal_entity = principal_entity(principal.clone(), &context.principal)?;
    let tool = &context.tool;
    let tool_entity = Entity::new(
        resource.clone(),
        [
            ("name".to_owned(), RestrictedExpression::new_string(tool.name.clone())),
            ("tier".to_owned(), RestrictedExpression::new_string(tool.tier.as_str().to_owned())),
            ("side_effects".to_owned(), RestrictedExpression::new_bool(tool.side_effects)),
            ("classification".to_owned(), RestrictedExpression::new_string(tool.classification.clone())),
            ("cost_cents".to_owned(), RestrictedExpression::new_long(tool.cost_cents)),
        ]
        .into(),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())?;

    let arguments = Arguments::of(&context.arguments);
    let args_entity = Entity::new_with_tags(
        args_uid.clone(),
        HashMap::new(),
        HashSet::new(),
        arguments
            .text
            .iter()
            .map(|(name, value)| (name.clone(), RestrictedExpression::new_string(value.clone()))),
    )
    .map_err(|e| e.to_string())?;
    let integers_entity = Entity::new_with_tags(
        integers_uid.clone(),
        HashMap::new(),
        HashSet::new(),
        arguments.integers.iter().map(|(name, value)| (name.clone(), RestrictedExpression::new_long(*value))),
    )
    .map_err(|e| e.to_string())?;

    let (hour, weekday) = hour_and_weekday(context.time_unix_ms);
    let run = &context.run;
    let cedar_context = Context::from_pairs([
        (
            "arguments".to_owned(),
            RestrictedExpression::new_set(
                arguments
                    .text
                    .iter()
                    .map(|(name, value)| RestrictedExpression::new_string(format!("{name}={value}"))),
            ),
        ),
        (
            "argument_names".to_owned(),
            RestrictedExpression::new_set(
                arguments.names.iter().cloned().map(RestrictedExpression::new_string),
            ),
        ),
        ("args".to_owned(), RestrictedExpression::new_entity_uid(args_uid)),
        ("integers".to_owned(), RestrictedExpression::new_entity_uid(integers_uid)),
        ("intent".to_owned(), RestrictedExpression::new_string(run.intent.clone())),
        ("run_id".to_owned(), RestrictedExpression::new_string(run.id.clone())),
        (
            "on_behalf_of".to_owned(),
            RestrictedExpression::new_string(run.on_behalf_of.clone().unwrap_or_default()),
        ),
        ("hour".to_owned(), RestrictedExpression::new_long(hour)),
        ("weekday".to_owned(), RestrictedExpression::new_long(weekday)),
        ("untrusted_sensitive".to_owned(), RestrictedExpression::new_bool(!context.flow.all_grounded())),
        ("flow_grounded".to_owned(), RestrictedExpression::new_bool(context.flow.all_grounded())),
        (
            "flow_classes".to_owned(),
            RestrictedExpression::new_set(
                context.flow.classes().into_iter().map(|c| RestrictedExpression::new_string(c.to_owned())),
            ),
        ),
        (
            "read_classification".to_owned(),
            RestrictedExpression::new_string(context.flow.read_classification.clone()),
        ),
    ])
    .map_err(|e| e.to_string())?;

    let entities =
        Entities::from_entities([principal_entity, tool_entity, args_entity, integers_entity], Some(schema))
            .map_err(|e| e.to_string())?;
    let request =
        Request::new(principal, action, resource, cedar_context, Some(schema)).map_err(|e| e.to_string())?;
    Ok((request, entities))
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let type_name = EntityTypeName::from_str(type_name).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(type_name, EntityId::new(id)))
}

fn principal_entity(uid: EntityUid, facts: &PrincipalFacts) -> Result<Entity, String> {
    let mut attributes = HashMap::new();
    match facts.kind {
        PrincipalKind::User => {
            let roles =
                facts.roles.iter().map(|role| RestrictedExpression::new_string(role.as_str().to_owned()));
            attributes.insert("roles".to_owned(), RestrictedExpression::new_set(roles));
            for name in ["team", "project", "data_class"] {
                if let Some(value) = facts.attributes.get(name) {
                    attributes.insert(name.to_owned(), RestrictedExpression::new_string(value.clone()));
                }
            }
        }
        PrincipalKind::Agent => {
            let name = facts.attributes.get("name").unwrap_or(&facts.id);
            attributes.insert("name".to_owned(), RestrictedExpression::new_string(name.clone()));
        }
    }
    Entity::new(uid, attributes, HashSet::new()).map_err(|e| e.to_string())
}

/// The top-level arguments in the shapes Cedar sees (see the `cedar` module documentation).
struct Arguments {
    /// Every top-level argument name.
    names: Vec<String>,
    /// Scalar arguments as text: strings as they are, numbers and booleans as JSON.
    text: Vec<(String, String)>,
    /// Integer arguments that fit in a Cedar `Long`.
    integers: Vec<(String, i64)>,
}

impl Arguments {
    fn of(arguments: &Value) -> Self {
        let mut out = Self { names: Vec::new(), text: Vec::new(), integers: Vec::new() };
        let Some(object) = arguments.as_object() else { return out };
        for (name, value) in object {
            out.names.push(name.clone());
            match value {
                Value::String(text) => out.text.push((name.clone(), text.clone())),
                Value::Bool(flag) => out.text.push((name.clone(), flag.to_string())),
                Value::Number(number) => {
                    out.text.push((name.clone(), number.to_string()));
                    if let Some(integer) = number.as_i64() {
                        out.integers.push((name.clone(), integer));
                    }
                }
                Value::Null | Value::Array(_) | Value::Object(_) => {}
            }
        }
        // Sorted, so nothing depends on whether serde_json preserves key order.
        out.names.sort();
        out.text.sort();
        out.integers.sort();
        out
    }
}

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;

/// The UTC hour (0–23) and ISO weekday (1 = Monday … 7 = Sunday) of a Unix time in ms.
fn hour_and_weekday(time_unix_ms: i64) -> (i64, i64) {
    let days = time_unix_ms.div_euclid(MS_PER_DAY);
    let hour = time_unix_ms.rem_euclid(MS_PER_DAY) / MS_PER_HOUR;
    // 1970-01-01 was a Thursday (ISO 4).
    let weekday = (days.rem_euclid(7) + 3) % 7 + 1;
    (hour, weekday)
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
