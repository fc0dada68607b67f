//! The model-API wire formats: OpenAI Chat Completions and Anthropic Messages, as the official
//! SDKs send and receive them.
//!
//! This module owns where text sits in each format. [`read_request`] reads what the gateway
//! needs before anything is sent; [`inspect_request`] redacts every text bound for the provider
//! and scans tool results for injection, leaving ids, roles, tool names, parameters and the JSON
//! structure alone; [`restore_response`] and [`StreamRestorer`] put the tokens' values back in
//! what the provider returns, streamed or not, tool-call arguments included, and read the usage
//! for metering. It does no I/O and does not panic on anything a client or provider sends:
//! what it does not understand it passes on unchanged.

use std::collections::{BTreeMap, HashMap};

use airlock_inspect::injection::Scanner;
use airlock_inspect::{Profile, TokenEntry, TokenLookup, Tokenizer};
use serde_json::Value;

mod anthropic;
mod openai;
mod redact;
mod stream;

#[cfg(test)]
mod anthropic_tests;
#[cfg(test)]
mod openai_tests;
#[cfg(test)]
mod test_support;

pub use stream::StreamRestorer;

/// A model API's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`) and compatible endpoints.
    OpenAiChat,
    /// Anthropic Messages (`POST /v1/messages`).
    AnthropicMessages,
}

/// What the tenant wants done when a tool result looks like a prompt injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectionPolicy {
    /// Forward the tool result with a short note before it telling the model to treat it as
    /// data.
    #[default]
    Annotate,
    /// Refuse the request (the caller checks [`RequestInspection::injection_flagged`]).
    Block,
    /// Forward the tool result unchanged; the scan is only recorded.
    Audit,
}

/// A request or stream that does not have the shape its dialect requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body is not a JSON object.
    #[error("the request body must be a JSON object")]
    NotAnObject,
    /// A required field is absent (or `null`).
    #[error("`{field}` is required")]
    Missing {
        /// The field's path.
        field: String,
    },
    /// A field has the wrong type.
    #[error("`{field}` must be {expected}")]
    WrongType {
        /// The field's path (`messages[2].content`).
        field: String,
        /// What it must be (`a string`).
        expected: &'static str,
    },
    /// One server-sent event is larger than the parser accepts.
    #[error("a server-sent event is larger than the limit of {limit} bytes")]
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// Facts read from a request before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    /// The model the client asked for.
    pub model: String,
    /// Whether the client asked for a streamed response.
    pub stream: bool,
    /// The cap on output tokens the client set (OpenAI `max_completion_tokens`, else
    /// `max_tokens`; Anthropic `max_tokens`).
    pub max_tokens: Option<u64>,
    /// Whether the client asked for the usage chunk at the end of an OpenAI stream
    /// (`stream_options.include_usage`); always `false` for Anthropic, which always sends usage.
    pub wants_usage_chunk: bool,
}

/// Reads the facts the gateway needs from a request body, and checks that every field that can
/// carry text has a shape [`inspect_request`] knows, so none can slip past redaction.
pub fn read_request(dialect: Dialect, body: &Value) -> Result<RequestFacts, WireError> {
    let obj = body.as_object().ok_or(WireError::NotAnObject)?;
    let model = match obj.get("model") {
        None | Some(Value::Null) => return Err(WireError::Missing { field: "model".into() }),
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(wrong("model", "a non-empty string")),
    };
    match obj.get("messages") {
        None | Some(Value::Null) => return Err(WireError::Missing { field: "messages".into() }),
        Some(Value::Array(messages)) => {
            for (i, message) in messages.iter().enumerate() {
                match dialect {
                    Dialect::OpenAiChat => openai::check_message(i, message)?,
                    Dialect::AnthropicMessages => anthropic::check_message(i, message)?,
                }
            }
        }
        Some(_) => return Err(wrong("messages", "an array")),
    }
    let stream = optional_bool(obj.get("stream"), "stream")?.unwrap_or(false);
    let facts = match dialect {
        Dialect::OpenAiChat => {
            let max_tokens = match optional_u64(obj.get("max_completion_tokens"), "max_completion_tokens")? {
                Some(n) => Some(n),
                None => optional_u64(obj.get("max_tokens"), "max_tokens")?,
            };
            let wants_usage_chunk = match obj.get("stream_options") {
                None | Some(Value::Null) => false,
                Some(Value::Object(options)) => {
                    optional_bool(options.get("include_usage"), "stream_options.include_usage")?
                        .unwrap_or(false)
                }
                Some(_) => return Err(wrong("stream_options", "an object")),
            };
            RequestFacts { model, stream, max_tokens, wants_usage_chunk }
        }
        Dialect::AnthropicMessages => {
            anthropic::check_system(obj.get("system"))?;
            let max_tokens = optional_u64(obj.get("max_tokens"), "max_tokens")?;
            RequestFacts { model, stream, max_tokens, wants_usage_chunk: false }
        }
    };
    Ok(facts)
}

fn wrong(field: impl Into<String>, expected: &'static str) -> WireError {
    WireError::WrongType { field: field.into(), expected }
}

fn optional_bool(value: Option<&Value>, field: &str) -> Result<Option<bool>, WireError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong(field, "a boolean")),
    }
}

fn optional_u64(value: Option<&Value>, field: &str) -> Result<Option<u64>, WireError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| wrong(field, "a non-negative integer")),
    }
}

/// The injection scan of one tool result (counts and rule names, never its text).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ToolResultScan {
    /// The index of the message in `messages`.
    pub message_index: usize,
    /// For Anthropic, the index of the `tool_result` block in that message's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_index: Option<usize>,
    /// The scanner's score in `0..=1`.
    pub score: f32,
    /// Whether the score reached the scanner's threshold.
    pub flagged: bool,
    /// The rules that fired, strongest first.
    pub rules: Vec<&'static str>,
}

/// Everything inspection did to a request: counts and token entries, never a text.
#[derive(Debug, Clone, Default)]
pub struct RequestInspection {
    /// Findings per kind name, over every text of the request.
    pub counts: BTreeMap<String, u64>,
    /// The distinct tokens minted (one entry per token core): what the vault keeps and what
    /// restores the response.
    pub tokens: Vec<TokenEntry>,
    /// The kind names whose action is `block`, sorted; non-empty means refuse the request.
    pub blocking_kinds: Vec<String>,
    /// One scan per tool result, in request order.
    pub injections: Vec<ToolResultScan>,
}

impl RequestInspection {
    /// The tokens as a lookup for restoring the response to this request.
    pub fn lookup(&self) -> HashMap<String, String> {
        self.tokens.iter().map(|t| (t.core.clone(), t.value.clone())).collect()
    }

    /// Whether a finding's action is `block`: the request must be refused.
    pub fn blocked(&self) -> bool {
        !self.blocking_kinds.is_empty()
    }

    /// Whether any tool result was flagged as a likely injection.
    pub fn injection_flagged(&self) -> bool {
        self.injections.iter().any(|s| s.flagged)
    }

    /// How many findings were redacted in all.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Redacts every text the request carries to the provider with `profile` and `tokenizer`,
/// scans tool results with `scanner`, and applies `policy` to flagged ones
/// ([`InjectionPolicy::Annotate`] puts a short, bracketed note before the tool result's text;
/// `Block` and `Audit` leave it). Mutates `body` in place.
///
/// What is redacted: OpenAI message `content` (a string, or `text` parts), tool-call and legacy
/// function-call `arguments` (string values inside the JSON, or the whole text when it is not
/// JSON) and `prediction.content`; Anthropic `system`, `text` blocks, `tool_use.input` string
/// values, `tool_result` content and plain-text `document` sources. What is scanned: OpenAI
/// `tool` (and legacy `function`) messages, Anthropic `tool_result` blocks. Everything else
/// (ids, roles, names, tool definitions, parameters, images, audio, Anthropic thinking blocks,
/// whose signatures cover their text) is left byte for byte.
pub fn inspect_request(
    dialect: Dialect,
    body: &mut Value,
    profile: &Profile,
    tokenizer: &Tokenizer,
    scanner: &Scanner,
    policy: InjectionPolicy,
) -> RequestInspection {
    let mut inspector = redact::Inspector::new(profile, tokenizer, scanner, policy);
    match dialect {
        Dialect::OpenAiChat => openai::inspect(body, &mut inspector),
        Dialect::AnthropicMessages => anthropic::inspect(body, &mut inspector),
    }
    inspector.finish()
}

/// Sets the upstream model name in the body (`model` field).
pub fn set_model(body: &mut Value, model: &str) {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".to_owned(), Value::String(model.to_owned()));
    }
}

/// For an OpenAI streamed request, asks the upstream for the usage chunk
/// (`stream_options.include_usage = true`) so Airlock can meter; the caller remembers whether
/// the client asked ([`RequestFacts::wants_usage_chunk`]) and tells [`StreamRestorer::new`].
/// A request that does not stream is left alone: OpenAI refuses `stream_options` without
/// `stream`. Anthropic always reports usage, so its requests are left alone too.
pub fn request_usage_chunk(dialect: Dialect, body: &mut Value) {
    if dialect != Dialect::OpenAiChat {
        return;
    }
    let Some(obj) = body.as_object_mut() else { return };
    if obj.get("stream").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let options = obj.entry("stream_options").or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !options.is_object() {
        *options = Value::Object(serde_json::Map::new());
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".to_owned(), Value::Bool(true));
    }
}

/// Tokens a model call consumed, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Prompt tokens (OpenAI `prompt_tokens`, Anthropic `input_tokens`).
    pub input_tokens: u64,
    /// Completion tokens (OpenAI `completion_tokens`, Anthropic `output_tokens`).
    pub output_tokens: u64,
}

/// Restores tokens in a complete (non-streamed) response body and reads its usage. Returns how
/// many tokens were restored and the usage, when the body reports it.
pub fn restore_response(
    dialect: Dialect,
    body: &mut Value,
    lookup: &dyn TokenLookup,
) -> (usize, Option<Usage>) {
    match dialect {
        Dialect::OpenAiChat => openai::restore(body, lookup),
        Dialect::AnthropicMessages => anthropic::restore(body, lookup),
    }
}

/// Reads a usage object: `input`/`output` name its two counters. Missing counters are 0.
fn read_usage(usage: Option<&Value>, input: &str, output: &str) -> Option<Usage> {
    let usage = usage?.as_object()?;
    let count = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage { input_tokens: count(input), output_tokens: count(output) })
}
