//! The platform operator's routes: tenants, their keys, export and deletion. Operators
//! manage tenants and nothing inside them; every route here refuses tenant principals.

use airlock_store::{Deletion, ExportChunk, TenantKek};
use airlock_types::{TenantId, TenantSlug};
use airlock_vault::ProviderSpec;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
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

fn tenant_id(id: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(id).map_err(|e| ApiError::new(ProblemType::InvalidParameter, format!("tenant id: {e}")))
}

/// Confirmation of a tenant's deletion.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteTenant {
    /// The tenant's slug, typed again.
    pub confirm: String,
}

/// What became of a deletion request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeletionView {
    /// The tenant is deleted: its data keys are destroyed, its database removed, its keys
    /// and sessions revoked; a tombstone and a platform-log entry remain.
    Deleted {
        /// Data keys destroyed.
        keys_destroyed: u64,
        /// Whether the database file was there to remove.
        database_removed: bool,
    },
    /// Recorded; another operator must confirm before it expires.
    AwaitingApproval {
        /// The operator who asked.
        requested_by: String,
        /// When the request lapses (RFC 3339).
        expires_at: String,
    },
}

/// Deletes a tenant: destroys its data keys (crypto-shred), removes its database, revokes
/// its API keys and sessions, and records the deletion in the platform log. When the server
/// requires a second operator, the first call answers 202 and a call by another operator
/// within 24 hours deletes.
#[utoipa::path(delete, path = "/admin/v1/tenants/{id}", tag = "admin", request_body = DeleteTenant,
    params(("id" = String, Path, description = "The tenant's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = DeletionView),
        (status = 202, description = "Awaiting a second operator", body = DeletionView),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same operator asked twice", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The confirmation is not the tenant's slug", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<DeleteTenant>,
) -> Result<(StatusCode, axum::Json<DeletionView>), ApiError> {
    caller.require_operator()?;
    let scope = state.store().operator_scope_by_id(&caller.0, &tenant_id(&id)?).await?;
    let second = state.config().deletion_requires_second_operator;
    match state.store().delete_tenant(&caller.0, &scope, &body.confirm, second).await? {
        Deletion::Deleted { keys_destroyed, database_removed } => {
            tracing::info!(tenant = %scope.tenant_id(), "tenant deleted");
            Ok((StatusCode::OK, axum::Json(DeletionView::Deleted { keys_destroyed, database_removed })))
        }
        Deletion::AwaitingApproval { requested_by, expires_at } => Ok((
            StatusCode::ACCEPTED,
            axum::Json(DeletionView::AwaitingApproval { requested_by, expires_at: expires_at.to_rfc3339() }),
        )),
    }
}

/// How a tenant's data keys are wrapped.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantKekView {
    /// The tenant's own provider (BYOK), or null for the platform's key.
    #[schema(value_type = Option<Object>)]
    pub provider: Option<ProviderSpec>,
    /// The id of the key-encryption key that wraps its data keys now.
    pub kek_id: String,
}

impl From<TenantKek> for TenantKekView {
    fn from(k: TenantKek) -> Self {
        Self { provider: k.own, kek_id: k.kek_id }
    }
}

/// A tenant's own key-encryption key, or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTenantKek {
    /// `{"kind": "aws_kms", "key_id": …, "region": …}` or
    /// `{"kind": "vault_transit", "address": …, "key": …}`; null returns the tenant to the
    /// platform's key. Credentials come from Airlock's environment, never from here.
    #[schema(value_type = Option<Object>)]
    pub provider: Option<ProviderSpec>,
}

/// How the tenant's data keys are wrapped.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/kek", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = TenantKekView),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live tenant", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_tenant_kek(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TenantKekView>, ApiError> {
    caller.require_operator()?;
    let scope = state.store().operator_scope_by_id(&caller.0, &tenant_id(&id)?).await?;
    Ok(axum::Json(state.store().tenant_kek(&caller.0, &scope).await?.into()))
}

/// Has the tenant's data keys wrapped by its own key (BYOK), or by the platform's again.
/// The key is tried first; revoking it later makes the tenant's data unreadable to Airlock,
/// which then answers 503 `tenant-key-unavailable` for that tenant alone.
#[utoipa::path(put, path = "/admin/v1/tenants/{id}/kek", tag = "admin", request_body = SetTenantKek,
    params(("id" = String, Path, description = "The tenant's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = TenantKekView),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key cannot be used", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an external provider", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_tenant_kek(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<SetTenantKek>,
) -> Result<axum::Json<TenantKekView>, ApiError> {
    caller.require_operator()?;
    let scope = state.store().operator_scope_by_id(&caller.0, &tenant_id(&id)?).await?;
    let kek = state.store().set_tenant_kek(&caller.0, &scope, body.provider).await?;
    tracing::info!(tenant = %scope.tenant_id(), kek = %kek.kek_id, "tenant key-encryption key changed");
    Ok(axum::Json(kek.into()))
}

/// Exports a tenant: one ZIP archive with every table of the tenant as JSON Lines, its
/// audit log in verifiable form, and a manifest of counts and SHA-256 digests signed with
/// the tenant's audit key (`airlock tenant verify-export` checks it offline). Credentials and
/// keys are redacted. The archive is streamed as it is written; if the export fails midway
/// the transfer is cut off, so an incomplete archive never looks complete (and would fail
/// verification anyway).
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/export", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The archive", content_type = "application/zip", body = Vec<u8>),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live tenant", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant's key is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let scope = state.store().operator_scope_by_id(&caller.0, &tenant_id(&id)?).await?;
    let (sender, mut chunks) = mpsc::channel::<ExportChunk>(8);
    let store = state.store().clone();
    let (principal, export_scope) = (caller.0.clone(), scope.clone());
    let mut task =
        Some(tokio::spawn(async move { store.export_tenant(&principal, &export_scope, sender).await }));
    // Errors before the first byte (an unavailable key, say) are answered as problems.
    let first = match chunks.recv().await {
        Some(chunk) => chunk,
        None => {
            let outcome = match task.take() {
                Some(task) => task.await,
                None => {
                    return Err(ApiError::internal(&std::io::Error::other(
                        "the export ended without a result",
                    )));
                }
            };
            return match outcome {
                Ok(Err(error)) => Err(error.into()),
                Ok(Ok(_)) => Err(ApiError::internal(&std::io::Error::other("the export produced nothing"))),
                Err(error) => Err(ApiError::internal(&error)),
            };
        }
    };
    tracing::info!(tenant = %scope.tenant_id(), "tenant export started");
    let rest = futures_util::stream::unfold((chunks, task), |(mut chunks, task)| async move {
        if let Some(chunk) = chunks.recv().await {
            return Some((Ok(Bytes::from(chunk.bytes)), (chunks, task)));
        }
        let failure = match task?.await {
            Ok(Ok(summary)) => {
                tracing::info!(rows = summary.rows, bytes = summary.archive_bytes, "tenant export finished");
                return None;
            }
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        tracing::error!(error = %failure, "tenant export failed midway; cutting the transfer off");
        Some((Err(std::io::Error::other(failure)), (chunks, None)))
    });
    let body = futures_util::stream::once(async move { Ok(Bytes::from(first.bytes)) }).chain(rest);
    let filename = format!(
        "airlock-export-{}-{}.zip",
        scope.slug(),
        airlock_types::Timestamp::now().to_rfc3339().get(..10).unwrap_or_default()
    );
    let headers = [
        (header::CONTENT_TYPE, "application/zip".to_owned()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        (header::CACHE_CONTROL, "no-store".to_owned()),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}
