//! Approvals and kill switches.
//!
//! Approvers see what an agent wants to do and why it is held, and decide. A request needs
//! its number of distinct approvers, each with the approver role and none of them the
//! requester, the person the agent acts for, or an agent; it is bound to the digest of the
//! exact tool and arguments, expires, and is decided once. The decision that completes the
//! approvals executes the action. Kill switches stop a run, an agent, the tenant, or (for
//! operators) the platform, from the next decision on.

#![allow(unused_qualifications, reason = "utoipa's IntoParams expansion writes qualified paths")]

use airlock_store::{Approval, KillSwitch, Settlement};
use airlock_types::{Role, ToolName};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::runs::{ActionView, action_view};
use crate::auth::Caller;
use crate::extract::{Json, PathParam};
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// An approval request, with what it would approve.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    /// Its id (`apr_…`).
    pub id: String,
    /// `pending`, `approved`, `rejected`, `expired` or `cancelled`.
    pub status: String,
    /// The digest of the tool and arguments it approves; send it back with a decision to
    /// approve exactly what you saw.
    pub digest: String,
    /// Distinct approvers it needs.
    pub required: i64,
    /// Approvals so far.
    pub approvals: usize,
    /// Who proposed the action.
    pub requester: String,
    /// On whose behalf.
    pub on_behalf_of: Option<String>,
    /// When it expires.
    pub expires_at: String,
    /// The decisions so far: approver, decision, reason, time.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<Value>,
    /// The action, with its tool, arguments and the reasons it is held.
    pub action: ActionView,
    /// The action's arguments, exactly as they would be executed.
    #[schema(value_type = Object)]
    pub arguments: Value,
    /// The run's declared intent.
    pub intent: String,
}

async fn view(state: &AppState, caller: &Caller, approval: Approval) -> ApiResult<ApprovalView> {
    let scope = caller.scope()?;
    let action = state.store().get_action(&scope, &approval.action_id).await?;
    let run = state.store().get_run(&scope, &action.run_id).await?;
    Ok(ApprovalView {
        id: approval.id,
        status: approval.status,
        digest: approval.digest,
        required: approval.required,
        approvals: approval.decisions.iter().filter(|d| d.decision == "approve").count(),
        requester: approval.requester,
        on_behalf_of: approval.on_behalf_of,
        expires_at: approval.expires_at.to_rfc3339(),
        decisions: approval.decisions.iter().map(|d| serde_json::to_value(d).unwrap_or_default()).collect(),
        arguments: action.arguments.clone(),
        intent: run.intent,
        action: action_view(action),
    })
}

fn approver(caller: &Caller) -> ApiResult<()> {
    caller.require_any(&[Role::Approver])
}

/// Filter for listing approvals.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApprovalQuery {
    /// `pending`, `approved`, `rejected`, `expired` or `cancelled`.
    pub status: Option<String>,
}

/// Approval requests, newest first. Approvers, admins, auditors and viewers.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalQuery),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<ApprovalView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ApprovalQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<Vec<ApprovalView>>> {
    caller.require_any(&[Role::Approver, Role::Admin, Role::Auditor, Role::Viewer])?;
    let Query(query) = query.map_err(|e| ApiError::new(ProblemType::InvalidParameter, e.body_text()))?;
    if let Some(status) = query.status.as_deref()
        && !["pending", "approved", "rejected", "expired", "cancelled"].contains(&status)
    {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            format!("`status` `{status}` is not an approval status"),
        ));
    }
    let approvals = state.store().list_approvals(&caller.scope()?, query.status.as_deref()).await?;
    let mut out = Vec::with_capacity(approvals.len());
    for approval in approvals {
        out.push(view(&state, &caller, approval).await?);
    }
    Ok(axum::Json(out))
}

/// One approval request. Approvers, admins, auditors and viewers.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id (`apr_…`)")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = ApprovalView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> ApiResult<axum::Json<ApprovalView>> {
    caller.require_any(&[Role::Approver, Role::Admin, Role::Auditor, Role::Viewer])?;
    let approval = state.store().get_approval(&caller.scope()?, &id).await?;
    Ok(axum::Json(view(&state, &caller, approval).await?))
}

/// An approver's decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// `approve` or `reject`.
    pub decision: String,
    /// Why (required, recorded in the audit log).
    pub reason: String,
    /// The digest shown with the request: the decision applies only if the action is still
    /// exactly what was shown.
    #[serde(default)]
    pub digest: Option<String>,
}

/// Decides an approval request. Approvers only, never for their own request. The decision
/// that completes the approvals executes the action; the response shows its outcome.
#[utoipa::path(post, path = "/v1/approvals/{id}/decision", tag = "approvals", request_body = Decide,
    params(("id" = String, Path, description = "The approval's id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = ApprovalView),
        (status = 403, description = "Not an approver, or their own request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already decided, expired, cancelled, or the digest differs", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    Json(body): Json<Decide>,
) -> ApiResult<axum::Json<ApprovalView>> {
    approver(&caller)?;
    let scope = caller.scope()?;
    let approve = match body.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(ApiError::new(
                ProblemType::InvalidBody,
                format!("`decision` must be `approve` or `reject`, not `{other}`"),
            ));
        }
    };
    if body.reason.trim().is_empty() || body.reason.chars().count() > 2000 {
        return Err(ApiError::new(ProblemType::InvalidBody, "`reason` must be 1 to 2000 characters"));
    }
    let pending = state.store().get_approval(&scope, &id).await?;
    // The person the agent acts for may be named by e-mail (in any case) as well as by id.
    if let airlock_store::PrincipalKind::User { email, .. } = caller.0.kind()
        && pending.on_behalf_of.as_deref().and_then(|o| airlock_types::Email::parse(o).ok()).as_ref()
            == Some(email)
    {
        return Err(ApiError::forbidden("no one may approve their own request"));
    }
    let action = state.store().get_action(&scope, &pending.action_id).await?;
    let run = state.store().get_run(&scope, &action.run_id).await?;
    if let Some(reason) = state.store().stopped(&scope, Some(&run), &run.principal_id).await? {
        return Err(ApiError::new(ProblemType::Conflict, reason));
    }
    // The approval covers the tool as it was when requested: a redefined tool is refused
    // before anything changes.
    let tool_name = ToolName::parse(&action.tool).map_err(|e| ApiError::internal(&e))?;
    let tool = state.store().get_tool(&scope, &tool_name).await?;
    if pending.status == "pending"
        && super::runs::approval_digest(&tool, &action.arguments)? != pending.digest
    {
        return Err(ApiError::new(
            ProblemType::Conflict,
            "the tool or the action changed since the request; it must be proposed again",
        ));
    }
    let (approval, settlement) =
        state.store().decide_approval(&scope, &id, approve, &body.reason, body.digest.as_deref()).await?;
    if settlement == Settlement::Approved {
        let action = state.store().get_action(&scope, &approval.action_id).await?;
        super::runs::execute(&state, &scope, &run, &tool, action).await?;
    }
    Ok(axum::Json(view(&state, &caller, approval).await?))
}

/// A kill switch to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    /// `run`, `agent` or `tenant`.
    pub scope: String,
    /// The run or agent id (not for `tenant`).
    #[serde(default)]
    pub target: Option<String>,
    /// Why.
    pub reason: String,
}

/// A kill switch.
#[derive(Debug, Serialize, ToSchema)]
pub struct KillView {
    /// Its id.
    pub id: String,
    /// `run`, `agent` or `tenant`.
    pub scope: String,
    /// What it stops.
    pub target: String,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was lifted, if it was.
    pub lifted_at: Option<String>,
}

impl From<KillSwitch> for KillView {
    fn from(k: KillSwitch) -> Self {
        Self {
            id: k.id,
            scope: k.scope,
            target: k.target,
            reason: k.reason,
            created_by: k.created_by,
            created_at: k.created_at.to_rfc3339(),
            lifted_at: k.lifted_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// Stops a run, an agent or the whole tenant, from the next decision on: the runs it covers
/// end as `killed` and their pending approvals are cancelled. Admins only.
#[utoipa::path(post, path = "/v1/kill", tag = "approvals", request_body = Kill,
    security(("api_key" = []), ("session" = [])),
    responses((status = 201, body = KillView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Kill>,
) -> ApiResult<(StatusCode, axum::Json<KillView>)> {
    caller.require_any(&[Role::Admin])?;
    let scope = caller.scope()?;
    if body.reason.trim().is_empty() || body.reason.chars().count() > 2000 {
        return Err(ApiError::new(ProblemType::InvalidBody, "`reason` must be 1 to 2000 characters"));
    }
    let (kind, target): (&'static str, String) = match (body.scope.as_str(), body.target) {
        ("tenant", None) => ("tenant", scope.tenant_id().to_string()),
        ("run", Some(target)) => {
            let run = airlock_types::RunId::parse(&target)
                .map_err(|e| ApiError::new(ProblemType::InvalidBody, e.to_string()))?;
            state.store().get_run(&scope, &run).await?;
            ("run", target)
        }
        ("agent", Some(target)) => {
            let agent = airlock_types::AgentId::parse(&target)
                .map_err(|e| ApiError::new(ProblemType::InvalidBody, e.to_string()))?;
            state.store().get_agent(&scope, &agent).await?;
            ("agent", target)
        }
        ("tenant", Some(_)) => {
            return Err(ApiError::new(ProblemType::InvalidBody, "a tenant kill switch takes no `target`"));
        }
        (other, _) => {
            return Err(ApiError::new(
                ProblemType::InvalidBody,
                format!(
                    "`scope` must be `run`, `agent` or `tenant` (with a `target` for run and agent), not `{other}`"
                ),
            ));
        }
    };
    let kill = state.store().kill(&scope, kind, &target, &body.reason).await?;
    Ok((StatusCode::CREATED, axum::Json(kill.into())))
}

/// The tenant's kill switches, active ones first. Admins, approvers, auditors.
#[utoipa::path(get, path = "/v1/kill", tag = "approvals",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<KillView>)))]
pub async fn list_kills(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<KillView>>> {
    caller.require_any(&[Role::Admin, Role::Approver, Role::Auditor])?;
    Ok(axum::Json(state.store().list_kills(&caller.scope()?).await?.into_iter().map(Into::into).collect()))
}

/// Lifts a kill switch. Runs it ended stay ended. Admins only.
#[utoipa::path(delete, path = "/v1/kill/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The kill switch's id")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = KillView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn lift(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> ApiResult<axum::Json<KillView>> {
    caller.require_any(&[Role::Admin])?;
    Ok(axum::Json(state.store().lift_kill(&caller.scope()?, &id).await?.into()))
}

/// Why the platform is stopped.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformKill {
    /// Why.
    pub reason: String,
}

/// Stops every action of every tenant, from the next decision on. Platform operators only.
#[utoipa::path(post, path = "/admin/v1/kill", tag = "admin", request_body = PlatformKill,
    security(("api_key" = [])),
    responses((status = 201, description = "The platform is stopped"), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn platform_kill(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PlatformKill>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    caller.require_operator()?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::new(ProblemType::InvalidBody, "`reason` must not be empty"));
    }
    let id = state.store().platform_kill(&caller.0, &body.reason).await?;
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({"id": id, "reason": body.reason}))))
}

/// Lifts the platform-wide kill switch. Platform operators only.
#[utoipa::path(delete, path = "/admin/v1/kill", tag = "admin",
    security(("api_key" = [])),
    responses((status = 200, description = "The platform runs again"), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn platform_lift(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Value>> {
    caller.require_operator()?;
    let lifted = state.store().platform_lift(&caller.0).await?;
    Ok(axum::Json(serde_json::json!({"lifted": lifted})))
}
