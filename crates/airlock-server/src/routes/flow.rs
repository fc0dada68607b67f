//! The flow guard's tenant data: allowlists of known contacts, payees and domains, and the
//! flow settings (what each class of value gets, and the judge's model panel).

use airlock_store::AllowlistEntry;
use airlock_types::{Role, Timestamp};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::extract::Json;
use crate::flow_guard::GuardSettings;
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// An allowlist entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllowlistEntryView {
    /// Its id (`alw_…`).
    pub id: String,
    /// `contacts`, `payees` or `domains`.
    pub list: String,
    /// The address, number, IBAN or domain.
    pub value: String,
    /// Why it is there.
    pub note: String,
    /// The user who vouched for it.
    pub owner: String,
    /// When it was added (RFC 3339).
    pub created_at: String,
    /// When it stops counting (RFC 3339), if ever.
    pub expires_at: Option<String>,
}

impl From<AllowlistEntry> for AllowlistEntryView {
    fn from(e: AllowlistEntry) -> Self {
        Self {
            id: e.id,
            list: e.list,
            value: e.value,
            note: e.note,
            owner: e.owner,
            created_at: e.created_at.to_rfc3339(),
            expires_at: e.expires_at.map(Timestamp::to_rfc3339),
        }
    }
}

/// A new allowlist entry.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAllowlistEntry {
    /// `contacts` (e-mail addresses, phone numbers, handles), `payees` (IBANs, account
    /// numbers) or `domains` (a domain covers its addresses, URLs and subdomains).
    pub list: String,
    /// The value.
    pub value: String,
    /// Why it is there.
    #[serde(default)]
    pub note: String,
    /// When it stops counting (RFC 3339); entries should expire, and are revalidated on
    /// every use.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Every allowlist entry of the tenant. Admins, builders, approvers and auditors.
#[utoipa::path(get, path = "/v1/allowlists", tag = "flow",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<AllowlistEntryView>)))]
pub async fn list_entries(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<AllowlistEntryView>>> {
    caller.require_any(&[Role::Admin, Role::Builder, Role::Approver, Role::Auditor])?;
    let entries = state.store().allowlist(&caller.scope()?).await?;
    Ok(axum::Json(entries.into_iter().map(Into::into).collect()))
}

/// Adds an entry, owned by the calling user. Admins and builders; agents never.
#[utoipa::path(post, path = "/v1/allowlists", tag = "flow", request_body = NewAllowlistEntry,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, body = AllowlistEntryView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already on the list", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn add_entry(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewAllowlistEntry>,
) -> ApiResult<(StatusCode, axum::Json<AllowlistEntryView>)> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    let expires_at = super::audit::parse_time("expires_at", body.expires_at.as_deref())?;
    let entry = state
        .store()
        .add_allowlist_entry(&caller.scope()?, &body.list, &body.value, &body.note, expires_at)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(entry.into())))
}

/// Removes an entry. Admins and builders.
#[utoipa::path(delete, path = "/v1/allowlists/{id}", tag = "flow",
    params(("id" = String, Path, description = "The entry's id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 204),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove_entry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    state.store().remove_allowlist_entry(&caller.scope()?, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The flow settings in force, with their version (0 for the defaults).
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowSettingsView {
    /// The version, 0 when the defaults apply.
    pub version: i64,
    /// The settings.
    #[schema(value_type = Object)]
    pub settings: GuardSettings,
}

/// The flow settings in force. Admins, builders and auditors.
#[utoipa::path(get, path = "/v1/flow-settings", tag = "flow",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = FlowSettingsView)))]
pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<FlowSettingsView>> {
    caller.require_any(&[Role::Admin, Role::Builder, Role::Auditor])?;
    let view = match state.store().flow_settings(&caller.scope()?).await? {
        None => FlowSettingsView { version: 0, settings: GuardSettings::default() },
        Some(stored) => FlowSettingsView {
            version: stored.version,
            settings: GuardSettings::parse(&stored.text)
                .map_err(|e| ApiError::internal(&std::io::Error::other(e)))?,
        },
    };
    Ok(axum::Json(view))
}

/// Writes new flow settings: `{"flow": {"untrusted": "approval", "injected": "deny",
/// "unknown": "approval", "egress_after_confidential": "approval", "egress_after_restricted":
/// "deny"}, "judge": {"models": ["judge-a"], "quorum": 1, "agreement": 1.0, "timeout_ms":
/// 10000}}`. Admins.
#[utoipa::path(put, path = "/v1/flow-settings", tag = "flow",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = FlowSettingsView),
        (status = 422, description = "The settings are not valid", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<axum::Json<FlowSettingsView>> {
    caller.require_any(&[Role::Admin])?;
    let text = body.to_string();
    let settings = GuardSettings::parse(&text).map_err(|e| ApiError::new(ProblemType::InvalidBody, e))?;
    let canonical = serde_json::to_string(&settings).map_err(|e| ApiError::internal(&e))?;
    let stored = state.store().put_flow_settings(&caller.scope()?, &canonical).await?;
    Ok(axum::Json(FlowSettingsView { version: stored.version, settings }))
}
