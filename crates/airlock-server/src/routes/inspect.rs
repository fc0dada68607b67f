//! Content inspection on the API: the tenant's redaction profile, trying a text against it
//! (or against a trial profile) before enabling it, and restoring tokens from the vault.
//!
//! Responses carry the caller's own text and offsets into it; the audit log gets counts per
//! kind only, never a value. Tokens minted with the tenant's profile are kept in the vault
//! (sealed, for the configured retention) so that they can be restored later; a trial
//! profile's tokens are not kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_inspect::injection::InjectionScan;
use airlock_inspect::{Profile, ProfileSpec, RestoreMode, find_tokens, restore};
use airlock_store::{InspectionProfile, VaultEntry};
use airlock_types::Role;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::extract::Json;
use crate::problem::{ApiError, ProblemType};
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// Roles that may see restored values: people who work with the data, not viewers,
/// auditors or agents.
const RESTORERS: &[Role] = &[Role::Admin, Role::Builder, Role::Member];

/// The tenant's redaction profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    /// Its version; 0 when the tenant has written none and the standard profile applies.
    pub version: i64,
    /// The profile: `{"mode": "off|standard|aggressive|custom", "kinds": {"email":
    /// "tokenize", "payment_card": "block", …}, "patterns": [{"name", "pattern", "context",
    /// "action"}], "dictionaries": [{"name", "terms", "action"}], "allow": [..]}`.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// When it was written.
    pub created_at: Option<String>,
    /// Who wrote it.
    pub created_by: Option<String>,
}

fn profile_view(stored: Option<InspectionProfile>) -> ApiResult<ProfileView> {
    Ok(match stored {
        None => ProfileView {
            version: 0,
            spec: serde_json::to_value(ProfileSpec::default()).map_err(|e| ApiError::internal(&e))?,
            created_at: None,
            created_by: None,
        },
        Some(p) => ProfileView {
            version: p.version,
            spec: serde_json::from_str(&p.text).map_err(|e| ApiError::internal(&e))?,
            created_at: Some(p.created_at.to_rfc3339()),
            created_by: Some(p.created_by),
        },
    })
}

/// The redaction profile in force. Any user of the tenant.
#[utoipa::path(get, path = "/v1/inspection/profile", tag = "inspection",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = ProfileView)))]
pub async fn get_profile(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<ProfileView>> {
    caller.require_any(&Role::ALL)?;
    let stored = state.store().inspection_profile(&caller.scope()?).await?;
    Ok(axum::Json(profile_view(stored)?))
}

/// Writes a new version of the redaction profile; one that does not compile (an unknown
/// kind, a pattern with look-around, too many terms) is refused with every problem named.
/// Admins.
#[utoipa::path(put, path = "/v1/inspection/profile", tag = "inspection",
    request_body(content = Object, description = "A profile, as in `ProfileView.spec`"),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = ProfileView),
        (status = 422, description = "The profile does not compile", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_profile(
    State(state): State<AppState>,
    caller: Caller,
    Json(spec): Json<ProfileSpec>,
) -> ApiResult<axum::Json<ProfileView>> {
    caller.require_any(&[Role::Admin])?;
    let scope = caller.scope()?;
    Profile::compile(spec.clone()).map_err(|e| ApiError::new(ProblemType::Unprocessable, e.to_string()))?;
    let text = serde_json::to_string(&spec).map_err(|e| ApiError::internal(&e))?;
    let stored = state.store().put_inspection_profile(&scope, &text).await?;
    Ok(axum::Json(profile_view(Some(stored))?))
}

/// A text to inspect.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InspectBody {
    /// The text.
    pub text: String,
    /// A trial profile to use instead of the tenant's (its tokens are not kept).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub profile: Option<ProfileSpec>,
    /// Also scan the text for injection markers (default true).
    #[serde(default = "yes")]
    pub scan: bool,
}

fn yes() -> bool {
    true
}

/// One finding.
#[derive(Debug, Serialize, ToSchema)]
pub struct FindingView {
    /// Its kind (`email`, `payment_card`, a custom kind's name, …).
    pub kind: String,
    /// UTF-8 byte offset in the submitted text.
    pub start: usize,
    /// UTF-8 byte offset one past its end.
    pub end: usize,
    /// What the profile does with it: `tokenize`, `mask`, `drop` or `block`.
    pub action: String,
    /// The token written in its place, for `tokenize`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// One injection marker.
#[derive(Debug, Serialize, ToSchema)]
pub struct MarkerView {
    /// `instruction`, `role_token`, `tool_call_syntax`, `hidden_text`, `exfiltration` or
    /// `encoded_payload`.
    pub marker: String,
    /// The rule that found it.
    pub rule: String,
    /// UTF-8 byte offset in the submitted text.
    pub start: usize,
    /// UTF-8 byte offset one past its end.
    pub end: usize,
    /// Its weight in the score.
    pub weight: f32,
}

/// The injection scan of a text.
#[derive(Debug, Serialize, ToSchema)]
pub struct InjectionView {
    /// 0 to 1.
    pub score: f32,
    /// Whether the score reaches the flagging threshold.
    pub flagged: bool,
    /// The markers found.
    pub findings: Vec<MarkerView>,
}

impl From<InjectionScan> for InjectionView {
    fn from(scan: InjectionScan) -> Self {
        let findings = scan
            .findings
            .into_iter()
            .map(|f| MarkerView {
                marker: serde_json::to_value(f.marker)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                rule: f.rule.to_owned(),
                start: f.start,
                end: f.end,
                weight: f.weight,
            })
            .collect();
        InjectionView { score: scan.score, flagged: scan.flagged, findings }
    }
}

/// What inspection found and what the profile would send on.
#[derive(Debug, Serialize, ToSchema)]
pub struct InspectView {
    /// The text as it would leave: findings tokenized, masked or dropped.
    pub text: String,
    /// The tenant profile's version used, or null for a trial profile.
    pub profile_version: Option<i64>,
    /// What was found, in order.
    pub findings: Vec<FindingView>,
    /// Findings per kind.
    pub counts: BTreeMap<String, u64>,
    /// Whether the profile blocks this text (a request carrying it would be refused).
    pub blocked: bool,
    /// The kinds that block it.
    pub blocking_kinds: Vec<String>,
    /// The injection scan, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injection: Option<InjectionView>,
}

fn action_name(action: airlock_inspect::Action) -> String {
    serde_json::to_value(action).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Inspects a text with the tenant's profile (or a trial profile): the redacted text, each
/// finding with its offsets and action, counts per kind, whether the profile blocks it, and
/// optionally its injection markers. Any user or agent of the tenant.
#[utoipa::path(post, path = "/v1/inspect", tag = "inspection", request_body = InspectBody,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = InspectView),
        (status = 422, description = "The trial profile does not compile", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn inspect(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<InspectBody>,
) -> ApiResult<axum::Json<InspectView>> {
    let scope = caller.scope()?;
    let (profile, version): (Arc<Profile>, Option<i64>) = match body.profile {
        Some(spec) => (
            Arc::new(
                Profile::compile(spec)
                    .map_err(|e| ApiError::new(ProblemType::Unprocessable, e.to_string()))?,
            ),
            None,
        ),
        None => {
            let (profile, version) = state.inspection_profile(&scope).await?;
            (profile, Some(version))
        }
    };
    let tokenizer = state.tokenizer(&scope).await?;
    let redaction = profile.redact(&body.text, &tokenizer);
    if version.is_some() {
        let entries: Vec<VaultEntry> = redaction
            .tokens
            .iter()
            .map(|t| VaultEntry {
                token: t.core.clone(),
                kind: t.kind.name().to_owned(),
                value: t.value.clone(),
            })
            .collect();
        state.store().remember_tokens(&scope, &entries, state.config().token_retention).await?;
    }
    let injection = body.scan.then(|| InjectionView::from(state.scanner().scan(&body.text)));

    let counts = redaction.counts();
    let mut metadata = Map::new();
    metadata.insert("counts".into(), serde_json::to_value(&counts).map_err(|e| ApiError::internal(&e))?);
    metadata.insert("blocked".into(), Value::from(redaction.blocked()));
    metadata.insert("trial_profile".into(), Value::from(version.is_none()));
    metadata.insert("bytes".into(), Value::from(body.text.len()));
    if let Some(scan) = &injection {
        metadata.insert("injection_flagged".into(), Value::from(scan.flagged));
        metadata.insert("injection_markers".into(), Value::from(scan.findings.len()));
    }
    state.store().record(&scope, "inspection.performed", &[], metadata).await?;

    let blocking_kinds = redaction.blocking_kinds().iter().map(|k| k.name().to_owned()).collect();
    let findings = redaction
        .findings
        .iter()
        .map(|f| FindingView {
            kind: f.kind.name().to_owned(),
            start: f.start,
            end: f.end,
            action: action_name(f.action),
            token: f.token.clone(),
        })
        .collect();
    Ok(axum::Json(InspectView {
        blocked: redaction.blocked(),
        blocking_kinds,
        counts,
        findings,
        profile_version: version,
        text: redaction.text,
        injection,
    }))
}

/// A text with tokens in it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The text.
    pub text: String,
    /// The text is the inside of a JSON string (tool-call arguments): escape restored values
    /// for it.
    #[serde(default)]
    pub json_string: bool,
}

/// The text with tokens restored.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreView {
    /// The text.
    pub text: String,
    /// How many tokens were restored.
    pub restored: usize,
    /// Tokens found that the vault does not know (never minted here, or expired).
    pub unknown: Vec<String>,
}

/// Replaces the tenant's tokens in a text by their values from the vault; tokens of other
/// tenants and expired ones stay as they are. Admins, builders and members.
#[utoipa::path(post, path = "/v1/inspect/restore", tag = "inspection", request_body = RestoreBody,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = RestoreView)))]
pub async fn restore_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<RestoreBody>,
) -> ApiResult<axum::Json<RestoreView>> {
    caller.require_any(RESTORERS)?;
    let scope = caller.scope()?;
    let wanted = find_tokens(&body.text);
    let values = state.store().lookup_tokens(&scope, &wanted).await?;
    let mode = if body.json_string { RestoreMode::JsonString } else { RestoreMode::Text };
    let (text, restored) = restore(&body.text, &values, mode);
    let unknown = wanted.into_iter().filter(|t| !values.contains_key(t)).collect();
    let mut metadata = Map::new();
    metadata.insert("restored".into(), Value::from(restored));
    state.store().record(&scope, "inspection.restored", &[], metadata).await?;
    Ok(axum::Json(RestoreView { text, restored, unknown }))
}
