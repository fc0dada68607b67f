//! Configuring the model gateway: each model alias's fallback chain of provider routes and its
//! price, and the tenant's gateway settings (allowlists, budgets, spend-rate breakers, what to
//! do with injected tool results). Provider keys go in and never come back out.

use std::collections::BTreeMap;

use airlock_llm::dialect::InjectionPolicy;
use airlock_llm::upstream::{ProviderKind, Upstream};
use airlock_store::{BudgetLimits, Credential, ModelAlias, NewModelRoute, PrincipalKind};
use airlock_types::{Role, ToolName};
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::extract::{Json, PathParam};
use crate::problem::{ApiError, ProblemType};
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

fn unprocessable(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemType::Unprocessable, detail)
}

/// One provider route.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteBody {
    /// `openai` (any OpenAI-compatible server: OpenAI, vLLM, Ollama, llama.cpp),
    /// `azure_openai` or `anthropic`.
    pub provider: String,
    /// The provider's base URL, such as `https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1`, `https://myresource.openai.azure.com` or
    /// `https://api.anthropic.com`.
    pub base_url: String,
    /// The model name at the provider (for Azure, the deployment name).
    pub model: String,
    /// The Azure OpenAI API version, such as `2024-10-21`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The provider key. Omit it to keep the key of the route now at the same position with
    /// the same provider and base URL.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// A model alias's definition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    /// The fallback chain, tried in order (1 to 8 routes, all of one dialect: OpenAI-style or
    /// Anthropic).
    pub routes: Vec<RouteBody>,
    /// Price in cents per million input tokens (default 0).
    #[serde(default)]
    pub input_cents_per_mtok: i64,
    /// Price in cents per million output tokens (default 0).
    #[serde(default)]
    pub output_cents_per_mtok: i64,
}

/// Longest chain accepted.
const MAX_ROUTES: usize = 8;

/// Writes a model alias: the name clients ask for, its fallback chain and its price.
/// Admins.
#[utoipa::path(put, path = "/v1/model-routes/{alias}", tag = "models", request_body = AliasBody,
    params(("alias" = String, Path, description = "The model name clients ask for")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = Object),
        (status = 422, description = "The routes are not valid", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_alias(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(alias): PathParam<ToolName>,
    Json(body): Json<AliasBody>,
) -> ApiResult<axum::Json<ModelAlias>> {
    caller.require_any(&[Role::Admin])?;
    let scope = caller.scope()?;
    if body.routes.is_empty() || body.routes.len() > MAX_ROUTES {
        return Err(unprocessable(format!("an alias has 1 to {MAX_ROUTES} routes")));
    }
    if body.input_cents_per_mtok < 0 || body.output_cents_per_mtok < 0 {
        return Err(unprocessable("prices are zero or more cents per million tokens"));
    }
    let current = state.store().model_alias(&scope, alias.as_str()).await?;
    let keeps_key = |i: usize, route: &RouteBody| {
        current.as_ref().and_then(|c| c.routes.get(i)).is_some_and(|old| {
            old.has_key && old.provider == route.provider && old.base_url == route.base_url
        })
    };
    let mut routes = Vec::with_capacity(body.routes.len());
    let mut anthropic = None;
    for (i, route) in body.routes.into_iter().enumerate() {
        let keyless = route.api_key.is_none() && !keeps_key(i, &route);
        let kind = ProviderKind::parse(&route.provider).ok_or_else(|| {
            unprocessable(format!(
                "routes[{i}].provider: `{}` is not `openai`, `azure_openai` or `anthropic`",
                route.provider
            ))
        })?;
        if *anthropic.get_or_insert(kind.dialect_is_anthropic()) != kind.dialect_is_anthropic() {
            return Err(unprocessable("an alias's routes all speak one dialect: OpenAI-style or Anthropic"));
        }
        let upstream = Upstream {
            id: format!("routes[{i}]"),
            kind,
            base_url: route.base_url.clone(),
            model: route.model.clone(),
            api_version: route.api_version.clone(),
            // A route without a key keeps its stored one, which the checks stand in for.
            api_key: match (&route.api_key, keyless) {
                (Some(key), _) => Some(SecretString::from(key.clone())),
                (None, false) => Some(SecretString::from("kept".to_owned())),
                (None, true) => None,
            },
        };
        upstream.validate().map_err(|e| unprocessable(format!("routes[{i}]: {e}")))?;
        routes.push(NewModelRoute {
            provider: route.provider,
            base_url: route.base_url,
            upstream_model: route.model,
            api_version: route.api_version,
            api_key: route.api_key.map(SecretString::from),
        });
    }
    let stored = state
        .store()
        .put_model_routes(
            &scope,
            alias.as_str(),
            routes,
            body.input_cents_per_mtok,
            body.output_cents_per_mtok,
        )
        .await?;
    Ok(axum::Json(stored))
}

/// Every model alias with its routes (keys never shown). Admins and builders.
#[utoipa::path(get, path = "/v1/model-routes", tag = "models",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Object)))]
pub async fn list_aliases(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<ModelAlias>>> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    Ok(axum::Json(state.store().model_aliases(&caller.scope()?).await?))
}

/// Removes a model alias. Admins.
#[utoipa::path(delete, path = "/v1/model-routes/{alias}", tag = "models",
    params(("alias" = String, Path, description = "The model name")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "Removed")))]
pub async fn delete_alias(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(alias): PathParam<ToolName>,
) -> ApiResult<StatusCode> {
    caller.require_any(&[Role::Admin])?;
    state.store().delete_model_alias(&caller.scope()?, alias.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who may use which model aliases. A caller may use an alias listed for one of its roles,
/// for all agents (when it is an agent), or for its API key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    /// Aliases per role (`admin`, `builder`, `member`, …).
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// Aliases every agent may use.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Aliases per API key id (`key_…`).
    #[serde(default)]
    pub keys: BTreeMap<String, Vec<String>>,
}

/// Spend-rate breakers: spend above these rates within any 60 seconds stops the caller (or
/// the whole tenant) for the cool-down.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendRate {
    /// Cents per minute one caller may spend.
    #[serde(default)]
    pub caller_cents_per_minute: Option<i64>,
    /// Cents per minute the tenant may spend.
    #[serde(default)]
    pub tenant_cents_per_minute: Option<i64>,
    /// How long a tripped breaker stays open, in seconds (default 900).
    #[serde(default)]
    pub cooldown_secs: Option<i64>,
}

/// The tenant's model-gateway settings. Absent limits are unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// The most output tokens one call may ask for; a call asking for more is refused, and a
    /// call that names no limit gets this one.
    #[serde(default)]
    pub max_tokens_per_call: Option<i64>,
    /// Tokens (input and output) each user or agent may use per UTC day.
    #[serde(default)]
    pub caller_daily_tokens: Option<i64>,
    /// What the tenant may spend on models per UTC month, in cents.
    #[serde(default)]
    pub tenant_monthly_cents: Option<i64>,
    /// Spend-rate breakers.
    #[serde(default)]
    pub spend_rate: SpendRate,
    /// What happens when a tool result in a prompt looks like an injection: `annotate` (a
    /// note is put before it, the default), `block` (the call is refused) or `audit` (only
    /// recorded).
    #[serde(default)]
    #[schema(value_type = String)]
    pub injection: InjectionPolicy,
    /// Who may use which aliases; absent, every caller may use every alias.
    #[serde(default)]
    pub allow: Option<Allowlist>,
}

impl GatewaySettings {
    fn validate(&self) -> Result<(), ApiError> {
        let positive = [
            ("max_tokens_per_call", self.max_tokens_per_call),
            ("caller_daily_tokens", self.caller_daily_tokens),
            ("tenant_monthly_cents", self.tenant_monthly_cents),
            ("spend_rate.caller_cents_per_minute", self.spend_rate.caller_cents_per_minute),
            ("spend_rate.tenant_cents_per_minute", self.spend_rate.tenant_cents_per_minute),
            ("spend_rate.cooldown_secs", self.spend_rate.cooldown_secs),
        ];
        let problems: Vec<String> = positive
            .iter()
            .filter(|(_, v)| v.is_some_and(|v| v <= 0))
            .map(|(name, _)| format!("{name} must be positive"))
            .chain(self.allow.iter().flat_map(|a| {
                a.roles
                    .keys()
                    .filter(|r| Role::parse(r).is_err())
                    .map(|r| format!("allow.roles: `{r}` is not a role"))
            }))
            .collect();
        if problems.is_empty() { Ok(()) } else { Err(unprocessable(problems.join("; "))) }
    }

    /// The budgets a model call is reserved against, in the store's units.
    pub fn budget_limits(&self) -> BudgetLimits {
        let ucents = |cents: Option<i64>| cents.map(|c| c.saturating_mul(1_000_000));
        BudgetLimits {
            principal_daily_tokens: self.caller_daily_tokens,
            tenant_monthly_ucents: ucents(self.tenant_monthly_cents),
            principal_ucents_per_minute: ucents(self.spend_rate.caller_cents_per_minute),
            tenant_ucents_per_minute: ucents(self.spend_rate.tenant_cents_per_minute),
            breaker_cooldown_ms: self.spend_rate.cooldown_secs.unwrap_or(900).saturating_mul(1000),
        }
    }

    /// Whether a caller may use `alias`.
    pub fn allows(&self, caller: &Caller, alias: &str) -> bool {
        let Some(allow) = &self.allow else { return true };
        let listed = |aliases: &Vec<String>| aliases.iter().any(|a| a == alias);
        let principal = &caller.0;
        let by_role = allow
            .roles
            .iter()
            .any(|(role, aliases)| Role::parse(role).is_ok_and(|r| principal.has_role(r)) && listed(aliases));
        let as_agent = matches!(principal.kind(), PrincipalKind::Agent { .. }) && listed(&allow.agents);
        let by_key = match principal.credential() {
            Credential::ApiKey(key) => allow.keys.get(key.as_str()).is_some_and(listed),
            Credential::Session(_) | Credential::LocalDataDir => false,
        };
        by_role || as_agent || by_key
    }
}

/// The gateway settings in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    /// Their version; 0 when the tenant has written none.
    pub version: i64,
    /// The settings.
    pub settings: GatewaySettings,
}

/// Reads the stored settings (defaults when none).
pub async fn current_settings(
    state: &AppState,
    scope: &airlock_store::TenantScope,
) -> ApiResult<SettingsView> {
    match state.store().model_settings(scope).await? {
        None => Ok(SettingsView { version: 0, settings: GatewaySettings::default() }),
        Some(stored) => Ok(SettingsView {
            version: stored.version,
            settings: serde_json::from_str(&stored.text).map_err(|e| ApiError::internal(&e))?,
        }),
    }
}

/// The model-gateway settings in force. Admins, builders and auditors.
#[utoipa::path(get, path = "/v1/model-settings", tag = "models",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = SettingsView)))]
pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<SettingsView>> {
    caller.require_any(&[Role::Admin, Role::Builder, Role::Auditor])?;
    Ok(axum::Json(current_settings(&state, &caller.scope()?).await?))
}

/// Writes new model-gateway settings. Admins.
#[utoipa::path(put, path = "/v1/model-settings", tag = "models", request_body = GatewaySettings,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = SettingsView),
        (status = 422, description = "The settings are not valid", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    Json(settings): Json<GatewaySettings>,
) -> ApiResult<axum::Json<SettingsView>> {
    caller.require_any(&[Role::Admin])?;
    settings.validate()?;
    let text = serde_json::to_string(&settings).map_err(|e| ApiError::internal(&e))?;
    let stored = state.store().put_model_settings(&caller.scope()?, &text).await?;
    Ok(axum::Json(SettingsView { version: stored.version, settings }))
}
