//! OpenAI Chat Completions: where text sits in requests, responses and stream chunks.
//!
//! Requests carry text in `messages[].content` (a string or content parts, of which `text` and
//! `refusal` parts are text), in `messages[].tool_calls[].function.arguments` (JSON text) and
//! the legacy `function_call.arguments`, and in `prediction.content`. Responses carry it in
//! `choices[].message` and, streamed, in `choices[].delta`, one stream per choice for content
//! and one per tool call for arguments.

use std::collections::BTreeMap;

use airlock_inspect::{RestoreMode, TokenLookup};
use serde_json::{Map, Value};

use super::redact::{Inspector, restore_string};
use super::stream::{Restorers, StreamCtx};
use super::{Usage, WireError, read_usage, wrong};
use crate::sse::{SseEvent, write_event};

pub(super) fn check_message(i: usize, message: &Value) -> Result<(), WireError> {
    let message = message.as_object().ok_or_else(|| wrong(format!("messages[{i}]"), "an object"))?;
    match message.get("content") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                if !part.is_object() {
                    return Err(wrong(format!("messages[{i}].content[{j}]"), "an object"));
                }
            }
        }
        Some(_) => {
            return Err(wrong(format!("messages[{i}].content"), "a string or an array of content parts"));
        }
    }
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls.as_array().ok_or_else(|| wrong(format!("messages[{i}].tool_calls"), "an array"))?;
        for (j, call) in calls.iter().enumerate() {
            match call.get("function").and_then(|f| f.get("arguments")) {
                None | Some(Value::String(_)) => {}
                Some(_) => {
                    return Err(wrong(
                        format!("messages[{i}].tool_calls[{j}].function.arguments"),
                        "a string",
                    ));
                }
            }
        }
    }
    match message.get("function_call").and_then(|f| f.get("arguments")) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(wrong(format!("messages[{i}].function_call.arguments"), "a string")),
    }
}

/// The texts of a `content` value: the string itself, or its `text` and `refusal` parts.
fn content_texts(content: &mut Value) -> Vec<&mut String> {
    match content {
        Value::String(s) => vec![s],
        Value::Array(parts) => parts
            .iter_mut()
            .filter_map(|part| {
                let part = part.as_object_mut()?;
                let field = match part.get("type").and_then(Value::as_str) {
                    Some("text") => "text",
                    Some("refusal") => "refusal",
                    _ => return None,
                };
                match part.get_mut(field) {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn inspect(body: &mut Value, inspector: &mut Inspector<'_>) {
    let Some(obj) = body.as_object_mut() else { return };
    if let Some(Value::Array(messages)) = obj.get_mut("messages") {
        for (i, message) in messages.iter_mut().enumerate() {
            let Some(message) = message.as_object_mut() else { continue };
            let role = message.get("role").and_then(Value::as_str);
            // `function` is the legacy form of a tool result.
            let tool_result = matches!(role, Some("tool" | "function"));
            if let Some(content) = message.get_mut("content") {
                if let Value::Object(_) = content {
                    // Not a shape OpenAI accepts; whatever text it holds still does not leave.
                    inspector.values(content);
                } else if tool_result {
                    inspector.tool_result(content_texts(content), i, None);
                } else {
                    content_texts(content).into_iter().for_each(|t| inspector.text(t));
                }
            }
            if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
                for call in calls {
                    if let Some(Value::String(arguments)) = call.pointer_mut("/function/arguments") {
                        inspector.json_text(arguments);
                    }
                }
            }
            if let Some(Value::String(arguments)) =
                message.get_mut("function_call").and_then(|f| f.get_mut("arguments"))
            {
                inspector.json_text(arguments);
            }
        }
    }
    if let Some(content) = obj.get_mut("prediction").and_then(|p| p.get_mut("content")) {
        content_texts(content).into_iter().for_each(|t| inspector.text(t));
    }
}

pub(super) fn restore(body: &mut Value, lookup: &dyn TokenLookup) -> (usize, Option<Usage>) {
    let mut restored = 0;
    if let Some(Value::Array(choices)) = body.get_mut("choices") {
        for message in choices.iter_mut().filter_map(|c| c.get_mut("message")) {
            if let Some(Value::String(content)) = message.get_mut("content") {
                restored += restore_string(content, lookup, RestoreMode::Text);
            }
            if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
                for call in calls {
                    if let Some(Value::String(arguments)) = call.pointer_mut("/function/arguments") {
                        restored += restore_string(arguments, lookup, RestoreMode::JsonString);
                    }
                }
            }
            if let Some(Value::String(arguments)) = message.pointer_mut("/function_call/arguments") {
                restored += restore_string(arguments, lookup, RestoreMode::JsonString);
            }
        }
    }
    (restored, read_usage(body.get("usage"), "prompt_tokens", "completion_tokens"))
}

/// One streamed text of a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    /// `delta.content` of the choice.
    Content { choice: u64 },
    /// `delta.tool_calls[index].function.arguments` of the choice.
    ToolArguments { choice: u64, index: u64 },
    /// The legacy `delta.function_call.arguments` of the choice.
    FunctionArguments { choice: u64 },
}

impl Field {
    fn choice(self) -> u64 {
        match self {
            Field::Content { choice }
            | Field::ToolArguments { choice, .. }
            | Field::FunctionArguments { choice } => choice,
        }
    }
}

/// The top-level fields copied from the last chunk into a chunk Airlock adds.
const CHUNK_META: [&str; 6] = ["id", "object", "created", "model", "system_fingerprint", "service_tier"];

#[derive(Debug, Default)]
pub(super) struct Stream {
    restorers: Restorers<Field>,
    meta: Map<String, Value>,
}

impl Stream {
    pub(super) fn restored(&self) -> usize {
        self.restorers.restored()
    }

    pub(super) fn event(&mut self, event: SseEvent, ctx: &mut StreamCtx, out: &mut Vec<u8>) {
        if event.data.trim() == "[DONE]" {
            self.release_all(ctx, out);
            ctx.finished_cleanly = true;
            event.write(out);
            return;
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(&event.data) else {
            ctx.malformed += 1;
            event.write(out);
            return;
        };
        let Some(obj) = chunk.as_object_mut() else {
            event.write(out);
            return;
        };
        for key in CHUNK_META {
            if let Some(v) = obj.get(key) {
                self.meta.insert(key.to_owned(), v.clone());
            }
        }
        let mut changed = false;
        if let Some(usage) = read_usage(obj.get("usage"), "prompt_tokens", "completion_tokens") {
            ctx.usage = Some(usage);
            if !ctx.forward_usage_chunk {
                let no_choices = obj.get("choices").and_then(Value::as_array).is_none_or(Vec::is_empty);
                if no_choices {
                    // The usage chunk Airlock asked for and the client did not.
                    return;
                }
                obj.remove("usage");
                changed = true;
            }
        }
        let mut before = Vec::new();
        if let Some(Value::Array(choices)) = obj.get_mut("choices") {
            for (position, choice) in choices.iter_mut().enumerate() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
                let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
                if let Some(delta) = choice.get_mut("delta") {
                    changed |= self.delta(index, delta, finishing, ctx);
                }
                if finishing {
                    // Held text of this choice that the finishing chunk does not carry itself
                    // goes out in a chunk just before it.
                    let held = self.restorers.finish_where(|f| f.choice() == index, &ctx.lookup);
                    self.held_chunk(index, held, &mut before);
                }
            }
        }
        out.extend_from_slice(&before);
        if changed && let Ok(data) = serde_json::to_string(&chunk) {
            SseEvent { data, ..event }.write(out);
        } else {
            event.write(out);
        }
    }

    /// Restores the texts of one choice's delta; a finishing delta also releases what its own
    /// fields' restorers held, in place. Returns whether anything changed.
    fn delta(&mut self, choice: u64, delta: &mut Value, finishing: bool, ctx: &StreamCtx) -> bool {
        let mut changed = false;
        if let Some(Value::String(content)) = delta.get_mut("content") {
            changed |= self.field(Field::Content { choice }, RestoreMode::Text, content, finishing, ctx);
        }
        if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
            for (position, call) in calls.iter_mut().enumerate() {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
                if let Some(Value::String(arguments)) = call.pointer_mut("/function/arguments") {
                    let field = Field::ToolArguments { choice, index };
                    changed |= self.field(field, RestoreMode::JsonString, arguments, finishing, ctx);
                }
            }
        }
        if let Some(Value::String(arguments)) = delta.pointer_mut("/function_call/arguments") {
            let field = Field::FunctionArguments { choice };
            changed |= self.field(field, RestoreMode::JsonString, arguments, finishing, ctx);
        }
        changed
    }

    fn field(
        &mut self,
        field: Field,
        mode: RestoreMode,
        text: &mut String,
        finishing: bool,
        ctx: &StreamCtx,
    ) -> bool {
        if ctx.lookup.is_empty() {
            // Nothing to restore, so nothing to hold back: the text goes on as it came.
            return false;
        }
        let mut released = self.restorers.push(field, mode, text, &ctx.lookup);
        if finishing {
            released.push_str(&self.restorers.finish(field, &ctx.lookup));
        }
        if released == *text {
            return false;
        }
        *text = released;
        true
    }

    /// Writes a chunk with the held texts of one choice, if there are any.
    fn held_chunk(&self, choice: u64, held: Vec<(Field, String)>, out: &mut Vec<u8>) {
        if held.is_empty() {
            return;
        }
        let mut delta = Map::new();
        let mut calls = Vec::new();
        for (field, text) in held {
            match field {
                Field::Content { .. } => {
                    delta.insert("content".to_owned(), Value::String(text));
                }
                Field::ToolArguments { index, .. } => {
                    calls.push(serde_json::json!({"index": index, "function": {"arguments": text}}));
                }
                Field::FunctionArguments { .. } => {
                    delta.insert("function_call".to_owned(), serde_json::json!({"arguments": text}));
                }
            }
        }
        if !calls.is_empty() {
            delta.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        let mut chunk = self.meta.clone();
        chunk.entry("object").or_insert_with(|| Value::String("chat.completion.chunk".to_owned()));
        chunk.insert(
            "choices".to_owned(),
            serde_json::json!([{"index": choice, "delta": Value::Object(delta), "finish_reason": null}]),
        );
        if let Ok(data) = serde_json::to_string(&Value::Object(chunk)) {
            write_event(None, &data, out);
        }
    }

    /// Releases everything still held, one chunk per choice: at `[DONE]`, or when the stream
    /// ends without it.
    pub(super) fn release_all(&mut self, ctx: &StreamCtx, out: &mut Vec<u8>) {
        let mut by_choice: BTreeMap<u64, Vec<(Field, String)>> = BTreeMap::new();
        for (field, text) in self.restorers.finish_where(|_| true, &ctx.lookup) {
            by_choice.entry(field.choice()).or_default().push((field, text));
        }
        for (choice, held) in by_choice {
            self.held_chunk(choice, held, out);
        }
    }

    /// The error event an OpenAI client understands mid-stream.
    pub(super) fn error(message: &str, out: &mut Vec<u8>) {
        let body = serde_json::json!({"error": {"message": message, "type": "airlock_error", "code": null}});
        write_event(None, &body.to_string(), out);
    }
}
