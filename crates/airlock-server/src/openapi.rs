//! The OpenAPI 3.1 document and the router, built together from the handlers' annotations,
//! so every route served is a route described.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::{
    admin, approvals, audit, flow, gateway, health, identity, inspect, models, runs, sessions, tool_servers,
    tools,
};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Airlock",
        description = "The control plane between AI agents and the tools and models they use. \
            Errors are RFC 9457 problem details (`application/problem+json`) whose `type` is a \
            stable `urn:airlock:problem:<name>`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this document"),
        (name = "identity", description = "Who is calling; users, agents and API keys of the caller's tenant"),
        (name = "sessions", description = "Console login and logout"),
        (name = "tools", description = "Tools, their credentials, and the tenant's Cedar policies"),
        (name = "models", description = "The model gateway: OpenAI- and Anthropic-compatible endpoints, routes, budgets"),
        (name = "inspection", description = "PII and secret redaction profiles, trying texts against them, restoring tokens"),
        (name = "runs", description = "Runs with their leases, and the actions proposed in them"),
        (name = "flow", description = "The flow guard: allowlists of known contacts, payees and domains; flow and judge settings"),
        (name = "approvals", description = "Approval requests and kill switches"),
        (name = "audit", description = "The tenant's tamper-evident audit log: export, entries, checkpoints, proofs, keys"),
        (name = "admin", description = "Platform operators: tenants"),
    ),
    components(schemas(crate::problem::Problem)),
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("alk_<key id>_<secret>")
                    .description(Some("An Airlock API key; `x-api-key: alk_…` is accepted too"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "airlock_session",
                "Console session cookie (`__Host-airlock_session` over HTTPS); state changes also need `x-csrf-token`",
            ))),
        );
    }
}

/// The router and its OpenAPI document.
pub(crate) fn router_and_document() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
        .routes(routes!(identity::whoami))
        .routes(routes!(identity::create_user, identity::list_users))
        .routes(routes!(identity::get_user))
        .routes(routes!(identity::set_roles))
        .routes(routes!(identity::create_agent, identity::list_agents))
        .routes(routes!(identity::create_key, identity::list_keys))
        .routes(routes!(identity::get_key, identity::revoke_key))
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::current, sessions::logout))
        .routes(routes!(tools::create_tool, tools::list_tools))
        .routes(routes!(tools::get_tool, tools::update_tool))
        .routes(routes!(tools::list_credentials))
        .routes(routes!(tools::put_credential))
        .routes(routes!(tools::get_policies, tools::put_policies))
        .routes(routes!(tools::policy_schema))
        .routes(routes!(tool_servers::import_tool_server))
        .routes(routes!(tool_servers::refresh))
        .routes(routes!(inspect::get_profile, inspect::put_profile))
        .routes(routes!(inspect::inspect))
        .routes(routes!(inspect::restore_tokens))
        .routes(routes!(gateway::chat_completions))
        .routes(routes!(gateway::messages))
        .routes(routes!(gateway::list_models))
        .routes(routes!(models::list_aliases))
        .routes(routes!(models::put_alias, models::delete_alias))
        .routes(routes!(models::get_settings, models::put_settings))
        .routes(routes!(flow::list_entries, flow::add_entry))
        .routes(routes!(flow::remove_entry))
        .routes(routes!(flow::get_settings, flow::put_settings))
        .routes(routes!(runs::open_run))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::complete_run))
        .routes(routes!(runs::propose))
        .routes(routes!(runs::get_action))
        .routes(routes!(runs::get_receipt))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::get))
        .routes(routes!(approvals::decide))
        .routes(routes!(approvals::kill, approvals::list_kills))
        .routes(routes!(approvals::lift))
        .routes(routes!(approvals::platform_kill, approvals::platform_lift))
        .routes(routes!(audit::export))
        .routes(routes!(audit::entries))
        .routes(routes!(audit::checkpoint))
        .routes(routes!(audit::inclusion))
        .routes(routes!(audit::consistency))
        .routes(routes!(audit::keys))
        .routes(routes!(audit::rotate))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(admin::delete_tenant))
        .routes(routes!(admin::export_tenant))
        .routes(routes!(admin::get_tenant_kek, admin::set_tenant_kek))
        .split_for_parts()
}

/// The OpenAPI document as JSON.
#[must_use]
pub fn openapi_document() -> String {
    let (_, doc) = router_and_document();
    doc.to_pretty_json().unwrap_or_default()
}
