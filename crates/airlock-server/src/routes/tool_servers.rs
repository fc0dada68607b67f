//! Importing the tools of an upstream MCP server into the tenant's registry.
//!
//! Airlock lists the server's tools and registers each as `<prefix>.<tool>` with the upstream's
//! input schema (compiled like any other: unknown arguments rejected), the tier and
//! classification the builder chose, and an MCP connector. Importing again refreshes what the
//! upstream changed (description, schema, connector) and keeps what the builder adjusted since
//! (tier, classification, side effects, costs, credential). A refresh (on request, and every
//! `mcp.refresh_secs` in the background) does the same for every imported tool without adding
//! new ones. The server's credential, when it needs one, is opened for the executor only.
//! Registration goes through the store's `create_tool`/`update_tool`, so it is audited like a
//! tool registered by hand.

use std::collections::BTreeMap;

use airlock_exec::{Connector, CredentialMaterial, McpListError};
use airlock_mcp::client::{ImportedTool, UpstreamSpec};
use airlock_policy::{ArgumentSchema, RiskTier};
use airlock_store::{Principal, StoreError, TenantScope, Tool, ToolSpec};
use airlock_types::{Role, ToolName};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument as _;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::extract::Json;
use crate::problem::{ApiError, Problem, ProblemType, error_chain};
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

const CLASSIFICATIONS: &[&str] = &["public", "internal", "confidential", "restricted"];
/// The most characters of an upstream description kept (the registry's limit).
const MAX_DESCRIPTION: usize = 2000;

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemType::InvalidBody, detail)
}

/// What to import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportToolServer {
    /// The upstream server: `{"kind":"stdio","command":"node","args":[…],"env":{…}}` (started
    /// without a shell, with only `PATH`, a temporary `HOME` and `env` in its environment) or
    /// `{"kind":"streamable_http","url":"https://…/mcp"}`; both take `timeout_ms`.
    #[schema(value_type = Object)]
    pub server: Value,
    /// Prefix of the imported tools' names: `<prefix>.<upstream tool>`.
    pub prefix: String,
    /// Risk tier of newly imported tools (default `read`); adjust each later with
    /// `PUT /v1/tools/{name}`.
    #[serde(default)]
    pub tier: Option<String>,
    /// Classification of newly imported tools' output (default `internal`).
    #[serde(default)]
    pub classification: Option<String>,
    /// Only these upstream tools (default: all).
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// The credential (by name) the server needs: used to list its tools, and set on newly
    /// imported tools. It goes to a streamable-HTTP server as a bearer token, to a stdio server
    /// in the variable its `credential_env` names.
    #[serde(default)]
    pub credential: Option<String>,
}

/// A tool that was not imported.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefusedTool {
    /// The upstream's name for it.
    pub tool: String,
    /// Why.
    pub reason: String,
}

/// What an import did, by Airlock tool name.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ImportReport {
    /// Tools registered for the first time.
    pub added: Vec<String>,
    /// Tools whose description, schema or connector changed upstream.
    pub updated: Vec<String>,
    /// Tools already up to date.
    pub unchanged: Vec<String>,
    /// Upstream tools that could not be registered.
    pub refused: Vec<RefusedTool>,
}

/// Imports (or refreshes) an upstream MCP server's tools. Admins and builders.
#[utoipa::path(post, path = "/v1/tool-servers/import", tag = "tools", request_body = ImportToolServer,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = ImportReport),
        (status = 422, description = "Invalid server, prefix, tier or classification", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The tool server could not be reached or listed", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The tool server did not answer in time", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn import_tool_server(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<ImportToolServer>,
) -> ApiResult<axum::Json<ImportReport>> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    let scope = caller.scope()?;
    let server: UpstreamSpec =
        serde_json::from_value(body.server.clone()).map_err(|e| invalid(format!("`server`: {e}")))?;
    server.check().map_err(|e| invalid(format!("`server`: {e}")))?;
    if ToolName::parse(&format!("{}.x", body.prefix)).is_err() || body.prefix.contains('.') {
        return Err(invalid(format!(
            "`prefix`: `{}` must be a lowercase letter, then lowercase letters, digits, `_` or `-`",
            body.prefix.chars().take(64).collect::<String>()
        )));
    }
    let tier = RiskTier::parse(body.tier.as_deref().unwrap_or("read"))
        .map_err(|e| invalid(format!("`tier`: {e}")))?;
    let classification = body.classification.unwrap_or_else(|| "internal".to_owned());
    if !CLASSIFICATIONS.contains(&classification.as_str()) {
        return Err(invalid(format!(
            "`classification`: `{classification}` is not one of public, internal, confidential, restricted"
        )));
    }

    let credential = body
        .credential
        .as_deref()
        .map(ToolName::parse)
        .transpose()
        .map_err(|e| invalid(format!("`credential`: {e}")))?;
    if credential.is_some()
        && let UpstreamSpec::Stdio(stdio) = &server
        && stdio.credential_env.is_none()
    {
        return Err(invalid(
            "`server`: a stdio server with a credential needs `credential_env` to receive it",
        ));
    }
    let material = match &credential {
        None => None,
        Some(name) => {
            let opened = state.store().open_credential_by_name_for_executor(&scope, name).await?;
            let (kind, material) = opened
                .ok_or_else(|| invalid(format!("`credential`: there is no credential named `{name}`")))?;
            Some(CredentialMaterial::new(&kind, material))
        }
    };
    let upstream =
        state.executor().list_mcp_tools(&server, material.as_ref()).await.map_err(upstream_error)?;
    if let Some(wanted) = &body.tools
        && let Some(missing) = wanted.iter().find(|w| !upstream.iter().any(|t| &&t.name == w))
    {
        return Err(invalid(format!(
            "`tools`: the server has no tool `{}`",
            missing.chars().take(64).collect::<String>()
        )));
    }

    let store = state.store();
    let mut report = ImportReport::default();
    for tool in upstream {
        if body.tools.as_ref().is_some_and(|w| !w.contains(&tool.name)) {
            continue;
        }
        let refuse = |reason: String| RefusedTool { tool: tool.name.clone(), reason };
        let Ok(name) = ToolName::parse(&format!("{}.{}", body.prefix, tool.name)) else {
            report.refused.push(refuse("its name does not make a valid Airlock tool name".into()));
            continue;
        };
        let (description, input_schema) = match upstream_definition(&tool) {
            Ok(definition) => definition,
            Err(reason) => {
                report.refused.push(refuse(reason));
                continue;
            }
        };
        let connector = json!({"kind": "mcp", "server": body.server, "tool": tool.name});
        let connector = match Connector::parse(&connector) {
            Ok(connector) => connector.to_json(),
            Err(e) => {
                report.refused.push(refuse(e.to_string()));
                continue;
            }
        };
        match store.get_tool(&scope, &name).await {
            Ok(existing) => {
                if existing.description == description
                    && existing.input_schema == input_schema
                    && existing.connector == connector
                {
                    report.unchanged.push(name.to_string());
                    continue;
                }
                update_upstream_part(&state, &scope, existing, description, input_schema, connector).await?;
                report.updated.push(name.to_string());
            }
            Err(StoreError::NotFound { .. }) => {
                // Hints only, but the safe reading: a tool not declared read-only changes things.
                let read_only = tool
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("readOnlyHint"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let spec = ToolSpec {
                    description,
                    input_schema,
                    tier: tier.as_str().to_owned(),
                    side_effects: !read_only,
                    classification: classification.clone(),
                    trusted_source: false,
                    cost_cents: 0,
                    daily_cost_ceiling_cents: None,
                    connector,
                    credential: credential.clone(),
                };
                store.create_tool(&scope, &name, spec).await?;
                report.added.push(name.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(axum::Json(report))
}

/// The description and compiled input schema Airlock registers for an upstream tool, or why
/// it cannot.
fn upstream_definition(tool: &ImportedTool) -> Result<(String, Value), String> {
    let schema = as_2020_12(tool.input_schema.clone()).and_then(|schema| {
        ArgumentSchema::compile(&schema).map_err(|e| format!("its input schema does not compile: {e}"))
    })?;
    let description: String = tool
        .description
        .clone()
        .unwrap_or_else(|| format!("`{}` of an MCP tool server", tool.name))
        .chars()
        .take(MAX_DESCRIPTION)
        .collect();
    Ok((description, schema.as_json().clone()))
}

/// Replaces the upstream's part of `existing` (description, schema, connector) and keeps the
/// builder's adjustments (tier, classification, side effects, costs, credential). Through the
/// store's `update_tool`, so audited.
async fn update_upstream_part(
    state: &AppState,
    scope: &TenantScope,
    existing: Tool,
    description: String,
    input_schema: Value,
    connector: Value,
) -> ApiResult<()> {
    let credential = existing
        .credential
        .as_deref()
        .map(ToolName::parse)
        .transpose()
        .map_err(|e| ApiError::internal(&e))?;
    let spec = ToolSpec {
        description,
        input_schema,
        tier: existing.tier,
        side_effects: existing.side_effects,
        classification: existing.classification,
        trusted_source: existing.trusted_source,
        cost_cents: existing.cost_cents,
        daily_cost_ceiling_cents: existing.daily_cost_ceiling_cents,
        connector,
        credential,
    };
    state.store().update_tool(scope, &existing.name, spec).await?;
    Ok(())
}

/// A tool a refresh left as it was, by Airlock name.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedTool {
    /// The Airlock tool.
    pub tool: String,
    /// Why it was left as it was.
    pub reason: String,
}

/// What a refresh did, by Airlock tool name.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct RefreshReport {
    /// Tools whose upstream description or input schema changed, now updated.
    pub updated: Vec<String>,
    /// Tools already up to date.
    pub unchanged: Vec<String>,
    /// Tools whose upstream no longer offers them: kept as they are, not deleted.
    pub disappeared: Vec<String>,
    /// Tools left as they were: their server could not be listed, or its new schema does not
    /// compile.
    pub skipped: Vec<SkippedTool>,
}

/// Brings every imported tool of the tenant (connector kind `mcp`) up to date with its upstream
/// server: changed descriptions and input schemas are applied, the builder's adjustments kept.
/// Each server is listed once per credential its tools use. Upstream tools that disappeared are
/// reported, not deleted; new upstream tools are not added (that stays the builder's choice,
/// through import). An unreachable server is reported per tool and does not stop the others.
pub async fn refresh_tool_servers(state: &AppState, scope: &TenantScope) -> ApiResult<RefreshReport> {
    // Grouped by the server's JSON and the credential: the same server may be listed with
    // different credentials, and each listing must use the one its tools call with.
    let mut groups: BTreeMap<(String, Option<String>), (Value, Vec<Tool>)> = BTreeMap::new();
    for tool in state.store().list_tools(scope).await? {
        if tool.connector.get("kind").and_then(Value::as_str) != Some("mcp") {
            continue;
        }
        let server = tool.connector.get("server").cloned().unwrap_or(Value::Null);
        let key = (server.to_string(), tool.credential.clone());
        groups.entry(key).or_insert_with(|| (server, Vec::new())).1.push(tool);
    }

    let mut report = RefreshReport::default();
    for ((_, credential), (server, tools)) in groups {
        let skip_all = |report: &mut RefreshReport, reason: &str| {
            report.skipped.extend(
                tools.iter().map(|t| SkippedTool { tool: t.name.to_string(), reason: reason.to_owned() }),
            );
        };
        let upstream = match list_server(state, scope, &server, credential.as_deref()).await {
            Ok(upstream) => upstream,
            Err(reason) => {
                skip_all(&mut report, &reason);
                continue;
            }
        };
        for existing in tools {
            let name = existing.name.to_string();
            let wanted = existing.connector.get("tool").and_then(Value::as_str);
            let Some(tool) = upstream.iter().find(|t| Some(t.name.as_str()) == wanted) else {
                report.disappeared.push(name);
                continue;
            };
            let (description, input_schema) = match upstream_definition(tool) {
                Ok(definition) => definition,
                Err(reason) => {
                    report.skipped.push(SkippedTool { tool: name, reason });
                    continue;
                }
            };
            if existing.description == description && existing.input_schema == input_schema {
                report.unchanged.push(name);
                continue;
            }
            let connector = existing.connector.clone();
            update_upstream_part(state, scope, existing, description, input_schema, connector).await?;
            report.updated.push(name);
        }
    }
    Ok(report)
}

/// Lists one server's tools with its credential, or says why it could not.
async fn list_server(
    state: &AppState,
    scope: &TenantScope,
    server: &Value,
    credential: Option<&str>,
) -> Result<Vec<ImportedTool>, String> {
    let spec: UpstreamSpec = serde_json::from_value(server.clone())
        .map_err(|e| format!("its server definition is invalid: {e}"))?;
    let material = match credential {
        None => None,
        Some(name) => {
            let name = ToolName::parse(name).map_err(|e| format!("its credential: {e}"))?;
            let opened = state
                .store()
                .open_credential_by_name_for_executor(scope, &name)
                .await
                .map_err(|e| format!("its credential `{name}` could not be opened: {e}"))?;
            let (kind, material) = opened.ok_or_else(|| format!("there is no credential named `{name}`"))?;
            Some(CredentialMaterial::new(&kind, material))
        }
    };
    state.executor().list_mcp_tools(&spec, material.as_ref()).await.map_err(|e| e.to_string())
}

/// Refreshes the tenant's imported tools from their upstream servers now (the server also does
/// it every `mcp.refresh_secs`). Admins and builders.
#[utoipa::path(post, path = "/v1/tool-servers/refresh", tag = "tools",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = RefreshReport)))]
pub async fn refresh(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::Json<RefreshReport>> {
    caller.require_any(&[Role::Admin, Role::Builder])?;
    let scope = caller.scope()?;
    Ok(axum::Json(refresh_tool_servers(&state, &scope).await?))
}

/// Refreshes every live tenant's imported tools every `period`, forever; a failure is logged
/// for its tenant and the others still refresh. The caller aborts the task at shutdown.
pub(crate) async fn refresh_periodically(state: AppState, period: std::time::Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: the server has just started, so wait a full period.
    ticks.tick().await;
    let operator = Principal::local_operator();
    loop {
        ticks.tick().await;
        let tenants = match state.store().list_tenants(&operator).await {
            Ok(tenants) => tenants,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "tool-server refresh: cannot list tenants");
                continue;
            }
        };
        for tenant in tenants {
            let span = tracing::info_span!("tool_server_refresh", tenant = %tenant.slug);
            let outcome = async {
                let scope = state.store().operator_scope(&operator, &tenant.slug).await?;
                refresh_tool_servers(&state, &scope).await
            }
            .instrument(span.clone())
            .await;
            span.in_scope(|| match outcome {
                Ok(report) if report.updated.is_empty() && report.skipped.is_empty() => {}
                Ok(report) => tracing::info!(
                    updated = report.updated.len(),
                    skipped = report.skipped.len(),
                    disappeared = report.disappeared.len(),
                    "tool-server refresh"
                ),
                Err(error) => tracing::warn!(
                    kind = error.kind().name(),
                    detail = error.detail(),
                    "tool-server refresh failed for the tenant"
                ),
            });
        }
    }
}

/// Many MCP servers declare their schemas as draft-07 (the MCP default is 2020-12). For the
/// keywords that mean the same in both, dropping the declaration is exact; a schema using one
/// whose meaning changed (array-form `items`, `additionalItems`, `dependencies`) is refused
/// rather than silently reinterpreted.
fn as_2020_12(mut schema: Value) -> Result<Value, String> {
    const DRAFT_07: &[&str] =
        &["http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema"];
    let Some(object) = schema.as_object_mut() else { return Ok(schema) };
    let declared = object.get("$schema").and_then(Value::as_str).map(str::to_owned);
    if declared.as_deref().is_some_and(|d| DRAFT_07.contains(&d)) {
        if let Some(keyword) = changed_keyword(&Value::Object(object.clone())) {
            return Err(format!(
                "its draft-07 input schema uses `{keyword}`, whose meaning differs in JSON Schema 2020-12"
            ));
        }
        object.remove("$schema");
    }
    Ok(schema)
}

fn changed_keyword(value: &Value) -> Option<&'static str> {
    match value {
        Value::Object(map) => {
            if map.get("items").is_some_and(Value::is_array) {
                return Some("items");
            }
            if let Some(keyword) =
                ["additionalItems", "dependencies"].into_iter().find(|k| map.contains_key(*k))
            {
                return Some(keyword);
            }
            map.iter().find_map(|(key, value)| match key.as_str() {
                // Maps from names to subschemas: the names are not keywords.
                "properties" | "patternProperties" | "$defs" | "definitions" => {
                    value.as_object().and_then(|named| named.values().find_map(changed_keyword))
                }
                // Data, not schemas.
                "enum" | "const" | "default" | "examples" => None,
                _ => changed_keyword(value),
            })
        }
        Value::Array(items) => items.iter().find_map(changed_keyword),
        _ => None,
    }
}

fn upstream_error(error: McpListError) -> ApiError {
    match error {
        McpListError::Invalid(_) => invalid(format!("`server`: {error}")),
        McpListError::Credential(_) => invalid(format!("`credential`: {error}")),
        McpListError::Timeout(_) => ApiError::new(ProblemType::UpstreamTimeout, error.to_string()),
        McpListError::Upstream(_) => ApiError::new(ProblemType::UpstreamFailed, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_draft_07_declaration_is_dropped_only_when_the_meaning_is_unchanged() {
        let plain = json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "properties": {"dependencies": {"type": "array", "items": {"type": "string"}}}});
        let converted = as_2020_12(plain).unwrap();
        assert!(converted.get("$schema").is_none());
        assert_eq!(converted["properties"]["dependencies"]["items"]["type"], "string");

        let tuple = json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "properties": {"pair": {"type": "array", "items": [{"type": "string"}, {"type": "number"}]}}});
        assert!(as_2020_12(tuple).unwrap_err().contains("`items`"));
        let deps = json!({"$schema": "http://json-schema.org/draft-07/schema", "dependencies": {"a": ["b"]}});
        assert!(as_2020_12(deps).unwrap_err().contains("`dependencies`"));

        let other = json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"});
        assert_eq!(as_2020_12(other.clone()).unwrap(), other, "left for the compiler to refuse");
    }
}
