//! The tenant's audit log over HTTP: the verifiable export, filtered entries (JSONL or
//! CSV, streamed), the latest signed checkpoint, inclusion and consistency proofs, and the
//! public keys that verify them. Auditors and admins only.

#![allow(unused_qualifications, reason = "utoipa's IntoParams expansion writes qualified paths")]

use airlock_store::{AuditFilter, Store, TenantScope};
use airlock_types::{Role, Timestamp};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

/// Entries fetched from the database per page of a streamed response.
const PAGE: u64 = 1000;

fn auditor(caller: &Caller) -> Result<TenantScope, ApiError> {
    let scope = caller.scope()?;
    caller.require_any(&[Role::Auditor, Role::Admin])?;
    Ok(scope)
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemType::InvalidParameter, detail)
}

fn streamed(
    content_type: &'static str,
    first: String,
    pages: impl futures_util::Stream<Item = Result<String, ApiError>> + Send + 'static,
) -> Response {
    use futures_util::StreamExt as _;
    let head = futures_util::stream::once(async move { Ok::<_, ApiError>(first) });
    let body = head.chain(pages).map(|chunk| match chunk {
        Ok(text) => Ok(Bytes::from(text)),
        Err(error) => {
            // The status is already sent; ending the stream early makes the body
            // incomplete, which the verifier (or a CSV reader's row count) detects.
            tracing::error!(?error, "audit stream failed mid-way");
            Err(std::io::Error::other("audit stream failed"))
        }
    });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The verifiable export: a header with a checkpoint signed now, every entry, and every
/// checkpoint, as JSON Lines. Check it offline with `airlock audit verify`.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "JSON Lines: header, entries and checkpoints", content_type = "application/x-ndjson"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let scope = auditor(&caller)?;
    let (header, size) = state.store().audit_export_begin(&scope, "jsonl").await?;
    let store = state.store().clone();
    let pages = futures_util::stream::try_unfold(0u64, move |from| {
        let (store, scope) = (store.clone(), scope.clone());
        async move {
            if from >= size {
                return Ok(None);
            }
            let lines = store.audit_export_page(&scope, from, size, PAGE).await?;
            let mut chunk = String::new();
            for line in lines {
                chunk.push_str(&line);
                chunk.push('\n');
            }
            Ok(Some((chunk, from + PAGE)))
        }
    });
    Ok(streamed("application/x-ndjson", format!("{header}\n"), pages))
}

/// Filters for listing entries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Entries at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Entries before this time (RFC 3339).
    pub until: Option<String>,
    /// Entries of this type, or of a family when it ends with `.` (`auth.`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Entries by this actor id.
    pub actor: Option<String>,
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
    /// At most this many entries.
    pub limit: Option<u64>,
}

pub(crate) fn parse_time(name: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    use time::format_description::well_known::Rfc3339;
    // Rounded up to the millisecond: entries carry milliseconds, so `since` (inclusive) and
    // `until` (exclusive) both compare correctly against a time given more precisely.
    value
        .map(|text| {
            time::OffsetDateTime::parse(text, &Rfc3339)
                .map(|t| {
                    let millis = (t.unix_timestamp_nanos() + 999_999).div_euclid(1_000_000);
                    Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
                })
                .map_err(|_| bad(format!("`{name}` must be an RFC 3339 time such as `2026-11-22T10:00:00Z`")))
        })
        .transpose()
}

/// One CSV field per RFC 4180, with spreadsheet formula characters neutralised so an
/// auditor opening the file is not attacked by a value an agent chose.
fn csv_field(value: &str) -> String {
    let guarded = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn csv_row(canonical: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(canonical).unwrap_or_default();
    let text = |pointer: &str| match value.pointer(pointer) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let fields =
        ["/index", "/time", "/type", "/actor/kind", "/actor/id", "/subject", "/metadata", "/chain_hash"]
            .map(text);
    let mut row = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    row.push_str("\r\n");
    row
}

/// Entries matching the filters, oldest first, as JSON Lines (canonical entries) or CSV.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit", params(EntriesQuery),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "JSON Lines or CSV", content_type = "application/x-ndjson"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn entries(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = auditor(&caller)?;
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let filter = AuditFilter {
        since: parse_time("since", query.since.as_deref())?,
        until: parse_time("until", query.until.as_deref())?,
        event_type: query.event_type,
        actor: query.actor,
    };
    let csv = match query.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(other) => return Err(bad(format!("`format` must be `jsonl` or `csv`, not `{other}`"))),
    };
    let limit = query.limit.unwrap_or(u64::MAX);
    let mut metadata = serde_json::Map::new();
    metadata.insert("format".into(), serde_json::Value::from(if csv { "csv" } else { "jsonl" }));
    state.store().record(&scope, "audit.read", &[], metadata).await?;
    let store: Store = state.store().clone();
    let pages = futures_util::stream::try_unfold((None::<u64>, 0u64), move |(after, sent)| {
        let (store, scope, filter) = (store.clone(), scope.clone(), filter.clone());
        async move {
            if sent >= limit {
                return Ok(None);
            }
            let page = store.audit_entries(&scope, &filter, after, PAGE.min(limit - sent)).await?;
            let Some(last) = page.last().map(|e| e.index) else { return Ok(None) };
            let mut chunk = String::new();
            for entry in &page {
                if csv {
                    chunk.push_str(&csv_row(&entry.canonical));
                } else {
                    chunk.push_str(&entry.canonical);
                    chunk.push('\n');
                }
            }
            Ok(Some((chunk, (Some(last), sent + page.len() as u64))))
        }
    });
    Ok(if csv {
        streamed(
            "text/csv; charset=utf-8",
            "index,time,type,actor_kind,actor_id,subject,metadata,chain_hash\r\n".into(),
            pages,
        )
    } else {
        streamed("application/x-ndjson", String::new(), pages)
    })
}

/// The latest signed checkpoint (a C2SP tlog-checkpoint signed note), covering every entry.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "A signed note", content_type = "text/plain"), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn checkpoint(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let scope = auditor(&caller)?;
    let checkpoint = state.store().audit_checkpoint(&scope).await?;
    let mut response = checkpoint.note.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(response)
}

/// Which entry, in which tree.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The entry's index.
    pub index: u64,
    /// The tree size (a checkpoint's size).
    pub size: u64,
}

/// An entry and its inclusion proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionView {
    /// The entry's index.
    pub index: u64,
    /// The tree size.
    pub size: u64,
    /// The entry, canonical JSON.
    pub entry: String,
    /// Its leaf hash, base64.
    pub leaf_hash: String,
    /// The audit path, base64 hashes.
    pub proof: Vec<String>,
}

/// An entry with its RFC 6962 inclusion proof in the tree of `size` entries.
#[utoipa::path(get, path = "/v1/audit/proofs/inclusion", tag = "audit", params(InclusionQuery),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = InclusionView), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<InclusionView>, ApiError> {
    let scope = auditor(&caller)?;
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let proof = state.store().audit_inclusion_proof(&scope, query.index, query.size).await?;
    Ok(axum::Json(InclusionView {
        index: proof.index,
        size: proof.size,
        entry: proof.entry,
        leaf_hash: proof.leaf_hash.to_base64(),
        proof: proof.proof.iter().map(airlock_audit::Hash::to_base64).collect(),
    }))
}

/// Two tree sizes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree's size.
    pub from: u64,
    /// The newer tree's size.
    pub to: u64,
}

/// A consistency proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyView {
    /// The older size.
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// base64 hashes.
    pub proof: Vec<String>,
}

/// The RFC 6962 consistency proof between two tree sizes.
#[utoipa::path(get, path = "/v1/audit/proofs/consistency", tag = "audit", params(ConsistencyQuery),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = ConsistencyView), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<ConsistencyView>, ApiError> {
    let scope = auditor(&caller)?;
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let proof = state.store().audit_consistency_proof(&scope, query.from, query.to).await?;
    Ok(axum::Json(ConsistencyView {
        from: query.from,
        to: query.to,
        proof: proof.iter().map(airlock_audit::Hash::to_base64).collect(),
    }))
}

/// A signing key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// Its version.
    pub version: i64,
    /// The verifier key (`name+keyid+base64 key`), for `airlock audit verify --key`.
    pub verifier: String,
    /// When it was created.
    pub created_at: String,
    /// When it was retired; retired keys verify what they signed.
    pub retired_at: Option<String>,
}

impl From<airlock_store::SigningKeyInfo> for KeyView {
    fn from(key: airlock_store::SigningKeyInfo) -> Self {
        Self {
            version: key.version,
            verifier: key.verifier,
            created_at: key.created_at.to_rfc3339(),
            retired_at: key.retired_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// The tenant's public signing keys, current first; retired keys stay listed.
#[utoipa::path(get, path = "/v1/audit/keys", tag = "audit",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Vec<KeyView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<KeyView>>, ApiError> {
    let scope = auditor(&caller)?;
    let keys = state.store().audit_keys(&scope).await?;
    Ok(axum::Json(keys.into_iter().map(KeyView::from).collect()))
}

/// Rotates the signing key. Admins only; the old key stays published.
#[utoipa::path(post, path = "/v1/audit/keys/rotate", tag = "audit",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = KeyView), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn rotate(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<KeyView>, ApiError> {
    let scope = caller.scope()?;
    caller.require_any(&[Role::Admin])?;
    let key = state.store().rotate_signing_key(&scope).await?;
    Ok(axum::Json(key.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }
}
