//! Anthropic Messages: where text sits in requests, responses and stream events.
//!
//! Requests carry text in `system` (a string or text blocks) and in `messages[].content` (a
//! string or blocks: `text`, `tool_use.input`, `tool_result.content`, and plain-text
//! `document` sources). `thinking` and `redacted_thinking` blocks are signed by the provider
//! and go back exactly as they came, so they are neither redacted nor restored. Responses
//! carry text in `content[]` `text` and `tool_use` blocks and, streamed, in
//! `content_block_delta` events, one stream per content block.

use airlock_inspect::{RestoreMode, TokenLookup};
use serde_json::Value;

use super::redact::{Inspector, restore_string, restore_values};
use super::stream::{Restorers, StreamCtx};
use super::{Usage, WireError, read_usage, wrong};
use crate::sse::{SseEvent, write_event};

pub(super) fn check_message(i: usize, message: &Value) -> Result<(), WireError> {
    let message = message.as_object().ok_or_else(|| wrong(format!("messages[{i}]"), "an object"))?;
    match message.get("content") {
        None | Some(Value::Null) => Err(WireError::Missing { field: format!("messages[{i}].content") }),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                let field = || format!("messages[{i}].content[{j}]");
                let block = block.as_object().ok_or_else(|| wrong(field(), "an object"))?;
                if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                    match block.get("content") {
                        None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
                        Some(_) => {
                            return Err(wrong(
                                format!("{}.content", field()),
                                "a string or an array of blocks",
                            ));
                        }
                    }
                }
            }
            Ok(())
        }
        Some(_) => Err(wrong(format!("messages[{i}].content"), "a string or an array of content blocks")),
    }
}

pub(super) fn check_system(system: Option<&Value>) -> Result<(), WireError> {
    match system {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) if blocks.iter().all(Value::is_object) => Ok(()),
        Some(_) => Err(wrong("system", "a string or an array of text blocks")),
    }
}

/// The texts of a `system` or `tool_result.content` value: the string, or its text blocks.
fn texts(value: &mut Value) -> Vec<&mut String> {
    match value {
        Value::String(s) => vec![s],
        Value::Array(blocks) => blocks
            .iter_mut()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| match b.get_mut("text") {
                Some(Value::String(s)) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn inspect(body: &mut Value, inspector: &mut Inspector<'_>) {
    let Some(obj) = body.as_object_mut() else { return };
    if let Some(system) = obj.get_mut("system") {
        texts(system).into_iter().for_each(|t| inspector.text(t));
    }
    let Some(Value::Array(messages)) = obj.get_mut("messages") else { return };
    for (i, message) in messages.iter_mut().enumerate() {
        match message.get_mut("content") {
            Some(Value::String(text)) => inspector.text(text),
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter_mut().enumerate() {
                    content_block(block, i, j, inspector);
                }
            }
            Some(other @ Value::Object(_)) => inspector.values(other),
            _ => {}
        }
    }
}

fn content_block(block: &mut Value, message_index: usize, block_index: usize, inspector: &mut Inspector<'_>) {
    let Some(block) = block.as_object_mut() else { return };
    match block.get("type").and_then(Value::as_str) {
        Some("text") => {
            if let Some(Value::String(text)) = block.get_mut("text") {
                inspector.text(text);
            }
        }
        Some("tool_use") => {
            if let Some(input) = block.get_mut("input") {
                inspector.values(input);
            }
        }
        Some("tool_result") => match block.get_mut("content") {
            Some(Value::Object(_)) | None => {}
            Some(content) => inspector.tool_result(texts(content), message_index, Some(block_index)),
        },
        Some("document") => {
            let Some(source) = block.get_mut("source").and_then(Value::as_object_mut) else { return };
            match source.get("type").and_then(Value::as_str) {
                // A plain-text document is text like any other; base64 and URL sources are not.
                Some("text") => {
                    if let Some(Value::String(data)) = source.get_mut("data") {
                        inspector.text(data);
                    }
                }
                Some("content") => {
                    if let Some(content) = source.get_mut("content") {
                        texts(content).into_iter().for_each(|t| inspector.text(t));
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

pub(super) fn restore(body: &mut Value, lookup: &dyn TokenLookup) -> (usize, Option<Usage>) {
    let mut restored = 0;
    if let Some(Value::Array(blocks)) = body.get_mut("content") {
        for block in blocks {
            restored += restore_block(block, lookup);
        }
    }
    (restored, read_usage(body.get("usage"), "input_tokens", "output_tokens"))
}

/// Restores a `text` or `tool_use` content block (a whole one, or a `content_block_start`).
fn restore_block(block: &mut Value, lookup: &dyn TokenLookup) -> usize {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => match block.get_mut("text") {
            Some(Value::String(text)) => restore_string(text, lookup, RestoreMode::Text),
            _ => 0,
        },
        Some("tool_use") => block.get_mut("input").map_or(0, |input| restore_values(input, lookup)),
        _ => 0,
    }
}

/// What a content block streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Delta {
    /// `text_delta.text`.
    Text,
    /// `input_json_delta.partial_json`: fragments of JSON text.
    Json,
}

impl Delta {
    fn mode(self) -> RestoreMode {
        match self {
            Delta::Text => RestoreMode::Text,
            Delta::Json => RestoreMode::JsonString,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Stream {
    /// One restorer per (content block index, delta kind).
    restorers: Restorers<(u64, Delta)>,
}

impl Stream {
    pub(super) fn restored(&self) -> usize {
        self.restorers.restored()
    }

    pub(super) fn event(&mut self, event: SseEvent, ctx: &mut StreamCtx, out: &mut Vec<u8>) {
        let Ok(mut data) = serde_json::from_str::<Value>(&event.data) else {
            ctx.malformed += 1;
            event.write(out);
            return;
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default()
            .to_owned();
        let index = data.get("index").and_then(Value::as_u64);
        let mut changed = false;
        match kind.as_str() {
            "message_start" => {
                ctx.usage =
                    read_usage(data.pointer("/message/usage"), "input_tokens", "output_tokens").or(ctx.usage);
            }
            "content_block_start" => {
                if let (Some(index), Some(block)) = (index, data.get_mut("content_block")) {
                    if let Some(Value::String(text)) = block.get_mut("text") {
                        changed |= self.delta(index, Delta::Text, text, ctx);
                    } else {
                        let n = restore_block(block, &ctx.lookup);
                        self.restorers.add_restored(n);
                        changed |= n > 0;
                    }
                }
            }
            "content_block_delta" => {
                let index = index.unwrap_or_default();
                let delta = data.get_mut("delta");
                let which = match delta.as_ref().and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => Some((Delta::Text, "text")),
                    Some("input_json_delta") => Some((Delta::Json, "partial_json")),
                    _ => None,
                };
                if let (Some((kind, field)), Some(delta)) = (which, delta)
                    && let Some(Value::String(text)) = delta.get_mut(field)
                {
                    changed |= self.delta(index, kind, text, ctx);
                }
            }
            "content_block_stop" => {
                let index = index.unwrap_or_default();
                self.release(|(i, _)| *i == index, ctx, out);
            }
            "message_delta" => {
                if let Some(usage) = data.get("usage").and_then(Value::as_object) {
                    let mut current = ctx.usage.unwrap_or_default();
                    if let Some(n) = usage.get("output_tokens").and_then(Value::as_u64) {
                        current.output_tokens = n;
                    }
                    // Counts in message_delta are cumulative; newer streams repeat the input.
                    if let Some(n) = usage.get("input_tokens").and_then(Value::as_u64) {
                        current.input_tokens = n;
                    }
                    ctx.usage = Some(current);
                }
            }
            "message_stop" => {
                self.release_all(ctx, out);
                ctx.finished_cleanly = true;
            }
            // ping, error, and whatever comes next: passed on as they are.
            _ => {}
        }
        if changed && let Ok(data) = serde_json::to_string(&data) {
            SseEvent { data, ..event }.write(out);
        } else {
            event.write(out);
        }
    }

    fn delta(&mut self, index: u64, kind: Delta, text: &mut String, ctx: &StreamCtx) -> bool {
        if ctx.lookup.is_empty() {
            // Nothing to restore, so nothing to hold back: the text goes on as it came.
            return false;
        }
        let released = self.restorers.push((index, kind), kind.mode(), text, &ctx.lookup);
        if released == *text {
            return false;
        }
        *text = released;
        true
    }

    /// Writes a `content_block_delta` with the held text of each block `which` selects.
    fn release(&mut self, which: impl Fn(&(u64, Delta)) -> bool, ctx: &StreamCtx, out: &mut Vec<u8>) {
        for ((index, kind), text) in self.restorers.finish_where(which, &ctx.lookup) {
            let delta = match kind {
                Delta::Text => serde_json::json!({"type": "text_delta", "text": text}),
                Delta::Json => serde_json::json!({"type": "input_json_delta", "partial_json": text}),
            };
            let event = serde_json::json!({"type": "content_block_delta", "index": index, "delta": delta});
            write_event(Some("content_block_delta"), &event.to_string(), out);
        }
    }

    /// Releases everything still held: at `message_stop`, or when the stream ends without it.
    pub(super) fn release_all(&mut self, ctx: &StreamCtx, out: &mut Vec<u8>) {
        self.release(|_| true, ctx, out);
    }

    /// The error event an Anthropic client understands mid-stream.
    pub(super) fn error(message: &str, out: &mut Vec<u8>) {
        let body = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
        write_event(Some("error"), &body.to_string(), out);
    }
}
