//! The critical judge's model panel: each configured model alias is asked, through the model
//! gateway's routes and with the tenant's redaction, for a JSON verdict on the case.
//!
//! A model is asked as a client of the gateway would ask it, minus the allowlist (the tenant's
//! administrator named the panel): the case is redacted with the tenant's profile before
//! anything leaves, a `block` finding means the model is not asked, the call is reserved
//! against the tenant's budgets and the calling principal's, sent along the alias's fallback
//! chain (retries, fallback and circuit breakers included), settled, and recorded as a
//! `model.call` with `purpose: judge`, counts only. Every way a model can fail to give a
//! verdict is an `Err` with a short reason that quotes neither the case nor a key; the panel
//! rule turns missing answers into a human's decision.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_inspect::{RestoreMode, restore};
use airlock_llm::client::{LlmError, Sent, SentBody};
use airlock_llm::dialect::{self, Dialect, InjectionPolicy, Usage};
use airlock_llm::upstream::ProviderKind;
use airlock_policy::judge::{self, Case, Judgement};
use airlock_store::{Reserve, StoreError, TenantScope};
use serde_json::{Value, json};

use crate::flow_guard::JudgeSettings;
use crate::routes::gateway::{BYTES_PER_TOKEN, Call, chain};
use crate::routes::models::current_settings;
use crate::state::AppState;

/// The most output tokens a judge may use: a verdict and a few short reasons.
const MAX_OUTPUT_TOKENS: u64 = 400;
/// The most characters of a failure reason.
const MAX_REASON_CHARS: usize = 160;

/// The prompt every model of the panel gets.
struct Prompt {
    /// Airlock's instructions: constant text, with nothing of the tenant's in it.
    system: String,
    /// The case, unredacted until a model's request is built.
    user: String,
}

/// Asks every model of the panel at once; each answer is a verdict or why there is none.
///
/// Each model is asked in its own task, so a proposal whose client goes away still settles
/// and records the calls already under way.
pub(crate) async fn ask_panel(
    state: &AppState,
    scope: &TenantScope,
    case: &Case<'_>,
    settings: &JudgeSettings,
) -> Vec<(String, Result<Judgement, String>)> {
    let (system, user) = judge::panel_prompt(case);
    let prompt = Arc::new(Prompt { system, user });
    let timeout = Duration::from_millis(settings.timeout_ms);
    let tasks: Vec<_> = settings
        .models
        .iter()
        .map(|alias| {
            let (state, scope, alias, prompt) =
                (state.clone(), scope.clone(), alias.clone(), Arc::clone(&prompt));
            tokio::spawn(async move { ask(&state, &scope, &alias, &prompt, timeout).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for (alias, task) in settings.models.iter().zip(tasks) {
        let answer = task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a model judge's task failed");
            Err("the model could not be asked".to_owned())
        });
        answers.push((alias.clone(), answer));
    }
    answers
}

/// Asks one model; the provider exchange is bounded by `timeout`, and the call is settled and
/// recorded however it ends.
async fn ask(
    state: &AppState,
    scope: &TenantScope,
    alias: &str,
    prompt: &Prompt,
    timeout: Duration,
) -> Result<Judgement, String> {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let unreadable = |what: &str, e: &dyn std::fmt::Debug| {
        tracing::warn!(error = ?e, "a model judge's {what} cannot be read");
        format!("the {what} cannot be read")
    };
    let settings =
        current_settings(state, scope).await.map_err(|e| unreadable("gateway settings", &e))?.settings;
    let routes =
        state.store().open_model_routes(scope, alias).await.map_err(|e| unreadable("model routes", &e))?;
    let Some(first) = routes.first() else { return Err("no such model alias".to_owned()) };
    let dialect =
        if ProviderKind::parse(&first.route.provider).is_some_and(ProviderKind::dialect_is_anthropic) {
            Dialect::AnthropicMessages
        } else {
            Dialect::OpenAiChat
        };
    let (provider, upstream_model) = (first.route.provider.clone(), first.route.upstream_model.clone());
    let prices = state
        .store()
        .model_alias(scope, alias)
        .await
        .map_err(|e| unreadable("model prices", &e))?
        .map_or((0, 0), |a| (a.input_cents_per_mtok, a.output_cents_per_mtok));
    let output_tokens = settings
        .max_tokens_per_call
        .and_then(|cap| u64::try_from(cap).ok())
        .map_or(MAX_OUTPUT_TOKENS, |cap| cap.min(MAX_OUTPUT_TOKENS));

    // The case is redacted exactly as a client's prompt is; Airlock's own instructions are
    // added afterwards, so they reach the model as written.
    let mut body = request(dialect, alias, &prompt.user, output_tokens);
    let (profile, _) =
        state.inspection_profile(scope).await.map_err(|e| unreadable("redaction profile", &e))?;
    let tokenizer = state.tokenizer(scope).await.map_err(|e| unreadable("tokenization key", &e))?;
    // The request carries no tool results, so the injection policy has nothing to act on.
    let inspection = dialect::inspect_request(
        dialect,
        &mut body,
        &profile,
        &tokenizer,
        state.scanner(),
        InjectionPolicy::Audit,
    );
    add_instructions(dialect, &mut body, &prompt.system);
    let sent_bytes = serde_json::to_vec(&body).map_or(0, |b| b.len() as u64);

    let principal = scope.actor().id.clone();
    let mut call = Call {
        state: state.clone(),
        scope: scope.clone(),
        dialect,
        alias: alias.to_owned(),
        principal: principal.clone(),
        started,
        stream: false,
        inspection,
        reservation: None,
        prices,
        input_estimate: sent_bytes / BYTES_PER_TOKEN + 1,
        provider,
        upstream_model,
        route: None,
        attempts: 0,
        purpose: Some("judge"),
    };
    if call.inspection.blocked() {
        let kinds = call.inspection.blocking_kinds.join(", ");
        call.finish("blocked", 422, None, 0).await;
        return Err(format!("the case contains {kinds}, which the tenant's redaction profile blocks"));
    }

    let reserve = Reserve {
        principal,
        alias: alias.to_owned(),
        tokens: i64::try_from(call.input_estimate.saturating_add(output_tokens)).unwrap_or(i64::MAX),
        ucents: call.cost(Usage { input_tokens: call.input_estimate, output_tokens }),
    };
    match state.store().reserve_model_call(scope, &reserve, &settings.budget_limits()).await {
        Ok(id) => call.reservation = Some(id),
        Err(StoreError::Refused(why)) => {
            call.finish("over_budget", 429, None, 0).await;
            return Err(bounded(&why));
        }
        Err(e) => return Err(unreadable("model budget", &e)),
    }

    let chain = chain(routes);
    let sent = match tokio::time::timeout_at(deadline, state.llm().send(&chain, &body, false, &[])).await {
        Ok(Ok(sent)) => sent,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a model judge could not be asked");
            call.finish("failed", e.status(), None, 0).await;
            return Err(failure(&e).to_owned());
        }
        Err(_) => {
            call.finish("timeout", 504, None, 0).await;
            return Err(format!("no answer within {} ms", timeout.as_millis()));
        }
    };
    let Sent { upstream, status, attempts, body: sent_body, .. } = sent;
    call.answered_by(&chain, upstream, attempts);
    if !(200..300).contains(&status) {
        call.finish("refused", status, None, 0).await;
        return Err(format!("the provider refused the request (HTTP {status})"));
    }
    // Not streamed, so the body is complete.
    let bytes = match sent_body {
        SentBody::Complete(bytes) => bytes,
        SentBody::Stream(_) => bytes::Bytes::new(),
    };
    let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
        call.finish("failed", 502, None, 0).await;
        return Err("the provider answered with malformed JSON".to_owned());
    };
    // Only the usage is read here: the verdict is parsed as the model wrote it, so a failure
    // to parse quotes tokens, never the values, and then its reasons are restored.
    let (_, usage) = dialect::restore_response(dialect, &mut answer, &HashMap::<String, String>::new());
    let mut verdict = match answer_text(dialect, &answer) {
        Some(text) => judge::parse_model_verdict(&text).map_err(|e| bounded(&e)),
        None => Err("the answer has no text".to_owned()),
    };
    let mut restored = 0;
    if let Ok(judgement) = &mut verdict {
        let lookup = call.inspection.lookup();
        for reason in &mut judgement.reasons {
            let (text, n) = restore(reason, &lookup, RestoreMode::Text);
            *reason = text;
            restored += n;
        }
    }
    // Without a usage report, the reservation stands as the charge.
    let usage = usage.or(Some(Usage { input_tokens: call.input_estimate, output_tokens }));
    call.finish("ok", 200, usage, restored).await;
    verdict
}

/// The request for one model, in its dialect, with the case as the only message.
fn request(dialect: Dialect, alias: &str, case: &str, max_tokens: u64) -> Value {
    let messages = json!([{"role": "user", "content": case}]);
    match dialect {
        Dialect::OpenAiChat => json!({
            "model": alias,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
            "response_format": {"type": "json_object"},
        }),
        Dialect::AnthropicMessages => json!({
            "model": alias,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
        }),
    }
}

/// Puts Airlock's instructions first: a system message (OpenAI) or the `system` field
/// (Anthropic).
fn add_instructions(dialect: Dialect, body: &mut Value, system: &str) {
    match dialect {
        Dialect::OpenAiChat => {
            if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
                messages.insert(0, json!({"role": "system", "content": system}));
            }
        }
        Dialect::AnthropicMessages => {
            if let Some(object) = body.as_object_mut() {
                object.insert("system".into(), Value::from(system));
            }
        }
    }
}

/// The assistant's text: OpenAI `choices[0].message.content` (a string, or text parts),
/// Anthropic's `text` blocks, joined.
fn answer_text(dialect: Dialect, answer: &Value) -> Option<String> {
    let parts: Vec<&str> = match dialect {
        Dialect::OpenAiChat => match answer.pointer("/choices/0/message/content")? {
            Value::String(text) => vec![text.as_str()],
            Value::Array(parts) => parts.iter().filter_map(|p| p.get("text")?.as_str()).collect(),
            _ => Vec::new(),
        },
        Dialect::AnthropicMessages => answer
            .get("content")?
            .as_array()?
            .iter()
            .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|block| block.get("text")?.as_str())
            .collect(),
    };
    (!parts.is_empty()).then(|| parts.concat())
}

/// What a failed send says in the decision: the kind of failure, not the upstreams' own
/// messages (which go to the log).
fn failure(e: &LlmError) -> &'static str {
    match e {
        LlmError::NoUpstream => "the alias has no usable route",
        LlmError::CircuitOpen => "every route's circuit breaker is open",
        LlmError::Timeout => "the provider timed out",
        LlmError::Unavailable { .. } | LlmError::Interrupted(_) => "every route failed",
        LlmError::TooLarge => "the answer is larger than the limit",
        LlmError::Malformed(_) | LlmError::Setup(_) => "the request could not be sent",
    }
}

/// A reason cut to [`MAX_REASON_CHARS`], on one line.
fn bounded(text: &str) -> String {
    let mut out: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_REASON_CHARS).collect();
    if text.chars().count() > MAX_REASON_CHARS {
        out.push('…');
    }
    out
}
