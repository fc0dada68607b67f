//! Request extractors that answer in problem details: JSON bodies with unknown fields
//! rejected, and path parameters parsed into Airlock's types.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::{ApiError, ProblemType};

/// A JSON request body. The route's type rejects unknown fields (`deny_unknown_fields`), so
/// a misspelt field is an error, not silently ignored.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| {
                let media = media.trim();
                media.eq_ignore_ascii_case("application/json")
                    || (media.starts_with("application/") && media.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                ProblemType::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(e) if is_length_limit(&e) => {
                ApiError::new(ProblemType::PayloadTooLarge, "the request body exceeds the configured limit")
            }
            other => {
                ApiError::new(ProblemType::InvalidBody, format!("cannot read the request body: {other}"))
            }
        })?;
        serde_json::from_slice(&bytes).map(Json).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::new(ProblemType::MalformedJson, e.to_string())
                }
                Category::Data => ApiError::new(ProblemType::InvalidBody, e.to_string()),
            }
        })
    }
}

fn is_length_limit(error: &axum::extract::rejection::FailedToBufferBody) -> bool {
    matches!(error, axum::extract::rejection::FailedToBufferBody::LengthLimitError(_))
}

/// A path parameter parsed with its type's `FromStr`, answering 400 with the parser's message.
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T> FromRequestParts<S> for PathParam<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(ProblemType::InvalidParameter, e.body_text()))?;
        raw.parse::<T>()
            .map(PathParam)
            .map_err(|e| ApiError::new(ProblemType::InvalidParameter, e.to_string()))
    }
}
