//! Authenticating requests.
//!
//! A request authenticates with an API key (`Authorization: Bearer alk_…` or
//! `x-api-key: alk_…`) or, from the console, with the session cookie. Every refusal gets
//! the same 401 whatever its cause (the cause is logged and counted). Failed attempts are
//! limited per client address; a cookie-authenticated request that changes state must carry
//! the session's CSRF token in `x-csrf-token`; every principal is rate limited.

use std::net::SocketAddr;

use airlock_store::{AuthError, Credential, Principal, TenantScope};
use airlock_types::{Role, SessionId};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::problem::{ApiError, ProblemType};
use crate::state::AppState;

/// The header carrying the CSRF token of a console session.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller of a route.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// Where the request's principal is left for the middleware, once authenticated, so a
/// refusal (403) can be recorded in the principal's tenant log.
#[derive(Debug, Clone, Default)]
pub struct AuthSlot(std::sync::Arc<std::sync::OnceLock<Principal>>);

impl AuthSlot {
    /// The principal, if the request authenticated.
    #[must_use]
    pub fn principal(&self) -> Option<&Principal> {
        self.0.get()
    }
}

/// The client's address as seen on the socket.
pub fn client_address(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |ConnectInfo(addr)| addr.ip().to_string())
}

/// The client's address, as an extractor.
#[derive(Debug, Clone)]
pub struct ClientAddress(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(client_address(parts)))
    }
}

enum Presented {
    ApiKey(String),
    Session(String),
}

fn presented_credential(headers: &HeaderMap, cookie_name: &str) -> Result<Option<Presented>, ()> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ())?;
        let (scheme, token) = value.split_once(' ').ok_or(())?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(());
        }
        return Ok(Some(Presented::ApiKey(token.trim().to_owned())));
    }
    if let Some(value) = headers.get("x-api-key") {
        return Ok(Some(Presented::ApiKey(value.to_str().map_err(|_| ())?.trim().to_owned())));
    }
    Ok(session_cookie(headers, cookie_name).map(Presented::Session))
}

/// The value of the session cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap, cookie_name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie_name)
        .map(|(_, value)| value.to_owned())
}

fn reason(error: AuthError) -> &'static str {
    match error {
        AuthError::Malformed => "malformed",
        AuthError::Unknown => "unknown",
        AuthError::Revoked => "revoked",
        AuthError::Expired => "expired",
        AuthError::OwnerDisabled => "owner_disabled",
        AuthError::InvalidLogin => "invalid_login",
    }
}

/// Records a refused authentication against the client address, and answers 401.
pub fn refuse(state: &AppState, address: &str, error: AuthError) -> ApiError {
    let why = reason(error);
    state.metrics().auth_failure(why);
    tracing::warn!(reason = why, client = address, "authentication refused");
    // Spending after the fact: the next attempt from this address is checked before any
    // credential work happens.
    let _ = state.limits().failed_auth_by_address.spend(address);
    ApiError::unauthenticated()
}

/// Refuses early when the client address has used up its failed attempts.
pub fn check_address(state: &AppState, address: &str) -> Result<(), ApiError> {
    state.limits().failed_auth_by_address.check(address).map_err(|wait| {
        state.metrics().auth_failure("rate_limited");
        ApiError::rate_limited(wait)
    })
}

/// The CSRF token of a session: a keyed hash of its id, so it needs no storage and cannot be
/// derived without the server key.
#[must_use]
pub fn csrf_token(state: &AppState, session: &SessionId) -> String {
    let digest = state.store().session_binding("csrf", session);
    digest.to_hex()
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let address = client_address(parts);
        check_address(state, &address)?;
        let presented = presented_credential(&parts.headers, state.session_cookie_name())
            .map_err(|()| refuse(state, &address, AuthError::Malformed))?
            .ok_or_else(ApiError::unauthenticated)?;
        let principal = match &presented {
            Presented::ApiKey(key) => state.store().authenticate_api_key(key).await,
            Presented::Session(token) => state.store().authenticate_session(token).await,
        }
        .map_err(|error| refuse(state, &address, error))?;

        if let (Presented::Session(_), Credential::Session(session)) = (&presented, principal.credential())
            && changes_state(&parts.method)
        {
            let expected = csrf_token(state, session);
            let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !airlock_crypto::constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
                state.metrics().auth_failure("csrf");
                return Err(ApiError::new(
                    ProblemType::CsrfFailed,
                    format!("a console session must send its CSRF token in `{CSRF_HEADER}` to change state"),
                ));
            }
        }

        state.limits().requests_by_principal.spend(principal.id_str()).map_err(ApiError::rate_limited)?;

        let span = tracing::Span::current();
        span.record("principal", principal.id_str());
        if let Some(tenant) = principal.tenant_id() {
            span.record("tenant", tenant.as_str());
        }
        if let Some(slot) = parts.extensions.get::<AuthSlot>() {
            let _ = slot.0.set(principal.clone());
        }
        let caller = Caller(principal);
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

impl Caller {
    /// The caller's tenant scope. Operators have none: they manage tenants, nothing inside.
    pub fn scope(&self) -> Result<TenantScope, ApiError> {
        self.0.tenant_scope().ok_or_else(|| {
            ApiError::forbidden(
                "platform operators manage tenants, not what is inside them; use a tenant's key",
            )
        })
    }

    /// Requires one of `roles`; agents and operators hold none.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.0.has_role(*r)) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!("this needs the {} role", names.join(" or "))))
        }
    }

    /// Requires a platform operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.0.is_operator() {
            Ok(())
        } else {
            Err(ApiError::forbidden("only platform operators may use `/admin/v1`"))
        }
    }
}
