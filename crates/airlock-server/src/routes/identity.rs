//! Identities within a tenant: who am I, users, agents and API keys. The tenant is always
//! the caller's own: it comes from the credential, never from the path or the body.

use airlock_store::{KeyOwner, NewUser, StoreError};
use airlock_types::{AgentName, ApiKeyId, Email, Role, RoleSet, Timestamp, UserId};
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{AgentView, ApiKeyView, UserView, WhoAmI};
use crate::auth::Caller;
use crate::extract::{Json, PathParam};
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// Who is calling: the principal, its tenant and its roles.
#[utoipa::path(get, path = "/v1/whoami", tag = "identity",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = WhoAmI),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn whoami(caller: Caller) -> axum::Json<WhoAmI> {
    axum::Json(WhoAmI::from(&caller.0))
}

// ---- users ------------------------------------------------------------------------

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Their login name.
    pub email: String,
    /// Their display name; defaults to the e-mail address.
    #[serde(default)]
    pub name: Option<String>,
    /// Their roles: one or more of admin, builder, approver, member, viewer, auditor.
    pub roles: Vec<String>,
    /// A password for the console (at least 12 characters). Without one the user cannot
    /// log in, but can still own API keys.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<String>,
}

fn parse_roles(roles: &[String]) -> ApiResult<RoleSet> {
    if roles.is_empty() {
        return Err(ApiError::new(ProblemType::InvalidBody, "`roles` must name at least one role"));
    }
    roles
        .iter()
        .map(|r| Role::parse(r).map_err(|e| ApiError::new(ProblemType::InvalidBody, e.to_string())))
        .collect()
}

/// Creates a user in the caller's tenant. Admins only.
#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = CreateUser,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, body = UserView),
        (status = 409, description = "A user with that e-mail exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> ApiResult<(StatusCode, axum::Json<UserView>)> {
    caller.require_any(&[Role::Admin])?;
    let scope = caller.scope()?;
    let email =
        Email::parse(&body.email).map_err(|e| ApiError::new(ProblemType::InvalidBody, e.to_string()))?;
    let roles = parse_roles(&body.roles)?;
    let name = body.name.unwrap_or_else(|| email.to_string());
    let user = state
        .store()
        .create_user(&scope, NewUser { email, name, roles, password: body.password.map(SecretString::from) })
        .await?;
    tracing::info!(user = %user.id, "user created");
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// The users of the caller's tenant. Admins only.
#[utoipa::path(get, path = "/v1/users", tag = "identity",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<UserView>)))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<UserView>>> {
    caller.require_any(&[Role::Admin])?;
    let users = state.store().list_users(&caller.scope()?).await?;
    Ok(axum::Json(users.into_iter().map(Into::into).collect()))
}

fn is_self(caller: &Caller, id: &UserId) -> bool {
    matches!(caller.0.kind(), airlock_store::PrincipalKind::User { id: own, .. } if own == id)
}

/// One user of the caller's tenant. Admins, or the user themself.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "identity",
    params(("id" = String, Path, description = "The user's id (`usr_…`)")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = UserView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<UserId>,
) -> ApiResult<axum::Json<UserView>> {
    if !is_self(&caller, &id) {
        caller.require_any(&[Role::Admin])?;
    }
    Ok(axum::Json(state.store().get_user(&caller.scope()?, &id).await?.into()))
}

/// New roles for a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    /// The complete set of roles the user will hold.
    pub roles: Vec<String>,
}

/// Replaces a user's roles. Admins only; an admin cannot remove their own admin role, so a
/// tenant is never left without one by accident.
#[utoipa::path(put, path = "/v1/users/{id}/roles", tag = "identity", request_body = SetRoles,
    params(("id" = String, Path, description = "The user's id (`usr_…`)")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = UserView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn set_roles(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<UserId>,
    Json(body): Json<SetRoles>,
) -> ApiResult<axum::Json<UserView>> {
    caller.require_any(&[Role::Admin])?;
    let roles = parse_roles(&body.roles)?;
    if is_self(&caller, &id) && !roles.contains(Role::Admin) {
        return Err(ApiError::new(ProblemType::Unprocessable, "you cannot remove your own admin role"));
    }
    let user = state.store().set_user_roles(&caller.scope()?, &id, &roles).await?;
    tracing::info!(user = %user.id, "user roles changed");
    Ok(axum::Json(user.into()))
}

// ---- agents -----------------------------------------------------------------------

/// A new agent identity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Unique name in the tenant: 1 to 64 of letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// What the agent is for.
    #[serde(default)]
    pub description: String,
}

/// Creates an agent identity. Admins and builders.
#[utoipa::path(post, path = "/v1/agents", tag = "identity", request_body = CreateAgent,
    security(("api_key" = []), ("session" = [])),
    responses((status = 201, body = AgentView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn create_agent(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateAgent>,
) -> ApiResult<(StatusCode, axum::Json<AgentView>)> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    let name =
        AgentName::parse(&body.name).map_err(|e| ApiError::new(ProblemType::InvalidBody, e.to_string()))?;
    let agent = state.store().create_agent(&caller.scope()?, &name, &body.description).await?;
    tracing::info!(agent = %agent.id, "agent created");
    Ok((StatusCode::CREATED, axum::Json(agent.into())))
}

/// The agents of the caller's tenant. Any user role.
#[utoipa::path(get, path = "/v1/agents", tag = "identity",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<AgentView>)))]
pub async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<AgentView>>> {
    caller.require_any(&Role::ALL)?;
    let agents = state.store().list_agents(&caller.scope()?).await?;
    Ok(axum::Json(agents.into_iter().map(Into::into).collect()))
}

// ---- API keys ---------------------------------------------------------------------

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for the key.
    pub name: String,
    /// Issue the key to this agent (by name). Admins and builders.
    #[serde(default)]
    pub agent: Option<String>,
    /// Issue the key to this user (by id). Admins; any user may omit both owner fields to
    /// get a key for themself.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Lifetime in seconds; without it the key lives until revoked.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A key as created. `secret` is shown this once and cannot be retrieved again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key's record.
    pub key: ApiKeyView,
    /// The API key itself (`alk_…`). Store it now.
    pub secret: String,
}

/// Longest key lifetime accepted: ten years.
const MAX_KEY_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// Creates an API key in the caller's tenant, for an agent, a user, or the caller.
#[utoipa::path(post, path = "/v1/keys", tag = "identity", request_body = CreateKey,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, body = CreatedKey),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent or user in the tenant", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateKey>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKey>)> {
    let scope = caller.scope()?;
    let owner = match (&body.agent, &body.user_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(ProblemType::InvalidBody, "give `agent` or `user_id`, not both"));
        }
        (Some(agent), None) => {
            caller.require_any(&[Role::Admin, Role::Builder])?;
            let name = AgentName::parse(agent)
                .map_err(|e| ApiError::new(ProblemType::InvalidBody, e.to_string()))?;
            KeyOwner::Agent(state.store().get_agent_by_name(&scope, &name).await?.id)
        }
        (None, Some(user)) => {
            let id =
                UserId::parse(user).map_err(|e| ApiError::new(ProblemType::InvalidBody, e.to_string()))?;
            if !is_self(&caller, &id) {
                caller.require_any(&[Role::Admin])?;
            }
            KeyOwner::User(id)
        }
        (None, None) => match caller.0.kind() {
            airlock_store::PrincipalKind::User { id, .. } => KeyOwner::User(id.clone()),
            _ => return Err(ApiError::forbidden("agents cannot create API keys")),
        },
    };
    let expires_at = match body.expires_in_secs {
        Some(0) => {
            return Err(ApiError::new(
                ProblemType::InvalidBody,
                "`expires_in_secs` must be greater than zero",
            ));
        }
        Some(secs) if secs > MAX_KEY_LIFETIME_SECS => {
            return Err(ApiError::new(
                ProblemType::InvalidBody,
                format!("`expires_in_secs` must be at most {MAX_KEY_LIFETIME_SECS}"),
            ));
        }
        Some(secs) => Some(Timestamp::now().plus(std::time::Duration::from_secs(secs))),
        None => None,
    };
    let created = state.store().create_api_key(&scope, owner, &body.name, expires_at).await?;
    tracing::info!(key = %created.key.id, "API key created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey { secret: created.secret.expose().to_owned(), key: created.key.into() }),
    ))
}

fn owns(caller: &Caller, owner: &KeyOwner) -> bool {
    match (caller.0.kind(), owner) {
        (airlock_store::PrincipalKind::User { id, .. }, KeyOwner::User(owner)) => id == owner,
        (airlock_store::PrincipalKind::Agent { id, .. }, KeyOwner::Agent(owner)) => id == owner,
        _ => false,
    }
}

/// The API keys of the caller's tenant: all of them for admins, the caller's own otherwise.
#[utoipa::path(get, path = "/v1/keys", tag = "identity",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<ApiKeyView>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<ApiKeyView>>> {
    let admin = caller.0.has_role(Role::Admin);
    let keys = state.store().list_api_keys(&caller.scope()?).await?;
    Ok(axum::Json(keys.into_iter().filter(|k| admin || owns(&caller, &k.owner)).map(Into::into).collect()))
}

/// One API key: admins, or the key's owner. Another tenant's key is not found.
#[utoipa::path(get, path = "/v1/keys/{id}", tag = "identity",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = ApiKeyView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<ApiKeyId>,
) -> ApiResult<axum::Json<ApiKeyView>> {
    let key = visible_key(&state, &caller, &id).await?;
    Ok(axum::Json(key.into()))
}

async fn visible_key(state: &AppState, caller: &Caller, id: &ApiKeyId) -> ApiResult<airlock_store::ApiKey> {
    let key = state.store().get_api_key(&caller.scope()?, id).await?;
    if caller.0.has_role(Role::Admin) || owns(caller, &key.owner) {
        Ok(key)
    } else {
        // Someone else's key in the same tenant: as invisible as another tenant's.
        Err(StoreError::NotFound { what: format!("API key `{id}`") }.into())
    }
}

/// Revokes an API key: admins, or the key's owner. Takes effect on the next request.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "identity",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The revoked key", body = ApiKeyView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<ApiKeyId>,
) -> ApiResult<axum::Json<ApiKeyView>> {
    visible_key(&state, &caller, &id).await?;
    let key = state.store().revoke_api_key(&caller.scope()?, &id).await?;
    tracing::info!(key = %key.id, "API key revoked");
    Ok(axum::Json(key.into()))
}
