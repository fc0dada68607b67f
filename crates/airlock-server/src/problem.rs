//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every error the API returns is an [`ApiError`] with a stable `type` URI
//! (`urn:airlock:problem:<name>`), a status, a title, and a detail meant for the caller.
//! 5xx details say nothing internal: the cause is logged with the request id, which the body
//! carries so an operator can find it. Responses that leave the router in another shape (a
//! framework 404 or 405, a timeout) are rewritten into the same form by [`normalise`].

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The stable problem types, one per kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// The body is not valid JSON.
    MalformedJson,
    /// The body is JSON but not what the route accepts (unknown or missing field, wrong type).
    InvalidBody,
    /// A path or query parameter is not valid.
    InvalidParameter,
    /// The request is not JSON.
    UnsupportedMediaType,
    /// The body is larger than the limit.
    PayloadTooLarge,
    /// No valid credential was presented.
    Unauthenticated,
    /// The credential is valid but may not do this.
    Forbidden,
    /// A cookie-authenticated state change without a valid CSRF token.
    CsrfFailed,
    /// Nothing there (or nothing the caller may see).
    NotFound,
    /// The method is not allowed on this route.
    MethodNotAllowed,
    /// The request collides with existing state.
    Conflict,
    /// The request is understood but refused by a rule.
    Unprocessable,
    /// Too many requests; retry later.
    RateLimited,
    /// The request took too long.
    Timeout,
    /// A dependency is not available.
    Unavailable,
    /// The tenant's data keys cannot be unwrapped: its key-encryption key is revoked,
    /// disabled or unreachable. Nothing of the tenant is served until it is back.
    TenantKeyUnavailable,
    /// A spending or token budget would be exceeded.
    BudgetExceeded,
    /// The model provider refused the request as it was sent; its own error is attached.
    UpstreamRefused,
    /// No model provider of the route answered usefully.
    UpstreamFailed,
    /// The model provider did not answer in time.
    UpstreamTimeout,
    /// Airlock failed; the log has the details.
    Internal,
}

impl ProblemType {
    /// The type's short name, the last segment of its URI.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed-json",
            Self::InvalidBody => "invalid-body",
            Self::InvalidParameter => "invalid-parameter",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::CsrfFailed => "csrf-failed",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict => "conflict",
            Self::Unprocessable => "unprocessable",
            Self::RateLimited => "rate-limited",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::TenantKeyUnavailable => "tenant-key-unavailable",
            Self::BudgetExceeded => "budget-exceeded",
            Self::UpstreamRefused => "upstream-refused",
            Self::UpstreamFailed => "upstream-failed",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status this type is returned with.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson | Self::InvalidParameter => StatusCode::BAD_REQUEST,
            Self::InvalidBody | Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::CsrfFailed => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::RateLimited | Self::BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamRefused => StatusCode::BAD_REQUEST,
            Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Timeout | Self::Unavailable | Self::TenantKeyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, fixed summary of the type.
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            Self::MalformedJson => "The request body is not valid JSON",
            Self::InvalidBody => "The request body is not valid for this route",
            Self::InvalidParameter => "A request parameter is not valid",
            Self::UnsupportedMediaType => "The request body must be JSON",
            Self::PayloadTooLarge => "The request body is too large",
            Self::Unauthenticated => "Authentication required",
            Self::Forbidden => "Not allowed",
            Self::CsrfFailed => "Missing or invalid CSRF token",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict => "Conflict",
            Self::Unprocessable => "The request cannot be carried out",
            Self::RateLimited => "Too many requests",
            Self::Timeout => "The request took too long",
            Self::Unavailable => "Temporarily unavailable",
            Self::TenantKeyUnavailable => "The tenant's encryption key is unavailable",
            Self::BudgetExceeded => "A budget would be exceeded",
            Self::UpstreamRefused => "The model provider refused the request",
            Self::UpstreamFailed => "The model provider failed",
            Self::UpstreamTimeout => "The model provider did not answer in time",
            Self::Internal => "Internal error",
        }
    }

    /// The type's URI.
    #[must_use]
    pub fn uri(self) -> String {
        format!("urn:airlock:problem:{}", self.name())
    }
}

/// An RFC 9457 problem details body.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, `urn:airlock:problem:<name>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for the caller.
    pub detail: String,
    /// The request's id (also in the `x-request-id` header), for support and logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// On the model endpoints only: the error in the shape the OpenAI and Anthropic SDKs
    /// read (`{"message", "type", "code"}`), or the provider's own error when it refused the
    /// request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
}

/// An error answered to the caller as problem details.
#[derive(Debug)]
pub struct ApiError {
    kind: ProblemType,
    detail: String,
    retry_after_secs: Option<u64>,
    status: Option<StatusCode>,
    error: Option<serde_json::Value>,
}

impl ApiError {
    /// An error of `kind` with a caller-facing detail.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into(), retry_after_secs: None, status: None, error: None }
    }

    /// The same error, also in the shape model SDKs read (`error.message`), for the model
    /// endpoints.
    #[must_use]
    pub fn for_model_clients(mut self) -> Self {
        if self.error.is_none() {
            let status = self.status.unwrap_or(self.kind.status()).as_u16();
            self.error = Some(serde_json::json!({
                "message": self.detail,
                "type": self.kind.name(),
                "code": status,
            }));
        }
        self
    }

    /// A provider's refusal: its status (a 4xx) and its own error object, passed on so the
    /// caller's SDK reports what the provider said.
    #[must_use]
    pub fn upstream_refused(status: StatusCode, provider_error: Option<serde_json::Value>) -> Self {
        let mut error = Self::new(
            ProblemType::UpstreamRefused,
            format!("the model provider refused the request with status {}", status.as_u16()),
        );
        error.status = Some(status);
        error.error = provider_error;
        error.for_model_clients()
    }

    /// The problem type.
    #[must_use]
    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    /// The caller-facing detail.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// 401: no valid credential. Every cause gets the same answer.
    #[must_use]
    pub fn unauthenticated() -> Self {
        Self::new(
            ProblemType::Unauthenticated,
            "present a valid API key (`Authorization: Bearer alk_…` or `x-api-key`) or a console session",
        )
    }

    /// 403 with a reason.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Forbidden, detail)
    }

    /// 404 for a named thing.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    /// 429 with a retry hint.
    #[must_use]
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs().max(1);
        Self {
            kind: ProblemType::RateLimited,
            detail: format!("rate limit exceeded; retry in {secs} s"),
            retry_after_secs: Some(secs),
            status: None,
            error: None,
        }
    }

    /// 500: logs `cause` (with the request's span, so with its id) and tells the caller
    /// nothing about it.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(cause), "request failed");
        Self::new(
            ProblemType::Internal,
            "Airlock failed to handle the request; the log has the details under this request id",
        )
    }
}

/// An error and its sources, joined by `: `.
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<airlock_store::StoreError> for ApiError {
    fn from(error: airlock_store::StoreError) -> Self {
        use airlock_store::StoreError as E;
        match &error {
            E::Conflict { .. } | E::Refused(_) => Self::new(ProblemType::Conflict, error.to_string()),
            E::NotFound { .. } => Self::new(ProblemType::NotFound, error.to_string()),
            E::Forbidden(_) => Self::new(ProblemType::Forbidden, error.to_string()),
            E::Invalid(_) => Self::new(ProblemType::Unprocessable, error.to_string()),
            E::KeyUnavailable { .. } => {
                tracing::warn!(%error, "refusing a request: the tenant's data keys cannot be unwrapped");
                Self::new(ProblemType::TenantKeyUnavailable, error.to_string())
            }
            _ => Self::internal(&error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or(self.kind.status());
        let body = Problem {
            problem_type: self.kind.uri(),
            title: self.kind.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail,
            request_id: None,
            error: self.error,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.kind == ProblemType::Unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"airlock\""));
        }
        response.extensions_mut().insert(ProblemMarker);
        response
    }
}

/// Marks an error response that already speaks its protocol's error format (JSON-RPC
/// errors of the MCP endpoint), which [`normalise`] leaves as it is.
#[derive(Debug, Clone, Copy)]
pub struct Verbatim;

/// Marks a response built from an [`ApiError`], so [`normalise`] can tell it from a bare
/// framework error.
#[derive(Debug, Clone, Copy)]
struct ProblemMarker;

/// Largest body [`normalise`] will read back to add the request id.
const MAX_PROBLEM_BODY: usize = 64 * 1024;

/// Makes every error response problem details carrying the request id: rewrites bare
/// framework errors (unmatched route, wrong method, timeout, oversized body) and adds
/// `request_id` to problem bodies.
pub async fn normalise(request_id: Option<String>, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if response.extensions().get::<Verbatim>().is_some() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut problem: Problem = if parts.extensions.get::<ProblemMarker>().is_some() {
        match axum::body::to_bytes(body, MAX_PROBLEM_BODY)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(problem) => problem,
            None => bare(status),
        }
    } else {
        bare(status)
    };
    problem.request_id = request_id;
    let bytes = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

fn bare(status: StatusCode) -> Problem {
    let kind = match status {
        StatusCode::NOT_FOUND => ProblemType::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ProblemType::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemType::PayloadTooLarge,
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => ProblemType::Timeout,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemType::UnsupportedMediaType,
        StatusCode::UNAUTHORIZED => ProblemType::Unauthenticated,
        StatusCode::FORBIDDEN => ProblemType::Forbidden,
        StatusCode::TOO_MANY_REQUESTS => ProblemType::RateLimited,
        s if s.is_client_error() => ProblemType::InvalidParameter,
        _ => ProblemType::Internal,
    };
    let detail = match kind {
        ProblemType::NotFound => "no such route; `GET /openapi.json` lists every route".to_owned(),
        ProblemType::MethodNotAllowed => "this route does not accept that method".to_owned(),
        ProblemType::Timeout => "the request did not finish in time".to_owned(),
        ProblemType::PayloadTooLarge => "the request body exceeds the configured limit".to_owned(),
        _ => kind.title().to_owned(),
    };
    Problem {
        problem_type: kind.uri(),
        title: kind.title().to_owned(),
        status: status.as_u16(),
        detail,
        request_id: None,
        error: None,
    }
}
