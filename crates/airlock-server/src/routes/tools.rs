//! Tools, the credentials their connectors use, and the tenant's Cedar policies.
//!
//! Everything is validated before it is stored: a tool's input schema compiles (JSON Schema
//! 2020-12, local references only, linear-time patterns, unknown arguments rejected), its
//! tier and classification are known, its connector makes sense; a policy validates against
//! Airlock's Cedar schema, and a refusal quotes the validator. Credential secrets go in and
//! never come back out.

use airlock_exec::Connector;
use airlock_policy::{ArgumentSchema, RiskTier, TenantPolicies};
use airlock_store::{PolicyVersion, Tool, ToolCredential, ToolSpec};
use airlock_types::{Role, ToolName};
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretBox;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::extract::{Json, PathParam};
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

const CLASSIFICATIONS: &[&str] = &["public", "internal", "confidential", "restricted"];

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemType::InvalidBody, detail)
}

/// A tool's definition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolBody {
    /// What the tool does, for people and models.
    pub description: String,
    /// The arguments' JSON Schema (2020-12). Mark sensitive arguments with
    /// `"x-airlock-sensitive": "recipient"` (or `url`, `account`, `amount`, …).
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
    /// `read`, `write`, `destructive`, `financial`, `egress`, `bulk`, or `custom:<name>`.
    pub tier: String,
    /// Whether calling it changes anything.
    pub side_effects: bool,
    /// Classification of the data it returns: public, internal (default), confidential, restricted.
    #[serde(default)]
    pub classification: Option<String>,
    /// Whether its output is a trusted source for the flow rules: content no outsider can
    /// write, such as the company directory or the bank's list of registered payees
    /// (default false: mailboxes, web pages and shared documents are not).
    #[serde(default)]
    pub trusted_source: bool,
    /// Estimated cost of one call, in cents (default 0).
    #[serde(default)]
    pub cost_cents: Option<i64>,
    /// The most this tool's calls may cost across the tenant in any 24 hours, in cents.
    #[serde(default)]
    pub daily_cost_ceiling_cents: Option<i64>,
    /// How the executor calls it, such as
    /// `{"kind":"http","method":"POST","url":"https://api.example.com/send/{mailbox}"}`.
    #[schema(value_type = Object)]
    pub connector: serde_json::Value,
    /// The credential (by name) the connector uses.
    #[serde(default)]
    pub credential: Option<String>,
}

/// A new tool.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTool {
    /// Unique name: a lowercase letter, then lowercase letters, digits, `_`, `.`, `-`.
    pub name: String,
    /// Its definition.
    #[serde(flatten)]
    pub definition: ToolBody,
}

/// A tool as registered.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolView {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its input schema as enforced (unknown arguments are rejected).
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
    /// Its risk tier.
    pub tier: String,
    /// Whether it has side effects.
    pub side_effects: bool,
    /// Its data classification.
    pub classification: String,
    /// Whether its output is a trusted source for the flow rules.
    pub trusted_source: bool,
    /// Estimated cost per call, in cents.
    pub cost_cents: i64,
    /// Its cost ceiling per 24 hours, in cents.
    pub daily_cost_ceiling_cents: Option<i64>,
    /// Its connector.
    #[schema(value_type = Object)]
    pub connector: serde_json::Value,
    /// Its credential's name.
    pub credential: Option<String>,
    /// Arguments marked sensitive, as JSON pointers with their kind.
    pub sensitive_arguments: Vec<SensitiveView>,
    /// Incremented on every update.
    pub version: i64,
    /// When it was registered.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

/// A sensitive argument.
#[derive(Debug, Serialize, ToSchema)]
pub struct SensitiveView {
    /// Its JSON pointer in the arguments.
    pub pointer: String,
    /// What it is (`recipient`, `url`, `amount`, …).
    pub kind: String,
}

fn view(tool: Tool) -> ToolView {
    let sensitive = ArgumentSchema::compile(&tool.input_schema)
        .map(|schema| {
            schema
                .sensitive_arguments()
                .iter()
                .map(|s| SensitiveView { pointer: s.pointer.clone(), kind: s.kind.clone() })
                .collect()
        })
        .unwrap_or_default();
    ToolView {
        name: tool.name.to_string(),
        description: tool.description,
        input_schema: tool.input_schema,
        tier: tool.tier,
        side_effects: tool.side_effects,
        classification: tool.classification,
        trusted_source: tool.trusted_source,
        cost_cents: tool.cost_cents,
        daily_cost_ceiling_cents: tool.daily_cost_ceiling_cents,
        connector: tool.connector,
        credential: tool.credential,
        sensitive_arguments: sensitive,
        version: tool.version,
        created_at: tool.created_at.to_rfc3339(),
        updated_at: tool.updated_at.to_rfc3339(),
    }
}

fn spec(body: ToolBody) -> ApiResult<ToolSpec> {
    if body.description.chars().count() > 2000 {
        return Err(invalid("`description` must be at most 2000 characters"));
    }
    let schema =
        ArgumentSchema::compile(&body.input_schema).map_err(|e| invalid(format!("`input_schema`: {e}")))?;
    let tier = RiskTier::parse(&body.tier).map_err(|e| invalid(format!("`tier`: {e}")))?;
    let classification = body.classification.unwrap_or_else(|| "internal".to_owned());
    if !CLASSIFICATIONS.contains(&classification.as_str()) {
        return Err(invalid(format!(
            "`classification`: `{classification}` is not one of public, internal, confidential, restricted"
        )));
    }
    let cost_cents = body.cost_cents.unwrap_or(0);
    if cost_cents < 0 {
        return Err(invalid("`cost_cents` must not be negative"));
    }
    if body.daily_cost_ceiling_cents.is_some_and(|c| c < 0) {
        return Err(invalid("`daily_cost_ceiling_cents` must not be negative"));
    }
    let connector = Connector::parse(&body.connector).map_err(|e| invalid(format!("`connector`: {e}")))?;
    let credential = body
        .credential
        .as_deref()
        .map(ToolName::parse)
        .transpose()
        .map_err(|e| invalid(format!("`credential`: {e}")))?;
    Ok(ToolSpec {
        description: body.description,
        input_schema: schema.as_json().clone(),
        tier: tier.as_str().to_owned(),
        side_effects: body.side_effects,
        classification,
        trusted_source: body.trusted_source,
        cost_cents,
        daily_cost_ceiling_cents: body.daily_cost_ceiling_cents,
        connector: connector.to_json(),
        credential,
    })
}

/// Registers a tool. Admins and builders.
#[utoipa::path(post, path = "/v1/tools", tag = "tools", request_body = CreateTool,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, body = ToolView),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid schema, tier, classification or connector", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_tool(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateTool>,
) -> ApiResult<(StatusCode, axum::Json<ToolView>)> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    let scope = caller.scope()?;
    let name = ToolName::parse(&body.name).map_err(|e| invalid(format!("`name`: {e}")))?;
    let tool = state.store().create_tool(&scope, &name, spec(body.definition)?).await?;
    Ok((StatusCode::CREATED, axum::Json(view(tool))))
}

/// Replaces a tool's definition. Admins and builders.
#[utoipa::path(put, path = "/v1/tools/{name}", tag = "tools", request_body = ToolBody,
    params(("name" = String, Path, description = "The tool's name")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = ToolView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn update_tool(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(name): PathParam<ToolName>,
    Json(body): Json<ToolBody>,
) -> ApiResult<axum::Json<ToolView>> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    let scope = caller.scope()?;
    let tool = state.store().update_tool(&scope, &name, spec(body)?).await?;
    Ok(axum::Json(view(tool)))
}

/// The tenant's tools. People with any role; agents see tools through their run's lease.
#[utoipa::path(get, path = "/v1/tools", tag = "tools",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<ToolView>)))]
pub async fn list_tools(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<ToolView>>> {
    caller.require_any(&Role::ALL)?;
    let tools = state.store().list_tools(&caller.scope()?).await?;
    Ok(axum::Json(tools.into_iter().map(view).collect()))
}

/// One tool.
#[utoipa::path(get, path = "/v1/tools/{name}", tag = "tools",
    params(("name" = String, Path, description = "The tool's name")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = ToolView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_tool(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(name): PathParam<ToolName>,
) -> ApiResult<axum::Json<ToolView>> {
    caller.require_any(&Role::ALL)?;
    Ok(axum::Json(view(state.store().get_tool(&caller.scope()?, &name).await?)))
}

/// A credential's secret material, by kind.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialBody {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// HTTP Basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A key in a header of the upstream's choosing.
    ApiKeyHeader {
        /// The header's name, such as `X-Api-Key`.
        header: String,
        /// The key.
        value: String,
    },
    /// OAuth 2.0 client credentials, exchanged for a token by the executor.
    OauthClientCredentials {
        /// The token endpoint (https).
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: String,
        /// The scope to request, if any.
        #[serde(default)]
        scope: Option<String>,
    },
}

impl std::fmt::Debug for CredentialBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialBody(..)")
    }
}

impl CredentialBody {
    fn kind(&self) -> &'static str {
        match self {
            Self::Bearer { .. } => "bearer",
            Self::Basic { .. } => "basic",
            Self::ApiKeyHeader { .. } => "api_key_header",
            Self::OauthClientCredentials { .. } => "oauth_client_credentials",
        }
    }

    fn check(&self) -> ApiResult<()> {
        let nonempty = |name: &str, value: &str| {
            if value.is_empty() || value.len() > 8192 || value.chars().any(char::is_control) {
                Err(invalid(format!("`{name}` must be 1 to 8192 characters without control characters")))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Bearer { token } => nonempty("token", token),
            Self::Basic { username, password } => {
                nonempty("username", username)?;
                nonempty("password", password)
            }
            Self::ApiKeyHeader { header, value } => {
                let reserved = ["host", "cookie", "content-length", "transfer-encoding", "connection"];
                if header.is_empty()
                    || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    || reserved.contains(&header.to_ascii_lowercase().as_str())
                {
                    return Err(invalid("`header` must be a header name such as `X-Api-Key`"));
                }
                nonempty("value", value)
            }
            Self::OauthClientCredentials { token_url, client_id, client_secret, scope } => {
                if !token_url.starts_with("https://")
                    && !token_url.starts_with("http://127.0.0.1")
                    && !token_url.starts_with("http://localhost")
                {
                    return Err(invalid("`token_url` must be https (plain http only on loopback)"));
                }
                nonempty("client_id", client_id)?;
                nonempty("client_secret", client_secret)?;
                scope.as_deref().map_or(Ok(()), |s| nonempty("scope", s))
            }
        }
    }

    fn material(&self) -> serde_json::Value {
        match self {
            Self::Bearer { token } => serde_json::json!({"token": token}),
            Self::Basic { username, password } => {
                serde_json::json!({"username": username, "password": password})
            }
            Self::ApiKeyHeader { header, value } => serde_json::json!({"header": header, "value": value}),
            Self::OauthClientCredentials { token_url, client_id, client_secret, scope } => {
                serde_json::json!({
                    "token_url": token_url, "client_id": client_id, "client_secret": client_secret, "scope": scope,
                })
            }
        }
    }
}

/// A credential's record; its secret is never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// When it was first stored.
    pub created_at: String,
    /// When its secret last changed.
    pub updated_at: String,
}

impl From<ToolCredential> for CredentialView {
    fn from(c: ToolCredential) -> Self {
        Self {
            id: c.id,
            name: c.name.to_string(),
            kind: c.kind,
            created_at: c.created_at.to_rfc3339(),
            updated_at: c.updated_at.to_rfc3339(),
        }
    }
}

/// Stores a credential (or rotates its secret). Admins only. The secret is sealed with the
/// tenant's key; only the executor ever reads it, and no response, log or audit entry shows it.
#[utoipa::path(put, path = "/v1/credentials/{name}", tag = "tools", request_body = CredentialBody,
    params(("name" = String, Path, description = "The credential's name")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = CredentialView), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn put_credential(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(name): PathParam<ToolName>,
    Json(body): Json<CredentialBody>,
) -> ApiResult<axum::Json<CredentialView>> {
    caller.require_any(&[Role::Admin])?;
    let scope = caller.scope()?;
    body.check()?;
    let material = SecretBox::new(body.material().to_string().into_bytes().into_boxed_slice());
    let credential = state.store().put_credential(&scope, &name, body.kind(), &material).await?;
    Ok(axum::Json(credential.into()))
}

/// The tenant's credentials: names and kinds only. Admins and builders.
#[utoipa::path(get, path = "/v1/credentials", tag = "tools",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<CredentialView>)))]
pub async fn list_credentials(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<CredentialView>>> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    let credentials = state.store().list_credentials(&caller.scope()?).await?;
    Ok(axum::Json(credentials.into_iter().map(Into::into).collect()))
}

/// Policy text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// Cedar policies, validated against `GET /v1/policies/schema`.
    pub text: String,
}

/// The policies in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// Their version (0 when the tenant has written none and only the built-in defaults apply).
    pub version: i64,
    /// The Cedar text.
    pub text: String,
    /// When they were written.
    pub created_at: Option<String>,
    /// Who wrote them.
    pub created_by: Option<String>,
}

impl From<PolicyVersion> for PolicyView {
    fn from(p: PolicyVersion) -> Self {
        Self {
            version: p.version,
            text: p.text,
            created_at: Some(p.created_at.to_rfc3339()),
            created_by: Some(p.created_by),
        }
    }
}

/// Longest policy text accepted.
const MAX_POLICY_BYTES: usize = 256 * 1024;

/// Writes a new version of the tenant's policies, validated against Airlock's Cedar schema;
/// an invalid policy is refused with the validator's messages. Admins and builders.
#[utoipa::path(put, path = "/v1/policies", tag = "tools", request_body = PolicyBody,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = PolicyView),
        (status = 422, description = "The policy does not parse or validate", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_policies(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PolicyBody>,
) -> ApiResult<axum::Json<PolicyView>> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    let scope = caller.scope()?;
    if body.text.len() > MAX_POLICY_BYTES {
        return Err(invalid(format!("the policy text must be at most {MAX_POLICY_BYTES} bytes")));
    }
    TenantPolicies::parse(&body.text)
        .map_err(|e| ApiError::new(ProblemType::Unprocessable, e.to_string()))?;
    let version = state.store().put_policies(&scope, &body.text).await?;
    Ok(axum::Json(version.into()))
}

/// The policies in force. Admins, builders and auditors.
#[utoipa::path(get, path = "/v1/policies", tag = "tools",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = PolicyView)))]
pub async fn get_policies(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<PolicyView>> {
    caller.require_any(&[Role::Admin, Role::Builder, Role::Auditor])?;
    let current = state.store().current_policies(&caller.scope()?).await?;
    Ok(axum::Json(current.map_or_else(
        || PolicyView { version: 0, text: String::new(), created_at: None, created_by: None },
        Into::into,
    )))
}

/// Airlock's Cedar schema: the entities, action and context attributes policies may use.
#[utoipa::path(get, path = "/v1/policies/schema", tag = "tools",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "Cedar schema (human syntax)", content_type = "text/plain")))]
pub async fn policy_schema(caller: Caller) -> ApiResult<String> {
    caller.require_any(&Role::ALL)?;
    Ok(airlock_policy::cedar_schema_text().to_owned())
}
