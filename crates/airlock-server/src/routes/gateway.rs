//! The model gateway: `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages`
//! (Anthropic), exactly as the providers' SDKs call them, and `GET /v1/models`.
//!
//! A call goes: model allowlist (an alias the caller may not use and one that does not exist
//! get the same 404) → per-call token cap → redaction with the tenant's profile and injection
//! scan of tool results → budget reservation (daily tokens per caller, monthly spend per
//! tenant, spend-rate breakers) → the alias's fallback chain → tokens restored in the
//! response, streamed or not → usage settled → one audit entry with counts, never content.
//! Nothing leaves for a provider before redaction, and over a limit nothing is sent.

use std::sync::Arc;
use std::time::Instant;

use airlock_llm::client::{LlmError, Sent, SentBody};
use airlock_llm::dialect::{self, Dialect, InjectionPolicy, RequestInspection, StreamRestorer, Usage};
use airlock_llm::upstream::{ProviderKind, Upstream};
use airlock_store::{OpenedRoute, Reserve, Settle, TenantScope, VaultEntry};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::metrics::{ModelLabels, ModelRouteLabels, ModelTokenLabels};
use crate::problem::{ApiError, ProblemType};
use crate::routes::models::{GatewaySettings, current_settings};
use crate::state::AppState;

type GatewayResult = Result<Response, ApiError>;

/// Output tokens assumed for a call that names no limit when the tenant sets no cap.
const DEFAULT_OUTPUT_TOKENS: u64 = 4096;

/// Request bytes per token, rounded down so the input estimate errs high.
pub(crate) const BYTES_PER_TOKEN: u64 = 3;

/// OpenAI Chat Completions, with tools, JSON mode and streaming, as the `openai` SDKs send it.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "models",
    request_body(content = Object, description = "An OpenAI Chat Completions request"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The provider's completion (JSON, or SSE when `stream` is true), tokens restored"),
        (status = 404, description = "No such model for this key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the redaction profile or the injection policy", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "A budget would be exceeded", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 502, description = "The providers failed", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(state, caller, headers, Dialect::OpenAiChat, body)
        .await
        .unwrap_or_else(|e| e.for_model_clients().into_response())
}

/// Anthropic Messages, with tools and streaming, as the `anthropic` SDKs send it.
#[utoipa::path(post, path = "/v1/messages", tag = "models",
    request_body(content = Object, description = "An Anthropic Messages request"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The provider's message (JSON, or SSE when `stream` is true), tokens restored"),
        (status = 404, description = "No such model for this key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "A budget would be exceeded", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 502, description = "The providers failed", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(state, caller, headers, Dialect::AnthropicMessages, body)
        .await
        .unwrap_or_else(|e| e.for_model_clients().into_response())
}

/// The models this key may use, in the OpenAI list shape, or the Anthropic one when the
/// request carries `anthropic-version`.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    security(("api_key" = [])),
    responses((status = 200, description = "The models this key may use")))]
pub async fn list_models(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Response {
    let listed = async {
        let scope = caller.scope()?;
        let settings = current_settings(&state, &scope).await?.settings;
        let aliases = state.store().model_aliases(&scope).await?;
        let names: Vec<String> =
            aliases.into_iter().map(|a| a.alias).filter(|a| settings.allows(&caller, a)).collect();
        Ok::<_, ApiError>(names)
    }
    .await;
    let names = match listed {
        Ok(names) => names,
        Err(e) => return e.for_model_clients().into_response(),
    };
    if headers.contains_key("anthropic-version") {
        let data: Vec<Value> = names
            .iter()
            .map(|n| json!({"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        let (first, last) = (names.first().cloned(), names.last().cloned());
        return axum::Json(json!({"data": data, "has_more": false, "first_id": first, "last_id": last}))
            .into_response();
    }
    let data: Vec<Value> = names
        .iter()
        .map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "airlock"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemType::InvalidBody, detail)
}

/// What one call has found out so far, for its audit entry and metrics. The critical judge's
/// model panel (`judge_models`) meters and records its calls through it too.
pub(crate) struct Call {
    pub(crate) state: AppState,
    pub(crate) scope: TenantScope,
    pub(crate) dialect: Dialect,
    pub(crate) alias: String,
    pub(crate) principal: String,
    pub(crate) started: Instant,
    pub(crate) stream: bool,
    pub(crate) inspection: RequestInspection,
    pub(crate) reservation: Option<String>,
    pub(crate) prices: (i64, i64),
    pub(crate) input_estimate: u64,
    pub(crate) provider: String,
    pub(crate) upstream_model: String,
    pub(crate) route: Option<String>,
    pub(crate) attempts: u32,
    /// Why Airlock itself made the call (`judge`); `None` for a client's call.
    pub(crate) purpose: Option<&'static str>,
}

impl Call {
    /// Notes which route of `chain` answered, after how many attempts.
    pub(crate) fn answered_by(&mut self, chain: &[Upstream], upstream: usize, attempts: u32) {
        self.attempts = attempts;
        if let Some(used) = chain.get(upstream) {
            self.route = Some(used.id.clone());
            self.upstream_model = used.model.clone();
        }
    }

    pub(crate) fn cost(&self, usage: Usage) -> i64 {
        let input = i64::try_from(usage.input_tokens).unwrap_or(i64::MAX);
        let output = i64::try_from(usage.output_tokens).unwrap_or(i64::MAX);
        input.saturating_mul(self.prices.0).saturating_add(output.saturating_mul(self.prices.1))
    }

    /// Settles (or releases) the reservation and writes the audit entry, in one transaction,
    /// and the metrics. Called exactly once per call that got past the allowlist.
    pub(crate) async fn finish(self, outcome: &str, status: u16, usage: Option<Usage>, restored: usize) {
        let cost = usage.map_or(0, |u| self.cost(u));
        let latency = self.started.elapsed();
        let metrics = self.state.metrics();
        let route_labels =
            ModelRouteLabels { provider: self.provider.clone(), model: self.upstream_model.clone() };
        metrics
            .model_requests
            .get_or_create(&ModelLabels {
                provider: self.provider.clone(),
                model: self.upstream_model.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
        metrics.model_duration.get_or_create(&route_labels).observe(latency.as_secs_f64());
        if let Some(u) = usage {
            for (direction, n) in [("input", u.input_tokens), ("output", u.output_tokens)] {
                metrics
                    .model_tokens
                    .get_or_create(&ModelTokenLabels {
                        provider: self.provider.clone(),
                        model: self.upstream_model.clone(),
                        direction: direction.to_owned(),
                    })
                    .inc_by(n);
            }
            metrics.model_cost.get_or_create(&route_labels).inc_by(u64::try_from(cost).unwrap_or(0));
        }

        let mut metadata = Map::new();
        metadata.insert("api".into(), json!(self.dialect));
        metadata.insert("model".into(), Value::from(self.alias.as_str()));
        metadata.insert("provider".into(), Value::from(self.provider.as_str()));
        metadata.insert("upstream_model".into(), Value::from(self.upstream_model.as_str()));
        metadata.insert("stream".into(), Value::from(self.stream));
        metadata.insert("outcome".into(), Value::from(outcome));
        metadata.insert("status".into(), Value::from(status));
        metadata.insert("attempts".into(), Value::from(self.attempts));
        metadata
            .insert("latency_ms".into(), Value::from(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX)));
        metadata.insert("input_tokens".into(), Value::from(usage.map_or(0, |u| u.input_tokens)));
        metadata.insert("output_tokens".into(), Value::from(usage.map_or(0, |u| u.output_tokens)));
        metadata.insert("cost_microcents".into(), Value::from(cost));
        metadata.insert("redactions".into(), json!(self.inspection.counts));
        metadata.insert("tokens_restored".into(), Value::from(restored));
        let flagged: Vec<Value> = self
            .inspection
            .injections
            .iter()
            .filter(|s| s.flagged)
            .map(|s| json!({"message": s.message_index, "score": s.score, "rules": s.rules}))
            .collect();
        metadata.insert("injection_findings".into(), Value::from(flagged));
        if let Some(purpose) = self.purpose {
            metadata.insert("purpose".into(), Value::from(purpose));
        }
        let mut subject: Vec<(&str, &str)> = vec![("principal", self.principal.as_str())];
        if let Some(route) = &self.route {
            subject.push(("route", route.as_str()));
        }
        let settle = usage.map(|u| Settle {
            input_tokens: i64::try_from(u.input_tokens).unwrap_or(i64::MAX),
            output_tokens: i64::try_from(u.output_tokens).unwrap_or(i64::MAX),
            cost_ucents: cost,
        });
        let finished = self.state.store().finish_model_call(
            &self.scope,
            self.reservation.as_deref(),
            settle,
            &subject,
            metadata,
        );
        if let Err(e) = finished.await {
            tracing::error!(error = %e, "a model call could not be settled and recorded");
        }
    }
}

async fn serve(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    dialect: Dialect,
    raw: Bytes,
) -> GatewayResult {
    let started = Instant::now();
    let scope = caller.scope()?;
    let mut body: Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::new(ProblemType::MalformedJson, format!("the body is not valid JSON: {e}")))?;
    let facts = dialect::read_request(dialect, &body).map_err(|e| invalid(e.to_string()))?;
    let settings: GatewaySettings = current_settings(&state, &scope).await?.settings;

    let unavailable = || ApiError::not_found(format!("model `{}` is not available to this key", facts.model));
    if !settings.allows(&caller, &facts.model) {
        return Err(unavailable());
    }
    let routes = state.store().open_model_routes(&scope, &facts.model).await?;
    let Some(first) = routes.first() else { return Err(unavailable()) };
    let anthropic =
        ProviderKind::parse(&first.route.provider).is_some_and(ProviderKind::dialect_is_anthropic);
    if anthropic != (dialect == Dialect::AnthropicMessages) {
        let endpoint = if anthropic { "POST /v1/messages" } else { "POST /v1/chat/completions" };
        return Err(invalid(format!("model `{}` is served through `{endpoint}`", facts.model)));
    }

    let output_tokens = match (facts.max_tokens, settings.max_tokens_per_call) {
        (Some(asked), Some(cap)) if i64::try_from(asked).unwrap_or(i64::MAX) > cap => {
            return Err(ApiError::new(
                ProblemType::BudgetExceeded,
                format!("this call asks for {asked} output tokens; the per-call cap is {cap}"),
            ));
        }
        (Some(asked), _) => asked,
        (None, Some(cap)) => {
            let cap = u64::try_from(cap).unwrap_or(DEFAULT_OUTPUT_TOKENS);
            if let Some(object) = body.as_object_mut() {
                object.insert("max_tokens".into(), Value::from(cap));
            }
            cap
        }
        (None, None) => DEFAULT_OUTPUT_TOKENS,
    };
    let prices = state
        .store()
        .model_alias(&scope, &facts.model)
        .await?
        .map_or((0, 0), |a| (a.input_cents_per_mtok, a.output_cents_per_mtok));

    let (profile, _) = state.inspection_profile(&scope).await?;
    let tokenizer = state.tokenizer(&scope).await?;
    let inspection = dialect::inspect_request(
        dialect,
        &mut body,
        &profile,
        &tokenizer,
        state.scanner(),
        settings.injection,
    );
    let principal = caller.0.id_str().to_owned();
    let upstream_model = first.route.upstream_model.clone();
    let mut call = Call {
        state: state.clone(),
        scope: scope.clone(),
        dialect,
        alias: facts.model.clone(),
        principal: principal.clone(),
        started,
        stream: facts.stream,
        inspection,
        reservation: None,
        prices,
        input_estimate: (raw.len() as u64) / BYTES_PER_TOKEN + 1,
        provider: first.route.provider.clone(),
        upstream_model,
        route: None,
        attempts: 0,
        purpose: None,
    };
    if call.inspection.blocked() {
        let kinds = call.inspection.blocking_kinds.join(", ");
        call.finish("blocked", 422, None, 0).await;
        return Err(ApiError::new(
            ProblemType::Unprocessable,
            format!(
                "the request contains {kinds}, which the tenant's redaction profile blocks; nothing was sent"
            ),
        ));
    }
    if settings.injection == InjectionPolicy::Block && call.inspection.injection_flagged() {
        call.finish("blocked", 422, None, 0).await;
        return Err(ApiError::new(
            ProblemType::Unprocessable,
            "a tool result in the request looks like a prompt injection, and the tenant's policy blocks such calls; \
             nothing was sent",
        ));
    }
    let entries: Vec<VaultEntry> = call
        .inspection
        .tokens
        .iter()
        .map(|t| VaultEntry { token: t.core.clone(), kind: t.kind.name().to_owned(), value: t.value.clone() })
        .collect();
    if !entries.is_empty() {
        // The call restores from its own tokens; the vault only serves later restores, so
        // keeping them need not delay the call.
        let (store, vault_scope, retention) =
            (state.store().clone(), scope.clone(), state.config().token_retention);
        tokio::spawn(async move {
            if let Err(e) = store.remember_tokens(&vault_scope, &entries, retention).await {
                tracing::warn!(error = %e, "tokens could not be kept in the vault");
            }
        });
    }

    let reserve_tokens = call.input_estimate.saturating_add(output_tokens);
    let reserve = Reserve {
        principal,
        alias: facts.model.clone(),
        tokens: i64::try_from(reserve_tokens).unwrap_or(i64::MAX),
        ucents: call.cost(Usage { input_tokens: call.input_estimate, output_tokens }),
    };
    match state.store().reserve_model_call(&scope, &reserve, &settings.budget_limits()).await {
        Ok(id) => call.reservation = Some(id),
        Err(airlock_store::StoreError::Refused(why)) => {
            call.finish("over_budget", 429, None, 0).await;
            return Err(ApiError::new(ProblemType::BudgetExceeded, format!("{why}; nothing was sent")));
        }
        Err(e) => return Err(e.into()),
    }

    let chain = chain(routes);
    if facts.stream {
        dialect::request_usage_chunk(dialect, &mut body);
    }
    let forwarded: Vec<(String, String)> = ["anthropic-version", "anthropic-beta"]
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), headers.get(*name)?.to_str().ok()?.to_owned())))
        .collect();

    let sent = match state.llm().send(&chain, &body, facts.stream, &forwarded).await {
        Ok(sent) => sent,
        Err(e) => {
            let status = e.status();
            call.finish("failed", status, None, 0).await;
            return Err(upstream_error(&e));
        }
    };
    let Sent { upstream, status, attempts, body: sent_body, .. } = sent;
    call.answered_by(&chain, upstream, attempts);
    if !(200..300).contains(&status) {
        let bytes = match sent_body {
            SentBody::Complete(bytes) => bytes,
            SentBody::Stream(_) => Bytes::new(),
        };
        call.finish("refused", status, None, 0).await;
        let provider_error =
            serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v.get("error").cloned());
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Err(ApiError::upstream_refused(status, provider_error));
    }
    let lookup = call.inspection.lookup();
    match sent_body {
        SentBody::Complete(bytes) => {
            let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
                call.finish("failed", 502, None, 0).await;
                return Err(ApiError::new(
                    ProblemType::UpstreamFailed,
                    "the model provider answered with malformed JSON",
                ));
            };
            let (restored, usage) = dialect::restore_response(dialect, &mut answer, &lookup);
            // Without a usage report, the reservation stands as the charge.
            let usage = usage.or(Some(Usage { input_tokens: call.input_estimate, output_tokens }));
            call.finish("ok", 200, usage, restored).await;
            Ok(axum::Json(answer).into_response())
        }
        SentBody::Stream(upstream) => {
            let restorer = StreamRestorer::new(dialect, lookup, facts.wants_usage_chunk);
            let relay = Relay { restorer, call: Some(call), output_tokens, done: false };
            Ok(stream_response(relay, upstream))
        }
    }
}

/// An alias's routes as the client's fallback chain (a route of a kind this build does not
/// know is left out).
pub(crate) fn chain(routes: Vec<OpenedRoute>) -> Vec<Upstream> {
    routes
        .into_iter()
        .filter_map(|r| {
            Some(Upstream {
                kind: ProviderKind::parse(&r.route.provider)?,
                id: r.route.id,
                base_url: r.route.base_url,
                model: r.route.upstream_model,
                api_version: r.route.api_version,
                api_key: r.api_key,
            })
        })
        .collect()
}

fn upstream_error(e: &LlmError) -> ApiError {
    let kind = match e.status() {
        504 => ProblemType::UpstreamTimeout,
        503 => ProblemType::Unavailable,
        _ => ProblemType::UpstreamFailed,
    };
    ApiError::new(kind, e.to_string())
}

/// A streamed answer on its way to the client. Dropped before its end (the client went
/// away), it still settles the call and records it as abandoned; dropping the upstream
/// stream with it closes the provider connection.
struct Relay {
    restorer: StreamRestorer,
    call: Option<Call>,
    output_tokens: u64,
    done: bool,
}

impl Relay {
    fn close(&mut self, outcome: &'static str) {
        let Some(call) = self.call.take() else { return };
        let usage = self.restorer.usage().or(Some(Usage {
            input_tokens: call.input_estimate,
            output_tokens: if outcome == "ok" { self.output_tokens } else { 0 },
        }));
        let restored = self.restorer.restored();
        tokio::spawn(call.finish(outcome, 200, usage, restored));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.done {
            self.close("abandoned");
        }
    }
}

fn stream_response(
    relay: Relay,
    upstream: futures_util::stream::BoxStream<'static, Result<Bytes, LlmError>>,
) -> Response {
    let relay = Arc::new(std::sync::Mutex::new(relay));
    let tail = Arc::clone(&relay);
    let body = upstream
        .map(move |chunk| {
            let mut relay = relay.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match chunk {
                Ok(bytes) => Ok::<_, std::io::Error>(Bytes::from(relay.restorer.push(&bytes))),
                Err(e) => {
                    tracing::warn!(error = %e, "a model stream broke off");
                    let mut out = relay.restorer.finish();
                    out.extend_from_slice(&stream_error_event(&e));
                    relay.done = true;
                    relay.close("failed");
                    Ok(Bytes::from(out))
                }
            }
        })
        .chain(futures_util::stream::once(async move {
            let mut relay = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if relay.done {
                return Ok(Bytes::new());
            }
            let out = relay.restorer.finish();
            relay.done = true;
            let outcome = if relay.restorer.finished_cleanly() { "ok" } else { "failed" };
            relay.close(outcome);
            Ok(Bytes::from(out))
        }));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An SSE `error` event in the shape both SDKs read, for a stream that broke off.
fn stream_error_event(e: &LlmError) -> Vec<u8> {
    let payload = json!({"type": "error", "error": {"type": "upstream_error", "message": e.to_string()}});
    let mut out = Vec::new();
    airlock_llm::sse::write_event(Some("error"), &payload.to_string(), &mut out);
    out
}
