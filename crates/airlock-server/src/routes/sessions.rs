//! Console sessions: log in with e-mail and password, see the current session, log out.
//!
//! The session token travels only in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` and
//! `__Host-` prefixed over HTTPS). State changes made with the cookie must also carry the
//! session's CSRF token, returned at login, in `x-csrf-token`.

use airlock_store::Credential;
use airlock_types::{Email, TenantSlug};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::WhoAmI;
use crate::auth::{Caller, ClientAddress, check_address, csrf_token, refuse};
use crate::extract::Json;
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

/// Login credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The tenant's slug.
    pub tenant: String,
    /// The user's e-mail address.
    pub email: String,
    /// The user's password.
    #[schema(format = Password)]
    pub password: String,
}

/// A console session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The session id (`ses_…`); the token itself is only in the cookie.
    pub id: String,
    /// Send this in `x-csrf-token` with every state-changing request made with the cookie.
    pub csrf_token: String,
    /// Who is logged in.
    pub principal: WhoAmI,
    /// When the session ends regardless of use (absent when reporting the current session).
    pub expires_at: Option<String>,
}

/// Logs in, setting the session cookie.
///
/// Every failure (unknown tenant or user, wrong password, disabled user) is answered with the
/// same 401 after the same work. Attempts are limited per account and per client address.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = Login,
    responses(
        (status = 201, description = "Logged in; the session cookie is set", body = SessionView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    check_address(&state, &address)?;
    let account = format!("{}\u{0}{}", body.tenant, body.email.to_lowercase());
    state.limits().login_by_account.spend(&account).map_err(|wait| {
        state.metrics().auth_failure("rate_limited");
        ApiError::rate_limited(wait)
    })?;
    let password = SecretString::from(body.password);
    let (Ok(tenant), Ok(email)) = (TenantSlug::parse(&body.tenant), Email::parse(&body.email)) else {
        // Still run the password check, so a malformed name costs what a wrong one does.
        let _ = airlock_crypto::verify_password(&password, None);
        return Err(refuse(&state, &address, airlock_store::AuthError::InvalidLogin));
    };
    let created =
        state.store().login(&tenant, &email, &password).await.map_err(|e| refuse(&state, &address, e))?;
    tracing::info!(session = %created.session.id, user = %created.session.user_id, "console login");
    let lifetime = state.config().session_lifetime.as_secs();
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={lifetime}{}",
        state.session_cookie_name(),
        created.secret.expose(),
        if state.config().public_url_is_https { "; Secure" } else { "" },
    );
    let view = SessionView {
        id: created.session.id.to_string(),
        csrf_token: csrf_token(&state, &created.session.id),
        principal: WhoAmI::from(&created.principal),
        expires_at: Some(created.session.expires_at.to_rfc3339()),
    };
    let mut response = (StatusCode::CREATED, axum::Json(view)).into_response();
    let cookie = HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(&e))?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

fn session_of(caller: &Caller) -> Result<airlock_types::SessionId, ApiError> {
    match caller.0.credential() {
        Credential::Session(id) => Ok(id.clone()),
        _ => Err(ApiError::new(ProblemType::NotFound, "this request was not made with a console session")),
    }
}

/// The current console session.
#[utoipa::path(get, path = "/v1/sessions/current", tag = "sessions",
    security(("session" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn current(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<SessionView>, ApiError> {
    let id = session_of(&caller)?;
    Ok(axum::Json(SessionView {
        id: id.to_string(),
        csrf_token: csrf_token(&state, &id),
        principal: WhoAmI::from(&caller.0),
        expires_at: None,
    }))
}

/// Logs out: ends the session and clears the cookie.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions",
    security(("session" = [])),
    responses((status = 204, description = "Logged out"), (status = 403, description = "Missing CSRF token", body = Problem, content_type = "application/problem+json")))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let id = session_of(&caller)?;
    state.store().revoke_session(&caller.scope()?, &id).await?;
    tracing::info!(session = %id, "console logout");
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        state.session_cookie_name(),
        if state.config().public_url_is_https { "; Secure" } else { "" },
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(&e))?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}
