//! The platform operator's routes: tenants. Operators manage tenants and nothing inside
//! them; every route here refuses tenant principals.

use airlock_types::TenantSlug;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::views::TenantView;
use crate::auth::Caller;
use crate::extract::Json;
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Unique short name: 2 to 63 lowercase letters, digits and hyphens.
    pub slug: String,
    /// Display name; defaults to the slug.
    #[serde(default)]
    pub name: String,
}

/// Creates a tenant with its own database.
#[utoipa::path(post, path = "/admin/v1/tenants", tag = "admin", request_body = CreateTenant,
    security(("api_key" = [])),
    responses(
        (status = 201, body = TenantView),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<TenantView>), ApiError> {
    caller.require_operator()?;
    let slug =
        TenantSlug::parse(&body.slug).map_err(|e| ApiError::new(ProblemType::InvalidBody, e.to_string()))?;
    let tenant = state.store().create_tenant(&caller.0, &slug, &body.name).await?;
    tracing::info!(tenant = %tenant.id, slug = %tenant.slug, "tenant created");
    Ok((StatusCode::CREATED, axum::Json(tenant.into())))
}

/// Every tenant.
#[utoipa::path(get, path = "/admin/v1/tenants", tag = "admin",
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<TenantView>),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<TenantView>>, ApiError> {
    caller.require_operator()?;
    let tenants = state.store().list_tenants(&caller.0).await?;
    Ok(axum::Json(tenants.into_iter().map(Into::into).collect()))
}
